"""The Durable Functions management HTTP API under ``/runtime/webhooks/durabletask``.

The df client (``DurableOrchestrationClient``) sends every operation as an HTTP request to the URLs of
its client binding JSON. :func:`client_binding_json` points all of them here, and
:func:`management_routes` answers them as the Durable Functions extension's ``HttpApiHandler`` does
(routes, query parameters, status codes, JSON field names), on top of a
:class:`~durable_ext.client.TaskHubClient`. The same routes serve the documented HTTP API to curl,
dashboards and the URLs of check-status responses.

Where we decided differently from DF, and why:

* **Payload encoding.** The df client JSON-encodes inputs and event data, then aiohttp encodes that
  text again, so the body is a JSON string holding JSON. DF stores the body as it comes, which makes a
  Python orchestrator see the inner text as a string (azure-functions-durable-python issue #295). A body
  that is a JSON string whose content is itself JSON is therefore unwrapped once; any other JSON body
  (an object from curl, a plain string) is taken as the value itself.
* **Strict JSON.** DF (Newtonsoft) is lenient; here bodies and JSON unwrapped from them must pass
  :func:`durable_ext.wire.parse_json`: no NaN or Infinity, numbers within a double, integers of at
  most 4300 digits, at most 512 levels of nesting, no lone surrogates. Anything else is 400 with
  nothing written, so a JSON string holding ``NaN`` (the df client's encoding of a NaN input) is
  refused, not kept as a string. Stored values that break these rules (written by other tools) are
  shown as the string they are, so every response stays valid JSON.
* **Other 400s** where DF would fail later or differently: time filters outside years 1-9999 once
  converted to UTC, instance ID prefixes and entity names longer than an instance ID (256
  characters), continuation tokens that no query returned.
* **Wrong state.** Operations on an instance that has ended answer 410 as in DF. Suspending a suspended
  instance or resuming a running one answers 409 (DF answers 500 there).
* **Purge by filter** only ever deletes ended instances; DT.AS drops a status filter that names no ended
  status and would then purge running ones.
* **Errors** are JSON ``{"error": message}``; ``ExceptionMessage`` carries the same text because the df
  client's ``start_new`` reads that key of .NET's error body on 400.
* **Entity operation input** follows the payload rule above for an ``application/json`` body; any other
  body is, as in DF, the operation's input as a string. Entity keys follow the instance-ID rules (DF
  allows ``# ? \\`` in keys). Keys must not be empty, so DF's ``$`` placeholder for one is not read.
* **Entity lists** leave out deleted entities (as DF) and filter ``lastOperationTime`` after reading a
  page, so a page may hold fewer than ``top`` entities; it is never empty while a token follows.
* **Entity clean-up** has no DF route (DF offers it only as ``CleanEntityStorageAsync`` in .NET):
  ``POST entities/clean[?minIdleSeconds=…]`` purges empty entities (no state, no queued operation, no
  lock) idle for that long (default 30 minutes) and answers ``{"numberOfEmptyEntitiesRemoved": n}``.
* **Keys in check-status URLs.** DF embeds the system key (``code=``) in every check-status URL, so an
  anonymous starter hands management rights over every instance to whoever calls it. Here a URL
  carries the key only when the request that produced it presented the key (the management API
  always requires it; an HTTP function's caller may present it); an anonymous caller gets URLs without
  ``code=``, which answer 401 until the key is added. No per-instance token is minted: a bearer token
  would still grant terminate, purge and restart to anyone who saw the URL.
* **Keys.** Every key a request presents (``code`` and ``x-functions-key``) must be right; see
  :mod:`durable_ext.host.guard`, which HTTP functions share.
* **Bounds.** ``timeout`` is at most :data:`MAX_WAIT_SECONDS` (an hour) and ``pollingInterval`` is
  positive and at most ``timeout``; anything else (negative, not finite, larger) is a 400 rather than
  a connection held for ever. Bodies are limited to :data:`~durable_ext.host.guard.MAX_BODY_BYTES`
  (413), list pages to :data:`~durable_ext.client.MAX_QUERY_PAGE_BYTES` of payloads.
* Not supported, answered 501: ``?version=`` on start.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from durable_ext.app_loader import FunctionKind
from durable_ext.client import (
    DEFAULT_QUERY_PAGE_SIZE,
    ENTITY_CLEAN_MIN_IDLE,
    EntitySnapshot,
    OrchestrationState,
    TaskHubClient,
    validate_instance_id,
)
from durable_ext.config import MANAGEMENT_ROUTE
from durable_ext.entities import entity_instance_id, parse_entity_instance_id
from durable_ext.errors import (
    DurableExtError,
    InstanceExistsError,
    InstanceGoneError,
    InstanceNotFoundError,
    InvalidInstanceStateError,
    NotJsonError,
    PayloadTooLargeError,
    ValidationError,
)
from durable_ext.history import EventType, HistoryEvent, OrchestrationStatus
from durable_ext.host.guard import MAX_BODY_BYTES, presents_key, read_body
from durable_ext.host.openapi import openapi_document
from durable_ext.storage.outage import describe_outage, storage_health
from durable_ext.storage.tracking import InstanceQuery
from durable_ext.wire import format_datetime, parse_datetime, parse_json, to_json_object

logger = logging.getLogger(__name__)

MANAGEMENT_PREFIX = f"/{MANAGEMENT_ROUTE}"
"""Where the management routes are mounted, as in the Functions host."""

CONTINUATION_HEADER = "x-ms-continuation-token"
"""Request and response header that pages instance and entity queries."""

INSTANCE_ID_PLACEHOLDER = "INSTANCEID"
"""What the binding's management URLs hold in place of the ID; the df client substitutes it."""

