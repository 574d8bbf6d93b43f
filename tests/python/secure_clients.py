"""The official Python clients against a Perdure node that serves TLS and requires API keys.

Usage: python secure_clients.py https://127.0.0.1:PORT GRPC_ADDRESS CA_FILE READER_KEY OPERATOR_KEY

- azure-functions-durable's DurableOrchestrationClient, unmodified, over HTTPS. Its binding's
  URLs carry the key the two ways a client that only takes URLs can: the RPC base URL as
  `https://key:<key>@host/...` (aiohttp sends it as HTTP Basic), the management URLs with
  `?code=<key>` (the Durable Functions convention). The CA is trusted through SSL_CERT_FILE.
- The Durable Task SDK (`durabletask`) over gRPC with TLS (`secure_channel=True`), the key as
  `authorization` metadata; the CA through GRPC_DEFAULT_SSL_ROOTS_FILE_PATH.

Prints one line per check and "N passed, 0 failed" at the end; exits non-zero on the first
failure.
"""

import os
import sys

# Read by OpenSSL (aiohttp, urllib) and by gRPC when their first TLS context is made.
CA = sys.argv[3] if len(sys.argv) > 3 else ""
os.environ["SSL_CERT_FILE"] = CA
os.environ["GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"] = CA

import asyncio  # noqa: E402
import json  # noqa: E402
import ssl  # noqa: E402
import time  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402
import uuid  # noqa: E402

import grpc  # noqa: E402
from azure.durable_functions import DurableOrchestrationClient, OrchestrationRuntimeStatus  # noqa: E402
from durabletask import client as dt  # noqa: E402
from durabletask import task, worker  # noqa: E402

from checks import check, passed, schedule_when_served  # noqa: E402


def make_client(origin, key):
    """A DurableOrchestrationClient whose binding's URLs carry `key` (None: no key)."""
    host = origin.split("://", 1)[1]
    rpc_origin = f"https://key:{key}@{host}" if key else origin
    base = origin.rstrip("/") + "/runtime/webhooks/durabletask"
    code = f"code={key}" if key else ""
    binding = {
        "taskHubName": "PerdureHub",
        "creationUrls": {},
        "managementUrls": {
            "id": "INSTANCEID",
            "statusQueryGetUri": f"{base}/instances/INSTANCEID?{code}",
            "sendEventPostUri": f"{base}/instances/INSTANCEID/raiseEvent/{{eventName}}?{code}",
            "terminatePostUri": f"{base}/instances/INSTANCEID/terminate?reason={{text}}&{code}",
            "rewindPostUri": f"{base}/instances/INSTANCEID/rewind?reason={{text}}&{code}",
            "purgeHistoryDeleteUri": f"{base}/instances/INSTANCEID?{code}",
            "restartPostUri": f"{base}/instances/INSTANCEID/restart?{code}",
            "suspendPostUri": f"{base}/instances/INSTANCEID/suspend?reason={{text}}&{code}",
            "resumePostUri": f"{base}/instances/INSTANCEID/resume?reason={{text}}&{code}",
        },
        "rpcBaseUrl": rpc_origin.rstrip("/") + "/runtime/webhooks/durabletask/",
    }
    return DurableOrchestrationClient(json.dumps(binding), function_invocation_id="perdure-tls")


def get_json(url):
    """GET over HTTPS with the default context (the CA from SSL_CERT_FILE): (status, JSON)."""
    try:
        with urllib.request.urlopen(url, context=ssl.create_default_context(), timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, None


async def durable_functions(origin, reader, operator, run):
    Done = OrchestrationRuntimeStatus
    anonymous = make_client(origin, None)
    try:
        await anonymous.start_new("HelloSequence", f"anon-{run}")
        check("DF client: a start without a key is refused", False, "started")
    except Exception as e:  # the client raises a plain Exception on an unexpected status
        check("DF client: a start without a key is refused", "Unauthorized" in str(e), e)

    as_reader = make_client(origin, reader)
    try:
        await as_reader.start_new("HelloSequence", f"reader-{run}")
        check("DF client: a reader cannot start", False, "started")
    except Exception as e:
        check("DF client: a reader cannot start", "Forbidden" in str(e), e)

    as_operator = make_client(origin, operator)
    iid = await as_operator.start_new("HelloSequence", f"tls-{run}")
    check("DF client: an operator starts over HTTPS", iid == f"tls-{run}", iid)
    deadline = time.monotonic() + 30
    while True:
        st = await as_reader.get_status(iid)
        if st and st.runtime_status == Done.Completed:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"{iid} did not complete: {st.runtime_status if st else st}")
        await asyncio.sleep(0.05)
    check("DF client: a reader reads the output",
          st.output == ["Hello Tokyo!", "Hello Seattle!", "Hello London!"], st.output)

    links = as_operator.get_client_response_links(None, iid)
    status_url = links["statusQueryGetUri"]
    check("DF client: management URLs are https and carry the key",
          status_url.startswith("https://") and f"code={operator}" in status_url, status_url)
    code, body = get_json(status_url)
    check("DF client: its status URL answers", code == 200 and body["runtimeStatus"] == "Completed",
          (code, body))
    code, _ = get_json(status_url.split("?")[0])
    check("the status URL without its code is refused", code == 401, code)


def py_greet(ctx: task.ActivityContext, name: str) -> str:
    return f"Hi {name}"


def py_tls(ctx: task.OrchestrationContext, name: str):
    return (yield ctx.call_activity(py_greet, input=name))


def durable_task(address, reader, operator, run):
    bearer = [("authorization", f"Bearer {operator}")]
    plain = dt.TaskHubGrpcClient(host_address=address, metadata=bearer)
    try:
        plain.get_orchestration_state(f"none-{run}")
        check("gRPC: a plaintext channel gets no answer", False, "answered")
    except grpc.RpcError as e:
        check("gRPC: a plaintext channel gets no answer",
              e.code() == grpc.StatusCode.UNAVAILABLE, e)

    client = dt.TaskHubGrpcClient(host_address=address, metadata=bearer, secure_channel=True)
    check("gRPC over TLS: a call is answered", client.get_orchestration_state(f"none-{run}") is None)
    as_reader = dt.TaskHubGrpcClient(
        host_address=address, metadata=[("authorization", f"Bearer {reader}")], secure_channel=True)
    try:
        as_reader.schedule_new_orchestration("HelloSequence", instance_id=f"denied-{run}")
        check("gRPC over TLS: a reader cannot start", False, "started")
    except grpc.RpcError as e:
        check("gRPC over TLS: a reader cannot start",
              e.code() == grpc.StatusCode.PERMISSION_DENIED, e)

    w = worker.TaskHubGrpcWorker(host_address=address, metadata=bearer, secure_channel=True)
    w.add_orchestrator(py_tls)
    w.add_activity(py_greet)
    w.start()
    try:
        iid = schedule_when_served(client, py_tls, input="Ada", instance_id=f"grpc-tls-{run}")
        st = client.wait_for_orchestration_completion(iid, timeout=30)
        check("gRPC over TLS: a worker runs its orchestration",
              st is not None and st.get_output() == "Hi Ada", st and st.serialized_output)
    finally:
        w.stop()


def main():
    origin, address, _ca, reader, operator = sys.argv[1:6]
    run = uuid.uuid4().hex[:8]
    asyncio.run(durable_functions(origin, reader, operator, run))
    durable_task(address, reader, operator, run)
    print(f"{passed()} passed, 0 failed", flush=True)


if __name__ == "__main__":
    main()
