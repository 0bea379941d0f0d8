"""The server span of each HTTP request, continuing the caller's W3C ``traceparent``.

The Functions host starts a request activity for every HTTP call and Durable Functions parents
``create_orchestration`` on it. Here an ASGI middleware does the same: the span is current while
the function or the management API runs, so the df client inside an HTTP starter sends it on as
``traceparent`` to the management API, whose start continues the trace. Added only while tracing.
"""

from __future__ import annotations

import re
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from durable_ext import tracing
from durable_ext.host.df_json import MANAGEMENT_PREFIX

_PROPAGATOR = TraceContextTextMapPropagator()
_TRACE_HEADERS = frozenset({"traceparent", "tracestate"})
_CONVERTOR = re.compile(r"\{(\w+):[^}]*\}")
"""A Starlette path parameter with its convertor, ``{name:str}``: the template says ``{name}``."""


class TracingMiddleware:
    """Wraps every HTTP request in a server span named ``{method} {route}`` (OpenTelemetry's HTTP
    conventions), child of the request's ``traceparent`` when it has one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request inside its span."""
        tracer = tracing.tracer()
        if scope["type"] != "http" or tracer is None:
            await self.app(scope, receive, send)
            return
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope.get("headers", ())
            if name.decode("latin-1").lower() in _TRACE_HEADERS
        }
        method = scope.get("method", "GET")
        # No url.path: the df client's calls go to a path that is their credential.
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "url.scheme": scope.get("scheme", "http"),
        }
        with tracer.start_as_current_span(
            method, _PROPAGATOR.extract(carrier), kind=SpanKind.SERVER, attributes=attributes
        ) as span:

            async def send_with_status(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(Status(StatusCode.ERROR))
                await send(message)

            try:
                await self.app(scope, receive, send_with_status)
            finally:
                _name_by_route(span, scope, method)


def _name_by_route(span: trace.Span, scope: Scope, method: str) -> None:
    """Name the span by the route template that served it, known only after routing."""
    template = getattr(scope.get("route"), "path", None)
    if not isinstance(template, str) or not template:
        return
    # A mounted route's template is relative to its mount; the df client's mount is a secret path,
    # which traces must not show: its routes are the management API's.
    mount = str(scope.get("root_path", ""))
    if mount.startswith(MANAGEMENT_PREFIX):
        mount = MANAGEMENT_PREFIX
    route = mount + _CONVERTOR.sub(r"{\1}", template)
    span.set_attribute("http.route", route)
    span.update_name(f"{method} {route}")