GRPC_HTTP_CLIENT_TIMEOUT = "00:01:40"
"""The binding's ``grpcHttpClientTimeout`` (DF's default, 100 s); the HTTP-based df client ignores it."""

MAX_WAIT_SECONDS = 3600.0
"""Longest ``timeout`` a start or restart may wait for the instance to end (``pollingInterval`` ≤ it)."""

_STATUS_RETRY_AFTER = "5"
_OUTAGE_RETRY_AFTER = "5"
"""Seconds a client should wait before retrying while storage is unreachable."""
_CHECK_STATUS_RETRY_AFTER = "10"
_RUNNING = frozenset(
    {
        OrchestrationStatus.Running,
        OrchestrationStatus.Pending,
        OrchestrationStatus.ContinuedAsNew,
        OrchestrationStatus.Suspended,
    }
)
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

_ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
_MAX_TIMESPAN_SECONDS = timedelta.max.total_seconds()
"""Longer durations do not fit a timedelta (nor a .NET TimeSpan)."""

Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class ManagementUrls:
    """The management URLs of one instance: the check-status payload and the binding's ``managementUrls``.

    ``base`` is the webhook root (``http://host:port/runtime/webhooks/durabletask``); ``query`` the
    common query string (``taskHub=…&connection=…`` and ``code=…`` when a system key is set).
    """

    id: str
    status_query_get_uri: str
    send_event_post_uri: str
    terminate_post_uri: str
    rewind_post_uri: str
    purge_history_delete_uri: str
    restart_post_uri: str
    suspend_post_uri: str
    resume_post_uri: str

    @classmethod
    def build(cls, base: str, query: str, instance_id: str, id_in_url: str) -> ManagementUrls:
        """URLs for ``instance_id``, which appears in paths as ``id_in_url`` (escaped, or a placeholder)."""
        instance = f"{base}/instances/{id_in_url}"
        return cls(
            id=instance_id,
            status_query_get_uri=f"{instance}?{query}",
            send_event_post_uri=f"{instance}/raiseEvent/{{eventName}}?{query}",
            terminate_post_uri=f"{instance}/terminate?reason={{text}}&{query}",
            rewind_post_uri=f"{instance}/rewind?reason={{text}}&{query}",
            purge_history_delete_uri=f"{instance}?{query}",
            restart_post_uri=f"{instance}/restart?{query}",
            suspend_post_uri=f"{instance}/suspend?reason={{text}}&{query}",
            resume_post_uri=f"{instance}/resume?reason={{text}}&{query}",
        )

    def to_json(self) -> dict[str, str]:
        """The camelCase object DF returns (``id``, ``statusQueryGetUri``, …)."""
        return {
            "id": self.id,
            "statusQueryGetUri": self.status_query_get_uri,
            "sendEventPostUri": self.send_event_post_uri,
            "terminatePostUri": self.terminate_post_uri,
            "rewindPostUri": self.rewind_post_uri,
            "purgeHistoryDeleteUri": self.purge_history_delete_uri,
            "restartPostUri": self.restart_post_uri,
            "suspendPostUri": self.suspend_post_uri,
            "resumePostUri": self.resume_post_uri,
        }


