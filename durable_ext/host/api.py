"""The Durable Functions management HTTP API under ``/runtime/webhooks/durabletask``.

The df client (``DurableOrchestrationClient``) sends every operation as an HTTP request to the URLs of
its client binding JSON. :func:`~durable_ext.host.df_json.client_binding_json` points all of them
here, and :func:`management_routes` answers them as the Durable Functions extension's
``HttpApiHandler`` does (routes, query parameters, status codes, JSON field names), on top of a
:class:`~durable_ext.client.TaskHubClient`. The same routes serve the documented HTTP API to curl,
dashboards and the URLs of check-status responses. Every route is declared once, in
:meth:`_ManagementApi.endpoints`: that table serves the routes and generates ``openapi.json``.

Where we decided differently from DF, and why:

* **Payload encoding.** A body is stored as it was sent, as DF does: ``"1180"`` from curl is the string
  ``"1180"``. The df client, though, JSON-encodes inputs and event data, then aiohttp encodes that text
  again, so its body is a JSON string holding JSON, which under DF makes a Python orchestrator see the
  inner text as a string (azure-functions-durable-python issue #295). The df client calls its own mount
  (:func:`management_mounts`), and only there is a body that is a JSON string whose content is itself
  JSON unwrapped once.
* **Strict JSON.** DF (Newtonsoft) is lenient; here bodies and JSON unwrapped from them must pass
  :func:`durable_ext.wire.parse_json`: no NaN or Infinity, numbers within a double, integers of at
  most 4300 digits, at most 512 levels of nesting, no lone surrogates. Anything else is 400 with
  nothing written, so on the df client's mount a JSON string holding ``NaN`` (its encoding of a NaN
  input) is refused, not kept as a string. Stored values that break these rules (written by other tools) are
  shown as the string they are, so every response stays valid JSON.
* **Other 400s** where DF would fail later or differently: time filters outside years 1-9999 once
  converted to UTC, instance ID prefixes and entity names longer than an instance ID (256
  characters), continuation tokens that no query returned, a ``timeout`` without bounds.
* **Wrong state.** Operations on an instance that has ended answer 410 as in DF. Suspending a suspended
  instance or resuming one that is not suspended answers 500 with DF's text, as DF does (its client
  throws InvalidOperationException); other operations in the wrong state answer 409.
* **Purge by filter** only ever deletes ended instances; DT.AS drops a status filter that names no ended
  status and would then purge running ones.
* **Errors** are JSON ``{"error": message}``; ``ExceptionMessage`` carries the same text because the df
  client's ``start_new`` reads that key of .NET's error body on 400. The status comes from the error's
  class (:attr:`~durable_ext.errors.DurableExtError.http_status`).
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
* **Bounds.** ``timeout`` is at most :data:`~durable_ext.host.queries.MAX_WAIT_SECONDS` (an hour) and
  ``pollingInterval`` is positive and at most ``timeout``; anything else (negative, not finite,
  larger) is a 400 rather than a connection held for ever. Bodies are limited to
  :data:`~durable_ext.host.guard.MAX_BODY_BYTES` (413), list pages to
  :data:`~durable_ext.client.MAX_QUERY_PAGE_BYTES` of payloads.
* **Unknown routes and methods** answer 404 with a JSON error, as DF's "No such API" does (not 405).
* ``?version=`` on start gives the new instance that orchestration version (else host.json's
  ``defaultVersion``), as azure-functions-durable's ``start_new(version=...)`` sends it.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from datetime import timedelta
from functools import cached_property
from typing import Annotated, Any
from urllib.parse import quote

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount

from durable_ext.app_loader import FunctionKind, FunctionRegistry, invalid_function_message
from durable_ext.client import (
    DEFAULT_QUERY_PAGE_SIZE,
    ENTITY_CLEAN_MIN_IDLE,
    MAX_INSTANCE_ID_LENGTH,
    TaskHubClient,
    validate_instance_id,
)
from durable_ext.entities import entity_instance_id
from durable_ext.errors import (
    DurableExtError,
    InstanceNotFoundError,
    NotJsonError,
    ValidationError,
)
from durable_ext.history import OrchestrationStatus
from durable_ext.host.admin import installed_version
from durable_ext.host.df_json import (
    MANAGEMENT_PREFIX,
    CheckStatusJson,
    CleanedJson,
    EntityJson,
    ErrorJson,
    ManagementUrls,
    PurgedJson,
    StatusJson,
    common_query,
    entity_json,
    error_json,
    history_json,
    json_value,
    status_json,
)
from durable_ext.host.guard import MAX_BODY_BYTES, presents_key, read_text
from durable_ext.host.queries import (
    CleanQuery,
    EntityListQuery,
    HubQuery,
    ListQuery,
    PurgeQuery,
    ReasonQuery,
    RestartQuery,
    SignalQuery,
    StartQuery,
    StatusFlags,
    WaitQuery,
)
from durable_ext.host.routes import (
    ApiDescription,
    Body,
    Endpoint,
    Link,
    PathParameter,
    Reply,
    openapi_document,
    serve,
)
from durable_ext.logs import ContextLog, hub_log
from durable_ext.storage.outage import describe_outage, storage_health
from durable_ext.storage.tracking import InstanceQuery
from durable_ext.wire import parse_json

logger = logging.getLogger(__name__)

CONTINUATION_HEADER = "x-ms-continuation-token"
"""Request and response header that pages instance and entity queries."""

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
_ANY_METHOD = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

# ---- what the OpenAPI document says of paths, headers and shared answers ---------------------------

_INSTANCE_ID_PATTERN = "^[^@/\\\\#?\\u0000-\\u001f\\u007f-\\u009f][^/\\\\#?\\u0000-\\u001f\\u007f-\\u009f]*$"
InstanceIdText = Annotated[
    str, Field(min_length=1, max_length=MAX_INSTANCE_ID_LENGTH, pattern=_INSTANCE_ID_PATTERN)
]
"""An orchestration instance ID as a path segment: no ``/ \\ # ?`` or control characters, no leading ``@``."""

