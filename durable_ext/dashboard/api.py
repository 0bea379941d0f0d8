"""The dashboard's routes: its page and static files, and the JSON API under ``/dashboard/api``.

The API is guarded as the management API is (:func:`~durable_ext.host.guard.presents_key`: with a
system key every API request must present it), answers errors as it does
(:func:`~durable_ext.host.api.failure_response`) and acts through the same
:class:`~durable_ext.client.TaskHubClient` operations. docs/dashboard.md is the contract.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import Field
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from durable_ext.client import TaskHubClient, validate_instance_id
from durable_ext.dashboard.entities import delete_entity, entity_page, signal_entity
from durable_ext.dashboard.hubs import DashboardHub, HubSet
from durable_ext.dashboard.queries import (
    DEFAULT_PAGE,
    MAX_PAGE,
    InstanceFilter,
    ListQuery,
    checked_instance_ids,
    count_statuses,
    list_rows,
    sort_rows,
)
from durable_ext.dashboard.views import (
    PAYLOADS,
    history_event,
    instance_detail,
    list_item,
    timeline,
)
from durable_ext.errors import (
    DurableExtError,
    InstanceNotFoundError,
    ValidationError,
)
from durable_ext.history import HistoryEvent
from durable_ext.host.api import SafeJSONResponse, failure_response, loggable
from durable_ext.host.df_json import error_json, json_value
from durable_ext.host.guard import MAX_BODY_BYTES, presents_key, read_text
from durable_ext.host.routes import Query
from durable_ext.logs import hub_log
from durable_ext.storage.outage import is_outage
from durable_ext.storage.tracking import InstanceState
from durable_ext.wire import parse_json

logger = logging.getLogger(__name__)

DASHBOARD_PREFIX = "/dashboard"
"""Where ``start`` and the ``dashboard`` command mount the dashboard."""
STATIC_DIR = Path(__file__).parent / "static"
"""The page and its assets."""
READ_ONLY_MESSAGE = "the dashboard is read-only"
HISTORY_PAGE = 100
"""Default ``top`` of a history page."""
HEAD_EVENTS = 4
"""History rows read for an instance's detail: ExecutionStarted is among the first few."""
IN_FLIGHT = 10
"""Storage operations one request runs at a time over many instances (bulk actions, children)."""

Json = Any
T = TypeVar("T")
HubHandler = Callable[[Request, DashboardHub], Awaitable[Json]]


@dataclass(frozen=True)
class DashboardOptions:
    """How a dashboard is served: its hubs, the key its API requires, and whether it may act."""

    hubs: HubSet
    system_key: str | None = None
    read_only: bool = False
    static_dir: Path = STATIC_DIR
    """Where the page (``index.html``) and its assets are."""


def dashboard_routes(options: DashboardOptions) -> list[BaseRoute]:
    """The dashboard's routes, to mount at :data:`DASHBOARD_PREFIX`."""
    return _Dashboard(options).routes()


def dashboard_mount(options: DashboardOptions) -> Mount:
    """The dashboard mounted at :data:`DASHBOARD_PREFIX`."""
    return Mount(DASHBOARD_PREFIX, routes=dashboard_routes(options))


class _PageQuery(Query):
    """``top`` and ``continuation`` of history and entity pages."""

    top: int | None = Field(None, ge=1, le=MAX_PAGE)
    continuation: str | None = None


