# Sourced by setup-env.sh and test-compat.sh: the browser tests drive Debian's Chromium (never a
# browser downloaded by Playwright). Installed with apt-get when missing and we may; otherwise
# the tests say what they need.
CHROMIUM_PATH="${CHROMIUM_PATH:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM_PATH" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "==> installing chromium for the browser tests (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
export CHROMIUM_PATH
