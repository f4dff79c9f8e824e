#!/usr/bin/env bash
# Debian's PostgreSQL server for the store's tests (tests/postgres.py starts a throwaway cluster with
# its initdb/pg_ctl on 127.0.0.1 and stops it after; no service is enabled or used).
# Run by `make test` / .ci/run when no /usr/lib/postgresql/*/bin/initdb exists (see apt-install.sh).
set -euo pipefail
if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then exit 0; fi
"$(dirname "$0")/apt-install.sh" install-postgresql "the PostgreSQL tests" postgresql
if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then ls /usr/lib/postgresql/*/bin/initdb; fi
