"""Durable HTTP (``context.call_http``): the request and response as Durable Functions writes them.

The extension runs a durable HTTP call as the built-in activity ``BuiltIn::HttpActivity``: its
TaskScheduled ``Input`` is a JSON array holding the serialized ``DurableHttpRequest`` and its
TaskCompleted ``Result`` the serialized ``DurableHttpResponse`` (``statusCode``, ``headers``,
``content``). Header values are a string, or an array when a header repeats (the extension's
``HttpHeadersConverter``). With the asynchronous pattern enabled (the default), a 202 answer with a
``Location`` header is followed by a durable timer (``Retry-After`` seconds, else
``httpSettings.defaultAsyncRequestSleepTimeMilliseconds``) and a GET of that location, as another
``BuiltIn::HttpActivity`` task, until the answer is not a 202: the extension's ``CallHttpAsync`` loop.
No SDK type appears here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from durable_ext.config import parse_timespan
from durable_ext.wire import format_timespan

HTTP_ACTIVITY_NAME = "BuiltIn::HttpActivity"
"""The extension's activity name for durable HTTP calls (``HttpOptions.HttpTaskActivityReservedName``)."""

Headers = dict[str, str | list[str]]
"""HTTP headers as DF serializes them: one string per header, or an array for a repeated one."""

FUNCTIONS_KEY_HEADER = "x-functions-key"
"""Not copied to the GET of a 202's Location: a function key rarely opens the status endpoint."""


class HttpRequestFormatError(ValueError):
    """A ``BuiltIn::HttpActivity`` input that is not a serialized DurableHttpRequest."""


def header_values(headers: Mapping[str, str | list[str]], name: str) -> list[str]:
    """The values of header ``name`` (case-insensitive), in order."""
    found: list[str] = []
    for key, value in headers.items():
        if key.lower() == name.lower():
            found.extend([value] if isinstance(value, str) else value)
    return found


def _headers(value: object, what: str) -> Headers:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise HttpRequestFormatError(f"{what} must be an object of header values")
    headers: Headers = {}
    for key, item in value.items():
        if isinstance(item, list):
            headers[str(key)] = [str(v) for v in item]
        elif item is not None:
            headers[str(key)] = str(item)
    return headers


@dataclass(frozen=True)
class DurableHttpRequest:
    """One HTTP request of a durable HTTP call (the extension's ``DurableHttpRequest``)."""

    method: str
    uri: str
    headers: Headers = field(default_factory=dict)
    content: str | None = None
    token_source: dict[str, Any] | None = None
    """df's ``tokenSource`` JSON (``kind``, ``resource``), when the call asked for a managed identity."""
    asynchronous_pattern_enabled: bool = True
    timeout: timedelta | None = None
    """The request's own timeout; None for the extension's default."""

    @classmethod
    def from_df_action(cls, http_request: Mapping[str, Any]) -> DurableHttpRequest:
        """The request of df's CallHttp action (``httpRequest``: method, uri, content, headers, tokenSource).

        azure-functions-durable 1.x does not send ``asynchronousPatternEnabled``; the extension's
        default, true, applies then.
        """
        return cls._from_json(http_request, "the CallHttp action's httpRequest")

    @classmethod
    def from_task_input(cls, text: str | None) -> DurableHttpRequest:
        """The request a ``BuiltIn::HttpActivity`` TaskScheduled input carries (a one-element array
        holding the request object, or its JSON text)."""
        data = _activity_input_json(text or "null")
        if isinstance(data, list) and len(data) == 1:
            data = data[0]
            if isinstance(data, str):
                data = _activity_input_json(data)
        if not isinstance(data, dict):
            raise HttpRequestFormatError("the HTTP activity input is not a serialized DurableHttpRequest")
        return cls._from_json(data, "the HTTP activity input")

    @classmethod
    def _from_json(cls, data: Mapping[str, Any], what: str) -> DurableHttpRequest:
        method, uri, content = data.get("method") or "GET", data.get("uri"), data.get("content")
        if not isinstance(method, str) or not isinstance(uri, str) or not uri:
            raise HttpRequestFormatError(f"{what} needs a method and a uri")
        if content is not None and not isinstance(content, str):
            raise HttpRequestFormatError(f"{what}: content must be a string")
        token = data.get("tokenSource")
        timeout = data.get("timeout")
        return cls(
            method=method.upper(),
            uri=uri,
            headers=_headers(data.get("headers"), what),
            content=content,
            token_source=dict(token) if isinstance(token, dict) else None,
            asynchronous_pattern_enabled=data.get("asynchronousPatternEnabled") is not False,
            timeout=_timeout(timeout, what),
        )

    def to_task_input(self) -> str:
        """The TaskScheduled input of the HTTP activity for this request."""
        body = {
            "method": self.method,
            "uri": self.uri,
            "headers": self.headers,
            "content": self.content,
            "tokenSource": self.token_source,
            "asynchronousPatternEnabled": self.asynchronous_pattern_enabled,
            "timeout": format_timespan(self.timeout) if self.timeout is not None else None,
        }
        return json.dumps([body], separators=(",", ":"), ensure_ascii=False)


def _timeout(value: object, what: str) -> timedelta | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise HttpRequestFormatError(f"{what}: timeout must be a timespan string")
    try:
        return parse_timespan(value)
    except ValueError as exc:
        raise HttpRequestFormatError(f"{what}: {exc}") from None


@dataclass(frozen=True)
class DurableHttpResponse:
    """The answer to one HTTP request (the extension's ``DurableHttpResponse``)."""

    status_code: int
    headers: Headers = field(default_factory=dict)
    content: str | None = None

    def to_result(self) -> str:
        """The TaskCompleted result: what df hands the orchestrator, as a dict with these keys."""
        body = {"statusCode": self.status_code, "headers": self.headers, "content": self.content}
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def poll_delay(response: object, default: timedelta) -> tuple[str, timedelta] | None:
    """Where and after how long to poll after ``response`` (a DurableHttpResponse as df decoded it),
    or None when the call is done: only a 202 with a ``Location`` header is polled."""
    if not isinstance(response, dict) or response.get("statusCode") != 202:
        return None
    headers = response.get("headers")
    if not isinstance(headers, dict):
        return None
    locations = header_values(headers, "Location")
    if not locations:
        return None
    retry_after = header_values(headers, "Retry-After")
    delay = default
    if retry_after and retry_after[0].strip().isdigit():
        delay = timedelta(seconds=int(retry_after[0].strip()))
    return locations[0], delay


def _activity_input_json(text: str) -> Any:
    """Decode (part of) a ``BuiltIn::HttpActivity`` input; HttpRequestFormatError if it is not JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise HttpRequestFormatError(f"the HTTP activity input is not JSON: {exc}") from None
