#!/usr/bin/env bash
# hello-3 driven by the Durable Task Python SDK over gRPC (issue 11): the same closed loop of
# Python clients against one release node on the embedded store (real fsyncs), once with the
# orchestration and its activities on a Python SDK worker (`py_hello3`), once with the
# node's own Rust `HelloSequence` in process. Three processes: the node, the worker, the
# load generator (bench/python_worker.py). Prints one JSON line per run and the medians.
#
# Usage: bench/python_worker.sh            (builds the release node first)
#        SKIP_BUILD=1 bench/python_worker.sh
# Environment: CALLERS (16), SECONDS_PER_RUN (12), WARMUP (3), RUNS (3).
set -euo pipefail
die() { echo "python_worker.sh: $*" >&2; exit 1; }
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
PY="$ROOT/target/python-venv/bin/python"
CALLERS="${CALLERS:-16}" SECONDS_PER_RUN="${SECONDS_PER_RUN:-12}" WARMUP="${WARMUP:-3}" RUNS="${RUNS:-3}"

[ -x "$PY" ] || bash "$ROOT/.ci/python-client.sh"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  (cd "$ROOT" && cargo build --release -p perdure-node)
fi
[ -x "$BIN/perdure-node" ] || die "no release node in $BIN"

DATA="$(mktemp -d)"
GRPC="127.0.0.1:$(free_port)"
HTTP="127.0.0.1:$(free_port)"
NODE_PID="" WORKER_PID=""
cleanup() {
  [ -n "$WORKER_PID" ] && kill "$WORKER_PID" 2>/dev/null || true
  [ -n "$NODE_PID" ] && kill "$NODE_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$DATA"
}
trap cleanup EXIT

"$BIN/perdure-node" dev --data-dir "$DATA/store" --http "$HTTP" --grpc "$GRPC" --log warn \
  > "$DATA/node.log" 2>&1 &
NODE_PID=$!
for _ in $(seq 100); do
  curl -fsS "http://$HTTP/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "http://$HTTP/readyz" >/dev/null || die "the node did not get ready: $(cat "$DATA/node.log")"
"$PY" "$ROOT/bench/python_worker.py" worker "$GRPC" > "$DATA/worker.log" 2>&1 &
WORKER_PID=$!
for _ in $(seq 100); do
  grep -q "worker ready" "$DATA/worker.log" 2>/dev/null && break
  sleep 0.1
done

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_mb() { awk '/VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }
hz="$(getconf CLK_TCK)"

for name in py_hello3 HelloSequence; do
  results=()
  for run in $(seq "$RUNS"); do
    n0="$(ticks "$NODE_PID")" w0="$(ticks "$WORKER_PID")"
    line="$("$PY" "$ROOT/bench/python_worker.py" load "$GRPC" "$name" "$CALLERS" "$SECONDS_PER_RUN" "$WARMUP")"
    n1="$(ticks "$NODE_PID")" w1="$(ticks "$WORKER_PID")"
    total="$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['completed'])" "$line")"
    # CPU over the whole run (warm-up included) per orchestration completed in the measured
    # window: an upper bound.
    extra="$(python3 -c "
import json, sys
d = json.loads(sys.argv[1]); hz = float(sys.argv[2]); n = max(1, d['completed'])
runs = (float(sys.argv[5]) + float(sys.argv[6])) / float(sys.argv[5])
d['node_cpu_us_per_orch'] = round((int(sys.argv[3]) / hz) * 1e6 / (n * runs), 1)
d['worker_cpu_us_per_orch'] = round((int(sys.argv[4]) / hz) * 1e6 / (n * runs), 1)
d['run'] = int(sys.argv[7])
print(json.dumps(d))" "$line" "$hz" "$((n1 - n0))" "$((w1 - w0))" "$SECONDS_PER_RUN" "$WARMUP" "$run")"
    echo "$extra"
    results+=("$extra")
    [ "$total" -gt 0 ] || die "no orchestration completed: $(tail -5 "$DATA/node.log")"
  done
  python3 - "$name" "${results[@]}" <<'EOF'
import json, statistics, sys
name, runs = sys.argv[1], [json.loads(a) for a in sys.argv[2:]]
med = lambda k: statistics.median(r[k] for r in runs if r[k] is not None)
print(json.dumps({"median_of": len(runs), "orchestration": name,
                  "per_second": med("per_second"), "p50_ms": med("p50_ms"),
                  "p99_ms": med("p99_ms"), "failed": sum(r["failed"] for r in runs),
                  "node_cpu_us_per_orch": med("node_cpu_us_per_orch"),
                  "worker_cpu_us_per_orch": med("worker_cpu_us_per_orch")}))
EOF
done
echo "{\"node_rss_mb\": $(rss_mb "$NODE_PID"), \"worker_rss_mb\": $(rss_mb "$WORKER_PID")}"
