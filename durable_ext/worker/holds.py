"""Messages a worker holds in memory stay invisible only as long as the worker is alive.

A dequeued or handed-off message is invisible in its queue while this worker works on it. DT.AS hides
it for the whole visibility timeout (5 minutes by default), so a worker that dies holding messages
strands their instances for that long even after another worker took the partition. Here a message
is hidden for a short hold (at most :data:`MESSAGE_HOLD`) that the holder renews while it keeps the
message: a live worker never loses a message it holds, a dead one's messages reappear within a hold.

A message that waits long in memory (a backlog: more messages than episodes can take) is renewed for
as long as it has been held so far, up to the configured visibility timeout: its renewals grow apart
(20, 20, 40, 80, 160 s ...) instead of coming every 13 s. A renewal is an update that an overloaded
storage (Azurite scans every stored message per queue operation) serves at the cost of real work:
in a run of 2,000 orchestrations started at once, renewals were one request in six. A dead worker's
long-held messages then reappear within the time they had waited already (at most the visibility
timeout, as under DurableTask.AzureStorage, which hides every message for all of it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from durable_ext.history import utc_now
from durable_ext.logs import hub_log
from durable_ext.storage.outage import storage_health
from durable_ext.storage.queues import MessageQueue, ReceivedMessage

logger = logging.getLogger(__name__)

MESSAGE_HOLD = timedelta(seconds=20)
"""The longest a held message is hidden between renewals; with the 30 s lease of a partition, the
messages of a worker that died are visible again before another worker can own their partition."""

_RENEWALS_IN_FLIGHT = 32
RENEW_LEAD = timedelta(milliseconds=500)
"""How long before a message turns visible :meth:`HeldMessages.renew_before_visible` renews it: room
for a late event loop and a slow request."""


def message_hold(visibility_timeout: timedelta) -> timedelta:
    """The invisibility to dequeue or hand off with: the configured timeout, capped at the hold."""
    return max(timedelta(seconds=1), min(visibility_timeout, MESSAGE_HOLD))


class HeldMessages:
    """The messages one dispatcher holds, renewed before their invisibility runs out.

    Renewing a message changes its pop receipt, so a delete or abandon must first :meth:`release`
    the message: that waits for a renewal in flight and leaves the current receipt on the message.
    Messages are renewed only once a third of their hold has passed, so the many that an episode
    finishes within milliseconds cost no renewal at all.
    """

    def __init__(
        self,
        hold: timedelta,
        queue_of: Callable[[ReceivedMessage], MessageQueue],
        *,
        hub_name: str,
        storage: str,
        longest: timedelta | None = None,
    ) -> None:
        """``hold`` is the first invisibility and the shortest renewal; ``longest`` (default ``hold``)
        the longest renewal, given to a message held for that long already."""
        self.hold = hold
        self._longest = max(hold, longest or hold)
        self._queue_of = queue_of
        self._hub_name = hub_name
        self._log = hub_log(logger, self._hub_name)
        self._storage = storage
        self._held: dict[tuple[str, str], _Held] = {}
        self._renewing: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._limit = asyncio.Semaphore(_RENEWALS_IN_FLIGHT)
        self._loop: asyncio.Task[None] | None = None
        self._failing = False

    def __len__(self) -> int:
        return len(self._held)

    def hold_message(self, message: ReceivedMessage) -> None:
        """Keep ``message`` invisible from now on (a redelivered copy replaces the one held)."""
        key = _key(message)
        held = self._held.get(key)
        self._held[key] = _Held(message, held.since if held is not None else time.monotonic())

    def adopt(self, redelivered: ReceivedMessage) -> bool:
        """Take over a copy of a held message that a poll received again; False if none is held.

        A renewal that came too late (storage slower than a hold) lets a held message turn visible,
        and a poller takes it again with a new pop receipt. The held message keeps its own content
        (for a work item, the activity's result in memory) and takes the copy's receipt and
        invisibility, so the delete that ends the hold still works.
        """
        held = self._held.get(_key(redelivered))
        if held is None:
            return False
        held.message.pop_receipt = redelivered.pop_receipt
        held.message.next_visible_on = redelivered.next_visible_on
        return True

    def renew_before_visible(self, message: ReceivedMessage) -> None:
        """Renew a held message shortly before it turns visible, unless it is released by then.

        For a message taken at its due time from memory (worker/scheduled.py): it turns visible a
        second or two later, sooner than the renewal loop comes round, but most such episodes are
        done before that and then need no renewal at all.
        """
        seconds = 0.0
        if message.next_visible_on is not None:
            seconds = (message.next_visible_on - utc_now()).total_seconds() - RENEW_LEAD.total_seconds()
        asyncio.get_running_loop().call_later(max(0.0, seconds), self._renew_now, _key(message))

    def _renew_now(self, key: tuple[str, str]) -> None:
        if self._loop is not None and key in self._held and key not in self._renewing:
            self._renewing[key] = asyncio.create_task(self._renew(key, self._held[key].message))

    async def release(self, message: ReceivedMessage) -> None:
        """Stop renewing ``message``; on return its pop receipt is the current one."""
        key = _key(message)
        held = self._held.pop(key, None)
        renewal = self._renewing.get(key)
        if renewal is not None:
            await asyncio.wait([renewal])
        if held is not None and held.message is not message:
            message.pop_receipt = held.message.pop_receipt

    def forget(self, queue_name: str) -> None:
        """Stop renewing the messages of a queue this worker no longer owns; they reappear soon."""
        for key in [k for k in self._held if k[0] == queue_name]:
            del self._held[key]

    def start(self) -> None:
        """Begin renewing in the background."""
        if self._loop is None:
            self._loop = asyncio.create_task(self._run(), name=f"holds-{self._hub_name}")

    async def stop(self) -> None:
        """Stop renewing (the messages still held reappear within a hold)."""
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
            self._loop = None
        if self._renewing:
            await asyncio.wait(list(self._renewing.values()))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.hold.total_seconds() / 3)
            renewals = self.renew_due()
            if renewals:
                await asyncio.wait(renewals)

    def renew_due(self) -> list[asyncio.Task[None]]:
        """Start renewing every held message whose invisibility ends within two thirds of a hold.

        The tasks are registered before anything awaits, so a :meth:`release` that comes after this
        call always finds the renewal it must wait for.
        """
        horizon = utc_now() + self.hold * 2 / 3
        tasks = []
        for key, held in self._held.items():
            message = held.message
            if key in self._renewing:
                continue
            if message.next_visible_on is None or message.next_visible_on < horizon:
                task = asyncio.create_task(self._renew(key, message))
                self._renewing[key] = task
                tasks.append(task)
        return tasks

    async def _renew(self, key: tuple[str, str], message: ReceivedMessage) -> None:
        try:
            async with self._limit:
                hold = self.renewal(key)
                gone = key in self._held and not await self._queue_of(message).renew(message, hold)
                # Deleted meanwhile (e.g. by a purge): nothing to keep. Or a poll took it again and a
                # newer copy is held now under the same key: that one stays.
                if gone and (held := self._held.get(key)) is not None and held.message is message:
                    del self._held[key]
        except Exception as exc:
            self._report_failure(exc)
        else:
            self._report_recovery()
        finally:
            del self._renewing[key]

    def renewal(self, key: tuple[str, str]) -> timedelta:
        """How long to hide the held message ``key`` at its next renewal: as long as it has been held
        so far, at least a hold and at most the longest renewal."""
        held = self._held.get(key)
        held_for = timedelta(seconds=time.monotonic() - held.since) if held is not None else self.hold
        return min(max(self.hold, held_for), self._longest)

    def _report_failure(self, exc: Exception) -> None:
        # One line per outage, not one per message: a renewal that fails leaves the message to
        # reappear and be handled again, which the episode's de-duplication makes harmless.
        if storage_health.failed(self._storage, exc) or self._failing:
            return
        self._failing = True
        self._log.warning("renewing held messages failed: %s", exc)

    def _report_recovery(self) -> None:
        if self._failing:
            self._failing = False
            self._log.info("renewing held messages works again")


@dataclass
class _Held:
    """A held message and when its first copy was held (``time.monotonic``)."""

    message: ReceivedMessage
    since: float


def _key(message: ReceivedMessage) -> tuple[str, str]:
    return message.queue_name, message.message_id
