"""Time skipping: a test host's durable timers fire as soon as nothing else can run.

A :class:`TimeSkipper` watches one engine whose clock is a :class:`~durable_ext.clock.SkippingClock`.
While someone waits for an orchestration (:meth:`TimeSkipper.skipping`) and the engine is quiet (no
episode, no activity, no message held, nothing visible in the hub's queues, several checks in a row),
it moves the clock to the earliest due time of the delayed messages (timers, retry waits, long-timer
hops, delayed signals) this engine sent, and has them taken now:

- a message the engine keeps in memory for its due time (``worker/scheduled.py``) is handed over as
  soon as the clock has moved;
- one left to its queue (not owned, or past the in-memory bound) has its visibility set to zero, so
  that the queue's owner polls it now rather than when the wall clock gets there.

Either way the message itself stays in its queue until the episode that records it deletes it. Only
waits are skipped: a timer fires no earlier (in the engine's time) than it is due, so the history and
``context.current_utc_datetime`` show the time as having passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from types import TracebackType

from durable_ext.clock import SkippingClock
from durable_ext.logs import hub_log
from durable_ext.storage.outage import storage_health
from durable_ext.storage.queues import ReceivedMessage
from durable_ext.worker.engine import Engine

logger = logging.getLogger(__name__)

QUIET_CHECKS = 3
"""Consecutive quiet checks before the clock moves: a poll's answer or a send may be on its way
between two checks, and would show in the next."""
CHECK_INTERVAL = 0.02
"""Seconds between two checks while someone waits and a timer is pending."""


class TimeSkipper:
    """Skips ``engine``'s ``clock`` to its next timer whenever the engine is quiet and someone waits.

    Use as ``async with TimeSkipper(engine, clock)`` around the engine's life.
    """

    def __init__(self, engine: Engine, clock: SkippingClock) -> None:
        if engine.clock is not clock:
            raise ValueError("the engine must run on the clock the skipper moves")
        self._engine = engine
        self._clock = clock
        self._queues = {q.name: q for q in engine.hub.control_queues}
        self._left: dict[tuple[str, str], tuple[ReceivedMessage, datetime]] = {}
        """Delayed messages the engine left to their queue's visibility, by (queue, message ID)."""
        self._waiting = 0
        self._task: asyncio.Task[None] | None = None
        self._log = hub_log(logger, engine.hub.names.hub)
        self._storage = engine.hub.account.describe()
        engine.orchestrations.scheduling.on_left_to_queue(self._leave)

    @contextlib.asynccontextmanager
    async def skipping(self) -> AsyncIterator[None]:
        """Skip time while in this context (a test waiting for an orchestration): outside of it,
        timers wait for the wall clock, so that a test can raise an event before a timeout fires."""
        self._waiting += 1
        try:
            yield
        finally:
            self._waiting -= 1

    def next_due(self) -> datetime | None:
        """The earliest due time of the delayed messages the engine sent, None when there are none."""
        dues = [due for _, due in self._left.values()]
        kept = self._engine.orchestrations.scheduling.messages.earliest()
        if kept is not None:
            dues.append(kept)
        return min(dues, default=None)

    async def __aenter__(self) -> TimeSkipper:
        self._task = asyncio.create_task(self._run(), name=f"time-skipper-{self._engine.worker_id}")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _leave(self, message: ReceivedMessage, due: datetime) -> None:
        self._left[(message.queue_name, message.message_id)] = (message, due)

    async def _run(self) -> None:
        quiet = 0
        while True:
            await asyncio.sleep(CHECK_INTERVAL)
            if not self._waiting or self.next_due() is None:
                quiet = 0
                continue
            try:
                quiet = quiet + 1 if await self._quiet() else 0
                if quiet >= QUIET_CHECKS:
                    quiet = 0
                    await self._skip()
            except Exception as exc:
                quiet = 0
                if not storage_health.failed(self._storage, exc):
                    self._log.warning("time skipping failed; trying again", exc_info=True)

    async def _quiet(self) -> bool:
        """Whether nothing runs in the engine and nothing waits visible in the hub's queues."""
        if not self._engine.idle:
            return False
        queues = [*self._queues.values(), self._engine.hub.work_item_queue]
        visible = await asyncio.gather(*(queue.has_visible() for queue in queues))
        return not any(visible) and self._engine.idle

    async def _skip(self) -> None:
        """Move the clock to the earliest due time and have what is due then taken."""
        due = self.next_due()
        if due is None:
            return
        if self._clock.advance_to(due):
            self._log.info("time skipped to %s (%s ahead of the wall clock)", due, self._clock.skipped)
        self._engine.orchestrations.scheduling.messages.rearm()
        now = self._clock.now()
        for key, (message, when) in list(self._left.items()):
            if when <= now:
                await self._queues[message.queue_name].abandon(message, delay=timedelta(0))
                del self._left[key]
                self._engine.enqueued(message.queue_name)
