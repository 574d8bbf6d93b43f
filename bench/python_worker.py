"""hello-3 over the Durable Task gRPC protocol, with the Python SDK (`durabletask`, unmodified).

Two roles, each its own process (bench/python_worker.sh starts them):

  python_worker.py worker ADDR
      A `TaskHubGrpcWorker` serving `py_hello3` (three activities in sequence) and `py_say_hello`.
  python_worker.py load ADDR NAME CALLERS SECONDS WARMUP
      A closed loop: CALLERS threads, each starts orchestration NAME with a
      `TaskHubGrpcClient`, waits for its completion, and starts the next. Prints one JSON line:
      completed, failed, throughput over the measured SECONDS (after WARMUP), latency
      percentiles of start-to-completion in milliseconds.

NAME `py_hello3` runs on the Python worker; NAME `HelloSequence` is the node's own Rust
orchestration (the same shape), so both go through the same client path.
"""

import json
import logging
import sys
import threading
import time
import uuid

from durabletask import client as dt
from durabletask import task, worker


def py_say_hello(ctx: task.ActivityContext, city: str) -> str:
    return f"Hello {city}!"


def py_hello3(ctx: task.OrchestrationContext, _):
    out = []
    for city in ("Tokyo", "Seattle", "London"):
        out.append((yield ctx.call_activity(py_say_hello, input=city)))
    return out


def run_worker(addr):
    log = logging.getLogger("bench-worker")
    log.addHandler(logging.StreamHandler())
    log.setLevel(logging.WARNING)
    w = worker.TaskHubGrpcWorker(host_address=addr, logger=log)
    w.add_orchestrator(py_hello3)
    w.add_activity(py_say_hello)
    w.start()
    print("worker ready", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        w.stop()


def percentile(sorted_ms, p):
    if not sorted_ms:
        return None
    i = min(len(sorted_ms) - 1, int(round(p / 100.0 * (len(sorted_ms) - 1))))
    return round(sorted_ms[i], 2)


def run_load(addr, name, callers, seconds, warmup):
    quiet = logging.getLogger("bench-client")
    quiet.addHandler(logging.NullHandler())
    quiet.setLevel(logging.ERROR)
    quiet.propagate = False
    start = time.monotonic()
    measure_from = start + warmup
    stop_at = measure_from + seconds
    lock = threading.Lock()
    latencies = []
    counts = {"completed": 0, "failed": 0}

    def caller():
        c = dt.TaskHubGrpcClient(host_address=addr, logger=quiet)
        while True:
            began = time.monotonic()
            if began >= stop_at:
                return
            iid = uuid.uuid4().hex
            try:
                c.schedule_new_orchestration(name, instance_id=iid)
                st = c.wait_for_orchestration_completion(iid, timeout=60)
                ok = st is not None and st.runtime_status == dt.OrchestrationStatus.COMPLETED
            except Exception:
                ok = False
            ended = time.monotonic()
            if began >= measure_from and ended <= stop_at:
                with lock:
                    counts["completed" if ok else "failed"] += 1
                    if ok:
                        latencies.append((ended - began) * 1000.0)

    threads = [threading.Thread(target=caller, daemon=True) for _ in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    latencies.sort()
    print(json.dumps({
        "orchestration": name,
        "callers": callers,
        "seconds": seconds,
        "completed": counts["completed"],
        "failed": counts["failed"],
        "per_second": round(counts["completed"] / seconds, 1),
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "p99_ms": percentile(latencies, 99),
    }), flush=True)


if __name__ == "__main__":
    role, addr = sys.argv[1], sys.argv[2]
    if role == "worker":
        run_worker(addr)
    else:
        run_load(addr, sys.argv[3], int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6]))