def _common_query(hub_name: str, connection_name: str, system_key: str | None) -> str:
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
    """The durable client binding JSON that makes every df client method call these routes.

    ``base_url`` is the origin the routes are served on (``http://localhost:7071``, no trailing slash).
    The df client reads ``rpcBaseUrl`` for its own calls and ``managementUrls`` (with the
    ``INSTANCEID`` placeholder) for check-status payloads. The df client never sends a key on its own
    calls, so a host that requires one gives it a separate ``rpc_base_url`` (DF's local RPC endpoint).
    """
    base = f"{base_url}{MANAGEMENT_PREFIX}"
    code = f"code={quote(system_key, safe='')}" if system_key else ""
    create = f"{base}/orchestrators/{{functionName}}[/{{instanceId}}]"
    wait = "timeout={timeoutInSeconds}&pollingInterval={intervalInSeconds}"
    query = _common_query(hub_name, connection_name, system_key)
    urls = ManagementUrls.build(base, query, INSTANCE_ID_PLACEHOLDER, INSTANCE_ID_PLACEHOLDER)
    binding = {
        "taskHubName": hub_name,
        "creationUrls": {
            "createNewInstancePostUri": f"{create}?{code}" if code else create,
            "createAndWaitOnNewInstancePostUri": f"{create}?{wait}&{code}" if code else f"{create}?{wait}",
        },
        "managementUrls": urls.to_json(),
        "baseUrl": base,
        "requiredQueryStringParameters": code,
        "rpcBaseUrl": rpc_base_url or f"{base}/",
        "httpBaseUrl": base,
        # 0: this binding does not use gRPC.
        "maxGrpcMessageSizeInBytes": 0,
        "grpcHttpClientTimeout": GRPC_HTTP_CLIENT_TIMEOUT,
    }
    return json.dumps(binding)


def management_routes(
    client: TaskHubClient,
    *,
    system_key: str | None = None,
    known_functions: Callable[[str, FunctionKind], bool] | None = None,
    connection_name: str = "Storage",
    max_body_bytes: int = MAX_BODY_BYTES,
) -> list[BaseRoute]:
    """The management API's routes, to mount at :data:`MANAGEMENT_PREFIX`.

    With ``system_key`` every route requires it as the ``code`` query parameter or the
    ``x-functions-key`` header, under :func:`~durable_ext.host.guard.presents_key`'s rule (401
    otherwise). ``known_functions`` tells whether the app has a function of that name and kind; starting
    an orchestrator or signalling an entity the app does not have is refused with 400 before anything
    is written. ``connection_name`` only appears in generated URLs, as DF's ``connection`` parameter.
    A body over ``max_body_bytes`` is refused with 413 (see :func:`df_client_body_limit`).
    """
    api = _ManagementApi(client, system_key, known_functions, connection_name, max_body_bytes)
    return api.routes()


def df_client_body_limit(max_payload_bytes: int) -> int:
    """The body limit of a mount only the df client calls: ``max_payload_bytes`` in the df encoding.

    The df client JSON-encodes a payload, then aiohttp encodes that text again, which at most doubles
    each byte of the (ASCII) inner JSON and adds two quotes.
    """
    return 2 * max_payload_bytes + 2


