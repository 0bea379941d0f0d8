"""Serve the HTTP-triggered functions of an app as Starlette routes, the way the Functions host does.

:func:`http_trigger_routes` turns every HTTP function of a :class:`FunctionRegistry` into routes under
``/{routePrefix}/{route}``. A request becomes an ``azure.functions.HttpRequest`` passed under the trigger's
binding name; a function with ``@app.durable_client_input`` also gets the durable client binding JSON,
which df's wrapper turns into a ``DurableOrchestrationClient``. What the function returns becomes the
HTTP response.

Functions host behaviour reproduced here, and the choices made where it could not be:

- Route templates are ASP.NET Core templates (see :func:`functions_route_template`). Literal segments
  match ignoring case, a trailing slash is ignored, and routes are tried most specific first (literal
  before constrained parameter before parameter before catch-all), not in registration order.
- Route values, query parameters and headers reach the function as strings; a repeated query parameter
  or header is joined with ``,`` (what the host's ``StringValues.ToString()`` gives the worker).
- ``function`` and ``admin`` functions need the key passed as ``function_key`` in the ``code`` query
  parameter or the ``x-functions-key`` header, under :mod:`durable_ext.host.guard`'s rule (every key
  presented must be right); there is one key for both levels (Azure has a separate master key for
  ``admin``). Without a configured key nothing is checked, as under ``func start``.
- Returns: ``func.HttpResponse`` and ``str`` as the Python worker converts them. ``bytes``, ``dict`` and
  ``list`` are answered too (octet-stream, JSON) for convenience, with a warning, because the worker in
  Azure rejects them and fails the invocation. ``None`` fails the invocation here as it does in Azure
  (500), rather than being turned into an empty response that would hide the bug until deployment.
- An exception in the function is a 500 whose JSON body names the function only; the exception and the
  app's traceback go to the invocation's Executed line (:mod:`durable_ext.invocations`), as the host
  writes them to its console and never to the client.
- A body over ``max_body_bytes`` is refused with 413: at once when Content-Length says so, otherwise as
  soon as the streamed body passes the limit (at most one received chunk past it is read).
- A request that calls the function is one invocation (Executing/Executed lines); refusals (401, 404
  for a disabled function, 413) happen before the call, as in the host, and are logged by durable_ext.
- A user function with a ``context: func.Context`` parameter is not given one.
- A function disabled by ``AzureWebJobs.<name>.Disabled`` answers 404 with an empty body, after the key
  check, unless the caller has admin rights (the host's ``FunctionInvocationMiddleware``). Admin rights
  are the key here; without a configured key every caller has them, as under ``func start``, whose
  authentication handler gives every request the admin level.
- The durable client binding may be ``durableClient`` or the legacy ``orchestrationClient``; v1
  functions (function.json) are called through a wrapper that supplies their other bindings and answers
  with a named ``http`` output binding when they have one (see :mod:`durable_ext.app_loader.v1`).
"""

from __future__ import annotations

import inspect
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

import azure.functions as func
from starlette.concurrency import run_in_threadpool
from starlette.convertors import StringConvertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import Scope

from durable_ext.app_loader import FunctionRegistry, HttpRoute, RegisteredFunction
from durable_ext.errors import AppLoadError
from durable_ext.host.guard import KEY_HEADER, KEY_QUERY_PARAM, MAX_BODY_BYTES, presents_key, read_body
from durable_ext.invocations import InvocationKind, invocation

logger = logging.getLogger(__name__)

ClientBinding: TypeAlias = Callable[[Request], str]
"""Gives the durable client binding JSON string for a request (the JSON df's client is built from)."""


