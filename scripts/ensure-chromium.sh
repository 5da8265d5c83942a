#!/usr/bin/env bash
# Makes sure Debian's Chromium (the browser the review page's tests drive through Playwright)
# is installed at /usr/bin/chromium: installs the `chromium` package when it is missing, and
# fails with a clear message when it cannot.
set -euo pipefail

CHROMIUM=/usr/bin/chromium
[ -x "$CHROMIUM" ] && exit 0

if ! command -v apt-get >/dev/null; then
  echo "error: Chromium is missing at $CHROMIUM and this machine has no apt-get;" >&2
  echo "       install Chromium there (Debian's package 'chromium') to run the browser tests." >&2
  exit 1
fi
as_root=()
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null; then
    echo "error: Chromium is missing at $CHROMIUM; installing it needs root:" >&2
    echo "       run 'apt-get install chromium' as root." >&2
    exit 1
  fi
  as_root=(sudo)
fi
echo "installing Debian's chromium package (the review page's browser tests use it)"
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq --no-install-recommends chromium >/dev/null
if [ ! -x "$CHROMIUM" ]; then
  echo "error: the chromium package was installed but $CHROMIUM is missing" >&2
  exit 1
fi
