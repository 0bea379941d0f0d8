"""Message triage: what each message of a batch means for an orchestration's next episode.

A pure step, with no storage: given the execution's history, the batch's messages and (for a
client's start) the Instances row, every message is consumed by the episode, discarded (a duplicate,
a message for a replaced execution or an ended instance), abandoned to come back later (its
scheduling event or start is not visible yet, docs/storage-protocol.md §6.6), kept for the next
episode, or sent round again (a long timer's hop). DurableTask.AzureStorage does the same in its
session manager and ``IsExecutableInstanceAsync``.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from durable_ext.history import (
    ExecutionCompletedEvent,
    ExecutionRewoundEvent,
    ExecutionStartedEvent,
    ExecutionTerminatedEvent,
    HistoryEvent,
    OrchestrationStatus,
    TimerFiredEvent,
)
from durable_ext.logs import hub_log
from durable_ext.storage.queues import ReceivedMessage
from durable_ext.storage.tracking import InstanceState
from durable_ext.versioning import VersioningPolicy, VersionVerdict
from durable_ext.worker.history_index import HistoryIndex, answered_id

logger = logging.getLogger(__name__)

NO_HISTORY_DEQUEUE_LIMIT = 5
"""Dequeues after which a message for an instance with no history is dropped
(docs/storage-protocol.md §6.6)."""
START_ROW_DEQUEUE_LIMIT = 10
"""Dequeues after which a client start whose Instances row never appeared is dropped
(docs/storage-protocol.md §7.3)."""


class Verdict(enum.Enum):
    """What to do with a start message."""

    ACCEPT = "accept"
    DISCARD = "discard"
    ABANDON = "abandon"


class History(Protocol):
    """The part of an execution triage reads (:class:`durable_ext.worker.session.Execution` is one)."""

    @property
    def instance_id(self) -> str:
        """The instance."""
        ...

    @property
    def execution_id(self) -> str | None:
        """The execution history holds, if any."""
        ...

    @property
    def events(self) -> Sequence[HistoryEvent]:
        """The execution's events."""
        ...

    @property
    def started(self) -> ExecutionStartedEvent | None:
        """The execution's start, if history has it."""
        ...

    @property
    def completed(self) -> ExecutionCompletedEvent | None:
        """The execution's end, if history has it."""
        ...

    @property
    def index(self) -> HistoryIndex:
        """What the events hold (task IDs scheduled and answered)."""
        ...


@dataclass
class Decisions:
    """What each message of a batch means for this episode."""

    consume: list[ReceivedMessage] = field(default_factory=list)
    discard: list[ReceivedMessage] = field(default_factory=list)
    abandon: list[ReceivedMessage] = field(default_factory=list)
    later: list[ReceivedMessage] = field(default_factory=list)
    """Messages for a next episode of the same instance (a second start in one batch)."""
    rehop: list[ReceivedMessage] = field(default_factory=list)
    """Timer messages that arrived before their time (a long timer's hop)."""
    repair: bool = False
    """The Instances row may lag the history (it is terminal, or a start ran before): rewrite it
    (docs/storage-protocol.md §7.1)."""
    terminated_before_start: ExecutionTerminatedEvent | None = None
    """A terminate for an instance that never started: its Instances row becomes Terminated
    (docs/storage-protocol.md §7.2)."""
    rewind: ExecutionRewoundEvent | None = None
    """A rewind of the failed execution in history: the episode runs a new execution (rewind.py)."""
    version_mismatch: bool = False
    """The instance's version is not one this worker runs and the failure strategy is ``Fail``: the
    episode ends it as Failed instead of running it (versioning.py)."""


def triage(
    history: History,
    messages: Sequence[ReceivedMessage],
    row: InstanceState | None,
    *,
    now: datetime,
    replay_terminal: bool,
    hub_name: str,
    versioning: VersioningPolicy | None = None,
) -> Decisions:
    """Judge every message of a batch, in order.

    ``row`` is the Instances row, read when the batch holds a client's start or a message dequeued
    more than :data:`NO_HISTORY_DEQUEUE_LIMIT` times; ``replay_terminal`` is
    ``allowReplayingTerminalInstances``; ``versioning`` the worker's versioning settings, checked
    against the instance's version when the episode would run the orchestrator.
    """
    batch = _Batch(history, row, now, replay_terminal, hub_name)
    for message in messages:
        batch.judge(message)
    if versioning is not None:
        batch.check_version(versioning)
    return batch.decisions


