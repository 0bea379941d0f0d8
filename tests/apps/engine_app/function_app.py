"""Orchestrations for the engine's acceptance tests, written as a Durable Functions user would."""

import asyncio
import datetime
import time

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)

_attempts: dict[str, int] = {}


@app.activity_trigger(input_name="value")
def double(value: int) -> int:
    return value * 2


@app.activity_trigger(input_name="key")
def flaky(key: str) -> str:
    """Fails twice per key, then succeeds."""
    _attempts[key] = _attempts.get(key, 0) + 1
    if _attempts[key] < 3:
        raise RuntimeError(f"attempt {_attempts[key]} failed")
    return f"ok after {_attempts[key]}"


@app.activity_trigger(input_name="reason")
def always_fails(reason: str) -> None:
    raise ValueError(reason)


@app.orchestration_trigger(context_name="context")
def chain(context: df.DurableOrchestrationContext):
    value = context.get_input()
    for _ in range(5):
        value = yield context.call_activity("double", value)
    return value


@app.orchestration_trigger(context_name="context")
def fan_out(context: df.DurableOrchestrationContext):
    count = context.get_input()
    results = yield context.task_all([context.call_activity("double", i) for i in range(count)])
    return sum(results)


@app.orchestration_trigger(context_name="context")
def timer(context: df.DurableOrchestrationContext):
    deadline = context.current_utc_datetime + datetime.timedelta(seconds=1)
    yield context.create_timer(deadline)
    return "fired"


@app.orchestration_trigger(context_name="context")
def approval(context: df.DurableOrchestrationContext):
    context.set_custom_status("waiting")
    deadline = context.current_utc_datetime + datetime.timedelta(seconds=context.get_input())
    timeout = context.create_timer(deadline)
    event = context.wait_for_external_event("Approval")
    winner = yield context.task_any([event, timeout])
    if winner == event:
        timeout.cancel()
        context.set_custom_status("done")
        return f"approved: {event.result}"
    return "timed out"


@app.orchestration_trigger(context_name="context")
def parent(context: df.DurableOrchestrationContext):
    child = yield context.call_sub_orchestrator("chain", 1)
    return child + 1


@app.orchestration_trigger(context_name="context")
def counter_loop(context: df.DurableOrchestrationContext):
    generation = context.get_input()
    value = yield context.call_activity("double", generation)
    if generation < 10:
        context.continue_as_new(generation + 1)
        return None
    return value


@app.orchestration_trigger(context_name="context")
def retry(context: df.DurableOrchestrationContext):
    options = df.RetryOptions(first_retry_interval_in_milliseconds=100, max_number_of_attempts=3)
    return (yield context.call_activity_with_retry("flaky", options, context.instance_id))


@app.orchestration_trigger(context_name="context")
def catches(context: df.DurableOrchestrationContext):
    try:
        yield context.call_activity("always_fails", "nope")
    except Exception as error:  # the activity's failure arrives as an exception
        return f"caught: {error}"
    return "not reached"


@app.orchestration_trigger(context_name="context")
def raises(context: df.DurableOrchestrationContext):
    yield context.call_activity("double", 1)
    raise RuntimeError("orchestrator gave up")


@app.orchestration_trigger(context_name="context")
def carry(context: df.DurableOrchestrationContext):
    """Generation 0 waits for "A" and continues as new; generation 1 waits for "B"."""
    if context.get_input() == 0:
        yield context.wait_for_external_event("A")
        context.continue_as_new(1)
        return None
    return (yield context.wait_for_external_event("B"))


NEXT_ACTIVITY = {"name": "double"}
"""Tests change this between episodes to make ``drifting`` non-deterministic."""


@app.orchestration_trigger(context_name="context")
def drifting(context: df.DurableOrchestrationContext):
    first = yield context.call_activity(NEXT_ACTIVITY["name"], 1)
    yield context.wait_for_external_event("go")
    return first


@app.entity_trigger(context_name="context")
def counter(context: df.DurableEntityContext) -> None:
    value = context.get_state(lambda: 0)
    operation = context.operation_name
    if operation == "add":
        value += context.get_input()
        context.set_state(value)
    elif operation == "fail_after_set":
        context.set_state(value + 100)
        raise ValueError("operation failed after setting state")
    elif operation == "delete":
        # df's set_result marks the entity as existing again, so a delete sets no result.
        context.destruct_on_exit()
        return
    context.set_result(value)


@app.orchestration_trigger(context_name="context")
def use_counter(context: df.DurableOrchestrationContext):
    entity = df.EntityId("counter", context.get_input())
    context.signal_entity(entity, "add", 1)
    yield context.call_entity(entity, "add", 4)
    current = yield context.call_entity(entity, "get")
    try:
        yield context.call_entity(entity, "fail_after_set")
    except Exception as error:  # the entity's failure reaches the caller as an exception
        failed = str(error)
    after = yield context.call_entity(entity, "get")
    return {"current": current, "failed": failed, "after": after}


