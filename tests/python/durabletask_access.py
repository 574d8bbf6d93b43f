"""The Durable Task Python SDK against a Perdure node that requires API keys.

Usage: python durabletask_access.py 127.0.0.1:PORT,READER_KEY,OPERATOR_KEY,ADMIN_KEY

Uses `durabletask.client.TaskHubGrpcClient` and `durabletask.worker.TaskHubGrpcWorker`,
unmodified, passing the key the way the SDK documents: `metadata=[("authorization",
"Bearer <key>")]`. Checks that a call without a key is refused as UNAUTHENTICATED, a start
with a reader's key as PERMISSION_DENIED (and starts nothing), a worker with an operator's
key runs its orchestration, and a purge needs the admin's key. Prints one line per check and
"N passed, 0 failed" at the end; exits non-zero on the first failure.
"""

import sys
import uuid

import grpc
from durabletask import client as dt
from durabletask import task, worker

from checks import check, passed, schedule_when_served


def py_greet(ctx: task.ActivityContext, name: str) -> str:
    return f"Hi {name}"


def py_secured(ctx: task.OrchestrationContext, name: str):
    return (yield ctx.call_activity(py_greet, input=name))


def bearer(key):
    return [("authorization", f"Bearer {key}")]


def code_of(e):
    return e.code() if isinstance(e, grpc.RpcError) else None


def main(arg):
    address, reader, operator, admin = arg.split(",")
    run = uuid.uuid4().hex[:8]

    anonymous = dt.TaskHubGrpcClient(host_address=address)
    try:
        anonymous.get_orchestration_state(f"none-{run}")
        check("a call without a key is refused", False, "answered")
    except grpc.RpcError as e:
        check("a call without a key is refused", code_of(e) == grpc.StatusCode.UNAUTHENTICATED, e)

    wrong = dt.TaskHubGrpcClient(host_address=address, metadata=bearer("pd_wrong_0123456789abc"))
    try:
        wrong.get_orchestration_state(f"none-{run}")
        check("an unknown key is refused", False, "answered")
    except grpc.RpcError as e:
        check("an unknown key is refused", code_of(e) == grpc.StatusCode.UNAUTHENTICATED, e)

    as_reader = dt.TaskHubGrpcClient(host_address=address, metadata=bearer(reader))
    check("a reader reads", as_reader.get_orchestration_state(f"none-{run}") is None)
    try:
        as_reader.schedule_new_orchestration("HelloSequence", instance_id=f"denied-{run}")
        check("a reader cannot start", False, "started")
    except grpc.RpcError as e:
        check("a reader cannot start", code_of(e) == grpc.StatusCode.PERMISSION_DENIED, e)
    check("the refused start started nothing",
          as_reader.get_orchestration_state(f"denied-{run}") is None)

    # A worker with an operator's key serves (a worker without a key is refused: see
    # crates/node/src/grpc/access.rs).
    as_operator = dt.TaskHubGrpcClient(host_address=address, metadata=bearer(operator))
    w = worker.TaskHubGrpcWorker(host_address=address, metadata=bearer(operator))
    w.add_orchestrator(py_secured)
    w.add_activity(py_greet)
    w.start()
    try:
        iid = schedule_when_served(as_operator, py_secured, input="Ada",
                                   instance_id=f"secured-{run}")
        st = as_operator.wait_for_orchestration_completion(iid, timeout=30)
        check("an operator's worker runs its orchestration",
              st is not None and st.get_output() == "Hi Ada",
              st and st.serialized_output)
    finally:
        w.stop()

    try:
        as_operator.purge_orchestration(iid)
        check("an operator cannot purge", False, "purged")
    except grpc.RpcError as e:
        check("an operator cannot purge", code_of(e) == grpc.StatusCode.PERMISSION_DENIED, e)
    as_admin = dt.TaskHubGrpcClient(host_address=address, metadata=bearer(admin))
    purged = as_admin.purge_orchestration(iid)
    check("the admin purges", purged.deleted_instance_count == 1, purged)
    check("the purged instance is gone", as_reader.get_orchestration_state(iid) is None)

    print(f"{passed()} passed, 0 failed", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
