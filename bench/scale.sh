#!/usr/bin/env bash
# Scale-out of a Perdure cluster on one PostgreSQL (issue 10): hello-3 (HelloSequence) in a
# closed loop against 1, 2 and 3 `perdure-node` processes (release build), the load generator
# (`perdure-bench load`) in a process of its own, then the forwarded-request latency
# (`perdure-bench forward-latency`).
#
#   bench/scale.sh                       # nodes 1 2 3, 0.25 core each, 10 s per run
#   NODES="1 2" QUOTA_US=50000 DURATION=20 bench/scale.sh
#
# Environment: PG_URL (default postgres://perdure:perdure@127.0.0.1:5432/perdure_test),
# NODES (default "1 2 3"), QUOTA_US (CPU per node in µs per 100 ms period, default 25000 =
# 0.25 core; 0 = no quota), CALLERS_PER_NODE (default 16), DURATION (default 10),
# WARMUP (default 3), NODE_CPU / LOAD_CPU (taskset CPU lists, default 1 and 0),
# FORWARD_REQUESTS (default 20000; 0 skips forward-latency), SKIP_BUILD=1, ROUTE (the load
# generator's --route: round-robin, the default, forwards (N-1)/N of the requests; owner
# sends each to its instance's owner, to measure what forwarding costs).
#
# What the host allows (a 2-core machine shared with other sessions): every node is pinned
# to NODE_CPU with taskset and, when the cgroup v1 cpu controller is writable, capped at
# QUOTA_US per period in a cgroup of its own, so each node gets the same CPU share whatever
# the node count (N nodes: N x QUOTA_US, at most one core). The load generator is pinned to
# LOAD_CPU. PostgreSQL is the machine's shared server: it is NOT pinned (other sessions use
# it); its CPU is read from /proc (the postmaster, its live children and its reaped ones)
# over each run, so it includes whatever else used the server meanwhile.
#
# Prints one line per node count and a JSON line per run (`perdure-bench load`'s own), then
# a summary table: throughput, efficiency = tput(N) / (N x tput(1)), p50/p99, node and
# PostgreSQL CPU seconds over the run and PostgreSQL's share of the CPU spent.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
PG_URL="${PG_URL:-postgres://perdure:perdure@127.0.0.1:5432/perdure_test}"
NODES="${NODES:-1 2 3}"
QUOTA_US="${QUOTA_US:-25000}"
CALLERS_PER_NODE="${CALLERS_PER_NODE:-16}"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-3}"
NODE_CPU="${NODE_CPU:-1}"
LOAD_CPU="${LOAD_CPU:-0}"
FORWARD_REQUESTS="${FORWARD_REQUESTS:-20000}"
ROUTE="${ROUTE:-round-robin}"
CG=/sys/fs/cgroup/cpu
TICK="$(getconf CLK_TCK)"

die() { echo "scale: error: $*" >&2; exit 1; }
for tool in taskset curl python3; do
  command -v "$tool" >/dev/null || die "'$tool' is not installed"
done
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
build_release "$ROOT" "$BIN"

find_postmaster

# pids_ticks PID...: CPU ticks (user + system) of these processes.
pids_ticks() {
  local t=0 p
  for p in "$@"; do
    t=$((t + $(awk '{ print $14 + $15 }' "/proc/$p/stat")))
  done
  echo "$t"
}

PIDS=()
CGROUPS=()
cleanup() {
  local p c
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  for c in "${CGROUPS[@]}"; do rmdir "$c" 2>/dev/null || true; done
  PIDS=() CGROUPS=()
}
trap cleanup EXIT


# owners_ok URL N: whether N distinct nodes own partitions and none is without an owner.
owners_ok() {
  curl -sf -m 2 "$1/cluster/partitions" | python3 -c '
import json, sys
t = json.load(sys.stdin)
owners = [p.get("owner") for p in t.get("partitions", [])]
sys.exit(0 if owners and all(owners) and len(set(owners)) == int(sys.argv[1]) else 1)' "$2"
}

quota_note="no quota (cgroup v1 cpu controller not writable)"
if [ "$QUOTA_US" != 0 ] && mkdir "$CG/perdure-scale-probe-$$" 2>/dev/null; then
  rmdir "$CG/perdure-scale-probe-$$"
  quota_note="$QUOTA_US µs per 100 ms per node"
else
  QUOTA_US=0
fi
echo "scale: $(nproc) CPUs; nodes on CPU $NODE_CPU ($quota_note), load generator on CPU $LOAD_CPU, PostgreSQL unpinned; commit $(git -C "$ROOT" rev-parse --short HEAD)"

