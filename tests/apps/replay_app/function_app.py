"""Orchestrations whose recorded histories tests/test_history_replay.py replays against changed copies."""

import datetime

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)

CALLS: list[str] = []
"""Cities the activities were called for: a replay must leave it empty."""


@app.activity_trigger(input_name="city")
def say_hello(city: str) -> str:
    CALLS.append(city)
    return f"Hello {city}!"


@app.activity_trigger(input_name="city")
def say_goodbye(city: str) -> str:
    CALLS.append(city)
    return f"Goodbye {city}!"


_attempts: dict[str, int] = {}


@app.activity_trigger(input_name="city")
def flaky_hello(city: str) -> str:
    """Fails on the first attempt per city."""
    CALLS.append(city)
    _attempts[city] = _attempts.get(city, 0) + 1
    if _attempts[city] < 2:
        raise RuntimeError(f"attempt {_attempts[city]} failed")
    return f"Hello {city}!"


@app.orchestration_trigger(context_name="context")
def greetings(context: df.DurableOrchestrationContext):
    results = [(yield context.call_activity("say_hello", "Tokyo"))]
    yield context.create_timer(context.current_utc_datetime + datetime.timedelta(milliseconds=50))
    results.append((yield context.call_activity("say_hello", "Seattle")))
    results.append((yield context.call_activity("say_hello", "London")))
    return results


@app.orchestration_trigger(context_name="context")
def countdown(context: df.DurableOrchestrationContext):
    remaining = context.get_input()
    yield context.call_activity("say_hello", f"T-{remaining}")
    if remaining > 0:
        context.continue_as_new(remaining - 1)
        return None
    return "liftoff"


@app.orchestration_trigger(context_name="context")
def child_greeting(context: df.DurableOrchestrationContext):
    return (yield context.call_activity("say_hello", context.get_input()))


@app.orchestration_trigger(context_name="context")
def family(context: df.DurableOrchestrationContext):
    greeting = yield context.call_sub_orchestrator("child_greeting", "Paris")
    total = yield context.call_entity(df.EntityId("tally", "greetings"), "add", 1)
    return [greeting, total]


@app.entity_trigger(context_name="context")
def tally(context: df.DurableEntityContext) -> None:
    total = context.get_state(lambda: 0) + context.get_input()
    context.set_state(total)
    context.set_result(total)


@app.orchestration_trigger(context_name="context")
def persistent(context: df.DurableOrchestrationContext):
    options = df.RetryOptions(first_retry_interval_in_milliseconds=50, max_number_of_attempts=3)
    return (yield context.call_activity_with_retry("flaky_hello", options, "Oslo"))


@app.orchestration_trigger(context_name="context")
def waiter(context: df.DurableOrchestrationContext):
    yield context.call_activity("say_hello", "Reykjavik")
    approval = yield context.wait_for_external_event("go")
    return approval


def _greet(context: df.DurableOrchestrationContext, city: str):
    return (yield context.call_activity("say_hello", city))


@app.orchestration_trigger(context_name="context")
def delegating(context: df.DurableOrchestrationContext):
    first = yield from _greet(context, "Nairobi")
    return first


@app.orchestration_trigger(context_name="context")
def big(context: df.DurableOrchestrationContext):
    """Input and result beyond a table column's limit: history keeps them in blobs."""
    greeting = yield context.call_activity("say_hello", "B" * 40_000)
    return len(greeting)