class _ManagementApi:
    """The handlers behind :func:`management_routes`."""

    def __init__(
        self,
        client: TaskHubClient,
        system_key: str | None,
        known_functions: Callable[[str, FunctionKind], bool] | None,
        connection_name: str,
        max_body_bytes: int,
    ) -> None:
        self.client = client
        self.system_key = system_key or None
        self.known_functions = known_functions
        self.connection_name = connection_name
        self.max_body_bytes = max_body_bytes
        self.hub_name = client.hub.names.hub
        self.storage = client.hub.account.describe()

    def routes(self) -> list[BaseRoute]:
        e = self._endpoint
        return [
            Route("/orchestrators/{function_name}", e(self.start), methods=["POST"]),
            Route("/orchestrators/{function_name}/{instance_id}", e(self.start), methods=["POST"]),
            # The df client lists with a trailing slash ("instances/?…"), curl users without.
            Route("/instances", e(self.list_instances), methods=["GET"]),
            Route("/instances/", e(self.list_instances), methods=["GET"]),
            Route("/instances", e(self.purge_instances), methods=["DELETE"]),
            Route("/instances/", e(self.purge_instances), methods=["DELETE"]),
            Route("/instances/{instance_id}", e(self.get_status), methods=["GET"]),
            Route("/instances/{instance_id}", e(self.purge_instance), methods=["DELETE"]),
            Route("/instances/{instance_id}/{operation}", e(self.operation), methods=["POST"]),
            Route("/instances/{instance_id}/{operation}/{event_name}", e(self.raise_event), methods=["POST"]),
            Route("/entities", e(self.list_entities), methods=["GET"]),
            Route("/entities/", e(self.list_entities), methods=["GET"]),
            Route("/entities/clean", e(self.clean_entities), methods=["POST"]),
            Route("/entities/{entity_name}", e(self.list_entities), methods=["GET"]),
            Route("/entities/{entity_name}/{entity_key}", e(self.get_entity), methods=["GET"]),
            Route("/entities/{entity_name}/{entity_key}", e(self.signal_entity), methods=["POST", "DELETE"]),
            Route("/openapi.json", self.openapi, methods=["GET"]),
            # Last, so that a wrong method on a known path is a JSON 404 (as in DF), not a bare 405.
            Route("/{rest:path}", e(self.not_found), methods=_ANY_METHOD),
        ]

    # ---- plumbing ---------------------------------------------------------------------------

    def _endpoint(self, handler: Handler) -> Handler:
        """Wrap a handler with the system-key check, the task-hub check and error-to-status mapping."""

        async def endpoint(request: Request) -> Response:
            instance_id = _loggable(request.path_params.get("instance_id", "-"))
            path = _loggable(_public_path(request))
            if not self._authorized(request):
                logger.warning(
                    "hub %s instance %s: %s %s refused: missing or wrong system key",
                    self.hub_name,
                    instance_id,
                    request.method,
                    path,
                )
                return _error(401, "a valid system key is required as ?code= or the x-functions-key header")
            try:
                self._check_task_hub(request)
                response = await handler(request)
            except Exception as exc:
                return self._failure(request, instance_id, path, exc)
            logger.info(
                "hub %s instance %s: %s %s -> %d",
                self.hub_name,
                instance_id,
                request.method,
                path,
                response.status_code,
            )
            return response

        return endpoint

    def _failure(self, request: Request, instance_id: str, path: str, exc: Exception) -> Response:
        """The answer to a handler that raised: 503 for a storage outage, the error's status, or 500."""
        if storage_health.failed(self.storage, exc):
            # The outage itself is logged once by storage_health; each refused request only at INFO.
            logger.info(
                "hub %s instance %s: %s %s -> 503: storage unreachable",
                self.hub_name,
                instance_id,
                request.method,
                path,
            )
            return _error(
                503,
                f"storage is unreachable: {describe_outage(exc)}",
                headers={"Retry-After": _OUTAGE_RETRY_AFTER},
            )
        if isinstance(exc, DurableExtError):
            status = _status_for(exc)
            log = logger.error if status >= 500 else logger.info
            log(
                "hub %s instance %s: %s %s -> %d: %s",
                self.hub_name,
                instance_id,
                request.method,
                path,
                status,
                exc,
            )
            return _error(status, str(exc))
        logger.error(
            "hub %s instance %s: %s %s failed", self.hub_name, instance_id, request.method, path, exc_info=exc
        )
        return _error(500, "the management API failed unexpectedly; see the host log")

    def _authorized(self, request: Request) -> bool:
        return self.system_key is None or presents_key(request, self.system_key)

    def _check_task_hub(self, request: Request) -> None:
        wanted = request.query_params.get("taskHub")
        # Hub names are case-insensitive: queues and containers use the lower-cased name.
        if wanted and wanted.lower() != self.hub_name.lower():
            raise ValidationError(f"this host serves task hub {self.hub_name!r}, not {wanted!r}")

    def _check_function(self, name: str, kind: FunctionKind) -> None:
        """DF's own check (and message) before it starts an orchestration or signals an entity."""
        if self.known_functions is not None and not self.known_functions(name, kind):
            raise ValidationError(
                f"The function '{name}' doesn't exist, is disabled, or is not an {kind.value} function"
            )

    def _urls(self, request: Request, instance_id: str) -> ManagementUrls:
        """Public management URLs on the origin the request came in on.

        Always under :data:`MANAGEMENT_PREFIX`, even for calls that arrived on a host's private RPC
        mount, whose path must not leak into payloads.
        """
        base = f"{request.url.scheme}://{request.url.netloc}{MANAGEMENT_PREFIX}"
        query = _common_query(self.hub_name, self.connection_name, self.system_key)
        return ManagementUrls.build(base, query, instance_id, quote(instance_id, safe=""))

    def _check_status_response(self, request: Request, instance_id: str) -> Response:
        urls = self._urls(request, instance_id)
        headers = {"Location": urls.status_query_get_uri, "Retry-After": _CHECK_STATUS_RETRY_AFTER}
        return _JSONResponse(urls.to_json(), status_code=202, headers=headers)

    # ---- orchestrations ---------------------------------------------------------------------

    async def start(self, request: Request) -> Response:
        """``POST orchestrators/{functionName}[/{instanceId}]``: body = input JSON; 202 + check-status."""
        name = request.path_params["function_name"]
        instance_id = request.path_params.get("instance_id")
        if instance_id is not None:
            validate_instance_id(instance_id)
        if request.query_params.get("version"):
            return _error(501, "orchestration versions (?version=) are not supported yet")
        self._check_function(name, FunctionKind.ORCHESTRATOR)
        wait = _wait_params(request)
        payload = _payload_from_body(await self._read_body(request))
        started = await self.client.start_new(name, instance_id, payload)
        if wait is not None:
            return await self._wait_or_check_status(request, started, wait)
        return self._check_status_response(request, started)

    async def _read_body(self, request: Request) -> str:
        body = await read_body(request, self.max_body_bytes)
        if body is None:
            raise PayloadTooLargeError(f"the request body is larger than {self.max_body_bytes} bytes")
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValidationError(f"request body is not UTF-8: {exc}") from exc

    async def _wait_or_check_status(self, request: Request, instance_id: str, wait: _Wait) -> Response:
        """DF's WaitForCompletionOrCreateCheckStatusResponse: the output, the final status, or 202."""
        try:
            state = await self.client.wait_for_completion(instance_id, wait.timeout, wait.polling_interval)
        except TimeoutError:
            return self._check_status_response(request, instance_id)
        if state.runtime_status is OrchestrationStatus.Completed:
            return _JSONResponse(_json_value(state.output))
        return self._status_response(request, state, _StatusOptions.from_request(request), None)

    async def get_status(self, request: Request) -> Response:
        """``GET instances/{id}``: 200 ended, 202 running (Location, Retry-After), 404 unknown."""
        instance_id = validate_instance_id(request.path_params["instance_id"], allow_entity=True)
        options = _StatusOptions.from_request(request)
        state = await self.client.get_status(instance_id)
        if state is None:
            return _error(404, f"no instance with ID {instance_id!r} exists in task hub {self.hub_name}")
        history = None
        if options.show_history and state.runtime_status is not OrchestrationStatus.Pending:
            events = (await self.client.hub.tracking.load_history(instance_id)).events
            history = history_json(events, show_output=options.show_history_output)
        return self._status_response(request, state, options, history)

    def _status_response(
        self,
        request: Request,
        state: OrchestrationState,
        options: _StatusOptions,
        history: list[dict[str, Any]] | None,
    ) -> Response:
        body = status_json(state, show_input=options.show_input)
        if options.show_history:
            body["historyEvents"] = history
        status = state.runtime_status
        if status in _RUNNING:
            location = str(request.url.replace(path=quote(_public_path(request))))
            headers = {"Location": location, "Retry-After": _STATUS_RETRY_AFTER}
            return _JSONResponse(body, status_code=202, headers=headers)
        if status is None:
            logger.error("hub %s instance %s: unknown runtime status", self.hub_name, state.instance_id)
            return _JSONResponse(body, status_code=500)
        failed = status is OrchestrationStatus.Failed
        return _JSONResponse(body, status_code=500 if failed and options.fail_with_500 else 200)

    async def list_instances(self, request: Request) -> Response:
        """``GET instances``: filters, ``top``, paging through the ``x-ms-continuation-token`` header."""
        params = request.query_params
        query = InstanceQuery(
            created_from=_datetime_param(request, "createdTimeFrom"),
            created_to=_datetime_param(request, "createdTimeTo"),
            statuses=_statuses_param(request),
            instance_id_prefix=params.get("instanceIdPrefix") or None,
        )
        show_input = _bool_param(request, "showInput", default=True)
        result = await self.client.query_instances(
            query,
            page_size=_int_param(request, "top", DEFAULT_QUERY_PAGE_SIZE),
            continuation_token=request.headers.get(CONTINUATION_HEADER) or None,
            show_input=show_input,
        )
        body = [status_json(state, show_input=show_input) for state in result.instances]
        return _page_response(body, result.continuation_token)

    async def purge_instance(self, request: Request) -> Response:
        """``DELETE instances/{id}``: 200 ``{"instancesDeleted": 1}``, 404 unknown, 412 still running."""
        instance_id = request.path_params["instance_id"]
        try:
            deleted = await self.client.purge_instance(instance_id)
        except InvalidInstanceStateError as exc:
            return _error(412, str(exc))
        if deleted == 0:
            return _error(404, f"no instance with ID {instance_id!r} exists in task hub {self.hub_name}")
        return _JSONResponse({"instancesDeleted": deleted})

    async def purge_instances(self, request: Request) -> Response:
        """``DELETE instances?createdTimeFrom=…``: 200 with the count, 404 when nothing matched."""
        created_from = _datetime_param(request, "createdTimeFrom")
        if created_from is None:
            raise ValidationError("the createdTimeFrom query parameter is required to purge by filter")
        deleted = await self.client.purge_instances(
            created_from, _datetime_param(request, "createdTimeTo"), _statuses_param(request)
        )
        if deleted == 0:
            return _error(404, "no ended instances matched the filter")
        return _JSONResponse({"instancesDeleted": deleted})

    async def operation(self, request: Request) -> Response:
        """``POST instances/{id}/{terminate|suspend|resume|restart|rewind}`` (names case-insensitive)."""
        instance_id = request.path_params["instance_id"]
        operation = request.path_params["operation"].lower()
        reason = request.query_params.get("reason")
        if operation == "terminate":
            await self.client.terminate(instance_id, reason)
        elif operation == "suspend":
            await self.client.suspend(instance_id, reason)
        elif operation == "resume":
            await self.client.resume(instance_id, reason)
        elif operation == "restart":
            return await self.restart(request, instance_id)
        elif operation == "rewind":
            await self.client.rewind(instance_id, reason)
        else:
            return _error(404, f"unknown instance operation {request.path_params['operation']!r}")
        return Response(status_code=202)

    async def restart(self, request: Request, instance_id: str) -> Response:
        """Start the instance again with its input; 202 + check-status of the (new) instance."""
        new_id = _bool_param(request, "restartWithNewInstanceId", default=True)
        wait = _wait_params(request)
        started = await self.client.restart(instance_id, new_instance_id=new_id)
        if wait is not None:
            return await self._wait_or_check_status(request, started, wait)
        return self._check_status_response(request, started)

    async def raise_event(self, request: Request) -> Response:
        """``POST instances/{id}/raiseEvent/{eventName}``: 202, 404 unknown, 410 ended."""
        if request.path_params["operation"].lower() != "raiseevent":
            return _error(404, f"unknown instance operation {request.path_params['operation']!r}")
        instance_id = request.path_params["instance_id"]
        text = await self._read_body(request)
        if text.strip() and _media_type(request) != "application/json":
            raise ValidationError("Only application/json request content is supported")
        await self.client.raise_event(
            instance_id, request.path_params["event_name"], _payload_from_body(text)
        )
        return Response(status_code=202)

    # ---- entities ---------------------------------------------------------------------------

    async def signal_entity(self, request: Request) -> Response:
        """``POST entities/{name}/{key}?op={operation}``, body = input: 202. ``DELETE`` signals ``delete``."""
        entity_id = _entity_id(request)
        self._check_function(request.path_params["entity_name"], FunctionKind.ENTITY)
        operation = "delete" if request.method == "DELETE" else request.query_params.get("op", "")
        text = await self._read_body(request)
        if text and _media_type(request) != "application/json":
            payload: str | None = json.dumps(text, ensure_ascii=False)
        else:
            payload = _payload_from_body(text)
        await self.client.signal_entity(entity_id, operation, payload)
        return Response(status_code=202)

    async def get_entity(self, request: Request) -> Response:
        """``GET entities/{name}/{key}``: 200 with the state as the body, 404 if the entity does not exist."""
        entity_id = _entity_id(request)
        snapshot = await self.client.read_entity_state(entity_id)
        if not snapshot.exists:
            return _error(404, f"entity {entity_id!r} does not exist in task hub {self.hub_name}")
        # Parsed and written again rather than passed on: the stored text may not be valid JSON.
        return _JSONResponse(_json_value(snapshot.state))

    async def list_entities(self, request: Request) -> Response:
        """``GET entities[/{name}]``: existing entities; filters, ``top``, paging as for instances."""
        fetch_state = _bool_param(request, "fetchState", default=False)
        result = await self.client.query_entities(
            request.path_params.get("entity_name"),
            last_operation_from=_datetime_param(request, "lastOperationTimeFrom"),
            last_operation_to=_datetime_param(request, "lastOperationTimeTo"),
            fetch_state=fetch_state,
            page_size=_int_param(request, "top", DEFAULT_QUERY_PAGE_SIZE),
            continuation_token=request.headers.get(CONTINUATION_HEADER) or None,
        )
        body = [entity_json(entity, show_state=fetch_state) for entity in result.entities]
        return _page_response(body, result.continuation_token)

    async def clean_entities(self, request: Request) -> Response:
        """``POST entities/clean[?minIdleSeconds=…]``: purge empty entities; 200 with the count."""
        idle = _float_param(request, "minIdleSeconds")
        if idle is not None and idle > _MAX_TIMESPAN_SECONDS:
            raise ValidationError(f"minIdleSeconds must be at most {_MAX_TIMESPAN_SECONDS:.0f}")
        removed = await self.client.clean_entity_storage(
            min_idle=ENTITY_CLEAN_MIN_IDLE if idle is None else timedelta(seconds=idle)
        )
        return _JSONResponse({"numberOfEmptyEntitiesRemoved": removed})

    async def openapi(self, request: Request) -> Response:
        """``GET openapi.json``: the API's OpenAPI document; public, as it holds no instance data."""
        return _JSONResponse(openapi_document(MANAGEMENT_PREFIX))

    async def not_found(self, request: Request) -> Response:
        """Anything else under the mount point."""
        return _error(404, f"no management API route {request.method} {_public_path(request)}")


