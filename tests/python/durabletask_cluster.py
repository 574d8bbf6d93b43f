"""A Durable Task Python SDK worker connected to one node of a two-node cluster, its client to
the other: the work items of the partitions the worker's node does not own reach the worker
through that node.

Usage: python durabletask_cluster.py GRPC_1 GRPC_2  (two cluster nodes serving gRPC)

Phase 1: the worker connects to node 1 only; the client, connected to node 2, starts
orchestrations (three activities each) and signals entities, spread over both nodes'
partitions. Phase 2: that worker stops and another connects to node 2 only; the client, now
on node 1, does the same again. Every orchestration must complete with the outputs its
activities computed, every entity must reach its state. The caller checks each node's
metrics for work items served for the other. Prints one line per check and "N passed, 0
failed" at the end; exits non-zero on the first failure.
"""

import logging
import sys
import time

from durabletask import client as dt
from durabletask import entities, task, worker
from durabletask.entities import EntityInstanceId

from checks import check, passed, schedule_when_served


def cl_hello(ctx: task.ActivityContext, name: str) -> str:
    return f"Hello {name}!"


def cl_sequence(ctx: task.OrchestrationContext, n: int):
    out = []
    for i in range(3):
        out.append((yield ctx.call_activity(cl_hello, input=f"{n}.{i}")))
    return out


def cl_tally(ctx: entities.EntityContext, value):
    state = ctx.get_state(int, 0)
    if ctx.operation == "add":
        state += value
        ctx.set_state(state)
    return state


def start_worker(address):
    log = logging.getLogger(f"perdure-cluster-worker-{address}")
    log.addHandler(logging.StreamHandler())
    log.setLevel(logging.WARNING)
    w = worker.TaskHubGrpcWorker(host_address=address, logger=log)
    w.add_orchestrator(cl_sequence)
    w.add_activity(cl_hello)
    w.add_entity(cl_tally)
    w.start()
    return w


def entity_state(c, eid):
    md = c.get_entity(eid, include_state=True)
    return md.get_state(int) if md is not None else None


def phase(tag, worker_address, client_address, reader_address):
    w = start_worker(worker_address)
    try:
        c = dt.TaskHubGrpcClient(host_address=client_address)
        ids = [schedule_when_served(c, cl_sequence, input=i, instance_id=f"{tag}-{i}")
               for i in range(12)]
        for i, iid in enumerate(ids):
            st = c.wait_for_orchestration_completion(iid, timeout=60)
            want = [f"Hello {i}.{k}!" for k in range(3)]
            check(f"{tag}: {iid} completes through the other node",
                  st is not None and st.runtime_status == dt.OrchestrationStatus.COMPLETED
                  and st.get_output() == want,
                  st and (st.runtime_status, st.serialized_output, st.failure_details))
        keys = [EntityInstanceId("cl_tally", f"{tag}-{k}") for k in range(6)]
        for k, eid in enumerate(keys):
            c.signal_entity(eid, "add", k + 1)
            c.signal_entity(eid, "add", 10)
        reader = dt.TaskHubGrpcClient(host_address=reader_address)
        for k, eid in enumerate(keys):
            deadline = time.time() + 30
            while entity_state(reader, eid) != k + 11 and time.time() < deadline:
                time.sleep(0.05)
            got = entity_state(reader, eid)
            check(f"{tag}: entity {eid} reaches its state", got == k + 11, got)
    finally:
        w.stop()


def main(first, second):
    phase("one", first, second, first)
    phase("two", second, first, second)
    print(f"{passed()} passed, 0 failed", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