OPEN_GATES: set[str] = set()
"""Tests open a gate to let ``gated`` succeed for that key."""
RUNS: dict[str, int] = {}
"""How often ``gated`` and ``counted`` ran, per key."""


@app.activity_trigger(input_name="key")
def gated(key: str) -> str:
    RUNS[key] = RUNS.get(key, 0) + 1
    if key not in OPEN_GATES:
        raise RuntimeError(f"gate {key} is closed")
    return f"{key} passed"


@app.activity_trigger(input_name="key")
def counted(key: str) -> str:
    RUNS[key] = RUNS.get(key, 0) + 1
    return key


@app.orchestration_trigger(context_name="context")
def rewindable(context: df.DurableOrchestrationContext):
    """A step, a fan-out in which one branch waits on a gate, then a last step."""
    prefix = context.get_input()
    first = yield context.call_activity("counted", f"{prefix}-first")
    branches = yield context.task_all(
        [
            context.call_activity("counted", f"{prefix}-a"),
            context.call_activity("gated", f"{prefix}-gate"),
            context.call_activity("counted", f"{prefix}-b"),
        ]
    )
    last = yield context.call_activity("counted", f"{prefix}-last")
    return [first, *branches, last]


@app.orchestration_trigger(context_name="context")
def rewindable_parent(context: df.DurableOrchestrationContext):
    prefix = context.get_input()
    before = yield context.call_activity("counted", f"{prefix}-parent")
    child = yield context.call_sub_orchestrator("rewindable", prefix, f"{context.instance_id}-child")
    return [before, child]


@app.activity_trigger(input_name="key")
async def held(key: str) -> str:
    """Waits (at most a minute) until a test opens the gate ``key``."""
    deadline = time.monotonic() + 60
    while key not in OPEN_GATES:
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {key} was never opened")
        await asyncio.sleep(0.01)
    RUNS[key] = RUNS.get(key, 0) + 1
    return f"{key} released"


@app.orchestration_trigger(context_name="context")
def five_steps(context: df.DurableOrchestrationContext):
    """Five activities in a row; the third is held by a gate and waits for an "extra" event too."""
    prefix = context.get_input()
    results = []
    for step in (1, 2):
        results.append((yield context.call_activity("counted", f"{prefix}-{step}")))
    third = context.call_activity("held", f"{prefix}-3")
    extra = context.wait_for_external_event("extra")
    results += yield context.task_all([third, extra])
    for step in (4, 5):
        results.append((yield context.call_activity("counted", f"{prefix}-{step}")))
    return results


@app.orchestration_trigger(context_name="context")
def big_status(context: df.DurableOrchestrationContext):
    size = context.get_input()
    context.set_custom_status("w" * size)
    yield context.wait_for_external_event("Go")
    context.set_custom_status({"done": "d" * size})
    return size


@app.orchestration_trigger(context_name="context")
def lets_activity_fail(context: df.DurableOrchestrationContext):
    """Does not catch the failure of its activity."""
    yield context.call_activity("always_fails", "unhandled")
    return "not reached"


@app.orchestration_trigger(context_name="context")
def catches_child(context: df.DurableOrchestrationContext):
    """Reports what the failure of its sub-orchestration ``raises`` looks like."""
    try:
        yield context.call_sub_orchestrator("raises", None, f"{context.instance_id}-child")
    except Exception as error:
        return str(error)
    return "not reached"


@app.orchestration_trigger(context_name="context")
def long_timer(context: df.DurableOrchestrationContext):
    """Waits ``input`` seconds on one durable timer."""
    yield context.create_timer(context.current_utc_datetime + datetime.timedelta(seconds=context.get_input()))
    return "fired"


@app.orchestration_trigger(context_name="context")
def long_timer_or_event(context: df.DurableOrchestrationContext):
    """Waits ``input`` seconds or for the event "Go", whichever comes first."""
    timer = context.create_timer(
        context.current_utc_datetime + datetime.timedelta(seconds=context.get_input())
    )
    event = context.wait_for_external_event("Go")
    winner = yield context.task_any([timer, event])
    if winner == event:
        timer.cancel()
        return f"event: {event.result}"
    return "timer"


@app.orchestration_trigger(context_name="context")
def slow_retry(context: df.DurableOrchestrationContext):
    """``flaky`` with ``input`` milliseconds between attempts."""
    options = df.RetryOptions(
        first_retry_interval_in_milliseconds=context.get_input(), max_number_of_attempts=3
    )
    return (yield context.call_activity_with_retry("flaky", options, context.instance_id))