def http_trigger_routes(
    registry: FunctionRegistry,
    route_prefix: str,
    client_binding: ClientBinding | None,
    *,
    function_key: str | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> list[BaseRoute]:
    """Starlette routes serving every HTTP-triggered function of ``registry``.

    ``route_prefix`` is host.json's ``extensions.http.routePrefix`` (``""`` for none). ``client_binding``
    builds the durable client binding JSON for functions with a durable client; when it is None such
    functions answer 500. ``function_key`` is the key ``function``/``admin`` functions require (None: no
    check).
    ``max_body_bytes`` is the largest request body accepted (413 beyond it).

    The routes are ordered most specific first; put the host's own routes (management API) before them,
    because a catch-all function route under an empty prefix matches every path.

    Raises :class:`AppLoadError` when a function's route template is not one this module understands.
    """
    prefix = [segment for segment in route_prefix.split("/") if segment]
    ordered: list[tuple[tuple[int, ...], Route]] = []
    for function in registry.http_functions:
        http = function.http
        assert http is not None  # the loader gives every HTTP function a route
        try:
            segments = _parse_template(http.route)
        except ValueError as exc:
            raise AppLoadError(f"HTTP function {function.function_name}: {exc}") from None
        endpoint = _FunctionEndpoint(
            function,
            http,
            client_binding=client_binding,
            function_key=function_key,
            max_body_bytes=max_body_bytes,
        )
        # An optional (or catch-all) trailing segment may be left out: one route with it, one without.
        for end in range(len(segments), _required_count(segments) - 1, -1):
            kept, left_out = segments[:end], segments[end:]
            path = _join(prefix + [segment.text for segment in kept])
            defaults = dict(segment.default for segment in left_out if segment.default is not None)
            route = _FunctionRoute(
                path, endpoint.handle, methods=http.methods, name=function.function_name, defaults=defaults
            )
            ordered.append((tuple(segment.precedence for segment in kept), route))
            logger.debug("HTTP function %s: %s %s", function.function_name, ",".join(http.methods), path)
    # sort() is stable: routes of equal precedence keep the app's registration order.
    ordered.sort(key=lambda item: item[0])
    return [route for _, route in ordered]


def functions_route_template(route: str) -> str:
    """The Starlette path of a Functions route template (without the route prefix).

    Supported: literal segments, ``{name}``, ``{name?}`` and ``{name=default}`` (a whole trailing
    segment that may be left out), ``{*rest}`` (catch-all, last segment, may be empty) and the
    constraints ``int``, ``long``, ``bool``, ``alpha``, ``guid``, ``double``, ``float``, ``decimal``
    (``{id:int}``). Other constraints (``min(1)``, ``regex(...)``, ...) are ignored with a warning, so
    the parameter matches more than it would in Azure. Every value stays a string, as in Functions.

    Optional and catch-all segments appear here as ordinary parameters; :func:`http_trigger_routes`
    also registers the path without them. Raises ValueError for a template that cannot be parsed.
    """
    return _join([segment.text for segment in _parse_template(route)])


# --- route templates --------------------------------------------------------------------------------

_PARAMETER = re.compile(r"\{([^{}]*)\}")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# The argument-less ASP.NET Core route constraints, as the regex a segment must match. Starlette puts
# each inside a named group of the path's regex, which keeps their alternatives local.
_CONSTRAINTS: dict[str, str] = {
    "int": r"-?[0-9]+",
    "long": r"-?[0-9]+",
    "bool": r"true|false",
    "alpha": r"[A-Za-z]+",
    "guid": r"[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}|[0-9A-Fa-f]{32}",
    "double": r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)",
    "float": r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)",
    "decimal": r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)",
}
_CONVERTOR_PREFIX = "functions_"

# ASP.NET Core's inbound route precedence digits: lower is more specific and is tried first.
_LITERAL, _COMPLEX, _CONSTRAINED, _PLAIN, _CATCH_ALL = 1, 2, 3, 4, 5


def _register_convertors() -> None:
    # Starlette's own int/uuid convertors turn the value into int/UUID (losing "007" or upper case);
    # Functions hands the matched text to the function, so these keep it.
    for constraint, pattern in _CONSTRAINTS.items():

        class _Constrained(StringConvertor):
            regex = pattern

        register_url_convertor(_CONVERTOR_PREFIX + constraint, _Constrained())


_register_convertors()


@dataclass(frozen=True)
class _Segment:
    text: str
    """The segment as Starlette path syntax."""
    precedence: int
    optional: bool = False
    """May be left out of the URL (optional parameter, parameter with a default, catch-all)."""
    catch_all: bool = False
    default: tuple[str, str] | None = None
    """(name, value) of the route value used when the segment is left out."""


def _parse_template(route: str) -> tuple[_Segment, ...]:
    stripped = route.strip("/")
    segments = tuple(_parse_segment(text, route) for text in stripped.split("/")) if stripped else ()
    for index, segment in enumerate(segments):
        rest = segments[index + 1 :]
        if segment.catch_all and rest:
            raise ValueError(f"route {route!r}: a catch-all parameter must be the last segment")
        if segment.optional and not all(later.optional for later in rest):
            raise ValueError(f"route {route!r}: an optional segment may only be followed by optional ones")
    return segments


