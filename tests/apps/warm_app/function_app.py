"""Orchestrations whose episodes are hard to continue without a replay (tests/test_warm_continuation.py)."""

import datetime

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)

_attempts: dict[str, int] = {}


@app.activity_trigger(input_name="value")
def double(value: int) -> int:
    return value * 2


@app.activity_trigger(input_name="value")
def echo(value: object) -> object:
    return value


@app.activity_trigger(input_name="key")
def flaky(key: str) -> str:
    """Fails twice per key, then succeeds."""
    _attempts[key] = _attempts.get(key, 0) + 1
    if _attempts[key] < 3:
        raise RuntimeError(f"attempt {_attempts[key]} failed")
    return f"ok after {_attempts[key]}"


@app.activity_trigger(input_name="reason")
def fails(reason: str) -> None:
    raise ValueError(reason)


@app.entity_trigger(context_name="context")
def tally(context: df.DurableEntityContext) -> None:
    value = context.get_state(lambda: 0)
    if context.operation_name == "add":
        value += context.get_input()
        context.set_state(value)
    context.set_result(value)


@app.orchestration_trigger(context_name="context")
def fan_in_then_race(context: df.DurableOrchestrationContext):
    """A fan-out, a second one over its results, then an activity racing a long timer."""
    first = yield context.task_all([context.call_activity("double", i) for i in range(8)])
    second = yield context.task_all([context.call_activity("double", v) for v in first[:4]])
    timer = context.create_timer(context.current_utc_datetime + datetime.timedelta(minutes=10))
    work = context.call_activity("double", sum(second))
    winner = yield context.task_any([work, timer])
    if winner == work:
        timer.cancel()
    echoed = yield context.call_activity("echo", [str(context.new_uuid()), str(context.new_uuid())])
    return {"first": first, "second": second, "raced": work.result, "uuids": len(set(echoed))}


@app.orchestration_trigger(context_name="context")
def timers_and_any(context: df.DurableOrchestrationContext):
    """Short timers racing long ones and an event that never comes, three times over."""
    fired = []
    for round_number in range(3):
        now = context.current_utc_datetime
        short = context.create_timer(now + datetime.timedelta(milliseconds=300))
        long = context.create_timer(now + datetime.timedelta(hours=1))
        never = context.wait_for_external_event("never")
        winner = yield context.task_any([long, never, short])
        long.cancel()
        fired.append([round_number, winner == short])
    return fired


@app.orchestration_trigger(context_name="context")
def events_in_order(context: df.DurableOrchestrationContext):
    """Waits for A, B, C and D one after the other; tests raise them in another order."""
    context.set_custom_status("started")
    seed = yield context.call_activity("double", 1)
    received = [seed]
    for name in ("A", "B", "C", "D"):
        context.set_custom_status(f"waiting for {name}")
        received.append((yield context.wait_for_external_event(name)))
    context.set_custom_status({"received": len(received)})
    return received


@app.orchestration_trigger(context_name="context")
def child(context: df.DurableOrchestrationContext):
    value = context.get_input()
    if value < 0:
        raise ValueError(f"child refuses {value}")
    doubled = yield context.call_activity("double", value)
    return doubled + 1


@app.orchestration_trigger(context_name="context")
def children(context: df.DurableOrchestrationContext):
    """Sub-orchestrations in parallel, one of which fails and is caught, then one more in sequence."""
    ok = yield context.task_all([context.call_sub_orchestrator("child", i) for i in range(3)])
    try:
        yield context.call_sub_orchestrator("child", -1, f"{context.instance_id}-refused")
        refused = "not refused"
    except Exception as error:
        refused = str(error).split("\n")[0]
    last = yield context.call_sub_orchestrator("child", sum(ok))
    return {"ok": ok, "refused": refused, "last": last}


@app.orchestration_trigger(context_name="context")
def retries(context: df.DurableOrchestrationContext):
    """An activity retried until it succeeds, one whose retries run out (caught), and a step between."""
    options = df.RetryOptions(first_retry_interval_in_milliseconds=100, max_number_of_attempts=3)
    first = yield context.call_activity_with_retry("flaky", options, context.instance_id)
    middle = yield context.call_activity("double", 21)
    short = df.RetryOptions(first_retry_interval_in_milliseconds=50, max_number_of_attempts=2)
    try:
        yield context.call_activity_with_retry("fails", short, "always")
        gave_up = "no"
    except Exception as error:
        gave_up = "yes" if "always" in str(error) else str(error)
    return [first, middle, gave_up]


@app.orchestration_trigger(context_name="context")
def generations(context: df.DurableOrchestrationContext):
    """Continues as new four times, each generation one activity; the events it did not wait for
    travel to the next generation."""
    state = context.get_input()
    value = yield context.call_activity("double", state["value"])
    context.set_custom_status({"generation": state["generation"], "value": value})
    if state["generation"] < 4:
        context.continue_as_new({"generation": state["generation"] + 1, "value": value})
        return None
    extra = yield context.wait_for_external_event("late")
    return {"value": value, "extra": extra}


@app.orchestration_trigger(context_name="context")
def catches_and_goes_on(context: df.DurableOrchestrationContext):
    """Failures caught at several points, with custom status along the way."""
    caught = []
    for step in range(3):
        context.set_custom_status({"step": step, "caught": len(caught)})
        try:
            yield context.call_activity("fails", f"step {step}")
        except Exception as error:
            caught.append("step" in str(error))
        caught.append((yield context.call_activity("double", step)))
    return caught


@app.orchestration_trigger(context_name="context")
def uses_entity(context: df.DurableOrchestrationContext):
    """Signals, calls and reads an entity across several episodes."""
    entity = df.EntityId("tally", context.instance_id)
    context.signal_entity(entity, "add", 1)
    totals = []
    for amount in (2, 3, 4):
        totals.append((yield context.call_entity(entity, "add", amount)))
    totals.append((yield context.call_entity(entity, "get")))
    return totals


@app.orchestration_trigger(context_name="context")
def suspendable(context: df.DurableOrchestrationContext):
    """Steps, an event, more steps: tests suspend it while it waits, raise the event, and resume it."""
    values = []
    for step in range(3):
        values.append((yield context.call_activity("double", step)))
    context.set_custom_status("waiting")
    values.append((yield context.wait_for_external_event("go")))
    context.set_custom_status("going")
    for step in range(3, 6):
        values.append((yield context.call_activity("double", step)))
    return values


@app.orchestration_trigger(context_name="context")
def fails_late(context: df.DurableOrchestrationContext):
    """Fails, uncaught, after a few episodes."""
    total = 0
    for step in range(3):
        total += yield context.call_activity("double", step)
    raise RuntimeError(f"gave up at {total}")
