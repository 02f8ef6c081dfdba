# Sourced by the other scripts: make ./.venv with the project, its test tools and the `beam`
# extra (its tests run in the main suite) installed.
# Idempotent and quick when nothing changed (a stamp records what was installed).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
source "$ROOT/scripts/venv.sh"
EXTRAS=test,beam ensure_venv "$VENV" "$ROOT/constraints.txt"
source "$ROOT/scripts/ensure-chromium.sh"
export PATH="$VENV/bin:$PATH"
