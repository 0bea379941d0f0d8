"""What an orchestration session holds between and within episodes: the execution and its cache,
and what one episode plans to write (docs/storage-protocol.md §6.4, §6.5)."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from durable_ext.history import (
    ContinueAsNewEvent,
    ExecutionCompletedEvent,
    ExecutionStartedEvent,
    HistoryEvent,
    OrchestrationStatus,
)
from durable_ext.messages import MessageData
from durable_ext.storage.instances import RowUpdate
from durable_ext.storage.queues import MessageQueue, ReceivedMessage
from durable_ext.storage.tracking import InstanceState
from durable_ext.tracing import PlannedSpan
from durable_ext.worker.history_index import HistoryIndex


@dataclass
class Execution:
    """The in-memory state of an instance's current execution."""

    instance_id: str
    execution_id: str | None
    events: list[HistoryEvent]
    etag: str | None
    blob_names: list[str] = field(default_factory=list)
    memo: object = field(default=None, compare=False, repr=False)
    """What the executor keeps between this execution's episodes (see ``OrchestrationExecutor``)."""
    _index: HistoryIndex = field(default_factory=HistoryIndex, init=False, compare=False, repr=False)

    @property
    def index(self) -> HistoryIndex:
        """What the events hold, read once: only events appended since the last look are read."""
        if not self._index.extends(self.events):
            self._index = HistoryIndex()
        self._index.read(self.events)
        return self._index

    @property
    def started(self) -> ExecutionStartedEvent | None:
        """The execution's start, if its history has one."""
        return self.index.started

    @property
    def completed(self) -> ExecutionCompletedEvent | None:
        """The execution's end, if its history has one."""
        return self.index.completed


@dataclass
class Outbound:
    """A message an episode sends, and the queue and delay it goes with."""

    queue: MessageQueue
    message: MessageData
    delay: timedelta | None = None


@dataclass
class EpisodeResult:
    """History events and Instances update of one replay."""

    new_events: list[HistoryEvent]
    update: RowUpdate
    unconsumed_events: list[int]
    """Indexes into the execution's events (past, then this episode's) of external events no task took."""
    spans: list[PlannedSpan] = field(default_factory=list)
    """Spans to emit once the episode is committed (durable_ext/tracing.py)."""

    @property
    def continued_as_new(self) -> bool:
        """Whether the episode ended the execution with continue-as-new."""
        return any(isinstance(e, ContinueAsNewEvent) for e in self.new_events)


@dataclass
class Checkpoint:
    """Everything one episode writes."""

    execution: Execution
    new_events: list[HistoryEvent]
    first_sequence_number: int
    outbound: list[Outbound]
    update: RowUpdate
    replaced_blobs: list[str]
    spans: list[PlannedSpan] = field(default_factory=list)
    """Spans the episode ended, emitted once it is committed."""


@dataclass
class Session:
    """One instance's messages held by this worker and the episode working on them.

    Lives while messages are held or an episode (or its clean-up) runs, so at most one episode per
    instance runs at a time and messages that arrive meanwhile wait for the next one.
    """

    instance_id: str
    queue_name: str
    pending: list[ReceivedMessage] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    finishing: asyncio.Task[Any] | None = None
    """What the next episode waits for: the Instances write of the episode before the last one."""
    status_write: asyncio.Task[bool] | None = None
    """The last episode's Instances write, which the episode after the next one waits for."""

    def add(self, message: ReceivedMessage) -> int:
        """Hold ``message`` for the next episode; a redelivered copy (new pop receipt) replaces the
        one held. Returns the change in the number of messages held."""
        kept = [m for m in self.pending if m.message_id != message.message_id]
        added = 1 - (len(self.pending) - len(kept))
        self.pending = [*kept, message]
        return added


class SessionCache:
    """Executions kept in memory between episodes, bounded in instances, events and idle time.

    Every episode would otherwise re-read the instance's whole history. A stale entry is harmless:
    its sentinel ETag no longer matches, the commit fails with :class:`OwnershipLostError`, and the
    episode is re-run from storage.
    """

    def __init__(self, max_entries: int, max_events: int, idle_timeout: timedelta) -> None:
        self._entries: OrderedDict[str, tuple[float, Execution]] = OrderedDict()
        self._max = max(1, max_entries)
        self._max_events = max_events
        self._events = 0
        self._idle = idle_timeout.total_seconds()
        self.hits = 0
        """Takes that found the instance's execution."""
        self.misses = 0
        """Takes that found none, or one idle too long."""

    @property
    def events(self) -> int:
        """History events the cached executions hold: what bounds the cache's memory."""
        return self._events

    def take(self, instance_id: str) -> Execution | None:
        """Remove and return the instance's execution if it has not been idle too long."""
        entry = self._entries.pop(instance_id, None)
        if entry is not None:
            self._events -= len(entry[1].events)
        if entry is None or time.monotonic() - entry[0] > self._idle:
            self.misses += 1
            return None
        self.hits += 1
        return entry[1]

    def put(self, execution: Execution) -> None:
        """Keep ``execution``, evicting the least recently used entries beyond the bounds."""
        self.drop(execution.instance_id)
        self._entries[execution.instance_id] = (time.monotonic(), execution)
        self._events += len(execution.events)
        while len(self._entries) > self._max or (self._events > self._max_events and len(self._entries) > 1):
            _, (_, evicted) = self._entries.popitem(last=False)
            self._events -= len(evicted.events)

    def drop_where(self, condition: Callable[[str], bool]) -> None:
        """Forget every instance whose ID meets ``condition`` (the partition of those moved)."""
        for instance_id in [i for i in self._entries if condition(i)]:
            self.drop(instance_id)

    def drop(self, instance_id: str) -> None:
        """Forget an instance (its partition moved, or its episode failed)."""
        entry = self._entries.pop(instance_id, None)
        if entry is not None:
            self._events -= len(entry[1].events)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, instance_id: object) -> bool:
        return instance_id in self._entries


def first_execution(
    instance_id: str, messages: Sequence[ReceivedMessage], row: InstanceState | None
) -> Execution | None:
    """An empty history, when the batch starts the instance's very first execution.

    That is a client's start whose Instances row is still Pending at generation 0 and names it: the
    ID was never run before (a purge deletes the row last), so there is no history to read. Should
    there be one after all, the sentinel insert conflicts and the episode is re-run from storage.
    """
    if row is None or row.generation != 0 or row.runtime_status is not OrchestrationStatus.Pending:
        return None
    if any(m.dequeue_count > 1 for m in messages):
        return None  # delivered before: an earlier attempt may have written history and then died
    for message in messages:
        event = message.data.event
        if (
            isinstance(event, ExecutionStartedEvent)
            and event.parent_instance is None
            and event.orchestration_instance is not None
            and event.orchestration_instance.execution_id == row.execution_id
        ):
            return Execution(instance_id, None, [], None)
    return None