class _Batch:
    """Triage of one batch: what earlier messages decided (a start taken, results seen) counts."""

    def __init__(
        self, history: History, row: InstanceState | None, now: datetime, replay_terminal: bool, hub_name: str
    ) -> None:
        self.history = history
        self.row = row
        self.now = now
        self.replay_terminal = replay_terminal
        self.hub_name = hub_name
        self.decisions = Decisions()
        self.log = hub_log(logger, hub_name).instance(history.instance_id)
        self.starting: ExecutionStartedEvent | None = None
        # Read the history once per batch, not once per message: it can hold thousands of events.
        self.started = history.started
        self.completed = history.completed
        self.scheduled_ids = set(history.index.scheduled_ids)
        self.completed_ids = set(history.index.completed_ids)
        self.index = history.index
        self.delivered_now: set[Hashable] = set()

    def judge(self, message: ReceivedMessage) -> None:
        event = message.data.event
        if isinstance(event, ExecutionStartedEvent):
            self._start(message, event)
        elif self.starting is None and self.started is None:
            self._before_start(message)
        elif not self._for_current_execution(message):
            self.decisions.discard.append(message)  # addressed to an execution that has been replaced
        elif isinstance(event, ExecutionRewoundEvent) and self.starting is None:
            self._rewind(message, event)
        elif self.starting is None and self.completed is not None:
            self._after_end(message)
        elif isinstance(event, TimerFiredEvent) and event.fire_at is not None and event.fire_at > self.now:
            self.decisions.rehop.append(message)
        else:
            self._result_or_other(message)

    def check_version(self, policy: VersioningPolicy) -> None:
        """Worker versioning, as DurableTask.Core checks it before it runs an orchestration: a version
        this worker does not run either leaves every message to a compatible worker (``Reject``: they
        come back after the usual growing back-off) or fails the instance (``Fail``)."""
        decisions = self.decisions
        if not decisions.consume:
            return
        started = self.starting or self.started
        version = started.version if started is not None else None
        verdict = policy.judge(version)
        if verdict is VersionVerdict.FAIL:
            decisions.version_mismatch = True
        elif verdict is VersionVerdict.REJECT:
            self.log.info(
                "orchestration version %r not run here (versionMatchStrategy %s, defaultVersion %r); "
                "its messages are left for another worker",
                version or "",
                policy.match.value,
                policy.version,
            )
            decisions.abandon += [*decisions.consume, *decisions.later]
            decisions.consume, decisions.later, decisions.rewind = [], [], None

    def _target_execution(self, message: ReceivedMessage) -> str | None:
        task = message.data.task_message
        return task.orchestration_instance.execution_id if task is not None else None

    def _for_current_execution(self, message: ReceivedMessage) -> bool:
        target = self._target_execution(message)
        starting = self.starting
        current = (
            starting.orchestration_instance.execution_id
            if starting is not None and starting.orchestration_instance is not None
            else self.history.execution_id
        )
        return not target or target == current

    def _start(self, message: ReceivedMessage, event: ExecutionStartedEvent) -> None:
        target = self._target_execution(message)
        verdict = judge_start(
            self.history,
            event,
            target,
            row=self.row,
            dequeue_count=message.dequeue_count,
            hub_name=self.hub_name,
        )
        if verdict is Verdict.ABANDON:
            self.decisions.abandon.append(message)
        elif verdict is Verdict.DISCARD:
            self.decisions.discard.append(message)
            # A start that ran before, whose row still says Pending: the first episode's Instances
            # write never happened.
            row = self.row
            self.decisions.repair |= (
                row is not None
                and row.runtime_status is OrchestrationStatus.Pending
                and self.started is not None
                and row.execution_id == self.history.execution_id == target
            )
        elif self.starting is not None:
            self.decisions.later.append(message)
        else:
            self.starting = event
            self.decisions.consume.append(message)

    def _before_start(self, message: ReceivedMessage) -> None:
        """Nothing to deliver to yet: the start may still be on its way (docs/storage-protocol.md §6.6)."""
        event = message.data.event
        if isinstance(event, ExecutionTerminatedEvent):
            self.decisions.terminated_before_start = event
            self.decisions.discard.append(message)
        elif message.dequeue_count > NO_HISTORY_DEQUEUE_LIMIT and not self._start_accepted():
            self.log.warning("%s for an instance with no history discarded", event.event_type.name)
            self.decisions.discard.append(message)
        else:
            self.decisions.abandon.append(message)

    def _start_accepted(self) -> bool:
        """A client's start of the instance was accepted and has not run yet (its Instances row says
        Pending): it may be waiting for a worker of its version, so messages for it are kept."""
        return self.row is not None and self.row.runtime_status is OrchestrationStatus.Pending

    def _rewind(self, message: ReceivedMessage, event: ExecutionRewoundEvent) -> None:
        """Consume the first rewind of a failed execution; drop any other."""
        completed = self.completed
        if (
            self.decisions.rewind is None
            and completed is not None
            and completed.orchestration_status is OrchestrationStatus.Failed
        ):
            self.decisions.rewind = event
            self.decisions.consume.append(message)
            return
        status = completed.orchestration_status.name if completed is not None else "Running"
        self.log.info("rewind of a %s instance ignored; only failed instances can be rewound", status)
        self.decisions.discard.append(message)

    def _after_end(self, message: ReceivedMessage) -> None:
        if self.decisions.rewind is not None:
            self.decisions.later.append(message)  # for the rewound execution, in the next episode
            return
        self.decisions.repair = True
        if self.replay_terminal:
            if not self._delivered_again(message):
                self.decisions.consume.append(message)
            return
        self.log.info("%s for a completed instance discarded", message.data.event.event_type.name)
        self.decisions.discard.append(message)

    def _result_or_other(self, message: ReceivedMessage) -> None:
        event = message.data.event
        task_id = answered_id(event)
        if task_id is not None and self.starting is None:
            if task_id not in self.scheduled_ids:
                # Its scheduling event is not visible yet (docs/storage-protocol.md §6.6).
                self.decisions.abandon.append(message)
                return
            if task_id in self.completed_ids:
                self.decisions.discard.append(message)  # at-least-once delivery: a second result
                return
            self.completed_ids.add(task_id)
        elif self._delivered_again(message):
            return
        self.decisions.consume.append(message)

    def _delivered_again(self, message: ReceivedMessage) -> bool:
        """Discard a delivered event (external event, entity response, suspend, resume, terminate)
        history already holds: its message came back after the episode that recorded it, before that episode
        deleted it, or its sender re-ran the step that sent it."""
        identity = self.index.identity(message.data.event)
        if identity is None:
            return False
        if identity in self.index.delivered or identity in self.delivered_now:
            self.log.info(
                "%s delivered again after it was recorded; the copy is discarded",
                message.data.event.event_type.name,
            )
            self.decisions.discard.append(message)
            return True
        self.delivered_now.add(identity)
        return False