_ENTITY_NAME_PATTERN = "^[^@]+$"
_PATH_PARAMETERS = {
    "functionName": PathParameter(str, "The orchestrator function's name."),
    "instanceId": PathParameter(InstanceIdText, "The orchestration instance ID."),
    "eventName": PathParameter(str, "The event's name."),
    "entityName": PathParameter(
        Annotated[str, Field(max_length=MAX_INSTANCE_ID_LENGTH, pattern=_ENTITY_NAME_PATTERN)],
        "The entity function's name (case-insensitive).",
    ),
    "entityKey": PathParameter(str, "The entity key."),
}
_INSTANCE_LINKS = {
    name: Link(operation, {"instanceId": "$response.body#/id"})
    for name, operation in (
        ("status", "getStatus"),
        ("raiseEvent", "raiseEvent"),
        ("terminate", "terminate"),
        ("suspend", "suspend"),
        ("resume", "resume"),
        ("rewind", "rewind"),
        ("restart", "restart"),
        ("purge", "purgeInstance"),
    )
}
"""What a client can do with the instance a start or restart answers about."""
_PAGED = {CONTINUATION_HEADER: "The token of the next page; absent on the last page."}
_POLL = {"Location": "Where to poll for the status.", "Retry-After": "Seconds to wait before polling."}
_COMMON_REPLIES = {
    400: Reply("Invalid instance ID, parameter, token or JSON; nothing was written.", ErrorJson),
    401: Reply("The system key is missing or wrong.", ErrorJson),
    404: Reply("No such instance, entity or route.", ErrorJson),
    503: Reply(
        "Storage is unreachable; retry after the Retry-After seconds.", ErrorJson, {"Retry-After": "Seconds."}
    ),
}
_WAITED = {
    202: Reply(
        "Started; poll statusQueryGetUri (also when a wait timed out).",
        CheckStatusJson,
        _POLL,
        _INSTANCE_LINKS,
    ),
    200: Reply(
        "Ended within the wait (timeout and pollingInterval): the output, or the status if it failed.", Any
    ),
    500: Reply("Failed within the wait, with returnInternalServerErrorOnFailure.", StatusJson),
}
"""What a start or restart answers; it waits for the instance to end when given both wait parameters."""
_BODY_TOO_LARGE = {413: Reply("The body is larger than the host accepts.", ErrorJson)}
_JSON_BODY = Body("A JSON value (optional).")
_SECURITY_SCHEMES = {
    "code": {"type": "apiKey", "in": "query", "name": "code"},
    "functionsKey": {"type": "apiKey", "in": "header", "name": "x-functions-key"},
}


