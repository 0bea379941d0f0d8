"""Counting the storage requests the engine sends, without touching durable_ext.

A :class:`RequestCounter` is a :class:`~durable_ext.storage.requests.RequestObserver`: the benchmark
builds the engine's task hub on ``account.observed_by(counter)``, whose SDK clients and queue data path
report every request (retries included, a table batch counts once). Only the engine's task hub is
built on that account; the benchmark's client and the ceiling probe use plain accounts, so their
requests are not counted.
"""

from __future__ import annotations

import collections

from durable_ext.storage.requests import request_kind


class RequestCounter:
    """Counts requests by kind, e.g. ``queue GET control/messages`` or ``table POST $batch``."""

    def __init__(self) -> None:
        self.by_kind: collections.Counter[str] = collections.Counter()
        self.total = 0

    def observed(self, method: str, url: str, status: int | None) -> None:
        """Count one request, whatever its answer."""
        self.total += 1
        self.by_kind[request_kind(method, url)] += 1

    def reset(self) -> None:
        """Forget everything counted so far."""
        self.by_kind.clear()
        self.total = 0

    def snapshot(self) -> tuple[int, dict[str, int]]:
        """The total and the per-kind counts (most frequent first) as they are now."""
        return self.total, dict(self.by_kind.most_common())
