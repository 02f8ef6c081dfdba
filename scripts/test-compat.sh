#!/usr/bin/env bash
# Run the integration subset marked `compat` against an older MLflow, in its own virtualenv:
#   ./scripts/test-compat.sh 2.16 [pytest args...]
#   ./scripts/test-compat.sh --prepare 2.16      # only make the virtualenv
# .venv-mlflow-<version> holds that MLflow (pinned by scripts/compat/mlflow-<version>.txt) with
# this checkout pip-installed into it, as a team pinned to that MLflow would install it. The
# MLflow server, the receiver and the test client all run on that MLflow.
set -euo pipefail
PREPARE_ONLY=""
if [ "${1:-}" = "--prepare" ]; then
  PREPARE_ONLY=1
  shift
fi
VERSION="${1:?usage: scripts/test-compat.sh [--prepare] MLFLOW_VERSION [pytest args...]}"
shift
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PINS="$ROOT/scripts/compat/mlflow-$VERSION.txt"
if [ ! -f "$PINS" ]; then
  echo "no pins for MLflow $VERSION (expected $PINS)" >&2
  exit 2
fi
VENV="$ROOT/.venv-mlflow-$VERSION"
source "$ROOT/scripts/venv.sh"
ensure_venv "$VENV" "$PINS" mlflow
if [ -n "$PREPARE_ONLY" ]; then
  exit 0
fi
source "$ROOT/scripts/ensure-chromium.sh"
cd "$ROOT"
export PATH="$VENV/bin:$PATH"
echo "==> MLflow $("$VENV/bin/python" -c 'import mlflow; print(mlflow.__version__)'): pytest -m compat"
exec "$VENV/bin/python" -m pytest -m compat tests/integration "$@"
