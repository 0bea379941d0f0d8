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