def management_routes(
    client: TaskHubClient,
    *,
    system_key: str | None = None,
    functions: FunctionRegistry | None = None,
    connection_name: str = "Storage",
    max_body_bytes: int = MAX_BODY_BYTES,
    df_client: bool = False,
) -> list[BaseRoute]:
    """The management API's routes, to mount at :data:`~durable_ext.host.df_json.MANAGEMENT_PREFIX`.

    With ``system_key`` every route requires it as the ``code`` query parameter or the
    ``x-functions-key`` header, under :func:`~durable_ext.host.guard.presents_key`'s rule (401
    otherwise). ``functions`` are the app's: starting an orchestrator or signalling an entity the app
    does not have is refused with 400 before anything is written (without it, any name is taken).
    ``connection_name`` only appears in generated URLs, as DF's ``connection`` parameter. A body over
    ``max_body_bytes`` is refused with 413. With ``df_client`` bodies are read in the df client's double
    encoding (see the module notes); :func:`management_mounts` sets that up.
    """
    api = _ManagementApi(client, system_key, functions, connection_name, max_body_bytes, df_client=df_client)
    return serve(api.endpoints(), api.run, not_found=api.not_found_endpoint(), any_method=_ANY_METHOD)


def new_rpc_path() -> str:
    """A fresh secret path for the df client's mount: like DF's local RPC endpoint it takes no key, so
    the path itself is the credential."""
    return f"{MANAGEMENT_PREFIX}/rpc/{secrets.token_urlsafe(24)}"


def management_mounts(
    client: TaskHubClient,
    rpc_path: str,
    *,
    system_key: str | None = None,
    functions: FunctionRegistry | None = None,
    connection_name: str = "Storage",
) -> list[BaseRoute]:
    """The df client's mount at ``rpc_path`` (see :func:`new_rpc_path`), then the public API.

    The df client sends no key, and its bodies are encoded twice: its mount needs no key, unwraps the
    encoding once and allows a body of twice the payload limit. The public mount at
    :data:`~durable_ext.host.df_json.MANAGEMENT_PREFIX` requires ``system_key`` if there is one and stores
    bodies as they come. Point the df client at the first with
    ``client_binding_json(..., rpc_base_url=<origin> + rpc_path + "/")``.
    """
    rpc = management_routes(
        client,
        functions=functions,
        connection_name=connection_name,
        max_body_bytes=_df_client_body_limit(client.max_payload_bytes),
        df_client=True,
    )
    public = management_routes(
        client, system_key=system_key, functions=functions, connection_name=connection_name
    )
    return [Mount(rpc_path, routes=rpc), Mount(MANAGEMENT_PREFIX, routes=public)]


async def not_found_answer(request: Request, exc: Exception) -> Response:
    """The app's answer to a path no route takes: under the management prefix, the API's JSON 404.

    A path the mount itself cannot match (one holding a line break) never reaches the API's own
    catch-all, yet is still the API's to answer; elsewhere the answer stays a plain 404.
    """
    if request.url.path.startswith(f"{MANAGEMENT_PREFIX}/"):
        return _error(404, f"no management API route {request.method} {loggable(request.url.path)}")
    return PlainTextResponse("Not Found", status_code=404)


def _df_client_body_limit(max_payload_bytes: int) -> int:
    """The body limit of a mount only the df client calls: ``max_payload_bytes`` in the df encoding.

    The df client JSON-encodes a payload, then aiohttp encodes that text again, which at most doubles
    each byte of the (ASCII) inner JSON and adds two quotes.
    """
    return 2 * max_payload_bytes + 2


