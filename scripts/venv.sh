# Sourced by setup-env.sh and test-compat.sh, after they set ROOT.
# ensure_venv DIR PINS [PACKAGE...]: the virtualenv DIR with this checkout (and its test tools)
# installed, plus PACKAGEs, all under the constraints file PINS. EXTRAS (default `test`) names
# the checkout's extras. Quick when nothing changed: a stamp records what setup.cfg,
# pyproject.toml, PINS and EXTRAS asked for at the last install.
ensure_venv() {
  local venv="$1" pins="$2" extras="${EXTRAS:-test}" name stamp want
  shift 2
  name="${venv#"$ROOT"/}"
  if [ ! -x "$venv/bin/python" ]; then
    echo "==> creating virtual environment in $name"
    "${PYTHON:-python3}" -m venv "$venv"
  fi
  stamp="$venv/.hotswap-installed"
  want="$( (cat "$ROOT/setup.cfg" "$ROOT/pyproject.toml" "$pins"; echo "$extras") \
    | sha256sum | cut -d' ' -f1)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "==> installing mlflow-hotswap${*:+ and $*} into $name, pinned by ${pins#"$ROOT"/}" \
      "(first run takes a minute or two)"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q -c "$pins" "$@" -e "$ROOT[$extras]"
    echo "$want" > "$stamp"
  fi
}
