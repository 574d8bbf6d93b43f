"""Drives a Perdure node with the official Python Durable Functions client.

Usage: python drive_node.py http://127.0.0.1:PORT

Every method of azure-functions-durable's DurableOrchestrationClient that talks to the
HTTP API is called against the node's /runtime/webhooks/durabletask/ routes, with the
client's real wire format (double-encoded JSON bodies, `True` booleans, octet-stream empty
POSTs). Prints one line per check and "N passed, 0 failed" at the end; exits non-zero on the
first failure.
"""

import asyncio
import json
import sys
import time
from datetime import datetime, timedelta, timezone

import azure.functions as func
from azure.durable_functions import DurableOrchestrationClient, EntityId, OrchestrationRuntimeStatus

PASSED = 0


def check(name, cond, detail=""):
    global PASSED
    if not cond:
        print(f"FAIL {name}: {detail}", flush=True)
        raise SystemExit(1)
    PASSED += 1
    print(f"ok   {name}", flush=True)


def make_client(origin):
    base = origin.rstrip("/") + "/runtime/webhooks/durabletask"
    binding = {
        "taskHubName": "PerdureHub",
        "creationUrls": {},
        "managementUrls": {
            "id": "INSTANCEID",
            "statusQueryGetUri": f"{base}/instances/INSTANCEID?taskHub=PerdureHub&connection=Storage",
            "sendEventPostUri": f"{base}/instances/INSTANCEID/raiseEvent/{{eventName}}",
            "terminatePostUri": f"{base}/instances/INSTANCEID/terminate?reason={{text}}",
            "rewindPostUri": f"{base}/instances/INSTANCEID/rewind?reason={{text}}",
            "purgeHistoryDeleteUri": f"{base}/instances/INSTANCEID",
            "restartPostUri": f"{base}/instances/INSTANCEID/restart",
            "suspendPostUri": f"{base}/instances/INSTANCEID/suspend?reason={{text}}",
            "resumePostUri": f"{base}/instances/INSTANCEID/resume?reason={{text}}",
        },
        "rpcBaseUrl": base + "/",
    }
    return DurableOrchestrationClient(json.dumps(binding), function_invocation_id="perdure-test")