# ---- request parsing ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Wait:
    timeout: float
    polling_interval: float


@dataclass(frozen=True)
class _StatusOptions:
    show_history: bool
    show_history_output: bool
    show_input: bool
    fail_with_500: bool

    @classmethod
    def from_request(cls, request: Request) -> _StatusOptions:
        return cls(
            show_history=_bool_param(request, "showHistory", default=False),
            show_history_output=_bool_param(request, "showHistoryOutput", default=False),
            show_input=_bool_param(request, "showInput", default=True),
            fail_with_500=_bool_param(request, "returnInternalServerErrorOnFailure", default=False),
        )


def _bool_param(request: Request, name: str, *, default: bool) -> bool:
    value = request.query_params.get(name)
    if value is None or not value.strip():
        return default
    # .NET's bool.TryParse, which also reads the df client's Python-style "True".
    lowered = value.strip().lower()
    if lowered not in ("true", "false"):
        raise ValidationError(f"query parameter {name} must be true or false, got {value!r}")
    return lowered == "true"


def _int_param(request: Request, name: str, default: int) -> int:
    value = request.query_params.get(name)
    if value is None or not value.strip():
        return default
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise ValidationError(f"query parameter {name} must be a positive integer, got {value!r}")
    return number


def _float_param(request: Request, name: str) -> float | None:
    value = request.query_params.get(name)
    if value is None or not value.strip():
        return None
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 <= number < float("inf"):
        raise ValidationError(f"query parameter {name} must be a number of seconds, got {value!r}")
    return number