class _Dashboard:
    def __init__(self, options: DashboardOptions) -> None:
        self.options = options

    def routes(self) -> list[BaseRoute]:
        hub = "/api/hubs/{hub}"
        instance = f"{hub}/instances/{{instanceId}}"
        entity = f"{hub}/entities/{{entityName}}/{{entityKey}}"
        return [
            Route("/", self._index, methods=["GET"]),
            Mount(
                "/static", app=StaticFiles(directory=self.options.static_dir, check_dir=False), name="static"
            ),
            Route("/api/hubs", self._guarded(self._hubs), methods=["GET"]),
            Route(f"{hub}/instances", self._on_hub(_list), methods=["GET"]),
            Route(f"{hub}/counts", self._on_hub(_counts), methods=["GET"]),
            Route(f"{hub}/bulk/{{action}}", self._on_hub(_bulk, acts=True), methods=["POST"]),
            Route(f"{hub}/entities", self._on_hub(_entities), methods=["GET"]),
            Route(f"{entity}/signal", self._on_hub(_signal, acts=True), methods=["POST"]),
            Route(entity, self._on_hub(_delete_entity, acts=True), methods=["DELETE"]),
            Route(instance, self._on_hub(_detail), methods=["GET"]),
            Route(f"{instance}/payload/{{payload}}", self._on_hub(_payload), methods=["GET"]),
            Route(f"{instance}/history", self._on_hub(_history), methods=["GET"]),
            Route(f"{instance}/timeline", self._on_hub(_timeline), methods=["GET"]),
            Route(f"{instance}/children", self._on_hub(_children), methods=["GET"]),
            Route(f"{instance}/{{action}}", self._on_hub(_act, acts=True), methods=["POST"]),
            Route("/api/{rest:path}", self._guarded(_no_route), methods=["GET", "POST", "PUT", "DELETE"]),
        ]

    async def _index(self, request: Request) -> Response:
        """The page; it holds no data, so it needs no key (the page asks for one)."""
        page = self.options.static_dir / "index.html"
        if not page.is_file():
            return PlainTextResponse("The dashboard page is not installed.", status_code=404)
        return FileResponse(page, headers={"Cache-Control": "no-cache"})

    async def _hubs(self, request: Request) -> Json:
        hubs = [{"id": hub.id, "hub": hub.hub, "account": hub.account} for hub in self.options.hubs.all()]
        return {"readOnly": self.options.read_only, "hubs": hubs}

    def _on_hub(self, handler: HubHandler, *, acts: bool = False) -> Callable[[Request], Awaitable[Response]]:
        async def on_hub(request: Request) -> Json:
            if acts and self.options.read_only:
                raise _ReadOnlyError()
            return await handler(request, self.options.hubs.get(request.path_params["hub"]))

        return self._guarded(on_hub)

    def _guarded(
        self, handler: Callable[[Request], Awaitable[Json]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """``handler`` behind the key check, its answer as JSON and its errors as the API's."""

        async def guarded(request: Request) -> Response:
            line = f"{request.method} {loggable(request.url.path)}"
            key = self.options.system_key
            if key is not None and not presents_key(request, key):
                logger.warning("%s refused: missing or wrong system key", line)
                return _error(401, "a valid system key is required in the x-functions-key header")
            try:
                body = await handler(request)
            except _ReadOnlyError:
                logger.info("%s -> 403: read-only", line)
                return _error(403, READ_ONLY_MESSAGE)
            except Exception as exc:
                return self._failure(request, line, exc)
            logger.info("%s -> 200", line)
            return body if isinstance(body, Response) else SafeJSONResponse(body)

        return guarded

    def _failure(self, request: Request, line: str, exc: Exception) -> Response:
        hub_key = request.path_params.get("hub")
        hubs = {hub.id: hub for hub in self.options.hubs.all()}
        hub = hubs.get(hub_key) if hub_key is not None else None
        storage = hub.client.hub.account.describe() if hub is not None else ""
        log = hub_log(logger, hub.hub if hub is not None else "-")
        return failure_response(storage, log, line, exc, "the dashboard")


class _ReadOnlyError(Exception):
    """An action asked of a read-only dashboard."""


async def _no_route(request: Request) -> Json:
    raise InstanceNotFoundError(f"no dashboard API route {request.method} {loggable(request.url.path)}")


# ---- instances ----------------------------------------------------------------------------------------


async def _list(request: Request, hub: DashboardHub) -> Json:
    query = ListQuery.from_request(request)
    page = await list_rows(hub.client.hub.tracking, query, top=query.top, continuation=query.continuation)
    rows = sort_rows(page.rows, query.sort, query.order)
    return {"instances": [list_item(row) for row in rows], "continuation": page.continuation}


async def _counts(request: Request, hub: DashboardHub) -> Json:
    counts = await count_statuses(hub.client.hub.tracking, InstanceFilter.from_request(request))
    return {"counts": counts, "total": sum(counts.values())}


async def _row(hub: DashboardHub, request: Request, *, full: bool = False) -> InstanceState:
    instance_id = validate_instance_id(request.path_params["instanceId"])
    row = await hub.client.hub.tracking.get_instance(instance_id, fetch_large_values=full)
    if row is None:
        raise InstanceNotFoundError(f"no instance with ID {instance_id!r} exists in task hub {hub.hub}")
    return row


async def _detail(request: Request, hub: DashboardHub) -> Json:
    row = await _row(hub, request, full=True)
    head = await hub.client.hub.tracking.load_history_head(row.instance_id, HEAD_EVENTS)
    return instance_detail(row, head)


async def _payload(request: Request, hub: DashboardHub) -> Json:
    attribute = PAYLOADS.get(request.path_params["payload"])
    if attribute is None:
        names = ", ".join(PAYLOADS)
        raise InstanceNotFoundError(f"no payload {request.path_params['payload'][:40]!r}; use {names}")
    row = await _row(hub, request, full=True)
    return SafeJSONResponse(json_value(getattr(row, attribute)))


async def _history(request: Request, hub: DashboardHub) -> Json:
    query = _PageQuery.from_request(request)
    first = _history_offset(query.continuation)
    row = await _row(hub, request)
    events: list[HistoryEvent] = []
    following = None
    if row.execution_id is not None:
        events, following = await hub.client.hub.tracking.load_history_page(
            row.instance_id, row.execution_id, first, query.top or HISTORY_PAGE
        )
    return {
        "events": [history_event(event) for event in events],
        "continuation": _history_token(following) if following is not None else None,
    }


def _history_token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def _history_offset(token: str | None) -> int:
    if not token:
        return 0
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
    except ValueError:
        data = None
    offset = data.get("offset") if isinstance(data, dict) else None
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise ValidationError(
            f"continuation token {token[:80]!r} is not valid; pass back the one a page returned"
        )
    return offset


async def _timeline(request: Request, hub: DashboardHub) -> Json:
    row = await _row(hub, request)
    events = await hub.client.hub.tracking.load_history_outline(row.instance_id)
    return {"items": timeline(events)}


async def _children(request: Request, hub: DashboardHub) -> Json:
    row = await _row(hub, request)
    tracking = hub.client.hub.tracking
    ids = await tracking.sub_orchestration_ids(row.instance_id, row.execution_id) if row.execution_id else []
    rows = await in_batches(ids, lambda child: tracking.get_instance(child, fetch_large_values=False))
    return {
        "children": [
            {
                "instanceId": child,
                "name": found.name if found is not None else None,
                "runtimeStatus": (
                    found.runtime_status.name if found is not None and found.runtime_status else None
                ),
            }
            for child, found in zip(ids, rows, strict=True)
        ]
    }


async def in_batches(items: list[str], work: Callable[[str], Awaitable[T]]) -> list[T]:
    """``work`` on every item, :data:`IN_FLIGHT` at a time; the results in the items' order."""
    results: list[T] = []
    for first in range(0, len(items), IN_FLIGHT):
        results += await asyncio.gather(*(work(item) for item in items[first : first + IN_FLIGHT]))
    return results


# ---- actions ------------------------------------------------------------------------------------------

Action = Callable[[TaskHubClient, str, dict[str, Any]], Awaitable[Json]]


def _reason(body: dict[str, Any]) -> str | None:
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise ValidationError("reason must be a string")
    return reason


async def _suspend(client: TaskHubClient, instance_id: str, body: dict[str, Any]) -> Json:
    await client.suspend(instance_id, _reason(body))


async def _resume(client: TaskHubClient, instance_id: str, body: dict[str, Any]) -> Json:
    await client.resume(instance_id, _reason(body))


async def _terminate(client: TaskHubClient, instance_id: str, body: dict[str, Any]) -> Json:
    await client.terminate(instance_id, _reason(body))


async def _rewind(client: TaskHubClient, instance_id: str, body: dict[str, Any]) -> Json:
    await client.rewind(instance_id, _reason(body))


async def _restart(client: TaskHubClient, instance_id: str, body: dict[str, Any]) -> Json:
    new_id = body.get("newInstanceId", True)
    if not isinstance(new_id, bool):
        raise ValidationError("newInstanceId must be true or false")
    return {"instanceId": await client.restart(instance_id, new_instance_id=new_id)}


async def _purge(client: TaskHubClient, instance_id: str, body: dict[str, Any]) -> Json:
    if await client.purge_instance(instance_id) == 0:
        raise InstanceNotFoundError(
            f"no instance with ID {instance_id!r} exists in task hub {client.hub.names.hub}"
        )
    return {"instancesDeleted": 1}


async def _raise_event(client: TaskHubClient, instance_id: str, body: dict[str, Any]) -> Json:
    name = body.get("eventName")
    if not isinstance(name, str) or not name:
        raise ValidationError("eventName must be a non-empty string")
    data = json.dumps(body["eventData"], ensure_ascii=False) if "eventData" in body else None
    await client.raise_event(instance_id, name, data)


ACTIONS: dict[str, Action] = {
    "suspend": _suspend,
    "resume": _resume,
    "terminate": _terminate,
    "restart": _restart,
    "rewind": _rewind,
    "purge": _purge,
    "raiseEvent": _raise_event,
}
"""The instance actions by the name in their URL."""


def _action(request: Request) -> Action:
    name = request.path_params["action"]
    action = ACTIONS.get(name)
    if action is None:
        raise InstanceNotFoundError(f"no instance action {name[:40]!r}; use {', '.join(ACTIONS)}")
    return action


async def read_json_object(request: Request) -> dict[str, Any]:
    """The request's JSON body as an object ({} when empty); 400 when not JSON or not an object."""
    text = (await read_text(request, MAX_BODY_BYTES)).strip()
    if not text:
        return {}
    value = parse_json(text, "request body")
    if not isinstance(value, dict):
        raise ValidationError("the request body must be a JSON object")
    return value


async def _act(request: Request, hub: DashboardHub) -> Json:
    action = _action(request)
    instance_id = validate_instance_id(request.path_params["instanceId"])
    body = await read_json_object(request)
    result = await action(hub.client, instance_id, body)
    answer: dict[str, Any] = {"instanceId": instance_id, "ok": True}
    if result is not None:
        answer["result"] = result
    return answer


async def _bulk(request: Request, hub: DashboardHub) -> Json:
    action = _action(request)
    body = await read_json_object(request)
    ids = await _bulk_targets(hub, body)
    outcomes = await in_batches(ids, lambda instance_id: _outcome(hub, action, instance_id, body))
    return {"results": outcomes}


async def _bulk_targets(hub: DashboardHub, body: dict[str, Any]) -> list[str]:
    if ("instanceIds" in body) == ("filter" in body):
        raise ValidationError("give either instanceIds or filter (with limit)")
    if "instanceIds" in body:
        return checked_instance_ids(body["instanceIds"])
    where = body["filter"]
    if not isinstance(where, dict):
        raise ValidationError("filter must be a JSON object with the list query's keys")
    limit = body.get("limit", MAX_PAGE)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_PAGE:
        raise ValidationError(f"limit must be an integer between 1 and {MAX_PAGE}, got {limit!r}")
    query = InstanceFilter.from_mapping(
        {key: value for key, value in where.items() if value not in (None, "")}
    )
    page = await list_rows(hub.client.hub.tracking, query, top=limit, continuation=None, columns=("RowKey",))
    return [row.instance_id for row in page.rows]


async def _outcome(
    hub: DashboardHub, action: Action, instance_id: str, body: dict[str, Any]
) -> dict[str, Any]:
    """One instance's outcome of a bulk action, as the single action's status would be."""
    try:
        await action(hub.client, instance_id, body)
    except Exception as exc:
        if is_outage(exc):
            return {"instanceId": instance_id, "ok": False, "status": 503, "error": "storage is unreachable"}
        if isinstance(exc, DurableExtError):
            return {"instanceId": instance_id, "ok": False, "status": exc.http_status, "error": str(exc)}
        logger.error("bulk action on %s failed", instance_id, exc_info=exc)
        return {"instanceId": instance_id, "ok": False, "status": 500, "error": "failed unexpectedly"}
    return {"instanceId": instance_id, "ok": True, "status": 200}


# ---- entities -----------------------------------------------------------------------------------------


async def _entities(request: Request, hub: DashboardHub) -> Json:
    query = _EntityQuery.from_request(request)
    return await entity_page(hub.client, query.prefix, query.top or DEFAULT_PAGE, query.continuation)


class _EntityQuery(_PageQuery):
    prefix: str | None = None


async def _signal(request: Request, hub: DashboardHub) -> Json:
    body = await read_json_object(request)
    name, key = request.path_params["entityName"], request.path_params["entityKey"]
    return await signal_entity(hub.client, name, key, body)


async def _delete_entity(request: Request, hub: DashboardHub) -> Json:
    name, key = request.path_params["entityName"], request.path_params["entityKey"]
    return await delete_entity(hub.client, name, key)


# ---- answers ------------------------------------------------------------------------------------------


def _error(status: int, message: str) -> Response:
    return SafeJSONResponse(error_json(message), status_code=status)
