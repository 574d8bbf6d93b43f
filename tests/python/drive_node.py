"""Drives a Perdure node with the official Python Durable Functions client.

Usage: python drive_node.py http://127.0.0.1:PORT  (a perdure-test-node)

Every public method of azure-functions-durable's DurableOrchestrationClient is called
against the node's /runtime/webhooks/durabletask/ routes, with the client's real wire format
(double-encoded JSON bodies, `True` booleans, octet-stream empty POSTs), and its effect is
checked. The node serves the test app (`perdure-test-node`: the sample app plus `FailsOnce`,
whose failure a rewind cures, `Versioned` and `EchoEvent`). Prints one line per check and "N passed, 0 failed" at the end; exits non-zero on the
first failure.
"""

import asyncio
import json
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone

import azure.functions as func
from azure.durable_functions import DurableOrchestrationClient, EntityId, OrchestrationRuntimeStatus

from checks import check, passed

PUBLIC = set()  # the client's public methods
CALLED = set()  # those the run called


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
    client = DurableOrchestrationClient(json.dumps(binding), function_invocation_id="perdure-test")
    # Record every public method called, to check at the end that none was left out (a newer
    # client version with a new method fails the run until the method is covered here).
    for name in dir(client):
        method = getattr(client, name)
        if name.startswith("_") or not callable(method):
            continue
        PUBLIC.add(name)

        def recording(*args, _name=name, _method=method, **kwargs):
            CALLED.add(_name)
            return _method(*args, **kwargs)

        setattr(client, name, recording)
    return client


