"""HTTP-triggered functions for the HTTP trigger tests, written as a Functions user would."""

import asyncio
import json

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@app.route(route="items/{id:int}", methods=["GET", "POST"])
def items(req: func.HttpRequest) -> func.HttpResponse:
    """Sync: echoes what the request carried, and whether it ran on the event loop."""
    echo = {
        "method": req.method,
        "url": req.url,
        "route_params": dict(req.route_params),
        "params": dict(req.params),
        "x_test": req.headers.get("X-Test"),
        "body": req.get_body().decode(),
        "on_event_loop": _on_event_loop(),
    }
    return func.HttpResponse(json.dumps(echo), mimetype="application/json")


@app.route(route="files/{*path}")
async def files(req: func.HttpRequest) -> dict[str, str | None]:
    """Async, returns a dict."""
    await asyncio.sleep(0)
    return {"path": req.route_params.get("path")}


@app.route(route="files/readme")
def readme(req: func.HttpRequest) -> str:
    """Registered after the catch-all, yet more specific: must win for files/readme."""
    return "readme"


@app.route(route="opt/{name?}")
def optional(req: func.HttpRequest) -> str:
    return f"hello {req.route_params.get('name', 'nobody')}"


@app.route(route="greet/{name=world}")
def greet(req: func.HttpRequest) -> str:
    return f"hi {req.route_params['name']}"


@app.route(route="json", methods=["POST"])
async def json_roundtrip(req: func.HttpRequest) -> func.HttpResponse:
    payload = req.get_json()
    return func.HttpResponse(json.dumps({"received": payload}), mimetype="application/json")


@app.route(route="custom")
def custom(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(
        "<b>made</b>",
        status_code=201,
        headers={"X-Custom": "yes", "Cache-Control": "no-store"},
        mimetype="text/html",
        charset="latin-1",
    )


@app.route(route="raw")
def raw(req: func.HttpRequest) -> bytes:
    return b"\x00\x01"


@app.route(route="nothing")
def nothing(req: func.HttpRequest) -> None:
    return None


@app.route(route="boom")
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise ValueError("secret detail")


@app.route(route="secured", auth_level=func.AuthLevel.FUNCTION)
def secured(req: func.HttpRequest) -> str:
    return "ok"


@app.route(route="upload", methods=["POST"])
def upload(req: func.HttpRequest) -> str:
    return str(len(req.get_body()))


@app.route(route="start")
@app.durable_client_input(client_name="client")
async def start(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    response = client.create_check_status_response(req, "abc")
    response.headers["X-Client-Type"] = type(client).__name__
    response.headers["X-Task-Hub"] = client._orchestration_bindings.task_hub_name
    return response
