"""Rewinding a failed execution (DTFx.Core's rewind, docs/storage-protocol.md §7.6).

A rewind replaces the failed execution with a new one whose history is the old one minus the
failures: the ExecutionCompleted event, every failed activity (its TaskFailed and its TaskScheduled,
so the replay schedules it again) and every failed sub-orchestration's result (its creation stays:
the child is rewound too, and its result comes back to the same task). Completed work stays in the
history, so it does not run again.

The worker builds the new history inside a normal episode, behind the sentinel ETag, so a rewind is
as crash-safe as any other checkpoint.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from durable_ext.history import (
    ExecutionCompletedEvent,
    ExecutionStartedEvent,
    HistoryEvent,
    SubOrchestrationInstanceCreatedEvent,
    SubOrchestrationInstanceFailedEvent,
    TaskCompletedEvent,
    TaskFailedEvent,
    TaskScheduledEvent,
    TimerCreatedEvent,
    TimerFiredEvent,
)

_REWIND_NAMESPACE = uuid.UUID("9a4c3b4e-53c1-4d5e-9f0c-2f8d0a7b6e21")


@dataclass
class RewoundHistory:
    """The new execution's history and the failed children that must be rewound with it."""

    execution_id: str
    events: list[HistoryEvent]
    failed_children: list[str]


def rewound_execution_id(failed_execution_id: str) -> str:
    """The ID of the execution that replaces a failed one.

    Derived from the failed execution's ID, so a rewind episode that is re-run after a crash names
    the same execution as the children it already told to report back to it.
    """
    return uuid.uuid5(_REWIND_NAMESPACE, failed_execution_id).hex


def rewind_history(
    events: Sequence[HistoryEvent], failed_execution_id: str, parent_execution_id: str | None
) -> RewoundHistory:
    """The history of the execution that replaces the failed execution ``events``.

    ``parent_execution_id`` is set when a rewound parent asks for this rewind: the child then reports
    its result to the parent's new execution.
    """
    new_id = rewound_execution_id(failed_execution_id)
    succeeded = {
        e.task_scheduled_id if isinstance(e, TaskCompletedEvent) else e.timer_id
        for e in events
        if isinstance(e, (TaskCompletedEvent, TimerFiredEvent))
    }
    failed_subs = {e.task_scheduled_id for e in events if isinstance(e, SubOrchestrationInstanceFailedEvent)}
    kept: list[HistoryEvent] = []
    children: list[str] = []
    for event in events:
        if isinstance(event, (ExecutionCompletedEvent, TaskFailedEvent, SubOrchestrationInstanceFailedEvent)):
            continue
        if isinstance(event, (TaskScheduledEvent, TimerCreatedEvent)) and event.event_id not in succeeded:
            # Failed, or still out when the instance failed: its result was discarded then, and a
            # late one would address the replaced execution. Scheduling it again is the only way on.
            continue
        if (
            isinstance(event, SubOrchestrationInstanceCreatedEvent)
            and event.event_id in failed_subs
            and event.instance_id
        ):
            children.append(event.instance_id)
        if isinstance(event, ExecutionStartedEvent):
            kept.append(_restarted(event, new_id, parent_execution_id))
        else:
            kept.append(event)
    return RewoundHistory(new_id, kept, children)


def _restarted(
    started: ExecutionStartedEvent, execution_id: str, parent_execution_id: str | None
) -> ExecutionStartedEvent:
    instance = started.orchestration_instance
    assert instance is not None, "an ExecutionStarted event names its instance"
    parent = started.parent_instance
    if parent_execution_id is not None and parent is not None and parent.orchestration_instance is not None:
        caller = dataclasses.replace(parent.orchestration_instance, execution_id=parent_execution_id)
        parent = dataclasses.replace(parent, orchestration_instance=caller)
    return dataclasses.replace(
        started,
        orchestration_instance=dataclasses.replace(instance, execution_id=execution_id),
        parent_instance=parent,
    )