def _parse_segment(text: str, route: str) -> _Segment:
    matches = list(_PARAMETER.finditer(text))
    literal = _PARAMETER.sub("", text)
    if not text or "{" in literal or "}" in literal:
        raise ValueError(f"route {route!r}: cannot parse segment {text!r}")
    if not matches:
        return _Segment(text, _LITERAL)

    parameters = [_parse_parameter(match.group(1), route) for match in matches]
    starlette_text = ""
    position = 0
    for match, parameter in zip(matches, parameters, strict=True):
        starlette_text += text[position : match.start()] + f"{{{parameter.name}:{parameter.convertor}}}"
        position = match.end()
    starlette_text += text[position:]

    if len(parameters) > 1 or literal:
        if any(parameter.optional for parameter in parameters):
            raise ValueError(
                f"route {route!r}: optional and catch-all parameters must be a whole segment ({text!r})"
            )
        return _Segment(starlette_text, _COMPLEX)
    (parameter,) = parameters
    if parameter.catch_all:
        precedence = _CATCH_ALL
    else:
        precedence = _PLAIN if parameter.convertor == "str" else _CONSTRAINED
    return _Segment(
        starlette_text,
        precedence,
        optional=parameter.optional,
        catch_all=parameter.catch_all,
        default=None if parameter.default is None else (parameter.name, parameter.default),
    )


@dataclass(frozen=True)
class _Parameter:
    name: str
    convertor: str
    """The Starlette convertor: ``str``, ``path`` (catch-all) or one of ours for a constraint."""
    catch_all: bool
    optional: bool
    default: str | None


def _parse_parameter(spec: str, route: str) -> _Parameter:
    """Parse the inside of ``{...}``: ``[*]name[:constraint...][?|=default]``."""
    catch_all = spec.startswith("*")
    spec = spec.lstrip("*")
    optional = catch_all  # a catch-all also matches nothing
    default: str | None = None
    if spec.endswith("?"):
        spec, optional = spec[:-1], True
    elif "=" in spec:
        spec, default = spec.split("=", 1)
        optional = True
    name, *constraints = spec.split(":")
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(
            f"route {route!r}: parameter name {name!r} is not supported (use letters, digits, _)"
        )
    convertor = "path" if catch_all else _convertor(constraints, route)
    return _Parameter(name, convertor, catch_all=catch_all, optional=optional, default=default)


def _convertor(constraints: list[str], route: str) -> str:
    known = [c.lower() for c in constraints if c.lower() in _CONSTRAINTS]
    unknown = [c for c in constraints if c.lower() not in _CONSTRAINTS]
    if unknown:
        logger.warning(
            "Route %r: constraint(s) %s not supported, ignored: the parameter matches more than Azure would",
            route,
            ", ".join(unknown),
        )
    return _CONVERTOR_PREFIX + known[0] if known else "str"


def _required_count(segments: tuple[_Segment, ...]) -> int:
    return next((index for index, segment in enumerate(segments) if segment.optional), len(segments))


def _join(segments: list[str]) -> str:
    return "/" + "/".join(segments)


class _FunctionRoute(Route):
    """A Starlette route that matches as ASP.NET Core routing does and supplies default route values."""

    def __init__(
        self,
        path: str,
        endpoint: Callable[[Request], Any],
        *,
        methods: tuple[str, ...],
        name: str,
        defaults: dict[str, str],
    ) -> None:
        super().__init__(path, endpoint, methods=methods, name=name)
        # Functions matches literal segments ignoring case and does not care about a trailing slash;
        # Starlette would answer 404 or redirect.
        self.path_regex = re.compile(self.path_regex.pattern.removesuffix("$") + "/?$", re.IGNORECASE)
        self._defaults = defaults

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is not Match.NONE and self._defaults:
            child_scope["path_params"] = {**self._defaults, **child_scope["path_params"]}
        return match, child_scope


# --- invocation -------------------------------------------------------------------------------------


class ReturnValueError(Exception):
    """The function returned something that cannot be an HTTP response."""


