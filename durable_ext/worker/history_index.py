"""Facts an episode reads from its execution's history, kept up to date as events are appended.

An execution's events only grow between its episodes (the checkpoint appends what an episode wrote),
so the start, the end, the scheduled and answered task IDs and the number of episodes are read from
the new events only, rather than from the whole history at every episode: a long history would
otherwise make each episode cost in proportion to its length.
"""

from __future__ import annotations

from collections.abc import Sequence

from durable_ext.executor import scheduled_event_ids
from durable_ext.history import (
    EventType,
    ExecutionCompletedEvent,
    ExecutionStartedEvent,
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
        self.scheduled_ids.update(scheduled_event_ids([event]))