class _ManagementApi:
    """The handlers behind :func:`management_routes`, and the table that declares them."""

    def __init__(
        self,
        client: TaskHubClient,
        system_key: str | None,
        functions: FunctionRegistry | None,
        connection_name: str,
        max_body_bytes: int,
        *,
        df_client: bool,
    ) -> None:
        self.client = client
        self.df_client = df_client
        self.system_key = system_key or None
        self.functions = functions
        self.connection_name = connection_name
        self.max_body_bytes = max_body_bytes
        self.hub_name = client.hub.names.hub
        self.storage = client.hub.account.describe()
        self._log = hub_log(logger, self.hub_name)

    def endpoints(self) -> list[Endpoint]:
        """Every route of the API: what it reads, what it answers and which handler answers it."""
        return [*self._orchestration_endpoints(), *self._instance_operations(), *self._entity_endpoints()]

    def _orchestration_endpoints(self) -> list[Endpoint]:
        started = {
            **_WAITED,
            409: Reply("An instance with this ID exists and has not ended.", ErrorJson),
            **_BODY_TOO_LARGE,
        }
        ended = {
            200: Reply("The instance has ended.", StatusJson),
            202: Reply("The instance is pending, running or suspended.", StatusJson, _POLL),
            500: Reply("Failed (only with returnInternalServerErrorOnFailure).", StatusJson),
        }
        start = self._start
        return [
            Endpoint(
                "POST",
                "/orchestrators/{functionName}",
                start,
                "startNew",
                "Start an orchestration",
                started,
                StartQuery,
                _JSON_BODY,
                path_parameters=self._named(FunctionKind.ORCHESTRATOR),
            ),
            Endpoint(
                "POST",
                "/orchestrators/{functionName}/{instanceId}",
                start,
                "startNewWithId",
                "Start an orchestration under an instance ID",
                started,
                StartQuery,
                _JSON_BODY,
                path_parameters=self._named(FunctionKind.ORCHESTRATOR),
            ),
            # The df client lists with a trailing slash ("instances/?…"), curl users without.
            Endpoint(
                "GET",
                "/instances",
                self._list_instances,
                "listInstances",
                "List orchestration instances",
                {200: Reply("One page of instances.", list[StatusJson], _PAGED)},
                ListQuery,
                also_with_slash=True,
            ),
            Endpoint(
                "DELETE",
                "/instances",
                self._purge_instances,
                "purgeInstances",
                "Purge ended instances by filter",
                {200: Reply("Purged.", PurgedJson), 404: Reply("No ended instance matched.", ErrorJson)},
                PurgeQuery,
                also_with_slash=True,
            ),
            Endpoint(
                "GET",
                "/instances/{instanceId}",
                self._get_status,
                "getStatus",
                "Get an instance's status",
                ended,
                StatusFlags,
            ),
            Endpoint(
                "DELETE",
                "/instances/{instanceId}",
                self._purge_instance,
                "purgeInstance",
                "Purge one ended instance's history and status",
                {200: Reply("Purged.", PurgedJson), 412: Reply("The instance has not ended.", ErrorJson)},
                HubQuery,
            ),
            Endpoint(
                "POST",
                "/instances/{instanceId}/raiseEvent/{eventName}",
                self._raise_event,
                "raiseEvent",
                "Raise an external event",
                {202: Reply("Sent."), 410: Reply("The instance has ended.", ErrorJson), **_BODY_TOO_LARGE},
                HubQuery,
                _JSON_BODY,
                served_at="/instances/{instanceId}/{operation}/{eventName}",
            ),
        ]

    def _instance_operations(self) -> list[Endpoint]:
        """``POST instances/{id}/{operation}``: one route, the operation picked from this table."""
        served_at = "/instances/{instanceId}/{operation}"
        wrong_state = {
            202: Reply("Accepted; the instance acts on it when it next runs."),
            409: Reply("The instance is not in a state that allows this.", ErrorJson),
            410: Reply("The instance has ended (for rewind: it did not fail).", ErrorJson),
        }
        # DF throws InvalidOperationException for these two, which its API answers with 500.
        suspend_refused = Reply("The instance is already suspended (DF's answer and text).", ErrorJson)
        resume_refused = Reply("The instance is not suspended (DF's answer and text).", ErrorJson)
        restarted = {**_WAITED, 409: Reply("Restarting under the same ID while it still runs.", ErrorJson)}
        operations = [
            ("terminate", self._terminate, "Terminate an orchestration instance", wrong_state),
            (
                "suspend",
                self._suspend,
                "Suspend an orchestration instance",
                {**wrong_state, 500: suspend_refused},
            ),
            (
                "resume",
                self._resume,
                "Resume a suspended orchestration instance",
                {**wrong_state, 500: resume_refused},
            ),
            ("rewind", self._rewind, "Rewind a failed orchestration instance", wrong_state),
        ]
        return [
            *(
                Endpoint(
                    "POST",
                    f"/instances/{{instanceId}}/{name}",
                    handler,
                    name,
                    summary,
                    replies,
                    ReasonQuery,
                    served_at=served_at,
                )
                for name, handler, summary, replies in operations
            ),
            Endpoint(
                "POST",
                "/instances/{instanceId}/restart",
                self._restart,
                "restart",
                "Restart an instance with its original input",
                restarted,
                RestartQuery,
                served_at=served_at,
            ),
        ]

    def _entity_endpoints(self) -> list[Endpoint]:
        listed = {200: Reply("One page of entities.", list[EntityJson], _PAGED)}
        return [
            Endpoint(
                "GET",
                "/entities",
                self._list_entities,
                "listEntities",
                "List entities",
                listed,
                EntityListQuery,
                also_with_slash=True,
            ),
            Endpoint(
                "POST",
                "/entities/clean",
                self._clean_entities,
                "cleanEntities",
                "Remove empty, idle entities (durable_ext's addition)",
                {200: Reply("How many were removed.", CleanedJson)},
                CleanQuery,
            ),
            Endpoint(
                "GET",
                "/entities/{entityName}",
                self._list_entities,
                "listEntitiesByName",
                "List the entities of one entity function",
                listed,
                EntityListQuery,
            ),
            Endpoint(
                "GET",
                "/entities/{entityName}/{entityKey}",
                self._get_entity,
                "getEntity",
                "Read an entity's state",
                {200: Reply("The state.", Any)},
                HubQuery,
            ),
            Endpoint(
                "POST",
                "/entities/{entityName}/{entityKey}",
                self._signal_entity,
                "signalEntity",
                "Signal an entity operation",
                {202: Reply("Signalled."), **_BODY_TOO_LARGE},
                SignalQuery,
                Body(
                    "The operation's input: JSON, or any other text as a string.",
                    Any,
                    ("application/json", "text/plain"),
                ),
                path_parameters=self._named(FunctionKind.ENTITY),
            ),
            Endpoint(
                "DELETE",
                "/entities/{entityName}/{entityKey}",
                self._signal_entity,
                "deleteEntity",
                "Signal the entity's delete operation",
                {202: Reply("Signalled.")},
                HubQuery,
                path_parameters=self._named(FunctionKind.ENTITY),
            ),
            Endpoint(
                "GET",
                "/openapi.json",
                self._openapi,
                "openApi",
                "This document",
                {200: Reply("The OpenAPI document.", dict[str, Any])},
                public=True,
            ),
        ]

    def not_found_endpoint(self) -> Endpoint:
        """What answers a path or method no endpoint declares."""
        return Endpoint("GET", "/{rest:path}", self._not_found, "notFound", "Anything else", {})

    @cached_property
    def document(self) -> dict[str, Any]:
        """The OpenAPI document of :meth:`endpoints`."""
        return openapi_document(
            self.endpoints(),
            ApiDescription(
                title="Durable Functions management API (durable_ext)",
                version=installed_version("durable-ext") or "0+unknown",
                description="Durable Functions' HTTP API for orchestrations and entities.",
                server_url=MANAGEMENT_PREFIX,
                path_parameters=_PATH_PARAMETERS,
                common_replies=_COMMON_REPLIES,
                security_schemes=_SECURITY_SCHEMES if self.system_key else {},
                query_schemas={"taskHub": {"pattern": f"^(\\s*|{_any_case(self.hub_name)})$"}},
            ),
        )

    def _named(self, kind: FunctionKind) -> dict[str, PathParameter]:
        """The path parameter naming a function of ``kind``: one of the app's, in any case."""
        parameter = "functionName" if kind is FunctionKind.ORCHESTRATOR else "entityName"
        if self.functions is None:
            return {}
        names = self.functions.names(kind)
        pattern = f"^({'|'.join(_any_case(name) for name in names)})$" if names else "^$.+"
        schema = Annotated[str, Field(pattern=pattern)]
        return {parameter: PathParameter(schema, f"The {kind.value} function's name (case-insensitive).")}

    # ---- plumbing ---------------------------------------------------------------------------

    async def run(self, endpoint: Endpoint, request: Request) -> Response:
        """Answer ``request`` with ``endpoint``: the key check, the query, the hub check, errors → status."""
        log = self._log.instance(loggable(request.path_params.get("instanceId", "-")))
        line = f"{request.method} {loggable(_public_path(request))}"
        if not endpoint.public and not self._authorized(request):
            log.warning("%s refused: missing or wrong system key", line)
            return _error(401, "a valid system key is required as ?code= or the x-functions-key header")
        try:
            query = endpoint.query.from_request(request)
            self._check_task_hub(query)
            response = await endpoint.handler(request, query)
        except Exception as exc:
            return self._failure(log, line, exc)
        log.info("%s -> %d", line, response.status_code)
        return response

    def _failure(self, log: ContextLog, line: str, exc: Exception) -> Response:
        """The answer to a handler that raised: 503 for a storage outage, the error's status, or 500."""
        return failure_response(self.storage, log, line, exc, "the management API")

    def _authorized(self, request: Request) -> bool:
        return self.system_key is None or presents_key(request, self.system_key)

    def _check_task_hub(self, query: Any) -> None:
        wanted = query.task_hub if isinstance(query, HubQuery) else None
        # Hub names are case-insensitive: queues and containers use the lower-cased name.
        if wanted and wanted.lower() != self.hub_name.lower():
            raise ValidationError(f"this host serves task hub {self.hub_name!r}, not {wanted!r}")

    def _check_function(self, name: str, kind: FunctionKind) -> None:
        """DF's own check (and message) before it starts an orchestration or signals an entity."""
        if self.functions is not None and self.functions.get(name, kind) is None:
            raise ValidationError(invalid_function_message(self.functions, name, kind))

    def _check_status_response(self, request: Request, instance_id: str) -> Response:
        """202 with the instance's management URLs on the origin the request came in on.

        Always under :data:`MANAGEMENT_PREFIX`, even for calls that arrived on a host's private RPC
        mount, whose path must not leak into payloads.
        """
        base = f"{request.url.scheme}://{request.url.netloc}{MANAGEMENT_PREFIX}"
        urls = ManagementUrls(base, common_query(self.hub_name, self.connection_name, self.system_key))
        body = urls.for_instance(instance_id, quote(instance_id, safe=""))
        headers = {"Location": body["statusQueryGetUri"], "Retry-After": _CHECK_STATUS_RETRY_AFTER}
        return SafeJSONResponse(body, status_code=202, headers=headers)

    async def _read_body(self, request: Request) -> str:
        return await read_text(request, self.max_body_bytes)

    def _missing(self, what: str) -> InstanceNotFoundError:
        return InstanceNotFoundError(f"no {what} exists in task hub {self.hub_name}")

    def _payload(self, text: str) -> str | None:
        """The JSON text to store for a request body (None for an empty body); see the module notes.

        The body must pass :func:`parse_json`, and so must JSON unwrapped from the df client's body
        (ValidationError otherwise).
        """
        stripped = text.strip()
        if not stripped:
            return None
        value = parse_json(stripped, "request body")
        if not self.df_client or not isinstance(value, str):
            return stripped
        try:
            parse_json(value, "the JSON text in the request body's string")
        except NotJsonError:
            return stripped
        return value

    # ---- orchestrations ---------------------------------------------------------------------

    async def _start(self, request: Request, query: StartQuery) -> Response:
        name = request.path_params["functionName"]
        instance_id = request.path_params.get("instanceId")
        if instance_id is not None:
            validate_instance_id(instance_id)
        self._check_function(name, FunctionKind.ORCHESTRATOR)
        payload = self._payload(await self._read_body(request))
        started = await self.client.start_new(name, instance_id, payload, version=query.version)
        return await self._wait_or_check_status(request, started, query)

    async def _wait_or_check_status(self, request: Request, instance_id: str, query: WaitQuery) -> Response:
        """DF's WaitForCompletionOrCreateCheckStatusResponse: the output, the final status, or 202."""
        if query.timeout is None or query.polling_interval is None:
            return self._check_status_response(request, instance_id)
        try:
            state = await self.client.wait_for_completion(instance_id, query.timeout, query.polling_interval)
        except TimeoutError:
            return self._check_status_response(request, instance_id)
        if state.runtime_status is OrchestrationStatus.Completed:
            return SafeJSONResponse(json_value(state.output))
        return self._status_response(request, status_json(state, show_input=query.show_input), query)

    async def _get_status(self, request: Request, query: StatusFlags) -> Response:
        instance_id = validate_instance_id(request.path_params["instanceId"], allow_entity=True)
        state = await self.client.get_status(instance_id)
        if state is None:
            raise self._missing(f"instance with ID {instance_id!r}")
        body = status_json(state, show_input=query.show_input)
        if query.show_history:
            body["historyEvents"] = None
            if state.runtime_status is not OrchestrationStatus.Pending:
                events = (await self.client.hub.tracking.load_history(instance_id)).events
                body["historyEvents"] = history_json(events, show_output=query.show_history_output)
        return self._status_response(request, body, query)

    def _status_response(self, request: Request, body: StatusJson, query: StatusFlags) -> Response:
        """200 ended, 202 running (Location, Retry-After), 500 failed if asked to."""
        status = body["runtimeStatus"]
        if status is None or OrchestrationStatus[status] in _RUNNING:
            location = str(request.url.replace(path=quote(_public_path(request))))
            headers = {"Location": location, "Retry-After": _STATUS_RETRY_AFTER}
            return SafeJSONResponse(body, status_code=202, headers=headers)
        failed = status == OrchestrationStatus.Failed.name
        return SafeJSONResponse(
            body, status_code=500 if failed and query.return_internal_server_error_on_failure else 200
        )

    async def _list_instances(self, request: Request, query: ListQuery) -> Response:
        result = await self.client.query_instances(
            InstanceQuery(
                created_from=query.created_time_from,
                created_to=query.created_time_to,
                statuses=query.runtime_status,
                instance_id_prefix=query.instance_id_prefix or None,
            ),
            page_size=query.top or DEFAULT_QUERY_PAGE_SIZE,
            continuation_token=request.headers.get(CONTINUATION_HEADER) or None,
            show_input=query.show_input,
        )
        body = [status_json(state, show_input=query.show_input) for state in result.instances]
        return _page_response(body, result.continuation_token)

    async def _purge_instance(self, request: Request, query: HubQuery) -> Response:
        instance_id = request.path_params["instanceId"]
        if await self.client.purge_instance(instance_id) == 0:
            raise self._missing(f"instance with ID {instance_id!r}")
        purged: PurgedJson = {"instancesDeleted": 1}
        return SafeJSONResponse(purged)

    async def _purge_instances(self, request: Request, query: PurgeQuery) -> Response:
        deleted = await self.client.purge_instances(
            query.created_time_from, query.created_time_to, query.runtime_status
        )
        if deleted == 0:
            raise InstanceNotFoundError("no ended instances matched the filter")
        purged: PurgedJson = {"instancesDeleted": deleted}
        return SafeJSONResponse(purged)

    async def _terminate(self, request: Request, query: ReasonQuery) -> Response:
        await self.client.terminate(request.path_params["instanceId"], query.reason)
        return Response(status_code=202)

    async def _suspend(self, request: Request, query: ReasonQuery) -> Response:
        await self.client.suspend(request.path_params["instanceId"], query.reason)
        return Response(status_code=202)

    async def _resume(self, request: Request, query: ReasonQuery) -> Response:
        await self.client.resume(request.path_params["instanceId"], query.reason)
        return Response(status_code=202)

    async def _rewind(self, request: Request, query: ReasonQuery) -> Response:
        await self.client.rewind(request.path_params["instanceId"], query.reason)
        return Response(status_code=202)

    async def _restart(self, request: Request, query: RestartQuery) -> Response:
        """Start the instance again with its input; 202 + check-status of the (new) instance."""
        started = await self.client.restart(
            request.path_params["instanceId"], new_instance_id=query.restart_with_new_instance_id
        )
        return await self._wait_or_check_status(request, started, query)

    async def _raise_event(self, request: Request, query: HubQuery) -> Response:
        text = await self._read_body(request)
        if text.strip() and _media_type(request) != "application/json":
            raise ValidationError("Only application/json request content is supported")
        await self.client.raise_event(
            request.path_params["instanceId"], request.path_params["eventName"], self._payload(text)
        )
        return Response(status_code=202)

    # ---- entities ---------------------------------------------------------------------------

    async def _signal_entity(self, request: Request, query: HubQuery) -> Response:
        """``POST entities/{name}/{key}?op={operation}``, body = input: 202. ``DELETE`` signals ``delete``."""
        entity_id = _entity_id(request)
        self._check_function(request.path_params["entityName"], FunctionKind.ENTITY)
        operation = query.op if isinstance(query, SignalQuery) else "delete"
        text = await self._read_body(request)
        if text and _media_type(request) != "application/json":
            payload: str | None = json.dumps(text, ensure_ascii=False)
        else:
            payload = self._payload(text)
        await self.client.signal_entity(entity_id, operation, payload)
        return Response(status_code=202)

    async def _get_entity(self, request: Request, query: HubQuery) -> Response:
        entity_id = _entity_id(request)
        snapshot = await self.client.read_entity_state(entity_id)
        if not snapshot.exists:
            raise self._missing(f"entity {entity_id!r}")
        # Parsed and written again rather than passed on: the stored text may not be valid JSON.
        return SafeJSONResponse(json_value(snapshot.state))

    async def _list_entities(self, request: Request, query: EntityListQuery) -> Response:
        result = await self.client.query_entities(
            request.path_params.get("entityName"),
            last_operation_from=query.last_operation_time_from,
            last_operation_to=query.last_operation_time_to,
            fetch_state=query.fetch_state,
            page_size=query.top or DEFAULT_QUERY_PAGE_SIZE,
            continuation_token=request.headers.get(CONTINUATION_HEADER) or None,
        )
        body = [entity_json(entity, show_state=query.fetch_state) for entity in result.entities]
        return _page_response(body, result.continuation_token)

    async def _clean_entities(self, request: Request, query: CleanQuery) -> Response:
        idle = query.min_idle_seconds
        removed = await self.client.clean_entity_storage(
            min_idle=ENTITY_CLEAN_MIN_IDLE if idle is None else timedelta(seconds=idle)
        )
        cleaned: CleanedJson = {"numberOfEmptyEntitiesRemoved": removed}
        return SafeJSONResponse(cleaned)

    async def _openapi(self, request: Request, query: HubQuery) -> Response:
        """The API's OpenAPI document; public, as it holds no instance data."""
        return SafeJSONResponse(self.document)

    async def _not_found(self, request: Request, query: HubQuery) -> Response:
        raise InstanceNotFoundError(f"no management API route {request.method} {_public_path(request)}")


