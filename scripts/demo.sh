#!/usr/bin/env bash
# The end-to-end demo: a local MLflow server with the plugin, a receiver, a promotion and a
# rollback while a client keeps predicting; stops everything at the end or on Ctrl-C.
# Options: --keep (keep the data folder), --summary-json PATH. See examples/demo.py.
source "$(dirname "$0")/setup-env.sh"
cd "$ROOT"
exec python -m examples.demo "$@"
