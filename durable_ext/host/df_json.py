"""The JSON shapes of Durable Functions' HTTP API, in one place.

Each shape is a TypedDict, so the code that builds a body is type-checked against it and the OpenAPI
document (:mod:`durable_ext.host.routes`) describes exactly these types. Field names and formats
follow the Durable Functions extension: ``DurableOrchestrationStatus``, ``HttpManagementPayload``,
``DurableEntityStatus``, the shown history and the durable client binding.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, NotRequired
from urllib.parse import quote, urlencode

from typing_extensions import TypedDict

from durable_ext.client import EntitySnapshot, OrchestrationState
from durable_ext.config import MANAGEMENT_ROUTE
from durable_ext.entities import parse_entity_instance_id
from durable_ext.errors import ValidationError
from durable_ext.history import EventType, HistoryEvent, OrchestrationStatus
from durable_ext.wire import format_datetime, parse_json, to_json_object

MANAGEMENT_PREFIX = f"/{MANAGEMENT_ROUTE}"
"""Where the management routes are mounted, as in the Functions host."""

INSTANCE_ID_PLACEHOLDER = "INSTANCEID"
"""What the binding's management URLs hold in place of the ID; the df client substitutes it."""

GRPC_HTTP_CLIENT_TIMEOUT = "00:01:40"
"""The binding's ``grpcHttpClientTimeout`` (DF's default, 100 s); the HTTP-based df client ignores it."""

RuntimeStatusName = Literal[
    "Running", "Completed", "ContinuedAsNew", "Failed", "Canceled", "Terminated", "Pending", "Suspended"
]
"""``runtimeStatus`` as DF writes it: the :class:`OrchestrationStatus` member's name."""


class ErrorJson(TypedDict):
    """Every error body: ``error``, and the same text as ``ExceptionMessage``, the key of .NET's error
    body that the df client's ``start_new`` reads on 400."""

    error: str
    ExceptionMessage: str


class StatusJson(TypedDict):
    """``DurableOrchestrationStatus``: one instance's status (``GET instances/{id}``, list pages)."""

    name: str | None
    instanceId: str
    runtimeStatus: RuntimeStatusName | None
    input: Any
    customStatus: Any
    output: Any
    createdTime: str | None
    lastUpdatedTime: str | None
    historyEvents: NotRequired[list[dict[str, Any]] | None]


class CheckStatusJson(TypedDict):
    """``HttpManagementPayload``: the instance ID and its management URLs (a start's 202 body)."""

    id: str
    statusQueryGetUri: str
    sendEventPostUri: str
    terminatePostUri: str
    rewindPostUri: str
    purgeHistoryDeleteUri: str
    restartPostUri: str
    suspendPostUri: str
    resumePostUri: str


class EntityIdJson(TypedDict):
    """An entity's ID: its entity function's name and its key."""

    name: str
    key: str


class EntityJson(TypedDict):
    """``DurableEntityStatus``: one entity of an entity list page."""

    entityId: EntityIdJson
    lastOperationTime: str | None
    state: NotRequired[Any]


class PurgedJson(TypedDict):
    """``PurgeHistoryResult``: how many instances a purge deleted."""

    instancesDeleted: int


class CleanedJson(TypedDict):
    """What ``POST entities/clean`` removed (durable_ext's addition)."""

    numberOfEmptyEntitiesRemoved: int


def error_json(message: str) -> ErrorJson:
    """The body of an error answer."""
    return {"error": message, "ExceptionMessage": message}


@dataclass(frozen=True)
class ManagementUrls:
    """The management URLs of one instance: a check-status body and the binding's ``managementUrls``.

    ``base`` is the webhook root (``http://host:port/runtime/webhooks/durabletask``); ``query`` the
    common query string (``taskHub=…&connection=…``, and ``code=…`` when a key is to be embedded).
    """

    base: str
    query: str

    def for_instance(self, instance_id: str, id_in_url: str) -> CheckStatusJson:
        """URLs for ``instance_id``, which appears in paths as ``id_in_url`` (escaped, or a placeholder)."""
        instance = f"{self.base}/instances/{id_in_url}"
        query = self.query
        return {
            "id": instance_id,
            "statusQueryGetUri": f"{instance}?{query}",
            "sendEventPostUri": f"{instance}/raiseEvent/{{eventName}}?{query}",
            "terminatePostUri": f"{instance}/terminate?reason={{text}}&{query}",
            "rewindPostUri": f"{instance}/rewind?reason={{text}}&{query}",
            "purgeHistoryDeleteUri": f"{instance}?{query}",
            "restartPostUri": f"{instance}/restart?{query}",
            "suspendPostUri": f"{instance}/suspend?reason={{text}}&{query}",
            "resumePostUri": f"{instance}/resume?reason={{text}}&{query}",
        }