def _wait_params(request: Request) -> _Wait | None:
    """``timeout`` and ``pollingInterval`` in seconds; DF waits only when both are given.

    A wait holds a connection (and delays shutdown), so it is bounded by :data:`MAX_WAIT_SECONDS`.
    """
    timeout = _float_param(request, "timeout")
    interval = _float_param(request, "pollingInterval")
    if timeout is None or interval is None:
        return None
    if timeout > MAX_WAIT_SECONDS:
        raise ValidationError(f"timeout must be at most {MAX_WAIT_SECONDS:.0f} seconds, got {timeout:g}")
    if interval <= 0 or interval > timeout:
        raise ValidationError("pollingInterval must be positive and not larger than timeout")
    return _Wait(timeout, interval)


def _datetime_param(request: Request, name: str) -> datetime | None:
    value = request.query_params.get(name)
    if value is None or not value.strip():
        return None
    text = value.strip()
    year, dash, rest = text.partition("-")
    if dash and year.isdigit() and len(year) < 4:
        # Python's strftime writes years before 1000 without leading zeros (DF pads them too).
        text = f"{year.zfill(4)}-{rest}"
    try:
        return parse_datetime(text)
    except DurableExtError as exc:
        raise ValidationError(f"query parameter {name} is not an ISO 8601 timestamp: {value!r}") from exc


