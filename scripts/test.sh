#!/usr/bin/env bash
# Run the whole test suite: unit tests, then integration tests against real servers.
source "$(dirname "$0")/setup-env.sh"
cd "$ROOT"
exec python -m pytest "$@"
