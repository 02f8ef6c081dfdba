#!/usr/bin/env bash
# The end-to-end demo: a local MLflow server with the plugin, three receivers, a promotion and a
# rollback, then `mlflow-hotswap rollout` promoting one version and rolling another back, while
# a client keeps predicting; stops everything at the end or on Ctrl-C.
# Options: --keep (keep the data folder), --summary-json PATH. See examples/demo.py.
source "$(dirname "$0")/setup-env.sh"
cd "$ROOT"
exec python -m examples.demo "$@"
