"""The check helper the project's Python client scripts share: one line per check, exit on the
first failure, a count at the end."""

PASSED = 0


def check(name, cond, detail=""):
    """Prints `ok   name`, or `FAIL name: detail` and exits non-zero."""
    global PASSED
    if not cond:
        print(f"FAIL {name}: {detail}", flush=True)
        raise SystemExit(1)
    PASSED += 1
    print(f"ok   {name}", flush=True)


def passed():
    """How many checks passed so far."""
    return PASSED


def schedule_when_served(client, orchestrator, timeout=30, **kwargs):
    """`client.schedule_new_orchestration(orchestrator, **kwargs)`, tried again every 0.1 s
    for up to `timeout` seconds: a start of a name that no connected worker serves yet is
    refused, and an SDK worker's `start()` returns before its stream is open (or, in a
    cluster, before the other nodes have heard of it)."""
    import time
    deadline = time.time() + timeout
    while True:
        try:
            return client.schedule_new_orchestration(orchestrator, **kwargs)
        except Exception as e:  # grpc.RpcError
            if time.time() > deadline:
                raise SystemExit(f"FAIL no worker took {orchestrator} within {timeout} s: {e}")
            time.sleep(0.1)
