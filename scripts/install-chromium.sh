#!/usr/bin/env bash
# Debian's Chromium for the browser tests (Playwright drives it; no browser download).
# Run by `make test` / .ci/run when /usr/bin/chromium is missing; needs root or passwordless sudo.
# Without either, CI (CI set) fails here; a developer's `make test` goes on and the browser tests skip.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then exit 0; fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "install-chromium: not root and no passwordless sudo; install it yourself: apt-get install chromium" >&2
    if [ -n "${CI:-}" ]; then exit 1; fi
    echo "install-chromium: the browser tests will be skipped" >&2
    exit 0
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y --no-install-recommends chromium fonts-dejavu-core \
  || { $SUDO apt-get update && $SUDO apt-get install -y --no-install-recommends chromium fonts-dejavu-core; }
/usr/bin/chromium --version
