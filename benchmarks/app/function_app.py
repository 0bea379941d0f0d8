"""The benchmark workloads, written as an ordinary Durable Functions app.

Every orchestration returns a value the harness checks, so a benchmark that loses or duplicates work
fails instead of reporting a figure.
"""

import datetime
import json
from collections.abc import Generator
from typing import Any

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="orchestrators/{functionName}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def http_start(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """POST /api/orchestrators/{functionName} with a JSON input: the sample app's HTTP starter, for the
    ``host`` scenario (202 and the management URLs)."""
    body = req.get_body()
    instance_id = await client.start_new(
        req.route_params["functionName"], client_input=json.loads(body) if body else None
    )
    return client.create_check_status_response(req, instance_id)


@app.activity_trigger(input_name="value")
def inc(value: int) -> int:
    """The unit of work: add one."""
    return value + 1


@app.orchestration_trigger(context_name="context")
def sequential(context: df.DurableOrchestrationContext) -> Generator[Any, Any, int]:
    """Call ``inc`` input-many times one after another; returns the input (0 + 1 + 1 + ...)."""
    count = context.get_input()
    value = 0
    for _ in range(count):
        value = yield context.call_activity("inc", value)
    return value


@app.orchestration_trigger(context_name="context")
def fanout(context: df.DurableOrchestrationContext) -> Generator[Any, Any, int]:
    """Call ``inc`` on 0..n-1 in parallel and sum the results: n * (n + 1) / 2."""
    count = context.get_input()
    results = yield context.task_all([context.call_activity("inc", i) for i in range(count)])
    return sum(results)


@app.orchestration_trigger(context_name="context")
def events(context: df.DurableOrchestrationContext) -> Generator[Any, Any, int]:
    """Wait for the external event ``tick`` input-many times; returns the sum of the event payloads."""
    count = context.get_input()
    context.set_custom_status("waiting")
    total = 0
    for _ in range(count):
        total += yield context.wait_for_external_event("tick")
    return total


@app.orchestration_trigger(context_name="context")
def one_activity(context: df.DurableOrchestrationContext) -> Generator[Any, Any, int]:
    """A single activity call: the shortest orchestration that still does work; returns 1."""
    return (yield context.call_activity("inc", 0))


@app.orchestration_trigger(context_name="context")
def timer(context: df.DurableOrchestrationContext) -> Generator[Any, Any, float]:
    """Wait on one durable timer of input seconds; returns the input."""
    seconds = context.get_input()
    yield context.create_timer(context.current_utc_datetime + datetime.timedelta(seconds=seconds))
    return seconds


@app.entity_trigger(context_name="context")
def counter(context: df.DurableEntityContext) -> None:
    """A counter: ``add`` adds its input to the state."""
    value = context.get_state(lambda: 0)
    if context.operation_name == "add":
        value += context.get_input()
        context.set_state(value)
    context.set_result(value)
