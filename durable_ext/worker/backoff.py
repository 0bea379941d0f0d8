"""Queue polling back-off with immediate in-process wake-ups (docs/storage-protocol.md §6.3).

An idle queue is polled less and less often, up to ``maxQueuePollingInterval``; a message found, or a
message this process just enqueued, resets the interval and ends the current wait at once, so work
handed from one dispatcher to another in the same process is picked up without polling delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from datetime import timedelta

MIN_INTERVAL = timedelta(milliseconds=50)


class BackoffPolling:
    """Randomized exponential back-off between empty polls of one queue."""

    def __init__(self, max_interval: timedelta, min_interval: timedelta = MIN_INTERVAL) -> None:
        self._min = min_interval.total_seconds()
        self._max = max(max_interval.total_seconds(), self._min)
        self._empty_polls = 0
        self._wake = asyncio.Event()

    def reset(self) -> None:
        """A poll found work: the next empty poll waits from the shortest interval again."""
        self._empty_polls = 0

    def wake(self) -> None:
        """End the current wait now (new work is known to be in the queue)."""
        self._empty_polls = 0
        self._wake.set()

    def next_interval(self) -> float:
        """Seconds to wait after one more empty poll: 0, 50 ms, then ~50 ms + 2^(k-1) * 50 ms."""
        k = self._empty_polls
        self._empty_polls += 1
        if k == 0:
            return 0.0
        if k == 1:
            return self._min
        # Cap the exponent so the float stays finite however long the queue stays empty.
        grown: float = self._min + random.uniform(0.8, 1.2) * float(2 ** min(k - 1, 30)) * self._min
        return min(grown, self._max)

    async def wait(self) -> None:
        """Sleep for the next interval, or until :meth:`wake` is called."""
        interval = self.next_interval()
        if interval <= 0 and not self._wake.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=interval)
        self._wake.clear()
