"""The built-in HTTP activity (``BuiltIn::HttpActivity``): one request of ``context.call_http``.

What the extension's ``TaskHttpActivityShim`` does: send the request as the orchestrator described it
(headers as given; content as text, ``text/plain`` unless a Content-Type header says otherwise;
multipart refused) and complete the task with the ``DurableHttpResponse``. Its headers are the
response headers .NET keeps on the response itself, so content headers (Content-Type,
Content-Length, ...) are not among them, as in Durable Functions. A request that gets no answer
(connection refused, unknown host, timeout) fails the task with .NET's ``HttpRequestException`` text,
which the orchestrator can catch. The 202 polling loop is not here: the orchestrator's replay runs it
with durable timers (:mod:`durable_ext.durable_http`).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import aiohttp

from durable_ext.durable_http import DurableHttpRequest, DurableHttpResponse, Headers, HttpRequestFormatError
from durable_ext.failures import (
    ARGUMENT_EXCEPTION,
    FUNCTION_FAILED_EXCEPTION,
    HTTP_REQUEST_EXCEPTION,
    NOT_SUPPORTED_EXCEPTION,
    http_failure,
)
from durable_ext.history import TaskCompletedEvent, TaskFailedEvent, TaskScheduledEvent
from durable_ext.logs import hub_log
from durable_ext.storage.account import use_environment_settings

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = timedelta(seconds=240)
"""Durable Functions' limit on one HTTP exchange when the request sets no timeout of its own."""

USER_AGENT = "DurableFunctionsHttpClient (durable_ext)"
"""Sent unless the request sets its own User-Agent (the extension's client always sends one)."""

_CONTENT_HEADERS = frozenset(
    name.lower()
    for name in (
        "Allow",
        "Content-Disposition",
        "Content-Encoding",
        "Content-Language",
        "Content-Length",
        "Content-Location",
        "Content-MD5",
        "Content-Range",
        "Content-Type",
        "Expires",
        "Last-Modified",
    )
)
"""Headers .NET keeps on ``HttpContent``: not in the extension's ``DurableHttpResponse.Headers``."""


class HttpActivity:
    """Runs durable HTTP requests with one shared aiohttp session (opened on first use)."""

    def __init__(self, hub_name: str) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._log = hub_log(logger, hub_name)

    async def close(self) -> None:
        """Close the session, if one was opened."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def run(self, event: TaskScheduledEvent, instance_id: str) -> TaskCompletedEvent | TaskFailedEvent:
        """Send the request ``event`` (of instance ``instance_id``) carries; the task's result or failure."""
        log = self._log.instance(instance_id)
        try:
            request = DurableHttpRequest.from_task_input(event.input)
        except HttpRequestFormatError as exc:
            return _failed(event, str(exc), ARGUMENT_EXCEPTION)
        if request.token_source is not None:
            kind = request.token_source.get("kind", "?")
            message = (
                f"call_http with a token_source ({kind}) is not supported by durable_ext: managed identities "
                "are not available here; pass an Authorization header instead"
            )
            log.warning(
                "HTTP %s %s (task %d) refused: %s", request.method, request.uri, event.event_id, message
            )
            return _failed(event, message, NOT_SUPPORTED_EXCEPTION)
        if any("multipart" in v.lower() for v in _header_list(request.headers, "content-type")):
            message = "Multipart content is not supported with CallHttpAsync."
            return _failed(event, message, FUNCTION_FAILED_EXCEPTION)
        started = asyncio.get_running_loop().time()
        try:
            response = await self._send(request)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            message = _error_text(exc, request)
            log.info("HTTP %s %s (task %d) failed: %s", request.method, request.uri, event.event_id, message)
            return _failed(event, message)
        log.debug(
            "HTTP %s %s (task %d) answered %d in %.0f ms",
            request.method,
            request.uri,
            event.event_id,
            response.status_code,
            (asyncio.get_running_loop().time() - started) * 1000,
        )
        return TaskCompletedEvent(task_scheduled_id=event.event_id, result=response.to_result())

    async def _send(self, request: DurableHttpRequest) -> DurableHttpResponse:
        if self._session is None:
            self._session = aiohttp.ClientSession(trust_env=use_environment_settings())
        headers: list[tuple[str, str]] = [
            (key, value) for key, values in request.headers.items() for value in _as_list(values)
        ]
        if not any(key.lower() == "user-agent" for key, _ in headers):
            headers.append(("User-Agent", USER_AGENT))
        data: bytes | None = None
        if request.content is not None:
            data = request.content.encode()
            if not any(key.lower() == "content-type" for key, _ in headers):
                headers.append(("Content-Type", "text/plain; charset=utf-8"))
        timeout = aiohttp.ClientTimeout(total=(request.timeout or DEFAULT_TIMEOUT).total_seconds())
        async with self._session.request(
            request.method, request.uri, headers=headers, data=data, timeout=timeout, allow_redirects=True
        ) as answer:
            content = await answer.text(errors="replace")
            response_headers: Headers = {}
            for key in answer.headers:
                if key.lower() in _CONTENT_HEADERS or key in response_headers:
                    continue
                values = answer.headers.getall(key)
                response_headers[key] = values[0] if len(values) == 1 else list(values)
            return DurableHttpResponse(answer.status, response_headers, content)


def _as_list(values: str | list[str]) -> list[str]:
    return [values] if isinstance(values, str) else values


def _header_list(headers: Headers, name: str) -> list[str]:
    return [v for key, values in headers.items() if key.lower() == name for v in _as_list(values)]


def _error_text(exc: BaseException, request: DurableHttpRequest) -> str:
    """.NET's ``HttpRequestException`` message for a request that got no answer."""
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        limit = (request.timeout or DEFAULT_TIMEOUT).total_seconds()
        configured = f"the configured HttpClient.Timeout of {limit:g} seconds"
        return f"The request was canceled due to {configured} elapsing."
    if isinstance(exc, aiohttp.ClientConnectorError):
        reason = _os_error_text(exc.os_error)
        return f"{reason} ({exc.host}:{exc.port})"
    return str(exc) or type(exc).__name__


def _os_error_text(error: OSError) -> str:
    """The socket error as .NET on Linux words it (``Connection refused``, ``Name or service not known``)."""
    if isinstance(error, ConnectionRefusedError):
        return "Connection refused"
    return error.strerror or str(error)


def _failed(
    event: TaskScheduledEvent, message: str, dotnet_class: tuple[str, str] = HTTP_REQUEST_EXCEPTION
) -> TaskFailedEvent:
    reason, details = http_failure(message, dotnet_class)
    return TaskFailedEvent(task_scheduled_id=event.event_id, reason=reason, details=details)
