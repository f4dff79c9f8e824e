#!/usr/bin/env bash
# Debian's Chromium for the browser tests (Playwright drives it; no browser download).
# Run by `make test` / .ci/run when /usr/bin/chromium is missing (see apt-install.sh).
set -euo pipefail
if [ -x /usr/bin/chromium ]; then exit 0; fi
"$(dirname "$0")/apt-install.sh" install-chromium "the browser tests" chromium fonts-dejavu-core
if [ -x /usr/bin/chromium ]; then /usr/bin/chromium --version; fi
