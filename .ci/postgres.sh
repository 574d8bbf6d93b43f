#!/usr/bin/env bash
# Installs (Debian's `postgresql`), starts PostgreSQL on 127.0.0.1:5432 and creates the test
# database `perdure_test` owned by the password user `perdure`. Idempotent: safe to run again
# on a machine where it already ran. Prints the line to export last:
#   export PERDURE_TEST_POSTGRES_URL=postgres://perdure:perdure@127.0.0.1:5432/perdure_test
# Usage: eval "$(bash .ci/postgres.sh | tail -n 1)"
set -euo pipefail

log() { echo "postgres.sh: $*" >&2; }

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  log "installing postgresql from Debian's packages"
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >&2
fi

VERSION="$(ls /usr/lib/postgresql | sort -V | tail -n 1)"
log "PostgreSQL $VERSION"

# A fresh install in a container may not have created the default cluster.
if ! pg_lsclusters -h 2>/dev/null | awk '{print $1" "$2}' | grep -qx "$VERSION main"; then
  log "creating cluster $VERSION/main"
  $SUDO pg_createcluster "$VERSION" main --port 5432 >&2
fi

if ! pg_lsclusters -h | awk -v v="$VERSION" '$1==v && $2=="main" {print $4}' | grep -q online; then
  log "starting cluster $VERSION/main"
  # Listen on loopback only.
  $SUDO pg_ctlcluster "$VERSION" main start -o "-c listen_addresses=127.0.0.1 -c port=5432" >&2
fi

# Wait until the server accepts connections (bounded).
for _ in $(seq 1 60); do
  if $SUDO su postgres -c "pg_isready -q -h 127.0.0.1 -p 5432" 2>/dev/null; then break; fi
  sleep 0.5
done
$SUDO su postgres -c "pg_isready -h 127.0.0.1 -p 5432" >&2

psql_admin() { $SUDO su postgres -c "psql -v ON_ERROR_STOP=1 -qtA -p 5432 $*"; }

if [ "$(psql_admin "-c \"SELECT 1 FROM pg_roles WHERE rolname='perdure'\"")" != 1 ]; then
  log "creating role perdure"
  psql_admin "-c \"CREATE ROLE perdure LOGIN PASSWORD 'perdure'\"" >&2
fi
if [ "$(psql_admin "-c \"SELECT 1 FROM pg_database WHERE datname='perdure_test'\"")" != 1 ]; then
  log "creating database perdure_test"
  psql_admin "-c \"CREATE DATABASE perdure_test OWNER perdure\"" >&2
fi

URL="postgres://perdure:perdure@127.0.0.1:5432/perdure_test"
# Check that the password login works over TCP.
PGPASSWORD=perdure psql -qtA -h 127.0.0.1 -p 5432 -U perdure -d perdure_test -c "SELECT 1" >/dev/null
log "ready"
echo "export PERDURE_TEST_POSTGRES_URL=$URL"