def _statuses_param(request: Request) -> frozenset[OrchestrationStatus] | None:
    """``runtimeStatus=Running,Pending`` (names, case-insensitive, repeated parameters allowed)."""
    names = [
        name.strip()
        for value in request.query_params.getlist("runtimeStatus")
        for name in value.split(",")
        if name.strip()
    ]
    if not names:
        return None
    by_name = {status.name.lower(): status for status in OrchestrationStatus}
    unknown = [name for name in names if name.lower() not in by_name]
    if unknown:
        known = ", ".join(status.name for status in OrchestrationStatus)
        raise ValidationError(f"unknown runtimeStatus {', '.join(unknown)}; use {known}")
    return frozenset(by_name[name.lower()] for name in names)


def _entity_id(request: Request) -> str:
    return entity_instance_id(request.path_params["entity_name"], request.path_params["entity_key"])


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _payload_from_body(text: str) -> str | None:
    """The JSON text to store for a request body (None for an empty body); see the module notes.

    Both the body and JSON unwrapped from it must pass :func:`parse_json` (ValidationError otherwise).
    """
    stripped = text.strip()
    if not stripped:
        return None
    value = parse_json(stripped, "request body")
    if not isinstance(value, str):
        return stripped
    try:
        parse_json(value, "the JSON text in the request body's string")
    except NotJsonError:
        return stripped
    return value


