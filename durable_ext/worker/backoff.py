"""Queue polling back-off with immediate in-process wake-ups (docs/storage-protocol.md §6.3).

An idle queue is polled less and less often, up to ``maxQueuePollingInterval``; a message found, or a
message this process just enqueued, resets the interval and ends the current wait at once, so work
handed from one dispatcher to another in the same process is picked up without polling delay. A
delayed message this process enqueued schedules a wake for the instant it becomes visible
(:meth:`BackoffPolling.wake_at`), so it is not left waiting for the back-off either; with nothing
scheduled, the back-off polls no more often than before.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import random
from datetime import timedelta

from durable_ext.history import utc_now
from durable_ext.storage.queues import ReceivedMessage

MIN_INTERVAL = timedelta(milliseconds=50)
GROWTH = 3
"""How much longer each empty poll's wait is than the one before (DT.AS doubles it). Work sent in this
process never waits for a poll (:meth:`BackoffPolling.wake`, :meth:`BackoffPolling.wake_at`), so polls
only find what other processes sent; tripling reaches ``maxQueuePollingInterval`` (30 s) in 7 polls
rather than 10, which cuts an idle worker's requests by a third while the wait after a pause stays
about twice the pause."""
WAKE_COALESCE = 0.005
"""Seconds: scheduled wakes this close to the one that fires are served by the same poll."""


class BackoffPolling:
    """Randomized exponential back-off between empty polls of one queue, with scheduled wakes."""

    def __init__(self, max_interval: timedelta, min_interval: timedelta = MIN_INTERVAL) -> None:
        self._min = min_interval.total_seconds()
        self._max = max(max_interval.total_seconds(), self._min)
        self._empty_polls = 0
        self._signal = asyncio.Event()
        """Set by :meth:`wake` (end the wait) and :meth:`wake_at` (recompute the wait's end)."""
        self._woken = False
        self._due: list[float] = []
        """Scheduled wakes, in event-loop time (a heap)."""

    @property
    def scheduled(self) -> int:
        """How many scheduled wakes are still to come."""
        return len(self._due)

    def reset(self) -> None:
        """A poll found work: the next empty poll waits from the shortest interval again."""
        self._empty_polls = 0

    def wake(self) -> None:
        """End the current wait now (new work is known to be in the queue)."""
        self._empty_polls = 0
        self._woken = True
        self._signal.set()

    def wake_at(self, when: float) -> None:
        """End a wait at event-loop time ``when`` at the latest (a delayed message is visible then).

        A wait in progress is shortened; a wake in the past ends the next wait at once.
        """
        heapq.heappush(self._due, when)
        self._signal.set()

    def wake_when_visible(self, message: ReceivedMessage) -> None:
        """End a wait when ``message`` is due to become visible in its queue (:meth:`wake_at`)."""
        if message.next_visible_on is not None:
            seconds = (message.next_visible_on - utc_now()).total_seconds()
            self.wake_at(asyncio.get_running_loop().time() + seconds)

    def next_interval(self) -> float:
        """Seconds to wait after one more empty poll: 0, 50 ms, then ~50 ms + GROWTH^(k-1) * 50 ms."""
        k = self._empty_polls
        self._empty_polls += 1
        if k == 0:
            return 0.0
        if k == 1:
            return self._min
        # Cap the exponent so the float stays finite however long the queue stays empty.
        grown: float = self._min + random.uniform(0.8, 1.2) * float(GROWTH ** min(k - 1, 30)) * self._min
        return min(grown, self._max)

    async def wait(self) -> None:
        """Sleep for the next interval, until the next scheduled wake, or until :meth:`wake`."""
        loop = asyncio.get_running_loop()
        end = loop.time() + self.next_interval()
        while not self._woken:
            now = loop.time()
            if self._due and self._due[0] <= now:
                self._scheduled_wake(now)
                break
            timeout = min(end, self._due[0]) - now if self._due else end - now
            if timeout <= 0:
                break
            self._signal.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._signal.wait(), timeout=timeout)
        self._woken = False
        self._signal.clear()

    def _scheduled_wake(self, now: float) -> None:
        """Take the wakes due now; the next empty poll waits only the shortest interval, because a
        message due now may show a few milliseconds late (the service's clock, whole seconds)."""
        while self._due and self._due[0] <= now + WAKE_COALESCE:
            heapq.heappop(self._due)
        self._empty_polls = 1
