"""The sample Durable Functions app: one HTTP starter plus the orchestrators, activities and entity
registered from the blueprints in orchestrators/, activities/ and entities/.

This file is exactly what you would deploy to Azure Functions; durable_ext runs it unchanged.
"""

import json
import logging

import azure.durable_functions as df
import azure.functions as func

from activities import bp as activities_bp
from entities import bp as entities_bp
from orchestrators import bp as orchestrators_bp

# DFApp is a FunctionApp that also knows the Durable Functions decorators. ANONYMOUS keeps the sample
# callable without function keys; use FUNCTION (the default) for a real deployment.
app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)

# Blueprints only collect functions; registering them is what makes them part of the app.
app.register_functions(orchestrators_bp)
app.register_functions(activities_bp)
app.register_functions(entities_bp)


@app.route(route="orchestrators/{functionName}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def http_start(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """POST /api/orchestrators/{functionName}: start that orchestrator with the JSON body as its input.

    The function must be async: the durable client decorator awaits it.
    """
    function_name = req.route_params["functionName"]
    try:
        payload = parse_input(req.get_body())
    except (ValueError, RecursionError) as exc:
        return func.HttpResponse(f"The request body must be plain JSON: {exc}", status_code=400)

    instance_id = await client.start_new(function_name, client_input=payload)
    logging.info("Started orchestration %s with ID %s", function_name, instance_id)

    # 202 Accepted with a Location header and the URLs to poll, raise events to, terminate, ...
    return client.create_check_status_response(req, instance_id)


MAX_INPUT_DEPTH = 64
"""Deepest nesting of arrays and objects accepted as input; deeper JSON is an attack, not data."""


def parse_input(body: bytes) -> object:
    """The body as the orchestrator's input: None when empty (context.get_input() is then None).

    Raises ValueError unless the body is UTF-8 JSON that any JSON reader accepts: no NaN or Infinity
    (Python's json module reads them, other languages do not), no number too large for a double, and
    no nesting deeper than MAX_INPUT_DEPTH (json.loads raises RecursionError far deeper).
    """
    if not body:
        return None
    value = json.loads(body.decode("utf-8"), parse_constant=_refuse_constant, parse_float=_finite_float)
    if _nested_deeper(value, MAX_INPUT_DEPTH):
        raise ValueError(f"nested deeper than {MAX_INPUT_DEPTH} levels")
    return value


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    number = float(text)
    if number in (float("inf"), float("-inf")):
        raise ValueError(f"{text} does not fit a double")
    return number


def _nested_deeper(value: object, levels: int) -> bool:
    # Stops descending past the limit, so the check itself never recurses deeply.
    if not isinstance(value, dict | list):
        return False
    if levels == 0:
        return True
    children = value.values() if isinstance(value, dict) else value
    return any(_nested_deeper(child, levels - 1) for child in children)
