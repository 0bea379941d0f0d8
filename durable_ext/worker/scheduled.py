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

from durable_ext.history import utc_now
from durable_ext.storage.queues import ReceivedMessage

SCHEDULED_LIMIT = 10_000
"""Delayed messages kept in memory per dispatcher; past this bound they wait in their queue only."""


@dataclass
class _Entry:
    message: ReceivedMessage
    due: datetime
    handle: asyncio.TimerHandle


class ScheduledMessages:
    """Delayed messages of owned queues, each handed to ``take`` once its due time has come."""

    def __init__(self, take: Callable[[ReceivedMessage], None], limit: int = SCHEDULED_LIMIT) -> None:
        self._take = take
        self._limit = limit
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

    def drop(self, queue_name: str) -> None:
        """Forget every message of a queue this worker no longer owns: its next owner polls them."""
        for key in [k for k in self._entries if k[0] == queue_name]:
            self.discard(key)

    def _arm(self, key: tuple[str, str], due: datetime) -> asyncio.TimerHandle:
        delay = max(0.0, (due - utc_now()).total_seconds())
        return asyncio.get_running_loop().call_later(delay, self._fire, key)

    def _fire(self, key: tuple[str, str]) -> None:
        entry = self._entries.get(key)
        if entry is None:
            return
        if utc_now() < entry.due:
            # The event loop's clock ran ahead of the wall clock that due times (and triage's check
            # of a timer's fire_at) are in: wait for the rest rather than deliver early.
            entry.handle = self._arm(key, entry.due)
            return
        del self._entries[key]
        self._take(entry.message)
