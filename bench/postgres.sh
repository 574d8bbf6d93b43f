#!/usr/bin/env bash
# One node on the PostgreSQL store (issue 17): hello-3 (HelloSequence) in a closed loop over
# HTTP from `perdure-bench load` in a process of its own, at each caller count in CALLERS,
# RUNS times each, on a fresh table per run. Prints the load generator's JSON line per run
# and, per run, PostgreSQL's commits and rollbacks of the bench database and the CPU seconds
# of the node and of PostgreSQL.
#
#   bench/postgres.sh                          # C = 1 and 64, 3 runs of 10 s each
#   CALLERS="64" RUNS=5 DURATION=20 bench/postgres.sh
#   NODE_ENV="PERDURE_STORE_GROUP_COMMIT=false" bench/postgres.sh   # an A/B of a setting
#
# Environment: PG_URL (default postgres://perdure:perdure@127.0.0.1:5432/perdure_test; the
# database must exist), CALLERS (default "1 64"), RUNS (default 3), DURATION (default 10),
# WARMUP (default 3), NODE_ENV (extra VAR=value words for the node), SKIP_BUILD=1,
# NODE_BIN (the node binary, default the release build's; bench/ab-postgres.sh sets it).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
PG_URL="${PG_URL:-postgres://perdure:perdure@127.0.0.1:5432/perdure_test}"
CALLERS="${CALLERS:-1 64}"
RUNS="${RUNS:-3}"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-3}"
read -r -a EXTRA <<<"${NODE_ENV:-}"
TICK="$(getconf CLK_TCK)"

die() { echo "postgres-bench: error: $*" >&2; exit 1; }
for tool in curl python3 psql; do
  command -v "$tool" >/dev/null || die "'$tool' is not installed"
done
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
build_release "$ROOT" "$BIN"
find_postmaster
DB="$(python3 -c 'import sys, urllib.parse as u; print(u.urlparse(sys.argv[1]).path.lstrip("/"))' "$PG_URL")"

xacts() {
  psql -Atq "$PG_URL" -c "SELECT xact_commit || ' ' || xact_rollback FROM pg_stat_database WHERE datname = '$DB'"
}

NODE=""
cleanup() {
  if [ -n "$NODE" ]; then kill "$NODE" 2>/dev/null || true; wait "$NODE" 2>/dev/null || true; fi
  NODE=""
}
trap cleanup EXIT

echo "postgres-bench: $(nproc) CPUs, commit $(git -C "$ROOT" rev-parse --short HEAD), node env: ${NODE_ENV:-(none)}"
for c in $CALLERS; do
  for r in $(seq 1 "$RUNS"); do
    table="pgbench_$$_${c}_$r"
    port="$(free_port)"
    env PERDURE_STORE=postgres PERDURE_STORE_URL="$PG_URL" PERDURE_STORE_TABLE="$table" \
      PERDURE_HTTP="127.0.0.1:$port" PERDURE_LOG=warn "${EXTRA[@]}" \
      "${NODE_BIN:-$BIN/perdure-node}" run >"/tmp/perdure-pgbench-$$.log" 2>&1 &
    NODE=$!
    for _ in $(seq 1 100); do
      curl -sf -m 1 "http://127.0.0.1:$port/readyz" >/dev/null && break
      sleep 0.2
    done
    curl -sf -m 1 "http://127.0.0.1:$port/readyz" >/dev/null || die "node not ready (log: /tmp/perdure-pgbench-$$.log)"
    read -r c0 r0 <<<"$(xacts)"
    p0="$(pg_ticks)"
    n0="$(awk '{ print $14 + $15 }' "/proc/$NODE/stat")"
    "$BIN/perdure-bench" load --url "http://127.0.0.1:$port" --callers "$c" \
      --duration "$DURATION" --warmup "$WARMUP"
    read -r c1 r1 <<<"$(xacts)"
    p1="$(pg_ticks)"
    n1="$(awk '{ print $14 + $15 }' "/proc/$NODE/stat")"
    echo "postgres-bench: C=$c run $r: xact_commit $((c1 - c0)), xact_rollback $((r1 - r0)), node CPU $(python3 -c "print(round(($n1-$n0)/$TICK,2))") s, PostgreSQL CPU $(python3 -c "print(round(($p1-$p0)/$TICK,2))") s"
    cleanup
    psql -q "$PG_URL" -c "DROP TABLE IF EXISTS $table" >/dev/null 2>&1 || true
  done
done