# ---- requests and responses -----------------------------------------------------------------------


def _any_case(name: str) -> str:
    """A regular expression (ECMA-262, as OpenAPI uses) matching ``name`` in any case."""
    return "".join(_any_case_char(ch) for ch in name)


def _any_case_char(ch: str) -> str:
    lower, upper = ch.lower(), ch.upper()
    if lower != upper and len(lower) == 1 and len(upper) == 1:
        return f"[{lower}{upper}]"
    return re.escape(ch)


def _entity_id(request: Request) -> str:
    return entity_instance_id(request.path_params["entityName"], request.path_params["entityKey"])


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def loggable(text: str) -> str:
    """``text`` with control characters escaped: request paths are untrusted and end up in log lines."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def _public_path(request: Request) -> str:
    """The request's path as if it came in under :data:`MANAGEMENT_PREFIX`, for logs, errors, Location.

    A host may mount these routes a second time at a secret path for the df client (see
    :func:`~durable_ext.host.df_json.client_binding_json`); that path is a credential and must never
    be written anywhere.
    """
    mounted_at: str = request.scope.get("root_path", "")
    path = request.url.path
    if mounted_at and path.startswith(mounted_at):
        return MANAGEMENT_PREFIX + path[len(mounted_at) :]
    return path


class SafeJSONResponse(JSONResponse):
    """Starlette's JSONResponse, but a str holding a lone surrogate (stored by another tool) is escaped
    as ``\\udXXX`` instead of failing the UTF-8 encoding."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, allow_nan=False, separators=(",", ":")).encode("ascii")


