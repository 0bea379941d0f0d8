"""Facts an episode reads from its execution's history, kept up to date as events are appended.

An execution's events only grow between its episodes (the checkpoint appends what an episode wrote),
so the start, the end, the scheduled and answered task IDs and the number of episodes are read from
the new events only, rather than from the whole history at every episode: a long history would
otherwise make each episode cost in proportion to its length.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from durable_ext.entities import call_request_id
from durable_ext.executor import scheduled_event_ids
from durable_ext.history import (
    EventRaisedEvent,
    EventSentEvent,
    EventType,
    ExecutionCompletedEvent,
    ExecutionResumedEvent,
    ExecutionStartedEvent,
    ExecutionSuspendedEvent,
    ExecutionTerminatedEvent,
    HistoryEvent,
)

COMPLETION_EVENTS = {
    EventType.TaskCompleted: "task_scheduled_id",
    EventType.TaskFailed: "task_scheduled_id",
    EventType.SubOrchestrationInstanceCompleted: "task_scheduled_id",
    EventType.SubOrchestrationInstanceFailed: "task_scheduled_id",
    EventType.TimerFired: "timer_id",
}
"""Result events, and the member naming the task or timer they answer."""


def answered_id(event: HistoryEvent) -> int | None:
    """The EventId of the task, sub-orchestration or timer a result event answers; None for others."""
    member = COMPLETION_EVENTS.get(event.event_type)
    return None if member is None else int(getattr(event, member))


def delivered_identity(event: HistoryEvent) -> Hashable | None:
    """What tells one delivered event (external event, entity message, suspend, resume, terminate)
    from another: its kind, timestamp and payload; None for events a task ID identifies, or none.

    A queue message delivered again after its episode was recorded (the worker died before it
    deleted the message, or its hold lapsed) carries the very event history holds, timestamp
    included; a second event of the same name is sent at another moment (clients stamp theirs with
    ``distinct_utc_now``) or with another payload (an entity message names its request). An entity's
    response is known by its request alone: see :meth:`HistoryIndex.identity`.
    """
    if isinstance(event, EventRaisedEvent):
        return (event.event_type, event.timestamp, event.name, event.input)
    if isinstance(event, ExecutionSuspendedEvent | ExecutionResumedEvent):
        return (event.event_type, event.timestamp, event.reason)
    if isinstance(event, ExecutionTerminatedEvent):
        return (event.event_type, event.timestamp, event.input)
    return None


class HistoryIndex:
    """What :meth:`read` found in a list of events, extended when the list has grown."""

    def __init__(self) -> None:
        self._count = 0
        self._last: HistoryEvent | None = None
        self.started: ExecutionStartedEvent | None = None
        self.completed: ExecutionCompletedEvent | None = None
        self.scheduled_ids: set[int] = set()
        """EventIds of the scheduling events (tasks, timers, sub-orchestrations, entity messages)."""
        self.completed_ids: set[int] = set()
        """IDs of the tasks and timers whose result history holds."""
        self.episodes = 0
        """OrchestratorStarted events."""
        self.delivered: set[Hashable] = set()
        """The :meth:`identity` of each delivered event history holds."""
        self._requests: set[str] = set()
        """IDs of the entity requests the orchestration sent (``EventSent``)."""

    def identity(self, event: HistoryEvent) -> Hashable | None:
        """:func:`delivered_identity`, except for the response to an entity call this history sent:
        one per request, whenever it was sent. An entity that re-runs an operation because it died
        before it recorded the first run sends a second response, with its own timestamp."""
        if isinstance(event, EventRaisedEvent) and event.name in self._requests:
            return (EventType.EventRaised, event.name)
        return delivered_identity(event)

    def extends(self, events: Sequence[HistoryEvent]) -> bool:
        """Whether ``events`` are those read so far and maybe more (the same event where it stopped)."""
        count = self._count
        return count <= len(events) and (count == 0 or events[count - 1] is self._last)

    def read(self, events: Sequence[HistoryEvent]) -> None:
        """Read the events of ``events`` past those read so far (check :meth:`extends` first)."""
        if self._count == len(events):
            return
        for event in events[self._count :]:
            self._read(event)
        self._count = len(events)
        self._last = events[-1]

    def _read(self, event: HistoryEvent) -> None:
        if isinstance(event, ExecutionStartedEvent):
            self.started = self.started or event
        elif isinstance(event, ExecutionCompletedEvent):
            self.completed = self.completed or event
        elif event.event_type is EventType.OrchestratorStarted:
            self.episodes += 1
        answered = answered_id(event)
        if answered is not None:
            self.completed_ids.add(answered)
        elif isinstance(event, EventSentEvent):
            self._add_request(event)
        delivered = self.identity(event)
        if delivered is not None:
            self.delivered.add(delivered)
        self.scheduled_ids.update(scheduled_event_ids([event]))

    def _add_request(self, sent: EventSentEvent) -> None:
        instance = self.started.orchestration_instance if self.started is not None else None
        if instance is not None and instance.execution_id is not None and sent.event_id >= 0:
            self._requests.add(call_request_id(instance.instance_id, instance.execution_id, sent.event_id))
