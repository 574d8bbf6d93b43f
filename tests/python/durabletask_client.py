"""Drives a Perdure node's gRPC listener with the Durable Task Python SDK's client.

Usage: python durabletask_client.py 127.0.0.1:PORT  (a `perdure-node dev --grpc ...`)

Uses `durabletask.client.TaskHubGrpcClient`, unmodified, against the node's sample app:
schedules HelloSequence and waits for its output; starts Approval instances and raises the
`Approval` event, suspends, resumes and terminates them; queries, purges, signals and reads the
Counter entity. Prints one line per check and "N passed, 0 failed" at the end; exits non-zero
on the first failure.
"""

import sys
import time
import uuid

from durabletask import client as dt
from durabletask.entities import EntityInstanceId

from checks import check, passed


def main(address):
    c = dt.TaskHubGrpcClient(host_address=address)
    run = uuid.uuid4().hex[:8]

    # Chaining: schedule, wait, read the output.
    hello = c.schedule_new_orchestration("HelloSequence", instance_id=f"hello-{run}")
    check("schedule returns the id", hello == f"hello-{run}", hello)
    st = c.wait_for_orchestration_completion(hello, timeout=60)
    check("hello completes", st is not None and st.runtime_status == dt.OrchestrationStatus.COMPLETED,
          st)
    check("hello output", st.get_output() == ["Hello Tokyo!", "Hello Seattle!", "Hello London!"],
          st.serialized_output)
    st = c.get_orchestration_state(hello, fetch_payloads=False)
    check("state without payloads", st is not None and st.serialized_output is None, st)
    check("unknown instance is None", c.get_orchestration_state(f"nobody-{run}") is None)
    history = c.get_orchestration_history(hello)
    kinds = [type(e).__name__ for e in history]
    check("history streams", kinds[:2] == ["OrchestratorStartedEvent", "ExecutionStartedEvent"]
          and kinds.count("TaskScheduledEvent") == 3 and kinds.count("TaskCompletedEvent") == 3,
          kinds)

    # Human interaction: an event approves.
    approval = c.schedule_new_orchestration("Approval", input={"timeoutSeconds": 300},
                                            instance_id=f"approval-{run}")
    st = c.wait_for_orchestration_start(approval, timeout=60)
    check("approval started", st is not None and st.runtime_status in (
        dt.OrchestrationStatus.RUNNING, dt.OrchestrationStatus.COMPLETED), st)
    c.suspend_orchestration(approval)
    st = c.get_orchestration_state(approval)
    check("suspended", st.runtime_status == dt.OrchestrationStatus.SUSPENDED, st)
    try:
        c.wait_for_orchestration_completion(approval, timeout=1)
        check("a suspended instance does not complete", False)
    except TimeoutError:
        check("wait times out while suspended", True)
    c.resume_orchestration(approval)
    st = c.get_orchestration_state(approval)
    check("resumed", st.runtime_status == dt.OrchestrationStatus.RUNNING, st)
    c.raise_orchestration_event(approval, "Approval", data=True)
    st = c.wait_for_orchestration_completion(approval, timeout=60)
    check("approved", st.runtime_status == dt.OrchestrationStatus.COMPLETED
          and st.get_output() == "approved", st)

    # Terminate with an output.
    doomed = c.schedule_new_orchestration("Approval", input={"timeoutSeconds": 300},
                                          instance_id=f"doomed-{run}")
    c.wait_for_orchestration_start(doomed, timeout=60)
    c.terminate_orchestration(doomed, output="no longer needed")
    st = c.wait_for_orchestration_completion(doomed, timeout=60)
    check("terminated", st.runtime_status == dt.OrchestrationStatus.TERMINATED, st)
    check("termination output", st.get_output() == "no longer needed", st.serialized_output)

    # Query.
    states = c.get_all_orchestration_states(dt.OrchestrationQuery(
        runtime_status=[dt.OrchestrationStatus.COMPLETED, dt.OrchestrationStatus.TERMINATED],
        fetch_inputs_and_outputs=True))
    ids = {s.instance_id for s in states}
    check("query finds the finished instances", {hello, approval, doomed} <= ids, ids)

    # Purge one, then by filter.
    r = c.purge_orchestration(hello)
    check("purge by id", r.deleted_instance_count == 1, r)
    check("purged is gone", c.get_orchestration_state(hello) is None)
    r = c.purge_orchestrations_by(runtime_status=[dt.OrchestrationStatus.TERMINATED])
    check("purge by filter", r.deleted_instance_count >= 1, r)
    check("terminated one is gone", c.get_orchestration_state(doomed) is None)

    # Entities: signal the Counter, read it back.
    counter = EntityInstanceId("Counter", f"c-{run}")
    c.signal_entity(counter, "add", input=5)
    c.signal_entity(counter, "add", input=2)
    deadline = time.monotonic() + 60
    meta = None
    while time.monotonic() < deadline:
        meta = c.get_entity(counter, include_state=True)
        if meta is not None and meta.get_state(int) == 7:
            break
        time.sleep(0.05)
    check("entity state after two signals", meta is not None and meta.get_state(int) == 7, meta)
    entities = c.get_all_entities(dt.EntityQuery(instance_id_starts_with="@counter@",
                                                 include_state=True))
    check("entity query", any(str(e.id) == str(counter).lower() or
                              e.id.key == f"c-{run}" for e in entities),
          [str(e.id) for e in entities])

    c.close()
    print(f"{passed()} passed, 0 failed", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