def _page_response(body: list[StatusJson] | list[EntityJson], continuation_token: str | None) -> JSONResponse:
    headers = {CONTINUATION_HEADER: continuation_token} if continuation_token else None
    return SafeJSONResponse(body, headers=headers)


def failure_response(storage: str, log: ContextLog, line: str, exc: Exception, what: str) -> JSONResponse:
    """The JSON answer to a request ``what`` failed with ``exc``: 503 while the storage account
    ``storage`` is unreachable, the status of a DurableExtError, else 500 (logged with its traceback)."""
    if storage_health.failed(storage, exc):
        # The outage itself is logged once by storage_health; each refused request only at INFO.
        log.info("%s -> 503: storage unreachable", line)
        return _error(
            503,
            f"storage is unreachable: {describe_outage(exc)}",
            headers={"Retry-After": _OUTAGE_RETRY_AFTER},
        )
    if isinstance(exc, DurableExtError):
        status = exc.http_status
        # Only a failure of ours is an error; the rest answers what the caller asked for.
        (log.info if exc.caller_mistake else log.error)("%s -> %d: %s", line, status, exc)
        return _error(status, str(exc))
    log.error("%s failed", line, exc_info=exc)
    return _error(500, f"{what} failed unexpectedly; see the host log")


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return SafeJSONResponse(error_json(message), status_code=status, headers=headers)