def common_query(hub_name: str, connection_name: str, system_key: str | None) -> str:
    """``taskHub=…&connection=…[&code=…]``: what every management URL carries."""
    params = {"taskHub": hub_name, "connection": connection_name}
    if system_key:
        params["code"] = system_key
    return urlencode(params, quote_via=quote)


def client_binding_json(
    base_url: str,
    hub_name: str,
    connection_name: str = "Storage",
    system_key: str | None = None,
    *,
    rpc_base_url: str | None = None,
) -> str:
    """The durable client binding JSON that makes every df client method call the management routes.

    ``base_url`` is the origin the routes are served on (``http://localhost:7071``, no trailing slash).
    The df client reads ``rpcBaseUrl`` for its own calls and ``managementUrls`` (with the
    ``INSTANCEID`` placeholder) for check-status payloads. The df client never sends a key on its own
    calls, so a host that requires one gives it a separate ``rpc_base_url`` (DF's local RPC endpoint).
    """
    base = f"{base_url}{MANAGEMENT_PREFIX}"
    code = f"code={quote(system_key, safe='')}" if system_key else ""
    create = f"{base}/orchestrators/{{functionName}}[/{{instanceId}}]"
    wait = "timeout={timeoutInSeconds}&pollingInterval={intervalInSeconds}"
    urls = ManagementUrls(base, common_query(hub_name, connection_name, system_key))
    binding = {
        "taskHubName": hub_name,
        "creationUrls": {
            "createNewInstancePostUri": f"{create}?{code}" if code else create,
            "createAndWaitOnNewInstancePostUri": f"{create}?{wait}&{code}" if code else f"{create}?{wait}",
        },
        "managementUrls": urls.for_instance(INSTANCE_ID_PLACEHOLDER, INSTANCE_ID_PLACEHOLDER),
        "baseUrl": base,
        "requiredQueryStringParameters": code,
        "rpcBaseUrl": rpc_base_url or f"{base}/",
        "httpBaseUrl": base,
        # 0: this binding does not use gRPC.
        "maxGrpcMessageSizeInBytes": 0,
        "grpcHttpClientTimeout": GRPC_HTTP_CLIENT_TIMEOUT,
    }
    return json.dumps(binding)


def json_value(text: str | None) -> Any:
    """A stored JSON text as a value; plain text (termination reasons, failure messages) stays a string.

    So does text that is not JSON by :func:`~durable_ext.wire.parse_json`'s rules (NaN, lone
    surrogates, … written by other tools or older versions): shown as a string it cannot make the
    response invalid JSON.
    """
    if text is None:
        return None
    stripped = text.strip()
    try:
        return parse_json(stripped)
    except ValidationError:
        return stripped


def _status_time(value: datetime | None) -> str | None:
    # DF writes whole seconds: DateTime.ToString("s") + "Z".
    if value is None:
        return None
    return value.astimezone(UTC).replace(microsecond=0, tzinfo=None).isoformat() + "Z"


def status_json(state: OrchestrationState, *, show_input: bool) -> StatusJson:
    """DF's status payload: name, instanceId, runtimeStatus, input, customStatus, output, times."""
    status = state.runtime_status
    return {
        "name": state.name,
        "instanceId": state.instance_id,
        "runtimeStatus": status.name if status is not None else None,  # type: ignore[typeddict-item]
        "input": json_value(state.input) if show_input else None,
        "customStatus": json_value(state.custom_status),
        "output": json_value(state.output),
        "createdTime": _status_time(state.created_time),
        "lastUpdatedTime": _status_time(state.last_updated_time),
    }