def judge_start(
    history: History,
    event: ExecutionStartedEvent,
    execution_id: str | None,
    *,
    row: InstanceState | None,
    dequeue_count: int,
    hub_name: str,
) -> Verdict:
    """Run, drop or postpone a start message (docs/storage-protocol.md §7.3: the worker-side de-dupe).

    A client enqueues its start and then writes the Instances row with a conditional write, so the
    row, not the order of the queue, says which of two racing starts won.
    """
    started = history.started
    if started is not None and history.execution_id == execution_id:
        return Verdict.DISCARD  # the start we already ran, delivered again
    if event.parent_instance is None:
        return _judge_client_start(
            history, event, execution_id, row=row, dequeue_count=dequeue_count, hub_name=hub_name
        )
    if started is None or history.completed is not None:
        return Verdict.ACCEPT
    hub_log(logger, hub_name).instance(history.instance_id).warning(
        "start of execution %s ignored: execution %s is still running", execution_id, history.execution_id
    )
    return Verdict.DISCARD


def _judge_client_start(
    history: History,
    event: ExecutionStartedEvent,
    execution_id: str | None,
    *,
    row: InstanceState | None,
    dequeue_count: int,
    hub_name: str,
) -> Verdict:
    if row is None or row.execution_id is None or row.execution_id != execution_id:
        superseded = row is not None and row.execution_id is not None and row.generation >= event.generation
        if superseded or dequeue_count >= START_ROW_DEQUEUE_LIMIT:
            hub_log(logger, hub_name).instance(history.instance_id).warning(
                "start of execution %s dropped: the Instances row names %s",
                execution_id,
                row.execution_id if row is not None else "nothing",
            )
            return Verdict.DISCARD
        return Verdict.ABANDON  # the client's row write is still on its way
    if row.runtime_status is OrchestrationStatus.Terminated:
        return Verdict.DISCARD  # terminated while it waited to start (history never had it)
    return Verdict.ACCEPT  # the row names this execution: it won, even over a running one
