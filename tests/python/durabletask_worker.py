"""Runs orchestrations and activities of the Durable Task Python SDK as a worker of a Perdure node.

Usage: python durabletask_worker.py 127.0.0.1:PORT  (a `perdure-node dev --grpc ...`)

Uses `durabletask.worker.TaskHubGrpcWorker` and `durabletask.client.TaskHubGrpcClient`,
unmodified. The worker registers Python orchestrators and activities the node does not have;
the node hands them out as work items over `GetWorkItems` and records what the worker
answers. Checks chaining, fan-out/fan-in, a durable timer, an external event, a
sub-orchestration, continue-as-new, custom status, an activity failure caught and one not
caught, a Python orchestrator calling the node's own Rust activity (`SayHello`), and that a
start of a name nobody serves is refused. Prints one line per check and "N passed, 0 failed"
at the end; exits non-zero on the first failure.
"""

import logging
import sys
import time
import uuid
from datetime import timedelta

from durabletask import client as dt
from durabletask import entities, task, worker
from durabletask.entities import EntityInstanceId

from checks import check, passed, schedule_when_served


class _DropExpectedFailure(logging.Filter):
    """The SDK logs an entity operation's exception with its traceback; the one this script
    raises on purpose is dropped, so any other traceback still fails the run."""

    def filter(self, record):
        return "refused" not in record.getMessage() and not (
            record.exc_info and "refused" in str(record.exc_info[1]))


def py_hello(ctx: task.ActivityContext, city: str) -> str:
    return f"Bonjour {city}!"


def py_double(ctx: task.ActivityContext, n: int) -> int:
    return n * 2


def py_fail(ctx: task.ActivityContext, why: str) -> str:
    raise ValueError(why)


FLAKY = {}


def py_flaky(ctx: task.ActivityContext, key: str) -> str:
    """Fails the first two attempts for each key (the worker's process counts them)."""
    FLAKY[key] = FLAKY.get(key, 0) + 1
    if FLAKY[key] <= 2:
        raise RuntimeError(f"attempt {FLAKY[key]} of {key} fails")
    return f"{key} on attempt {FLAKY[key]}"


def py_retries(ctx: task.OrchestrationContext, key: str):
    policy = task.RetryPolicy(first_retry_interval=timedelta(milliseconds=20),
                              max_number_of_attempts=5)
    return (yield ctx.call_activity(py_flaky, input=key, retry_policy=policy))


def py_no_retry(ctx: task.OrchestrationContext, key: str):
    return (yield ctx.call_activity(py_flaky, input=key))


def py_race(ctx: task.OrchestrationContext, _):
    timer = ctx.create_timer(timedelta(seconds=60))
    event = ctx.wait_for_external_event("go")
    winner = yield task.when_any([timer, event])
    return "event" if winner == event else "timer"


def py_chain(ctx: task.OrchestrationContext, _):
    out = []
    for city in ["Paris", "Lyon", "Nice"]:
        out.append((yield ctx.call_activity(py_hello, input=city)))
    return out


def py_fan_out(ctx: task.OrchestrationContext, n: int):
    results = yield task.when_all([ctx.call_activity(py_double, input=i) for i in range(n)])
    return sum(results)


def py_wait(ctx: task.OrchestrationContext, _):
    ctx.set_custom_status("waiting")
    yield ctx.create_timer(timedelta(milliseconds=200))
    approved = yield ctx.wait_for_external_event("approve")
    ctx.set_custom_status("done")
    return {"approved": approved}


def py_child(ctx: task.OrchestrationContext, x: int):
    y = yield ctx.call_activity(py_double, input=x)
    return y + 1


def py_parent(ctx: task.OrchestrationContext, x: int):
    a = yield ctx.call_sub_orchestrator(py_child, input=x)
    b = yield ctx.call_sub_orchestrator(py_child, input=a)
    return [a, b]


def py_counter(ctx: task.OrchestrationContext, n: int):
    if n < 3:
        yield ctx.create_timer(timedelta(milliseconds=1))
        ctx.continue_as_new(n + 1)
        return None
    return n


def py_catches(ctx: task.OrchestrationContext, _):
    try:
        yield ctx.call_activity(py_fail, input="expected")
        return "not caught"
    except task.TaskFailedError as e:
        return f"caught: {e.details.message}"


def py_fails(ctx: task.OrchestrationContext, _):
    yield ctx.call_activity(py_fail, input="boom")
    return "unreachable"


def py_calls_rust(ctx: task.OrchestrationContext, city: str):
    greeting = yield ctx.call_activity("SayHello", input=city)
    return greeting


def py_tally(ctx: entities.EntityContext, value):
    state = ctx.get_state(int, 0)
    if ctx.operation == "add":
        state += value
        ctx.set_state(state)
        if state >= 10:
            # An entity signals another entity.
            ctx.signal_entity(EntityInstanceId("py_tally", ctx.entity_id.key + "-over"), "add", 1)
        return state
    if ctx.operation == "fail":
        ctx.set_state(-1000)
        raise ValueError("refused")
    return state


