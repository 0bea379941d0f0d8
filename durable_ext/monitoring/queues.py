"""The task hub's backlog as storage reports it: each queue's length and the age of its oldest message.

This is what the Durable Functions scale controller watches (DurableTask.AzureStorage's
``DisconnectedPerformanceMonitor``): per queue, the approximate message count (Get Queue Metadata)
and the latency, the time since the first visible message was enqueued (Peek Messages, which takes
nothing; zero when no message is visible). A sample also counts the workers that hold partition leases.

Reading all that costs two requests per queue and one table query, so a sample is kept for
``interval`` and shared by every caller meanwhile (a scrape storm costs one sample per interval), and
one sample in flight serves every caller that asks while it runs. A failed sample (storage away) is
remembered for the interval too, so an outage is not hammered either; a sample that takes longer than
``timeout`` counts as failed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from durable_ext.history import utc_now
from durable_ext.logs import hub_log
from durable_ext.storage.outage import describe_outage, storage_health
from durable_ext.storage.queues import MessageQueue
from durable_ext.storage.taskhub import TaskHub

logger = logging.getLogger(__name__)

SAMPLE_INTERVAL = timedelta(seconds=5)
"""How long a sample is reused before storage is read again."""
SAMPLE_TIMEOUT = timedelta(seconds=10)
"""How long a sample may take before it counts as failed."""
HISTORY_LENGTH = 5
"""Samples kept: the scale controller decides over its last five (``QueueLengthSampleSize``)."""


@dataclass(frozen=True)
class QueueSample:
    """One queue at one instant."""

    name: str
    length: int
    """The approximate message count, invisible messages (timers, held messages) included."""
    oldest_age: timedelta
    """Since the first visible message was enqueued; zero when no message is visible."""

    @property
    def latency_ms(self) -> int:
        """The age in whole milliseconds, as the scale controller records it."""
        return int(self.oldest_age.total_seconds() * 1000)


@dataclass(frozen=True)
class HubSample:
    """Every queue of the hub, and the lease owners, read together."""

    taken_at: datetime
    control_queues: tuple[QueueSample, ...]
    """In partition order."""
    work_items: QueueSample
    workers: int
    """Distinct owners of the unexpired partition leases: the workers doing orchestration work."""


class SampleFailedError(Exception):
    """The latest sample could not be taken (storage unreachable, refused, or too slow)."""


class QueueMonitor:
    """Samples one task hub's queues on demand, at most once per ``interval``."""

    def __init__(
        self,
        hub: TaskHub,
        *,
        interval: timedelta = SAMPLE_INTERVAL,
        timeout: timedelta = SAMPLE_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._hub = hub
        self._interval = interval.total_seconds()
        self._timeout = timeout.total_seconds()
        self._clock = clock
        self._log = hub_log(logger, hub.names.hub)
        self.history: deque[HubSample] = deque(maxlen=HISTORY_LENGTH)
        """The latest successful samples, oldest first."""
        self.failure: str | None = None
        """Why the latest attempt failed; None when it succeeded (or none was made)."""
        self._attempted: float | None = None
        self._pending: asyncio.Task[None] | None = None

    @property
    def latest(self) -> HubSample | None:
        """The latest sample if the latest attempt succeeded, else None."""
        return self.history[-1] if self.history and self.failure is None else None

    async def sample(self) -> HubSample:
        """The current sample: the kept one while it is fresh, else a new one.

        Raises :class:`SampleFailedError` when the latest attempt failed.
        """
        fresh = self._attempted is not None and self._clock() - self._attempted < self._interval
        if not fresh:
            if self._pending is None:
                self._pending = asyncio.create_task(self._attempt(), name=f"sample-{self._hub.names.hub}")
            # Shielded: a caller that goes away (a scrape timing out) leaves the sample to the others.
            await asyncio.shield(self._pending)
        latest = self.latest
        if latest is None:
            raise SampleFailedError(self.failure or "no sample has been taken")
        return latest

    async def _attempt(self) -> None:
        try:
            sample = await asyncio.wait_for(self._read(), self._timeout)
        except Exception as exc:
            if isinstance(exc, TimeoutError):
                failure = f"storage did not answer within {self._timeout:g} s"
            else:
                failure = describe_outage(exc)
                outage = storage_health.failed(self._hub.account.describe(), exc)
                if not outage and failure != self.failure:
                    # Once per kind of failure, not once per scrape.
                    self._log.warning("reading the queue backlog failed", exc_info=True)
            self.failure = failure
        else:
            self.history.append(sample)
            self.failure = None
        finally:
            self._attempted = self._clock()
            self._pending = None

    async def _read(self) -> HubSample:
        hub = self._hub
        now = utc_now()
        *control, work_items = await asyncio.gather(
            *(_queue_sample(queue, now) for queue in [*hub.control_queues, hub.work_item_queue])
        )
        return HubSample(now, tuple(control), work_items, await self._workers(now))

    async def _workers(self, now: datetime) -> int:
        owners = {lease.current_owner for lease in await self._hub.leases() if not lease.is_expired(now)}
        return len(owners - {None})


async def _queue_sample(queue: MessageQueue, now: datetime) -> QueueSample:
    length, inserted_on = await asyncio.gather(queue.approximate_count(), queue.oldest_inserted_on())
    age = timedelta(0) if inserted_on is None else max(timedelta(0), now - inserted_on)
    return QueueSample(queue.name, length, age)