def entity_json(entity: EntitySnapshot, *, show_state: bool) -> EntityJson:
    """DF's ``DurableEntityStatus``: ``entityId`` {name, key}, ``lastOperationTime``, ``state`` if shown."""
    name, key = parse_entity_instance_id(entity.entity_id)
    modified = entity.last_modified
    body: EntityJson = {
        "entityId": {"name": name, "key": key},
        "lastOperationTime": format_datetime(modified) if modified is not None else None,
    }
    if show_state:
        body["state"] = json_value(entity.state)
    return body


# Scheduling events whose completions take over their name and time in a shown history.
_SCHEDULING = {
    EventType.TaskCompleted: EventType.TaskScheduled,
    EventType.TaskFailed: EventType.TaskScheduled,
    EventType.SubOrchestrationInstanceCompleted: EventType.SubOrchestrationInstanceCreated,
    EventType.SubOrchestrationInstanceFailed: EventType.SubOrchestrationInstanceCreated,
}
_RESULT_EVENTS = frozenset(
    {
        EventType.TaskCompleted,
        EventType.SubOrchestrationInstanceCompleted,
        EventType.ExecutionCompleted,
        EventType.ContinueAsNew,
    }
)
# Members DF strips from each shown history event: payloads, and IDs that only matter to replay.
_HIDDEN_MEMBERS: dict[EventType, tuple[str, ...]] = {
    EventType.ExecutionStarted: ("OrchestrationInstance", "ParentInstance", "Version", "Tags", "Input"),
    EventType.TaskScheduled: ("Version", "Input"),
    EventType.SubOrchestrationInstanceCreated: ("Version", "Input"),
    EventType.TaskCompleted: ("TaskScheduledId",),
    EventType.TaskFailed: ("TaskScheduledId",),
    EventType.SubOrchestrationInstanceCompleted: ("TaskScheduledId",),
    EventType.SubOrchestrationInstanceFailed: ("TaskScheduledId",),
    EventType.ExecutionTerminated: ("Input",),
    EventType.TimerFired: ("TimerId",),
    EventType.EventRaised: ("Input",),
}


def history_json(events: Sequence[HistoryEvent], *, show_output: bool) -> list[dict[str, Any]]:
    """History as DF shows it: EventType names, episodes and scheduling events folded away.

    A completion takes its scheduling event's ``FunctionName`` and ``ScheduledTime`` and the
    scheduling event is dropped; ``Result`` appears (as JSON) only with ``show_output``; inputs, IDs
    and OrchestratorStarted/Completed are left out.
    """
    shown: list[dict[str, Any] | None] = []
    scheduled: dict[tuple[EventType, int], int] = {}
    for event in events:
        kind = event.event_type
        if kind in (EventType.OrchestratorStarted, EventType.OrchestratorCompleted):
            continue
        members = to_json_object(event, typed=False)
        item: dict[str, Any] = {"EventType": kind.name}
        hidden = {"EventId", "IsPlayed", *_HIDDEN_MEMBERS.get(kind, ())}
        item.update((k, v) for k, v in members.items() if v is not None and k not in hidden)
        if kind is EventType.ExecutionStarted and "Name" in item:
            item["FunctionName"] = item.pop("Name")
        if "OrchestrationStatus" in item:
            item["OrchestrationStatus"] = OrchestrationStatus(item["OrchestrationStatus"]).name
        if kind in _RESULT_EVENTS:
            result = item.pop("Result", None)
            if show_output:
                item["Result"] = json_value(result)
        if kind in (EventType.TaskScheduled, EventType.SubOrchestrationInstanceCreated):
            scheduled[(kind, event.event_id)] = len(shown)
        scheduling = _SCHEDULING.get(kind)
        if scheduling is not None:
            index = scheduled.pop((scheduling, members.get("TaskScheduledId", -1)), None)
            origin = shown[index] if index is not None else None
            if index is not None and origin is not None:
                item["FunctionName"] = origin.get("Name")
                item["ScheduledTime"] = origin.get("Timestamp")
                shown[index] = None
        shown.append(item)
    return [item for item in shown if item is not None]