async def wait_status(client, iid, want, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        st = await client.get_status(iid)
        if st and st.runtime_status in want:
            return st
        if time.monotonic() > deadline:
            raise AssertionError(f"{iid} never reached {want}: {st.runtime_status if st else st}")
        await asyncio.sleep(0.05)


async def main(origin):
    client = make_client(origin)
    Done = OrchestrationRuntimeStatus

    # start_new with no input (empty octet-stream body) and get_status.
    iid = await client.start_new("HelloSequence", "py-hello")
    check("start_new returns the id", iid == "py-hello", iid)
    st = await wait_status(client, iid, {Done.Completed})
    check("get_status output", st.output == ["Hello Tokyo!", "Hello Seattle!", "Hello London!"], st.output)
    check("get_status fields", st.name == "HelloSequence" and st.instance_id == iid and st.created_time is not None, st.to_json())

    st = await client.get_status(iid, show_history=True, show_history_output=True)
    events = getattr(st, "historyEvents", None) or []
    check("get_status with history", any(e.get("EventType") == "TaskCompleted" for e in events), events)

    # A generated id.
    gen = await client.start_new("HelloSequence")
    check("start_new generates an id", isinstance(gen, str) and len(gen) > 0, gen)

    # Unknown orchestration: a clear exception.
    try:
        await client.start_new("NoSuchOrchestration")
        check("start_new unknown raises", False)
    except Exception as e:  # noqa: BLE001 - the client raises a bare Exception
        check("start_new unknown raises", "NoSuchOrchestration" in str(e) and "HelloSequence" in str(e), str(e))

    # Typed input arrives although the client double-encodes it; raise_event likewise.
    await client.start_new("Approval", "py-approval", {"timeoutSeconds": 300})
    st = await wait_status(client, "py-approval", {Done.Running})
    check("double-encoded input is stored as sent (a str)", isinstance(st.input_, str) and json.loads(st.input_) == {"timeoutSeconds": 300}, repr(st.input_))
    await client.raise_event("py-approval", "Approval", True)
    st = await wait_status(client, "py-approval", {Done.Completed})
    check("raise_event reaches the typed orchestration", st.output == "approved", st.output)

    # raise_event on a finished instance raises.
    try:
        await client.raise_event("py-approval", "Approval", True)
        check("raise_event on finished raises", False)
    except Exception as e:  # noqa: BLE001
        check("raise_event on finished raises", True, str(e))

    # Suspend, resume, terminate.
    await client.start_new("Approval", "py-life", {"timeoutSeconds": 300})
    await wait_status(client, "py-life", {Done.Running})
    await client.suspend("py-life", "hold on")
    await wait_status(client, "py-life", {Done.Suspended})
    check("suspend", True)
    await client.resume("py-life", "carry on")
    await wait_status(client, "py-life", {Done.Running})
    check("resume", True)
    await client.terminate("py-life", "enough")
    st = await wait_status(client, "py-life", {Done.Terminated})
    check("terminate", st.runtime_status == Done.Terminated)
    # 410 for a finished instance is fine for terminate.
    await client.terminate("py-life", "again")
    check("terminate finished is accepted (410)", True)
    try:
        await client.terminate("py-nobody", "x")
        check("terminate unknown raises", False)
    except Exception as e:  # noqa: BLE001
        check("terminate unknown raises", "py-nobody" in str(e), str(e))

    # Rewind a failed instance (FanOutFanIn wants a number).
    await client.start_new("FanOutFanIn", "py-fail", "not a number")
    st = await wait_status(client, "py-fail", {Done.Failed})
    check("failed instance", st.runtime_status == Done.Failed)
    await client.rewind("py-fail", "try again")
    check("rewind", True)

    # Double-encoded number input for a typed u64 orchestration.
    await client.start_new("FanOutFanIn", "py-fan", 4)
    st = await wait_status(client, "py-fan", {Done.Completed})
    check("typed number input", st.output == 30, st.output)

    # Restart: the client returns the 202 body (a dict) or the id.
    r = await client.restart("py-hello")
    new_id = r["id"] if isinstance(r, dict) else r
    check("restart with a new id", new_id != "py-hello", r)
    await wait_status(client, new_id, {Done.Completed})
    r = await client.restart("py-hello", restart_with_new_instance_id=False)
    same = r["id"] if isinstance(r, dict) else r
    check("restart with the same id", same == "py-hello", r)
    await wait_status(client, "py-hello", {Done.Completed})

    # Queries.
    all_st = await client.get_status_all()
    ids = {s.instance_id for s in all_st}
    check("get_status_all", {"py-hello", "py-approval", "py-life"} <= ids, ids)
    since = datetime.now(timezone.utc) - timedelta(hours=1)
    by = await client.get_status_by(created_time_from=since, runtime_status=[Done.Terminated])
    check("get_status_by status", [s.instance_id for s in by] == ["py-life"], [s.instance_id for s in by])
    by = await client.get_status_by(created_time_from=since, created_time_to=datetime.now(timezone.utc) + timedelta(minutes=5), runtime_status=[Done.Completed, Done.Failed])
    check("get_status_by several statuses", "py-fan" in {s.instance_id for s in by})

    # wait_for_completion_or_create_check_status_response and create_check_status_response.
    req = func.HttpRequest(method="GET", url=origin + "/api/orchestrators/HelloSequence", body=b"")
    resp = await client.wait_for_completion_or_create_check_status_response(req, "py-fan", timeout_in_milliseconds=5000)
    check("wait_for_completion (completed)", resp.status_code == 200 and json.loads(resp.get_body()) == 30, resp.get_body())
    await client.start_new("Approval", "py-wait", {"timeoutSeconds": 300})
    resp = await client.wait_for_completion_or_create_check_status_response(req, "py-wait", timeout_in_milliseconds=600, retry_interval_in_milliseconds=200)
    check("wait_for_completion (timeout -> 202)", resp.status_code == 202 and "Location" in resp.headers, resp.status_code)
    resp = client.create_check_status_response(req, "py-wait")
    body = json.loads(resp.get_body())
    check("create_check_status_response", resp.status_code == 202 and body["id"] == "py-wait", body)
    await client.terminate("py-wait", "done")

    # Entities.
    counter = EntityId("Counter", "py")
    await client.signal_entity(counter, "add", 5)
    await client.signal_entity(counter, "add", 2)
    state = None
    for _ in range(200):
        r = await client.read_entity_state(counter)
        if r.entity_exists and r.entity_state == 7:
            state = r.entity_state
            break
        await asyncio.sleep(0.05)
    check("signal_entity + read_entity_state", state == 7, state)
    r = await client.read_entity_state(EntityId("Counter", "nobody"))
    check("read_entity_state unknown", not r.entity_exists)
    await client.signal_entity(counter, "reset")
    check("signal_entity without input", True)

    # Purge one, then by filter.
    r = await client.purge_instance_history("py-fail")
    check("purge_instance_history", r.instances_deleted == 1, r.instances_deleted)
    r = await client.purge_instance_history("py-fail")
    check("purge_instance_history unknown", r.instances_deleted == 0, r.instances_deleted)
    r = await client.purge_instance_history_by(created_time_from=since, runtime_status=[Done.Completed, Done.Terminated])
    check("purge_instance_history_by", r.instances_deleted >= 5, r.instances_deleted)
    st = await client.get_status("py-hello")
    check("purged instance is gone", not st, st)

    try:  # the client keeps a module-global aiohttp session; close it before the loop ends
        from azure.durable_functions.models.utils import http_utils
        await http_utils._close_session()
    except Exception:  # noqa: BLE001 - older or newer client layouts
        pass
    print(f"python client: {PASSED} passed, 0 failed", flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: drive_node.py http://127.0.0.1:PORT", file=sys.stderr)
        raise SystemExit(2)
    asyncio.run(main(sys.argv[1]))