def py_signals(ctx: task.OrchestrationContext, key: str):
    ctx.signal_entity(EntityInstanceId("py_tally", key), "add", 5)
    return "signalled"


def wait_state(c, entity_id, want, timeout=30):
    deadline = time.time() + timeout
    while True:
        md = c.get_entity(entity_id, include_state=True)
        got = md.get_state(int) if md is not None else None
        if got == want:
            return got
        if time.time() > deadline:
            raise SystemExit(f"FAIL entity {entity_id} state {got}, wanted {want}")
        time.sleep(0.05)


def wait_until(c, iid, pred, timeout=30):
    deadline = time.time() + timeout
    while True:
        st = c.get_orchestration_state(iid)
        if st is not None and pred(st):
            return st
        if time.time() > deadline:
            raise SystemExit(f"FAIL {iid}: condition not reached, last state {st}")
        time.sleep(0.05)


def wait_done(c, iid, timeout=60):
    st = c.wait_for_orchestration_completion(iid, timeout=timeout)
    if st is None:
        raise SystemExit(f"FAIL {iid}: no state")
    return st


def main(address):
    c = dt.TaskHubGrpcClient(host_address=address)
    run = uuid.uuid4().hex[:8]

    # Nobody serves this name: the start is refused, as for an unknown name in the node.
    try:
        c.schedule_new_orchestration("py_nobody_serves", instance_id=f"nobody-{run}")
        check("a name nobody serves is refused", False, "accepted")
    except Exception as e:  # grpc.RpcError
        check("a name nobody serves is refused", "py_nobody_serves" in str(e), e)

    log = logging.getLogger("perdure-test-worker")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.addFilter(_DropExpectedFailure())
    w = worker.TaskHubGrpcWorker(host_address=address, logger=log)
    for fn in (py_chain, py_fan_out, py_wait, py_child, py_parent, py_counter, py_catches,
               py_fails, py_calls_rust, py_signals, py_retries, py_no_retry, py_race):
        w.add_orchestrator(fn)
    w.add_entity(py_tally)
    for fn in (py_hello, py_double, py_fail, py_flaky):
        w.add_activity(fn)
    w.start()
    try:
        # The start is accepted once the worker's stream is open.
        chain = schedule_when_served(c, py_chain, instance_id=f"chain-{run}")
        st = wait_done(c, chain)
        check("chaining completes", st.runtime_status == dt.OrchestrationStatus.COMPLETED,
              st.failure_details)
        check("chaining output", st.get_output() == ["Bonjour Paris!", "Bonjour Lyon!",
                                                      "Bonjour Nice!"], st.serialized_output)

        fan = c.schedule_new_orchestration(py_fan_out, input=20, instance_id=f"fan-{run}")
        st = wait_done(c, fan)
        check("fan-out/fan-in output", st.get_output() == sum(2 * i for i in range(20)),
              st.serialized_output)

        waiting = c.schedule_new_orchestration(py_wait, instance_id=f"wait-{run}")
        deadline = time.time() + 30
        while True:
            st = c.get_orchestration_state(waiting)
            if st is not None and st.serialized_custom_status == '"waiting"':
                break
            if time.time() > deadline:
                raise SystemExit(f"FAIL custom status never 'waiting': {st}")
            time.sleep(0.05)
        check("custom status set by the worker", True)
        c.raise_orchestration_event(waiting, "approve", data=True)
        st = wait_done(c, waiting)
        check("timer then event", st.get_output() == {"approved": True}, st.serialized_output)
        check("custom status at the end", st.serialized_custom_status == '"done"',
              st.serialized_custom_status)

        parent = c.schedule_new_orchestration(py_parent, input=5, instance_id=f"parent-{run}")
        st = wait_done(c, parent)
        check("sub-orchestrations", st.get_output() == [11, 23], st.serialized_output)

        counter = c.schedule_new_orchestration(py_counter, input=0, instance_id=f"can-{run}")
        st = wait_done(c, counter)
        check("continue-as-new", st.get_output() == 3, st.serialized_output)

        caught = c.schedule_new_orchestration(py_catches, instance_id=f"caught-{run}")
        st = wait_done(c, caught)
        check("an activity failure is caught", st.get_output() == "caught: expected",
              st.serialized_output)

        fails = c.schedule_new_orchestration(py_fails, instance_id=f"fails-{run}")
        st = wait_done(c, fails)
        check("an uncaught activity failure fails the orchestration",
              st.runtime_status == dt.OrchestrationStatus.FAILED, st.runtime_status)
        check("the failure names the activity's error",
              st.failure_details is not None and "boom" in st.failure_details.message,
              st.failure_details)

        rust = c.schedule_new_orchestration(py_calls_rust, input="Oslo",
                                            instance_id=f"rust-{run}")
        st = wait_done(c, rust)
        check("a Python orchestrator calls the node's Rust activity",
              st.get_output() == "Hello Oslo!", st.serialized_output)

        # Retries are the SDK's own (timers between attempts).
        retried = c.schedule_new_orchestration(py_retries, input=f"r-{run}",
                                               instance_id=f"retries-{run}")
        st = wait_done(c, retried)
        check("activity retries", st.get_output() == f"r-{run} on attempt 3", st.serialized_output)

        # when_any: the event wins over a long timer.
        race = c.schedule_new_orchestration(py_race, instance_id=f"race-{run}")
        c.wait_for_orchestration_start(race, timeout=30)
        # Suspended, the event waits; resumed, it is delivered.
        c.suspend_orchestration(race)
        st = c.get_orchestration_state(race)
        check("a worker's orchestration suspends", st.runtime_status == dt.OrchestrationStatus.SUSPENDED,
              st.runtime_status)
        c.raise_orchestration_event(race, "go")
        time.sleep(0.3)
        st = c.get_orchestration_state(race)
        check("no progress while suspended", st.runtime_status == dt.OrchestrationStatus.SUSPENDED,
              st.runtime_status)
        c.resume_orchestration(race)
        st = wait_done(c, race)
        check("when_any: the event wins", st.get_output() == "event", st.serialized_output)

        # Terminate a worker's orchestration that waits.
        stuck = c.schedule_new_orchestration(py_race, instance_id=f"stuck-{run}")
        c.wait_for_orchestration_start(stuck, timeout=30)
        c.terminate_orchestration(stuck, output="enough")
        st = wait_done(c, stuck)
        check("terminate", st.runtime_status == dt.OrchestrationStatus.TERMINATED, st.runtime_status)

        # Rewind: the activity failed without retries; rewound, it runs again and succeeds.
        rewound = c.schedule_new_orchestration(py_no_retry, input=f"w-{run}",
                                               instance_id=f"rewind-{run}")
        st = wait_done(c, rewound)
        check("fails without retries", st.runtime_status == dt.OrchestrationStatus.FAILED,
              st.runtime_status)
        check("attempt 1 failed", "attempt 1 of" in st.failure_details.message, st.failure_details)
        # A rewind is a message: the state changes when the instance has run it.
        c.rewind_orchestration(rewound, reason="try again")
        st = wait_until(c, rewound, lambda st: st.failure_details is not None
                        and "attempt 2 of" in st.failure_details.message)
        check("rewound, the activity runs again (and fails again)", True)
        c.rewind_orchestration(rewound, reason="and again")
        st = wait_until(c, rewound, lambda st: st.runtime_status == dt.OrchestrationStatus.COMPLETED)
        check("rewound twice, it completes", st.get_output() == f"w-{run} on attempt 3",
              st.serialized_output)

        # Restart a finished worker orchestration under a new id, and purge.
        again = c.restart_orchestration(chain, restart_with_new_instance_id=True)
        check("restart gets a new id", again != chain, again)
        st = wait_done(c, again)
        check("the restarted orchestration runs on the worker",
              st.get_output() == ["Bonjour Paris!", "Bonjour Lyon!", "Bonjour Nice!"],
              st.serialized_output)
        purged = c.purge_orchestration(again)
        check("purge", purged.deleted_instance_count == 1, purged)

        # A Python entity: signals from the client, a failed operation that rolls back, a
        # signal from the entity to another entity, a signal from a Python orchestrator.
        tally = EntityInstanceId("py_tally", f"t-{run}")
        for n in (4, 3, 3):
            c.signal_entity(tally, "add", input=n)
        c.signal_entity(tally, "fail")
        check("entity operations run on the worker", wait_state(c, tally, 10) == 10)
        over = EntityInstanceId("py_tally", f"t-{run}-over")
        check("an entity signals another entity", wait_state(c, over, 1) == 1)
        signals = c.schedule_new_orchestration(py_signals, input=f"t-{run}",
                                               instance_id=f"signals-{run}")
        st = wait_done(c, signals)
        check("an orchestration signals a Python entity", st.get_output() == "signalled",
              st.serialized_output)
        check("the signal reached the entity", wait_state(c, tally, 15) == 15)

        # The node's own orchestrations still run in process beside the worker.
        hello = c.schedule_new_orchestration("HelloSequence", instance_id=f"hello-{run}")
        st = wait_done(c, hello)
        check("the node's Rust orchestration still runs",
              st.get_output() == ["Hello Tokyo!", "Hello Seattle!", "Hello London!"],
              st.serialized_output)
    finally:
        w.stop()

    print(f"{passed()} passed, 0 failed", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
