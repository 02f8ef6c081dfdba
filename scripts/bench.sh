#!/usr/bin/env bash
# Run the benchmarks and write bench/REPORT.md; `--smoke` for a quick check.
# Installs wrk with apt-get when it is missing (as root). See bench/README.md.
source "$(dirname "$0")/setup-env.sh"
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec python -m bench "$@"
