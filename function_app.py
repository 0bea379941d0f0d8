"""The sample Durable Functions app: one HTTP starter plus the orchestrators, activities and entity
registered from the blueprints in orchestrators/, activities/ and entities/.

This file is exactly what you would deploy to Azure Functions; durable_ext runs it unchanged.
"""

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
        # No body means no input: the orchestrator's context.get_input() returns None.
        payload = req.get_json() if req.get_body() else None
    except ValueError:
        return func.HttpResponse("The request body must be JSON.", status_code=400)

    instance_id = await client.start_new(function_name, client_input=payload)
    logging.info("Started orchestration %s with ID %s", function_name, instance_id)

    # 202 Accepted with a Location header and the URLs to poll, raise events to, terminate, ...
    return client.create_check_status_response(req, instance_id)