class _FunctionEndpoint:
    """Handles the requests of one HTTP function."""

    def __init__(
        self,
        function: RegisteredFunction,
        http: HttpRoute,
        *,
        client_binding: ClientBinding | None,
        function_key: str | None,
        max_body_bytes: int,
    ) -> None:
        self._function = function
        self._http = http
        self._client_binding = client_binding
        self._function_key = function_key
        self._max_body_bytes = max_body_bytes
        self._warned_return_type = False

    @property
    def _name(self) -> str:
        return self._function.function_name

    async def handle(self, request: Request) -> Response:
        """Answer one request: refuse it, or call the function and turn its result into the response."""
        refusal = await self._refusal(request)
        if isinstance(refusal, Response):
            return refusal
        arguments: dict[str, Any] = {self._http.request_param: _http_request(request, refusal)}
        client_param = self._http.durable_client_param
        if client_param is not None and self._client_binding is not None:
            arguments[client_param] = self._client_binding(request)
        failure = f"Exception while executing function: Functions.{self._name}"
        with invocation(self._name, InvocationKind.HTTP) as call:
            try:
                result = await self._call(arguments)
                response = _to_response(result)
            except Exception as exc:
                call.fail(exc)
                logger.debug("%s", failure, exc_info=True)
                detail = f": {exc}" if isinstance(exc, ReturnValueError) else ""
                return _error(500, failure + detail)
        self._warn_non_portable(result)
        return response

    async def _refusal(self, request: Request) -> Response | bytes:
        """The answer to a request the function must not see, else the request's body."""
        if self._http.durable_client_param is not None and self._client_binding is None:
            reason = (
                f"Functions.{self._name} takes a durable client, but this host was started without"
                " durable client bindings"
            )
            logger.error("%s", reason)
            return _error(500, reason)
        if not self._authorized(request):
            reason = (
                f"missing or invalid function key (pass it as the {KEY_QUERY_PARAM!r} query"
                f" parameter or the {KEY_HEADER!r} header)"
            )
            logger.info("%s %s refused: %s", request.method, request.url.path, reason)
            return _error(401, f"Unauthorized: {reason}")
        if self._function.disabled and not self._is_admin(request):
            logger.info(
                "%s %s refused: the function is disabled (app setting AzureWebJobs.%s.Disabled)",
                request.method,
                request.url.path,
                self._name,
            )
            return Response(status_code=404)
        body = await read_body(request, self._max_body_bytes)
        if body is None:
            reason = f"the request body is larger than {self._max_body_bytes} bytes"
            logger.info("%s %s refused: %s", request.method, request.url.path, reason)
            return _error(413, f"Payload too large: {reason}")
        return body

    def _authorized(self, request: Request) -> bool:
        return self._http.auth_level == "anonymous" or self._is_admin(request)

    def _is_admin(self, request: Request) -> bool:
        key = self._function_key
        return key is None or presents_key(request, key)

    async def _call(self, arguments: dict[str, Any]) -> Any:
        function = self._function
        if function.is_async:
            result = await function.callable(**arguments)
        else:
            # As the Python worker does: sync functions run on a thread pool, off the event loop.
            result = await run_in_threadpool(function.callable, **arguments)
        # A decorator without functools.wraps hides that the function is async; its call still gives
        # a coroutine.
        if inspect.isawaitable(result):
            result = await result
        return result

    def _warn_non_portable(self, result: object) -> None:
        if self._warned_return_type or isinstance(result, func.HttpResponse | str):
            return
        self._warned_return_type = True
        logger.warning(
            "Functions.%s returned %s; the Python worker in Azure accepts only func.HttpResponse or str"
            " from an HTTP function and fails the invocation otherwise",
            self._name,
            type(result).__name__,
        )


def _http_request(request: Request, body: bytes) -> func.HttpRequest:
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    params: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        params[name] = f"{params[name]},{value}" if name in params else value
    return func.HttpRequest(
        request.method,
        str(request.url),
        headers=headers,
        params=params,
        route_params={name: str(value) for name, value in request.path_params.items()},
        body=body,
    )


def _to_response(result: object) -> Response:
    if isinstance(result, func.HttpResponse):
        return _from_http_response(result)
    if isinstance(result, str):
        return Response(result, media_type="text/plain")
    if isinstance(result, bytes | bytearray):
        return Response(bytes(result), media_type="application/octet-stream")
    if isinstance(result, dict | list):
        try:
            return Response(json.dumps(result), media_type="application/json")
        except (TypeError, ValueError) as exc:
            raise ReturnValueError(f"its return value is not JSON serializable: {exc}") from None
    raise ReturnValueError(
        f"it returned {type(result).__name__}; an HTTP function must return func.HttpResponse or str"
    )


def _from_http_response(result: func.HttpResponse) -> Response:
    body: bytes = result.get_body()
    response = Response(body, status_code=int(result.status_code))
    headers: list[tuple[str, str]] = list(result.headers.items())
    if not any(name.lower() == "content-type" for name, _ in headers):
        # The Python worker's rule: text types carry the charset, others only the MIME type.
        mimetype: str = result.mimetype
        content_type = f"{mimetype}; charset={result.charset}" if mimetype.startswith("text/") else mimetype
        headers.append(("content-type", content_type))
    try:
        # Starlette computed Content-Length from the actual body; a user's value could only be wrong.
        response.raw_headers += [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in headers
            if name.lower() != "content-length"
        ]
    except UnicodeEncodeError as exc:
        raise ReturnValueError(f"a response header is not Latin-1 text: {exc}") from None
    return response


def _error(status_code: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status_code)
