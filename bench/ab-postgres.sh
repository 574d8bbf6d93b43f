#!/usr/bin/env bash
# An A/B of two node binaries on the PostgreSQL store (issue 17): PAIRS interleaved pairs of
# `bench/postgres.sh` runs (one run each, A then B), so that drift of the shared machine
# falls on both. Prints one line per run: the binary, throughput, p50, p99, node CPU per
# orchestration, and PostgreSQL's commits, rollbacks and CPU over the run.
#
#   bench/ab-postgres.sh /tmp/node-before target/release/perdure-node
#   PAIRS=8 CALLERS=1 DURATION=12 bench/ab-postgres.sh A B
#
# Build each binary with `cargo build --release -p perdure-node` at its commit and copy it
# aside. Environment: PAIRS (default 5), CALLERS (default 64), DURATION (default 12), and
# whatever bench/postgres.sh reads (PG_URL, WARMUP, NODE_ENV); the load generator is the
# release build's.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[ $# -eq 2 ] || { echo "usage: $0 NODE_BINARY_A NODE_BINARY_B" >&2; exit 2; }
for b in "$1" "$2"; do
  [ -x "$b" ] || { echo "ab-postgres: error: $b is not an executable" >&2; exit 2; }
done
PAIRS="${PAIRS:-5}"
CALLERS="${CALLERS:-64}"
DURATION="${DURATION:-12}"
field() { grep -o "\"$1\":[0-9.]*" | head -1 | cut -d: -f2; }
for i in $(seq 1 "$PAIRS"); do
  for bin in "$1" "$2"; do
    out="$(NODE_BIN="$bin" SKIP_BUILD=1 CALLERS="$CALLERS" RUNS=1 DURATION="$DURATION" \
      bash "$ROOT/bench/postgres.sh" 2>&1)" || { echo "$out" >&2; exit 1; }
    json="$(echo "$out" | grep '^{')"
    printf 'ab-postgres: pair %s %s C=%s orchestrations/s %.0f p50 %.2f ms p99 %.1f ms node CPU %.0f us/orchestration; %s\n' \
      "$i" "$bin" "$CALLERS" "$(echo "$json" | field orchestrations_per_s)" \
      "$(echo "$json" | field p50_ms)" "$(echo "$json" | field p99_ms)" \
      "$(echo "$json" | field node_cpu_us_per_orchestration)" \
      "$(echo "$out" | grep -o 'xact_commit.*')"
  done
done
