#!/usr/bin/env bash
# Lint and types, as CI runs them: ruff (rules in pyproject.toml) and mypy (strict on receiver/
# and mlflow_hotswap_plugin/; files listed in pyproject.toml).
source "$(dirname "$0")/setup-env.sh"
cd "$ROOT"
echo "==> ruff check ."
ruff check .
echo "==> mypy"
mypy
