"""Delayed control-queue messages taken in memory at their due time (issue 18, "timers on time").

A durable timer, a retry's wait, a long timer's hop, a scheduled start or a delayed entity signal is a
control-queue message put invisible until its time. Azure Queues count that time in whole seconds
(rounded up), and the owner's poller may be backed off for up to ``maxQueuePollingInterval``, so a
worker that waits for the queue sees such a message up to a second, or a whole back-off, late.

When this worker sent the message to a queue it owns, it knows both the message (with the pop receipt
of its put) and its due time: :class:`ScheduledMessages` keeps it and hands it to the dispatcher at
that instant, which then takes it as if a poll had returned it. The queue message stays the durable
truth: it is deleted only by the checkpoint that records it, and if this worker dies or gives the
partition up first, the message becomes visible to whoever owns the queue then, one to two seconds
after its time (``SCHEDULED_MARGIN`` in storage/queues.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from durable_ext.clock import SYSTEM_CLOCK, Clock
from durable_ext.storage.queues import ReceivedMessage

SCHEDULED_LIMIT = 10_000
"""Delayed messages kept in memory per dispatcher; past this bound they wait in their queue only."""


@dataclass
class _Entry:
    message: ReceivedMessage
    due: datetime
    handle: asyncio.TimerHandle


class ScheduledMessages:
    """Delayed messages of owned queues, each handed to ``take`` once its due time has come by
    ``clock`` (the engine's: due times are in orchestration time)."""

    def __init__(
        self,
        take: Callable[[ReceivedMessage], None],
        limit: int = SCHEDULED_LIMIT,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._take = take
        self._limit = limit
        self._clock = clock
        self._entries: dict[tuple[str, str], _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def full(self) -> bool:
        """Whether the bound is reached: new messages are left to their queue."""
        return len(self._entries) >= self._limit

    def pending(self, queue_name: str) -> int:
        """How many messages of ``queue_name`` wait for their time."""
        return sum(1 for queue, _ in self._entries if queue == queue_name)

    def earliest(self) -> datetime | None:
        """The earliest due time of the messages kept, None when there are none."""
        return min((entry.due for entry in self._entries.values()), default=None)

    def rearm(self) -> None:
        """The clock jumped forward (time skipping): hand over what is due now, re-time the rest."""
        for key, entry in list(self._entries.items()):
            entry.handle.cancel()
            entry.handle = self._arm(key, entry.due)

    def add(self, message: ReceivedMessage, due: datetime) -> bool:
        """Hand ``message`` over at ``due``; False (and nothing kept) when the bound is reached."""
        key = (message.queue_name, message.message_id)
        if key not in self._entries and self.full:
            return False
        self.discard(key)
        self._entries[key] = _Entry(message, due, self._arm(key, due))
        return True

    def discard(self, key: tuple[str, str]) -> None:
        """Forget one message (queue name, message ID), if kept."""
        entry = self._entries.pop(key, None)
        if entry is not None:
            entry.handle.cancel()

    def drop(self, queue_name: str) -> list[tuple[ReceivedMessage, datetime]]:
        """Forget every message of a queue this worker no longer owns (its next owner polls them);
        returns them with their due times."""
        dropped = [(e.message, e.due) for k, e in self._entries.items() if k[0] == queue_name]
        for message, _ in dropped:
            self.discard((queue_name, message.message_id))
        return dropped

    def _arm(self, key: tuple[str, str], due: datetime) -> asyncio.TimerHandle:
        delay = max(0.0, (due - self._clock.now()).total_seconds())
        return asyncio.get_running_loop().call_later(delay, self._fire, key)

    def _fire(self, key: tuple[str, str]) -> None:
        entry = self._entries.get(key)
        if entry is None:
            return
        if self._clock.now() < entry.due:
            # The event loop's clock ran ahead of the engine's clock that due times (and triage's
            # check of a timer's fire_at) are in: wait for the rest rather than deliver early.
            entry.handle = self._arm(key, entry.due)
            return
        del self._entries[key]
        self._take(entry.message)