# ---- responses ----------------------------------------------------------------------------------


def _status_for(exc: DurableExtError) -> int:
    if isinstance(exc, PayloadTooLargeError):
        return 413
    if isinstance(exc, ValidationError):
        return 400
    if isinstance(exc, InstanceNotFoundError):
        return 404
    if isinstance(exc, InstanceExistsError):
        return 409
    if isinstance(exc, InstanceGoneError):
        return 410
    if isinstance(exc, InvalidInstanceStateError):
        return 409
    return 500


def _loggable(text: str) -> str:
    """``text`` with control characters escaped: request paths are untrusted and end up in log lines."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def _public_path(request: Request) -> str:
    """The request's path as if it came in under :data:`MANAGEMENT_PREFIX`, for logs, errors, Location.

    A host may mount these routes a second time at a secret path for the df client (see
    :func:`client_binding_json`); that path is a credential and must never be written anywhere.
    """
    mounted_at: str = request.scope.get("root_path", "")
    path = request.url.path
    if mounted_at and path.startswith(mounted_at):
        return MANAGEMENT_PREFIX + path[len(mounted_at) :]
    return path


class _JSONResponse(JSONResponse):
    """Starlette's JSONResponse, but a str holding a lone surrogate (stored by another tool) is escaped
    as ``\\udXXX`` instead of failing the UTF-8 encoding."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, allow_nan=False, separators=(",", ":")).encode("ascii")


def _page_response(body: list[dict[str, Any]], continuation_token: str | None) -> JSONResponse:
    headers = {CONTINUATION_HEADER: continuation_token} if continuation_token else None
    return _JSONResponse(body, headers=headers)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return _JSONResponse({"error": message, "ExceptionMessage": message}, status_code=status, headers=headers)


def _json_value(text: str | None) -> Any:
    """A stored JSON text as a value; plain text (termination reasons, failure messages) stays a string.

    So does text that is not JSON by :func:`parse_json`'s rules (NaN, lone surrogates, … written by
    other tools or older versions): shown as a string it cannot make the response invalid JSON.
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


def status_json(state: OrchestrationState, *, show_input: bool) -> dict[str, Any]:
    """DF's status payload: name, instanceId, runtimeStatus, input, customStatus, output, times."""
    return {
        "name": state.name,
        "instanceId": state.instance_id,
        "runtimeStatus": state.runtime_status.name if state.runtime_status is not None else None,
        "input": _json_value(state.input) if show_input else None,
        "customStatus": _json_value(state.custom_status),
        "output": _json_value(state.output),
        "createdTime": _status_time(state.created_time),
        "lastUpdatedTime": _status_time(state.last_updated_time),
    }


def entity_json(entity: EntitySnapshot, *, show_state: bool) -> dict[str, Any]:
    """DF's ``DurableEntityStatus``: ``entityId`` {name, key}, ``lastOperationTime``, ``state`` if shown."""
    name, key = parse_entity_instance_id(entity.entity_id)
    modified = entity.last_modified
    body: dict[str, Any] = {
        "entityId": {"name": name, "key": key},
        "lastOperationTime": format_datetime(modified) if modified is not None else None,
    }
    if show_state:
        body["state"] = _json_value(entity.state)
    return body


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
                item["Result"] = _json_value(result)
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