async def wait_status(client, iid, want, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        st = await client.get_status(iid)
        if st and st.runtime_status in want:
            return st
        if time.monotonic() > deadline:
            raise AssertionError(f"{iid} never reached {want}: {st.runtime_status if st else st}")
        await asyncio.sleep(0.05)


def http(method, url, body=None):
    """A plain HTTP request (not through the client): (status, decoded JSON body or None)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, json.loads(raw) if raw else None


async def raises(coro):
    """The exception text the awaited call raised, or None when it did not raise."""
    try:
        await coro
    except Exception as e:  # noqa: BLE001 - the client raises bare Exceptions
        return str(e)
    return None


async def main(origin):
    client = make_client(origin)
    Done = OrchestrationRuntimeStatus
    base = origin.rstrip("/") + "/runtime/webhooks/durabletask"

    # start_new with no input (empty octet-stream body) and get_status.
    iid = await client.start_new("HelloSequence", "py-hello")
    check("start_new returns the id", iid == "py-hello", iid)
    st = await wait_status(client, iid, {Done.Completed})
    check("get_status output", st.output == ["Hello Tokyo!", "Hello Seattle!", "Hello London!"], st.output)
    check("get_status fields", st.name == "HelloSequence" and st.instance_id == iid and st.created_time is not None, st.to_json())

    # History: results only with show_history_output.
    st = await client.get_status(iid, show_history=True, show_history_output=True)
    done = [e for e in (getattr(st, "historyEvents", None) or []) if e.get("EventType") == "TaskCompleted"]
    check("get_status with history and outputs", [e.get("Result") for e in done] == ["Hello Tokyo!", "Hello Seattle!", "Hello London!"], done)
    st = await client.get_status(iid, show_history=True)
    done = [e for e in (getattr(st, "historyEvents", None) or []) if e.get("EventType") == "TaskCompleted"]
    check("get_status with history, without outputs", len(done) == 3 and all(e.get("Result") is None for e in done), done)
    st = await client.get_status("py-nobody")
    check("get_status unknown is falsy", not st and st.runtime_status is None and st.instance_id is None, vars(st))

    # A generated id.
    gen = await client.start_new("HelloSequence")
    check("start_new generates an id", isinstance(gen, str) and len(gen) > 0, gen)
    st = await wait_status(client, gen, {Done.Completed})
    check("generated id is the instance's", st.instance_id == gen, st.instance_id)

    # A version (`?version=`) is kept on the instance.
    vid = await client.start_new("Versioned", "py-version", None, "2")
    st = await wait_status(client, vid, {Done.Completed})
    check("start_new with a version runs that version", getattr(st, "version", None) == "2" and st.output == "Hello version 2!", vars(st))
    await client.start_new("Versioned", "py-unversioned")
    st = await wait_status(client, "py-unversioned", {Done.Completed})
    check("start_new without a version", getattr(st, "version", None) is None and st.output == "Hello unversioned!", vars(st))

    # Unknown orchestration: a clear exception.
    err = await raises(client.start_new("NoSuchOrchestration"))
    check("start_new unknown raises", err is not None and "NoSuchOrchestration" in err and "HelloSequence" in err, err)

    # Typed input arrives although the client double-encodes it; raise_event likewise.
    await client.start_new("Approval", "py-approval", {"timeoutSeconds": 300})
    st = await wait_status(client, "py-approval", {Done.Running})
    check("double-encoded input is stored as sent (a str)", isinstance(st.input_, str) and json.loads(st.input_) == {"timeoutSeconds": 300}, repr(st.input_))
    # show_input=False sends no showInput at all (the client only adds true flags), so the
    # node's default (true, as in Durable Functions) applies and the input is shown.
    st = await client.get_status("py-approval", show_input=False)
    check("get_status(show_input=False) keeps the node's default", json.loads(st.input_) == {"timeoutSeconds": 300}, repr(st.input_))
    st = await client.get_status("py-approval", show_input=True)
    check("get_status(show_input=True)", json.loads(st.input_) == {"timeoutSeconds": 300}, repr(st.input_))
    await client.raise_event("py-approval", "Approval", True)
    st = await wait_status(client, "py-approval", {Done.Completed})
    check("raise_event reaches the typed orchestration", st.output == "approved", st.output)

    # raise_event on a finished instance (410) or an unknown one (404) raises.
    err = await raises(client.raise_event("py-approval", "Approval", True))
    check("raise_event on finished raises", err is not None and "is gone" in err, err)
    err = await raises(client.raise_event("py-nobody", "Approval", True))
    check("raise_event on unknown raises", err is not None and "No instance" in err, err)

    # raise_event without data: the body is `null` (double-encoded: "null"), which a typed
    # optional event receives as None.
    await client.start_new("EchoEvent", "py-echo-none")
    await wait_status(client, "py-echo-none", {Done.Running})
    await client.raise_event("py-echo-none", "Ping", None)
    st = await wait_status(client, "py-echo-none", {Done.Completed})
    check("raise_event with None data", st.output == "None", st.output)

    # Suspend, resume, terminate.
    await client.start_new("Approval", "py-life", {"timeoutSeconds": 300})
    await wait_status(client, "py-life", {Done.Running})
    await client.suspend("py-life", "hold on")
    st = await wait_status(client, "py-life", {Done.Suspended})
    check("suspend", st.runtime_status == Done.Suspended)
    # An event sent while suspended waits for the resume.
    await client.raise_event("py-life", "Approval", False)
    st = await client.get_status("py-life")
    check("suspended instance holds its events", st.runtime_status == Done.Suspended, st.runtime_status)
    await client.resume("py-life", "carry on")
    st = await wait_status(client, "py-life", {Done.Completed})
    check("resume delivers the held event", st.output == "rejected", st.output)

    await client.start_new("Approval", "py-term", {"timeoutSeconds": 300})
    await wait_status(client, "py-term", {Done.Running})
    await client.terminate("py-term", "enough")
    st = await wait_status(client, "py-term", {Done.Terminated})
    check("terminate", st.runtime_status == Done.Terminated and st.output == "enough", st.to_json())
    # 410 for a finished instance is accepted by terminate, suspend and resume: no change.
    await client.terminate("py-term", "again")
    await client.suspend("py-term", "again")
    await client.resume("py-term", "again")
    st = await client.get_status("py-term")
    check("terminate/suspend/resume of a finished instance change nothing", st.runtime_status == Done.Terminated and st.output == "enough", st.to_json())
    for name, call in [
        ("terminate", client.terminate("py-nobody", "x")),
        ("suspend", client.suspend("py-nobody", "x")),
        ("resume", client.resume("py-nobody", "x")),
        ("restart", client.restart("py-nobody")),
        ("rewind", client.rewind("py-nobody", "x")),
    ]:
        err = await raises(call)
        check(f"{name} unknown raises", err is not None and "py-nobody" in err, err)

    # Rewind: FailsOnce's activity fails on its first call only; the rewind runs it again
    # and the instance completes.
    await client.start_new("FailsOnce", "py-fail")
    st = await wait_status(client, "py-fail", {Done.Failed})
    check("failed instance", st.runtime_status == Done.Failed and "first call fails" in json.dumps(st.output), st.to_json())
    await client.rewind("py-fail", "try again")
    st = await wait_status(client, "py-fail", {Done.Completed})
    check("rewind completes the failed instance", st.output == "Hello before! cured", st.to_json())
    err = await raises(client.rewind("py-fail", "again"))
    check("rewind of a completed instance raises", err is not None and "only supported on failed" in err, err)

    # Double-encoded number input for a typed u64 orchestration.
    await client.start_new("FanOutFanIn", "py-fan", 4)
    st = await wait_status(client, "py-fan", {Done.Completed})
    check("typed number input", st.output == 30, st.output)

    # Restart: the client returns the 202 body (a dict) or the id.
    r = await client.restart("py-hello")
    new_id = r["id"] if isinstance(r, dict) else r
    check("restart with a new id", new_id != "py-hello", r)
    st = await wait_status(client, new_id, {Done.Completed})
    check("restarted instance runs the same orchestration", st.name == "HelloSequence" and st.output == ["Hello Tokyo!", "Hello Seattle!", "Hello London!"], st.to_json())
    first = getattr(await client.get_status("py-hello"), "executionId", None)
    r = await client.restart("py-hello", restart_with_new_instance_id=False)
    same = r["id"] if isinstance(r, dict) else r
    check("restart with the same id", same == "py-hello", r)
    st = await wait_status(client, "py-hello", {Done.Completed})
    again = getattr(st, "executionId", None)
    check("restart with the same id runs a new execution", first is not None and again is not None and again != first, (first, again))

    # Queries.
    all_st = await client.get_status_all()
    ids = {s.instance_id for s in all_st}
    check("get_status_all", {"py-hello", "py-approval", "py-life", new_id} <= ids, ids)
    since = datetime.now(timezone.utc) - timedelta(hours=1)
    by = await client.get_status_by(created_time_from=since, runtime_status=[Done.Terminated])
    check("get_status_by status", [s.instance_id for s in by] == ["py-term"], [s.instance_id for s in by])
    by = await client.get_status_by(created_time_from=since, created_time_to=datetime.now(timezone.utc) + timedelta(minutes=5), runtime_status=[Done.Completed, Done.Failed])
    check("get_status_by several statuses", {"py-fan", "py-fail"} <= {s.instance_id for s in by} and all(s.runtime_status in (Done.Completed, Done.Failed) for s in by))
    by = await client.get_status_by(created_time_to=since)
    check("get_status_by created_time_to in the past", by == [], [s.instance_id for s in by])
    by = await client.get_status_by(instance_id_prefix="py-echo")
    check("get_status_by instance_id_prefix", [s.instance_id for s in by] == ["py-echo-none"], [s.instance_id for s in by])

    # wait_for_completion_or_create_check_status_response and create_check_status_response.
    req = func.HttpRequest(method="GET", url=origin + "/api/orchestrators/HelloSequence", body=b"")
    resp = await client.wait_for_completion_or_create_check_status_response(req, "py-fan", timeout_in_milliseconds=5000)
    check("wait_for_completion (completed)", resp.status_code == 200 and json.loads(resp.get_body()) == 30, resp.get_body())
    resp = await client.wait_for_completion_or_create_check_status_response(req, "py-term", timeout_in_milliseconds=5000)
    check("wait_for_completion (terminated -> 200 + status)", resp.status_code == 200 and json.loads(resp.get_body())["runtimeStatus"] == "Terminated", resp.get_body())
    await client.start_new("Approval", "py-wait", {"timeoutSeconds": 300})
    resp = await client.wait_for_completion_or_create_check_status_response(req, "py-wait", timeout_in_milliseconds=600, retry_interval_in_milliseconds=200)
    check("wait_for_completion (timeout -> 202)", resp.status_code == 202 and resp.headers.get("Location", "").endswith("/instances/py-wait?taskHub=PerdureHub&connection=Storage"), (resp.status_code, dict(resp.headers)))
    resp = client.create_check_status_response(req, "py-wait")
    body = json.loads(resp.get_body())
    code, status = http("GET", resp.headers["Location"])
    check("create_check_status_response (Location works)", resp.status_code == 202 and body["id"] == "py-wait" and code == 202 and status["instanceId"] == "py-wait", (body, code, status))

    # Management URLs: the same routes as the node's own 202 payload, and they work.
    code, node_payload = http("POST", f"{base}/orchestrators/EchoEvent/py-links")
    check("node start payload", code == 202 and node_payload["id"] == "py-links", node_payload)
    links = client.create_http_management_payload("py-links")
    same_routes = all(links[k].split("?")[0] == node_payload[k].split("?")[0] for k in node_payload)
    check("create_http_management_payload matches the node's payload", set(links) == set(node_payload) and same_routes, (links, node_payload))
    code, status = http("GET", links["statusQueryGetUri"])
    check("statusQueryGetUri works", code == 202 and status["instanceId"] == "py-links", (code, status))
    code, _ = http("POST", links["sendEventPostUri"].replace("{eventName}", "Ping"), True)
    check("sendEventPostUri works", code == 202, code)
    st = await wait_status(client, "py-links", {Done.Completed})
    check("the event sent through the link arrived", st.output == "Some(true)", st.output)
    code, r = http("DELETE", links["purgeHistoryDeleteUri"])
    check("purgeHistoryDeleteUri works", code == 200 and r["instancesDeleted"] == 1, (code, r))
    terminate_link = client.create_http_management_payload("py-wait")["terminatePostUri"]
    code, r = http("POST", terminate_link.replace("{text}", "via%20link"))
    check("terminatePostUri works", code == 202, (code, r))
    st = await wait_status(client, "py-wait", {Done.Terminated})
    check("terminated through the link", st.output == "via link", st.output)
    # With a request, the links take the request's origin (the node behind another host name).
    foreign = func.HttpRequest(method="GET", url="http://functions.example:7071/api/start", body=b"")
    links = client.get_client_response_links(foreign, "py-wait")
    check("get_client_response_links uses the request origin", all(v.startswith("http://functions.example:7071/runtime/webhooks/durabletask/instances/py-wait") for k, v in links.items() if k != "id") and links["id"] == "py-wait", links)
    local = func.HttpRequest(method="GET", url=origin + "/api/start", body=b"")
    links = client.get_client_response_links(local, "py-wait")
    code, status = http("GET", links["statusQueryGetUri"])
    check("get_client_response_links status link works", code == 200 and status["runtimeStatus"] == "Terminated", (code, status))

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
    check("read_entity_state unknown", not r.entity_exists and r.entity_state is None, vars(r))
    # An operation without input (no body): `reset` sets the state to 0.
    await client.signal_entity(counter, "reset")
    for _ in range(200):
        r = await client.read_entity_state(counter)
        if r.entity_state == 0:
            break
        await asyncio.sleep(0.05)
    check("signal_entity without input", r.entity_exists and r.entity_state == 0, vars(r))

    # Purge one, then by filter.
    r = await client.purge_instance_history("py-fail")
    check("purge_instance_history", r.instances_deleted == 1, r.instances_deleted)
    st = await client.get_status("py-fail")
    check("purged instance is gone", not st, vars(st))
    r = await client.purge_instance_history("py-fail")
    check("purge_instance_history unknown", r.instances_deleted == 0, r.instances_deleted)
    err = await raises(client.purge_instance_history_by())
    check("purge_instance_history_by needs created_time_from", err is not None and "created_time_from" in err, err)
    await client.start_new("Approval", "py-keep", {"timeoutSeconds": 300})
    before = {s.instance_id for s in await client.get_status_by(created_time_from=since, runtime_status=[Done.Completed, Done.Terminated])}
    r = await client.purge_instance_history_by(created_time_from=since, runtime_status=[Done.Completed, Done.Terminated])
    check("purge_instance_history_by", r.instances_deleted == len(before) and len(before) >= 5, (r.instances_deleted, before))
    left = {s.instance_id for s in await client.get_status_all()}
    check("purge_instance_history_by leaves the others", not (left & before) and "py-keep" in left, left)
    await client.terminate("py-keep", "done")

    check("every public method was called", PUBLIC and not (PUBLIC - CALLED), sorted(PUBLIC - CALLED))

    try:  # the client keeps a module-global aiohttp session; close it before the loop ends
        from azure.durable_functions.models.utils import http_utils
        await http_utils._close_session()
    except Exception:  # noqa: BLE001 - older or newer client layouts
        pass
    print(f"python client: {passed()} passed, 0 failed", flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: drive_node.py http://127.0.0.1:PORT", file=sys.stderr)
        raise SystemExit(2)
    asyncio.run(main(sys.argv[1]))
