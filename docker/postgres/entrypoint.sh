#!/bin/sh
# Entrypoint of perdure-postgres:local. On first start (no $PGDATA/PG_VERSION) it runs initdb,
# lets other containers of the network in (scram-sha-256 with POSTGRES_PASSWORD, or trust if
# POSTGRES_HOST_AUTH_METHOD=trust), creates the database; then it runs postgres in the
# foreground, listening on all addresses of the container.
#
# Environment: POSTGRES_USER (default perdure; the superuser), POSTGRES_PASSWORD,
# POSTGRES_DB (default perdure), POSTGRES_HOST_AUTH_METHOD (scram-sha-256 | trust),
# PGDATA (default /var/lib/postgresql/data). Arguments are passed on to postgres
# (`-c name=value`).
set -eu

PGDATA="${PGDATA:-/var/lib/postgresql/data}"
POSTGRES_USER="${POSTGRES_USER:-perdure}"
POSTGRES_DB="${POSTGRES_DB:-perdure}"
POSTGRES_PASSWORD="${POSTGRES_PASSWORD:-}"
AUTH="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"

die() { echo "perdure-postgres: error: $*" >&2; exit 1; }
log() { echo "perdure-postgres: $*" >&2; }

case "$AUTH" in
  scram-sha-256|md5) [ -n "$POSTGRES_PASSWORD" ] || die "POSTGRES_PASSWORD is empty (set it, or POSTGRES_HOST_AUTH_METHOD=trust)" ;;
  trust) log "warning: POSTGRES_HOST_AUTH_METHOD=trust: any container of the network may connect without a password" ;;
  *) die "POSTGRES_HOST_AUTH_METHOD=$AUTH is not scram-sha-256, md5 or trust" ;;
esac
case "$POSTGRES_DB$POSTGRES_USER" in
  *[!A-Za-z0-9_]*) die "POSTGRES_DB and POSTGRES_USER must be letters, digits and _" ;;
esac

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  log "initialising a new cluster in $PGDATA"
  mkdir -p "$PGDATA"
  chmod 700 "$PGDATA"
  pwfile=""
  if [ -n "$POSTGRES_PASSWORD" ]; then
    pwfile="$(mktemp 2>/dev/null || echo /tmp/pgpass.$$)"
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  fi
  # Local (unix socket) connections inside the container: trust; TCP: $AUTH.
  if [ -n "$pwfile" ]; then
    initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" -E UTF8 --no-locale \
      --auth-local=trust --auth-host="$AUTH" >&2 || { rm -f "$pwfile"; die "initdb failed"; }
    rm -f "$pwfile"
  else
    initdb -D "$PGDATA" -U "$POSTGRES_USER" -E UTF8 --no-locale \
      --auth-local=trust --auth-host="$AUTH" >&2 || die "initdb failed"
  fi
  {
    echo
    echo "# perdure-postgres: every address (the compose network; the port is not published)"
    echo "host all all 0.0.0.0/0 $AUTH"
    echo "host all all ::/0 $AUTH"
  } >>"$PGDATA/pg_hba.conf"
  if [ "$POSTGRES_DB" != "postgres" ]; then
    log "creating database $POSTGRES_DB"
    out="$(echo "CREATE DATABASE \"$POSTGRES_DB\" OWNER \"$POSTGRES_USER\"" \
      | postgres --single -D "$PGDATA" -c jit=off postgres 2>&1)" || die "CREATE DATABASE failed: $out"
    case "$out" in *ERROR*) die "CREATE DATABASE failed: $out" ;; esac
  fi
  log "initialised"
fi

exec postgres -D "$PGDATA" -c listen_addresses='*' -c jit=off "$@"
