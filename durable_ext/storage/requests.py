"""Watching the storage requests a task hub sends: their kind and how storage answered.

A :class:`~durable_ext.storage.account.StorageAccount` carries :class:`RequestObserver` objects; every
request its clients send, through the SDKs (:class:`ObservingTransport`) or through durable_ext's own
REST client (:func:`observing_trace_configs`), is reported to each of them once per attempt (retries
included, a table batch counts once) when its answer, or its failure, is known. Each
:class:`~durable_ext.storage.taskhub.TaskHub` keeps a :class:`RequestTally` of its own, which the
``/metrics`` endpoint exports.
"""

from __future__ import annotations

import collections
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import aiohttp

from durable_ext.storage.connections import PooledTransport

_TABLE_SUFFIXES = ("History", "Instances", "Partitions", "Poison")

NO_ANSWER = "none"
"""The status of a request that got no answer (connection refused or reset, timeout)."""


class RequestObserver(Protocol):
    """Told about each storage request once its outcome is known."""

    def observed(self, method: str, url: str, status: int | None) -> None:
        """One request: its method, URL and the HTTP status storage answered (None: no answer)."""
        ...


def request_kind(method: str, url: str) -> str:
    """A short, hub-independent name for the kind of a storage request, e.g. ``queue GET
    control/messages`` or ``table POST $batch``."""
    parts = urlsplit(url)
    segments = [unquote(s) for s in parts.path.split("/") if s]
    # Azurite URLs carry the account as the first path segment.
    resource = segments[1] if len(segments) > 1 else ""
    rest = segments[2:]
    if not resource:
        return f"{method} /"
    if "(" in resource or resource.endswith(_TABLE_SUFFIXES) or resource in ("$batch", "Tables"):
        name, _, keys = resource.partition("(")
        name = next((s for s in _TABLE_SUFFIXES if name.endswith(s)), name)
        return f"table {method} {name}{'(key)' if keys.strip(')') else ''}"
    if "-control-" in resource or resource.endswith("-workitems"):
        queue = "control" if "-control-" in resource else "workitems"
        target = "" if not rest else "/messages" if len(rest) == 1 else "/message"
        return f"queue {method} {queue}{target}"
    if resource.endswith(("-leases", "-applease", "-largemessages")):
        return f"blob {method} {resource.rsplit('-', 1)[1]}"
    return f"{method} {resource}"


class RequestTally:
    """Counts requests by kind and answer status (``"200"``, ``"404"``, ... or :data:`NO_ANSWER`)."""

    def __init__(self) -> None:
        self._counts: collections.Counter[tuple[str, str]] = collections.Counter()

    def observed(self, method: str, url: str, status: int | None) -> None:
        """Count one request."""
        self._counts[request_kind(method, url), NO_ANSWER if status is None else str(status)] += 1

    def snapshot(self) -> dict[tuple[str, str], int]:
        """The count of each (kind, status) seen so far."""
        return dict(self._counts)


class ObservingTransport(PooledTransport):
    """The SDKs' aiohttp transport, reporting each request it sends to the observers."""

    def __init__(self, observers: tuple[RequestObserver, ...], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._observers = observers

    async def send(self, request: Any, **kwargs: Any) -> Any:
        """Send ``request`` as the plain transport would, then report it."""
        try:
            response = await super().send(request, **kwargs)
        except BaseException:
            self._report(request, None)
            raise
        self._report(request, response.status_code)
        return response

    def _report(self, request: Any, status: int | None) -> None:
        for observer in self._observers:
            observer.observed(request.method, request.url, status)


def observing_trace_configs(observers: tuple[RequestObserver, ...]) -> list[aiohttp.TraceConfig]:
    """aiohttp hooks reporting each request of a session to the observers (none when there are none)."""
    if not observers:
        return []
    trace = aiohttp.TraceConfig()

    async def on_request_end(
        _session: aiohttp.ClientSession, _context: Any, params: aiohttp.TraceRequestEndParams
    ) -> None:
        for observer in observers:
            observer.observed(params.method, str(params.url), params.response.status)

    async def on_request_exception(
        _session: aiohttp.ClientSession, _context: Any, params: aiohttp.TraceRequestExceptionParams
    ) -> None:
        for observer in observers:
            observer.observed(params.method, str(params.url), None)

    trace.on_request_end.append(on_request_end)
    trace.on_request_exception.append(on_request_exception)
    return [trace]
