#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite: offline, CPU only. The UI's browser tests drive Debian's
# chromium (Playwright cannot download its own browser offline): it is installed here when missing (apt-get, as
# root or through sudo). QWEN_SFT_SKIP_BROWSER_TESTS=1 leaves those tests out on a machine without it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash tools/setup.sh
CHROMIUM="${QWEN_SFT_CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM" ] && [ "${QWEN_SFT_SKIP_BROWSER_TESTS:-0}" != 1 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  if ! command -v apt-get >/dev/null 2>&1 || { [ -n "$SUDO" ] && ! command -v sudo >/dev/null 2>&1; }; then
    echo "tools/test.sh: the browser tests need chromium at $CHROMIUM, and it cannot be installed here" \
         "(apt-get as root or with sudo). Install it, point QWEN_SFT_CHROMIUM at it, or set" \
         "QWEN_SFT_SKIP_BROWSER_TESTS=1 to leave those tests out." >&2
    exit 1
  fi
  echo "tools/test.sh: installing Debian's chromium for the browser tests" >&2
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends chromium
fi
exec .venv/bin/python -m pytest -n 2 --dist worksteal --durations=25 tests "$@"
