#!/usr/bin/env bash
# Run the checks (scripts/check.sh), then the test suite: unit tests, then integration tests
# against real servers. Arguments go to pytest. HOTSWAP_SKIP_CHECKS=1 runs the tests alone.
source "$(dirname "$0")/setup-env.sh"
cd "$ROOT"
if [ -z "${HOTSWAP_SKIP_CHECKS:-}" ]; then
  "$ROOT/scripts/check.sh"
fi
exec python -m pytest "$@"
