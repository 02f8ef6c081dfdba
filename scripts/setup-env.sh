# Sourced by the other scripts: make ./.venv with the project and its test tools installed.
# Idempotent and quick when nothing changed (a stamp records what was installed).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
source "$ROOT/scripts/venv.sh"
ensure_venv "$VENV" "$ROOT/constraints.txt"
source "$ROOT/scripts/ensure-chromium.sh"
export PATH="$VENV/bin:$PATH"
