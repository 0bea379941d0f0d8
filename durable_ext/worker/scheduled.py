"""Delayed control-queue messages taken in memory at their due time (issue 18, "timers on time").

A durable timer, a retry's wait, a long timer's hop, a scheduled start or a delayed entity signal is a
control-queue message put invisible until its time. Azure Queues count that time in whole seconds
(rounded up), and the owner's poller may be backed off for up to ``maxQueuePollingInterval``, so a
worker that waits for the queue sees such a message up to a second, or a whole back-off, late.

When this worker sent the message to a queue it owns, it knows both the message (with the pop receipt
of its put) and its due time: :class:`ScheduledMessages` keeps it until that instant, when
:class:`ScheduledHandoff` hands it to the dispatcher, which takes it as if a poll had returned it.
The queue message stays the durable truth: it is deleted only by the checkpoint that records it, and
if this worker dies or gives the partition up first, the message becomes visible to whoever owns the
queue then, one to two seconds after its time (``SCHEDULED_MARGIN`` in storage/queues.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from durable_ext.clock import SYSTEM_CLOCK, Clock
from durable_ext.storage.queues import ReceivedMessage
from durable_ext.worker.backoff import BackoffPolling

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


class ScheduledHandoff:
    """The dispatcher's delayed messages: those of owned control queues are kept in
    :attr:`messages` and taken at their due time; the others are left to become visible in their
    queue, and the :meth:`on_left_to_queue` listeners are told."""

    def __init__(
        self,
        backoff_of: Callable[[str], BackoffPolling | None],
        take: Callable[[ReceivedMessage], bool],
        clock: Clock,
    ) -> None:
        """``backoff_of`` is the back-off of an owned control queue's poller (None when the queue is
        not owned); ``take`` takes a due message as if a poll had returned it, False when the
        dispatcher has no room for it; ``clock`` is the engine's."""
        self._backoff_of = backoff_of
        self._take = take
        self._clock = clock
        self.messages = ScheduledMessages(self._take_due, clock=clock)
        """The delayed messages waiting in memory for their time."""
        self._left_listeners: list[Callable[[ReceivedMessage, datetime], None]] = []

    def schedules(self, queue_name: str) -> bool:
        """Whether a delayed message for ``queue_name`` sent now would be taken in memory when due."""
        return self._backoff_of(queue_name) is not None and not self.messages.full

    def schedule(self, message: ReceivedMessage, due: datetime) -> None:
        """A delayed message was just sent to a control queue: if this worker owns it, take the
        message at ``due`` rather than when a poll finds it (up to a back-off and a second later).

        Past the in-memory bound, the queue's poller is woken when the message becomes visible.
        """
        backoff = self._backoff_of(message.queue_name)
        if backoff is not None and self.messages.add(message, due):
            return
        if backoff is not None:
            backoff.wake_when_visible(message)
        # else not ours: the owner's poller finds the message once it is visible
        self._left_to_queue(message, due)

    def on_left_to_queue(self, listener: Callable[[ReceivedMessage, datetime], None]) -> None:
        """Call ``listener(message, due)`` for each delayed message sent in this process that is not
        (or no longer) kept in memory for its due time, but left to become visible in its queue."""
        self._left_listeners.append(listener)

    def drop(self, queue_name: str) -> None:
        """The worker no longer owns ``queue_name``: its messages become visible in the queue at their
        time, for the next owner."""
        for message, due in self.messages.drop(queue_name):
            self._left_to_queue(message, due)

    def _left_to_queue(self, message: ReceivedMessage, due: datetime) -> None:
        for listener in self._left_listeners:
            listener(message, due)

    def _take_due(self, message: ReceivedMessage) -> None:
        """A kept message's time has come: the dispatcher takes it, or its poller finds it."""
        backoff = self._backoff_of(message.queue_name)
        if backoff is None:
            return
        if not self._take(message):
            backoff.wake_when_visible(message)
            self._left_to_queue(message, message.due or self._clock.now())