declare -A TPUT P50 P99 NODE_S PG_S WALL
for n in $NODES; do
  table="scale_$$_$n"
  urls=() cports=()
  for i in $(seq 1 "$n"); do cports+=("127.0.0.1:$(free_port)"); done
  for i in $(seq 1 "$n"); do
    hport="$(free_port)"
    seeds="$(printf '%s\n' "${cports[@]}" | grep -vx "${cports[$((i - 1))]}" | paste -sd, || true)"
    env PERDURE_STORE=postgres PERDURE_STORE_URL="$PG_URL" PERDURE_STORE_TABLE="$table" \
      PERDURE_HTTP="127.0.0.1:$hport" PERDURE_PARTITIONS=16 PERDURE_LOG=warn \
      PERDURE_CLUSTER_NAME="scale-$n-$i" PERDURE_CLUSTER_LISTEN="${cports[$((i - 1))]}" \
      PERDURE_CLUSTER_SEEDS="$seeds" \
      taskset -c "$NODE_CPU" "$BIN/perdure-node" run >"/tmp/perdure-scale-$$-$n-$i.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    if [ "$QUOTA_US" != 0 ]; then
      cg="$CG/perdure-scale-$$-$n-$i"
      mkdir "$cg" && echo 100000 >"$cg/cpu.cfs_period_us" && echo "$QUOTA_US" >"$cg/cpu.cfs_quota_us"
      echo "$pid" >"$cg/cgroup.procs"
      CGROUPS+=("$cg")
    fi
    urls+=("http://127.0.0.1:$hport")
  done
  for u in "${urls[@]}"; do
    for _ in $(seq 1 120); do curl -sf -m 2 "$u/readyz" >/dev/null && break; sleep 0.5; done
    curl -sf -m 2 "$u/readyz" >/dev/null || die "$u not ready (logs: /tmp/perdure-scale-$$-$n-*.log)"
  done
  for _ in $(seq 1 120); do owners_ok "${urls[0]}" "$n" && break; sleep 0.5; done
  owners_ok "${urls[0]}" "$n" || die "the $n nodes did not share the partitions"

  url_list="$(IFS=,; echo "${urls[*]}")"
  pg0="$(pg_ticks)" nd0="$(pids_ticks "${PIDS[@]}")" t0="$(date +%s.%N)"
  out="$(taskset -c "$LOAD_CPU" "$BIN/perdure-bench" load --url "$url_list" \
    --callers "$((CALLERS_PER_NODE * n))" --duration "$DURATION" --warmup "$WARMUP" \
    --route "$ROUTE" 2>&1)" ||
    { echo "$out"; die "load against $n node(s) failed"; }
  pg1="$(pg_ticks)" nd1="$(pids_ticks "${PIDS[@]}")" t1="$(date +%s.%N)"
  echo "$out"
  json="$(tail -1 <<<"$out")"
  TPUT[$n]="$(python3 -c 'import json,sys; print(round(json.loads(sys.argv[1])["orchestrations_per_s"], 1))' "$json")"
  P50[$n]="$(python3 -c 'import json,sys; print(round(json.loads(sys.argv[1])["p50_ms"], 2))' "$json")"
  P99[$n]="$(python3 -c 'import json,sys; print(round(json.loads(sys.argv[1])["p99_ms"], 2))' "$json")"
  NODE_S[$n]="$(python3 -c "print(round(($nd1 - $nd0) / $TICK, 2))")"
  PG_S[$n]="$(python3 -c "print(round(($pg1 - $pg0) / $TICK, 2))")"
  WALL[$n]="$(python3 -c "print(round($t1 - $t0, 1))")"
  echo "scale: $n node(s): ${TPUT[$n]} orchestrations/s, nodes ${NODE_S[$n]} CPU s, PostgreSQL ${PG_S[$n]} CPU s over ${WALL[$n]} s"
  cleanup
done

echo
echo "| nodes | callers | orchestrations/s | efficiency | p50 ms | p99 ms | node CPU s | PostgreSQL CPU s | PostgreSQL share | run s |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
first="$(set -- $NODES; echo "$1")"
for n in $NODES; do
  python3 - "$n" "$first" "${TPUT[$n]}" "${TPUT[$first]}" "${P50[$n]}" "${P99[$n]}" \
    "${NODE_S[$n]}" "${PG_S[$n]}" "${WALL[$n]}" "$CALLERS_PER_NODE" <<'EOF'
import sys
n, first, t, t1, p50, p99, nd, pg, wall, cpn = sys.argv[1:]
n, first, t, t1, nd, pg = int(n), int(first), float(t), float(t1), float(nd), float(pg)
eff = t / (t1 * n / first) if t1 else 0.0
share = pg / (pg + nd) if pg + nd else 0.0
print(f"| {n} | {int(cpn) * n} | {t:.0f} | {eff:.2f} | {p50} | {p99} | {nd:.1f} | {pg:.1f} | {share:.0%} | {wall} |")
EOF
done

if [ "$FORWARD_REQUESTS" != 0 ]; then
  echo
  taskset -c "$NODE_CPU" "$BIN/perdure-bench" forward-latency --requests "$FORWARD_REQUESTS"
fi
