"""HTTP functions that call the df client's methods, added to the sample app by the end-to-end tests.

``POST /api/client/{method}`` with a JSON object of arguments calls that method of the injected
``DurableOrchestrationClient`` exactly as a user's function would and answers with its result as JSON
(or with the HttpResponse the method builds). A df client exception becomes 409 with its message.
"""

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import azure.durable_functions as df
import azure.functions as func
from azure.durable_functions.models.DurableOrchestrationStatus import DurableOrchestrationStatus
from azure.durable_functions.models.OrchestrationRuntimeStatus import OrchestrationRuntimeStatus

bp = df.Blueprint()


@bp.activity_trigger(input_name="path")
def gate(path: str) -> str:
    """Fails until the test creates the file ``path``."""
    if not Path(path).exists():
        raise RuntimeError(f"gate {path} is closed")
    return "passed"


@bp.orchestration_trigger(context_name="context")
def gated(context: df.DurableOrchestrationContext):
    greeting = yield context.call_activity("say_hello", "Gate")
    passed = yield context.call_activity("gate", context.get_input())
    return [greeting, passed]


@bp.orchestration_trigger(context_name="context")
def wait_for_go(context: df.DurableOrchestrationContext):
    return (yield context.wait_for_external_event("go"))


def _status(status: DurableOrchestrationStatus | None) -> Any:
    if status is None:
        return None
    # df's ``history`` property reads a "history" member; the API's "historyEvents" becomes an attribute.
    return {**status.to_json(), "historyEvents": getattr(status, "historyEvents", None)}


def _statuses(args: dict[str, Any]) -> list[OrchestrationRuntimeStatus] | None:
    names = args.get("runtime_status")
    return [OrchestrationRuntimeStatus(name) for name in names] if names else None


def _time(args: dict[str, Any], key: str) -> datetime | None:
    return datetime.fromisoformat(args[key]) if args.get(key) else None


async def _call(
    client: df.DurableOrchestrationClient, req: func.HttpRequest, method: str, args: dict[str, Any]
) -> Any:
    instance_id = args.get("instance_id", "")
    if method == "start_new":
        return await client.start_new(args["name"], args.get("instance_id"), args.get("input"))
    if method == "get_status":
        flags = {k: args[k] for k in ("show_history", "show_history_output", "show_input") if k in args}
        return _status(await client.get_status(instance_id, **flags))
    if method == "get_status_all":
        return [_status(s) for s in await client.get_status_all()]
    if method == "get_status_by":
        found = await client.get_status_by(
            _time(args, "created_time_from"), _time(args, "created_time_to"), _statuses(args)
        )
        return [_status(s) for s in found]
    if method == "raise_event":
        return await client.raise_event(instance_id, args["event_name"], args.get("event_data"))
    if method in ("terminate", "suspend", "resume", "rewind"):
        return await getattr(client, method)(instance_id, args.get("reason", ""))
    if method == "purge_instance_history":
        return (await client.purge_instance_history(instance_id)).instances_deleted
    if method == "purge_instance_history_by":
        purged = await client.purge_instance_history_by(
            _time(args, "created_time_from"), _time(args, "created_time_to"), _statuses(args)
        )
        return purged.instances_deleted
    if method == "signal_entity":
        entity = df.EntityId(args["entity_name"], args["entity_key"])
        return await client.signal_entity(entity, args["operation"], args.get("input"))
    if method == "read_entity_state":
        state = await client.read_entity_state(df.EntityId(args["entity_name"], args["entity_key"]))
        return {"exists": state.entity_exists, "state": state.entity_state}
    if method == "create_check_status_response":
        return client.create_check_status_response(req, instance_id)
    if method == "create_http_management_payload":
        return client.create_http_management_payload(instance_id)
    if method == "wait_for_completion_or_create_check_status_response":
        return await client.wait_for_completion_or_create_check_status_response(
            req, instance_id, args["timeout_ms"], args.get("retry_ms", 100)
        )
    raise LookupError(f"no such client method {method!r}")


@bp.route(route="client/{method}", methods=["POST"])
@bp.durable_client_input(client_name="client")
async def call_client(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    args = req.get_json() if req.get_body() else {}
    try:
        result = await _call(client, req, req.route_params["method"], args)
    except Exception as error:  # what the df client raises for 404/409/410 answers
        return func.HttpResponse(
            json.dumps({"error": str(error)}), status_code=409, mimetype="application/json"
        )
    if isinstance(result, func.HttpResponse):
        return result
    return func.HttpResponse(json.dumps({"result": result}), mimetype="application/json")
