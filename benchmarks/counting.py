"""Counting the storage requests the engine sends, without touching durable_ext.

The SDK clients accept a ``transport`` keyword, and :class:`~durable_ext.storage.account.StorageAccount`
passes its keyword options through to them. :class:`CountingAccount` is a StorageAccount whose
clients get a :class:`CountingTransport`: the normal aiohttp transport, which records every request
(retries included, a table batch counts once) before sending it. The queue data path, which
durable_ext sends without the SDK, is counted by an aiohttp trace hook the account provides. Only
the engine's task hub is built on a counting account; the benchmark's client and the ceiling probe
use plain accounts, so their requests are not counted.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
from azure.core.pipeline.transport import AioHttpTransport

from durable_ext.storage.account import StorageAccount, use_environment_settings

_TABLE_SUFFIXES = ("History", "Instances", "Partitions")


class RequestCounter:
    """Counts requests by kind, e.g. ``queue GET control/messages`` or ``table POST $batch``."""

    def __init__(self) -> None:
        self.by_kind: collections.Counter[str] = collections.Counter()
        self.total = 0

    def record(self, method: str, url: str) -> None:
        """Count one request."""
        self.total += 1
        self.by_kind[classify(method, url)] += 1

    def reset(self) -> None:
        """Forget everything counted so far."""
        self.by_kind.clear()
        self.total = 0

    def snapshot(self) -> tuple[int, dict[str, int]]:
        """The total and the per-kind counts (most frequent first) as they are now."""
        return self.total, dict(self.by_kind.most_common())


def classify(method: str, url: str) -> str:
    """A short, hub-independent name for the kind of a storage request."""
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


class CountingTransport(AioHttpTransport):
    """The SDKs' aiohttp transport, counting each request it sends."""

    def __init__(self, counter: RequestCounter, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._counter = counter

    async def send(self, request: Any, **kwargs: Any) -> Any:
        """Record ``request``, then send it as the plain transport would."""
        self._counter.record(request.method, request.url)
        return await super().send(request, **kwargs)


@dataclass(frozen=True)
class CountingAccount(StorageAccount):
    """A storage account whose service clients count their requests in ``counter``."""

    counter: RequestCounter = field(default_factory=RequestCounter, compare=False, repr=False)

    @classmethod
    def wrap(cls, account: StorageAccount, counter: RequestCounter) -> CountingAccount:
        """``account``, counting into ``counter``."""
        return cls(
            account_name=account.account_name,
            blob_endpoint=account.blob_endpoint,
            queue_endpoint=account.queue_endpoint,
            table_endpoint=account.table_endpoint,
            account_key=account.account_key,
            sas_token=account.sas_token,
            development_storage=account.development_storage,
            counter=counter,
        )

    def sdk_transport(self) -> AioHttpTransport:
        """The SDK clients' transport, counting their requests."""
        return CountingTransport(self.counter, use_env_settings=use_environment_settings())

    def http_trace_configs(self) -> list[aiohttp.TraceConfig]:
        """Counts the requests durable_ext sends without the SDKs (its queue data path)."""
        trace = aiohttp.TraceConfig()

        async def on_request_start(
            _session: aiohttp.ClientSession, _context: Any, params: aiohttp.TraceRequestStartParams
        ) -> None:
            self.counter.record(params.method, str(params.url))

        trace.on_request_start.append(on_request_start)
        return [trace]
