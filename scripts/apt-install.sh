#!/usr/bin/env bash
# apt-install.sh NAME "WHAT SKIPS" PACKAGE...: Debian packages for the test suite, installed with apt
# (root, or passwordless sudo). Without either, CI (CI set) fails here; a developer's `make test`
# goes on and WHAT SKIPS (e.g. "the browser tests") is skipped. Used by install-chromium.sh and
# install-postgresql.sh, which first check whether their package is already there.
set -euo pipefail
name=$1 skips=$2
shift 2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "$name: not root and no passwordless sudo; install it yourself: apt-get install $*" >&2
    if [ -n "${CI:-}" ]; then exit 1; fi
    echo "$name: $skips will be skipped" >&2
    exit 0
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y --no-install-recommends "$@" \
  || { $SUDO apt-get update && $SUDO apt-get install -y --no-install-recommends "$@"; }
