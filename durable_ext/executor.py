"""The seam between the engine and the code that runs orchestrators: an executor.

An executor takes an execution's history (past events and the episode's new ones) and answers what the
orchestrator did: the actions it numbered, and whether it finished, failed or continued as new. The
engine turns that into history events and messages; nothing here knows how the orchestrator runs.
:mod:`durable_ext.replay` runs Python orchestrators in process through azure-functions-durable 1.x;
an executor speaking the durabletask gRPC protocol to a remote worker can implement the same
:class:`OrchestrationExecutor`. No type of a language SDK appears in this module.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from durable_ext.history import (
    EventSentEvent,
    EventType,
    FailureDetails,
    HistoryEvent,
    SubOrchestrationInstanceCreatedEvent,
    TaskScheduledEvent,
    TimerCreatedEvent,
)


@dataclass(frozen=True)
class ExecutionRequest:
    """One run of an orchestrator: its name and instance, and the history to run it over."""

    name: str
    instance_id: str
    events: Sequence[HistoryEvent]
    new_events_start: int
    """``events[new_events_start:]`` are the ones the orchestrator has not seen yet."""
    parent_instance_id: str | None = None


class OrchestrationExecutor(Protocol):
    """Runs orchestrator code over history (see the module notes)."""

    def has_orchestrator(self, name: str) -> bool:
        """Whether an orchestrator called ``name`` exists and may run (is not disabled)."""
        ...

    def missing_orchestrator_message(self, name: str) -> str:
        """Why an orchestration of ``name`` cannot run (when :meth:`has_orchestrator` is False): the
        text its failure carries."""
        ...

    def new_memo(self) -> object:
        """Per-execution state the executor keeps between episodes of one execution (e.g. events
        already converted to its runtime's form); the engine stores it with the cached history."""
        ...

    def events_to_run(self, memo: object, past: int, new: int) -> int:
        """How many events the next :meth:`execute` over ``past`` seen and ``new`` unseen events is
        expected to process with ``memo`` (all of them for a replay from event 0): the engine's
        estimate of its cost, to decide where it runs."""
        ...

    def execute(self, request: ExecutionRequest, memo: object) -> OrchestratorRun:
        """Run the orchestrator; raises :class:`NonDeterminismError` when it contradicts its history."""
        ...

    @property
    def runs(self) -> Mapping[str, int]:
        """Executions so far by how they ran: ``continued`` (a live orchestrator took the new events)
        and ``replayed`` (the orchestrator ran from event 0)."""
        ...


class ActionKind(enum.Enum):
    """What one sequence number of the orchestrator stands for."""

    ACTIVITY = "activity"
    TIMER = "timer"
    SUB_ORCHESTRATION = "sub-orchestration"
    CALL_ENTITY = "call entity"
    SIGNAL_ENTITY = "signal entity"
    CALL_HTTP = "call http"
    CONTINUE_AS_NEW = "continue as new"


_SCHEDULING_EVENTS: dict[EventType, tuple[ActionKind, ...]] = {
    EventType.TaskScheduled: (ActionKind.ACTIVITY, ActionKind.CALL_HTTP),
    EventType.TimerCreated: (ActionKind.TIMER,),
    EventType.SubOrchestrationInstanceCreated: (ActionKind.SUB_ORCHESTRATION,),
    EventType.EventSent: (ActionKind.CALL_ENTITY, ActionKind.SIGNAL_ENTITY),
}
"""History events that consume a sequence number, and the action kinds each may stand for."""


@dataclass(frozen=True)
class RetryPolicy:
    """Retry options of a ``call_*_with_retry`` action (DTFx ``RetryOptions`` semantics)."""

    first_retry_interval: timedelta
    max_number_of_attempts: int
    backoff_coefficient: float = 1.0
    max_retry_interval: timedelta | None = None

    def delay(self, attempts_made: int) -> timedelta:
        """Wait before the next attempt after ``attempts_made`` failed attempts."""
        delay = self.first_retry_interval * (self.backoff_coefficient ** max(0, attempts_made - 1))
        if self.max_retry_interval is not None:
            delay = min(delay, self.max_retry_interval)
        return delay


@dataclass(frozen=True)
class ScheduledAction:
    """One sequence number df handed out, with what it is for."""

    event_id: int
    kind: ActionKind
    name: str | None = None
    input: str | None = None
    instance_id: str | None = None
    """Sub-orchestration instance ID, or the target entity ID."""
    fire_at: datetime | None = None
    operation: str | None = None
    retry: RetryPolicy | None = None
    retry_attempts: int = 0
    """For a retry timer: failed attempts so far. For a re-try: the attempt number it starts."""
    is_retry_timer: bool = False
    version: str | None = None
    """A sub-orchestration's version, when the orchestrator gave one."""
    source: str | None = field(default=None, compare=False)
    """Where the orchestrator's code produced it (``path:line``), when the executor can tell."""


@dataclass
class OrchestratorRun:
    """What one invocation of the orchestrator produced."""

    done: bool
    allocations: dict[int, ScheduledAction]
    output: str | None = None
    """Result as JSON text, when the orchestrator returned."""
    failure: FailureDetails | None = None
    """Why the orchestrator failed: ``error_message`` is the text the failure reads
    (durable_ext/failures.py), ``stack_trace`` its details."""
    continue_as_new: bool = False
    continue_as_new_input: str | None = None
    custom_status: str | None = None
    """Custom status as JSON text, or None when never set."""
    unconsumed_events: list[int] = field(default_factory=list)
    """Indexes (into the events replayed) of external events no task took: continue-as-new carries them."""


class NonDeterminismError(Exception):
    """The orchestrator scheduled something other than what its history records.

    :attr:`allocations` are the actions the code produced, when the check that failed knew them.
    """

    def __init__(self, message: str, allocations: dict[int, ScheduledAction] | None = None) -> None:
        super().__init__(message)
        self.allocations = allocations or {}


def scheduled_event_ids(events: Sequence[HistoryEvent]) -> dict[int, HistoryEvent]:
    """Scheduling events of an execution by their EventId."""
    return {e.event_id: e for e in events if e.event_type in _SCHEDULING_EVENTS}


def check_determinism(
    name: str, scheduled: Mapping[int, HistoryEvent], allocations: dict[int, ScheduledAction]
) -> None:
    """Raise :class:`NonDeterminismError` when an action's kind or name contradicts the scheduling event
    history records under its event ID; ``scheduled`` are the scheduling events to compare, by EventId
    (:func:`scheduled_event_ids`)."""
    for event_id, event in scheduled.items():
        action = allocations.get(event_id)
        if action is None:
            continue  # df stopped before reaching it (e.g. it failed or completed earlier this time)
        expected = _SCHEDULING_EVENTS[event.event_type]
        recorded_name = getattr(event, "name", None)
        if action.kind not in expected or (
            isinstance(event, (TaskScheduledEvent, SubOrchestrationInstanceCreatedEvent))
            and recorded_name is not None
            and action.name is not None
            and recorded_name.lower() != action.name.lower()
        ):
            raise NonDeterminismError(
                f"Non-deterministic orchestrator {name!r}: history has {event.event_type.name}"
                f"{f' {recorded_name!r}' if recorded_name else ''} with EventId {event_id}, but the code now "
                f"schedules {action.kind.value}{f' {action.name!r}' if action.name else ''} there",
                allocations,
            )


def new_actions(known: AbstractSet[int], run: OrchestratorRun) -> list[ScheduledAction]:
    """Actions df numbered in this run that have no scheduling event in history yet (``known``: the
    EventIds of those history has, :func:`scheduled_event_ids`), in ID order."""
    allocations = run.allocations
    return [
        allocations[event_id]
        for event_id in sorted(allocations.keys() - known)
        if allocations[event_id].kind is not ActionKind.CONTINUE_AS_NEW
    ]


def scheduling_event(action: ScheduledAction, timestamp: datetime, store_inputs: bool) -> HistoryEvent:
    """The history event that records ``action`` as scheduled (a durable HTTP request is a task of the
    built-in activity ``BuiltIn::HttpActivity``)."""
    if action.kind in (ActionKind.ACTIVITY, ActionKind.CALL_HTTP):
        return TaskScheduledEvent(
            event_id=action.event_id,
            timestamp=timestamp,
            name=action.name,
            version="",
            input=action.input if store_inputs else None,
        )
    if action.kind is ActionKind.TIMER:
        return TimerCreatedEvent(event_id=action.event_id, timestamp=timestamp, fire_at=action.fire_at)
    if action.kind is ActionKind.SUB_ORCHESTRATION:
        return SubOrchestrationInstanceCreatedEvent(
            event_id=action.event_id,
            timestamp=timestamp,
            name=action.name,
            version=action.version or "",
            instance_id=action.instance_id,
            input=action.input if store_inputs else None,
        )
    return EventSentEvent(
        event_id=action.event_id,
        timestamp=timestamp,
        instance_id=action.instance_id,
        name=action.operation,
        input=action.input,
    )


def order_new_events(
    new_events: Sequence[HistoryEvent], allocations: dict[int, ScheduledAction]
) -> list[HistoryEvent]:
    """Put the events that make df number a retry step after every other new event.

    df numbers a retry timer when it processes the failed attempt, and the re-try when it processes
    that timer (unless attempts are exhausted, which fails the task like any other result). With those
    events last, df numbers the tasks the orchestrator schedules in this episode first and the retry
    steps after them, in event order: the order :func:`new_actions` reports and the host writes.
    ``allocations`` come from a run over the same history, which knows every past task's kind.
    """

    def triggers_retry_step(event: HistoryEvent) -> bool:
        if event.event_type in (EventType.TaskFailed, EventType.SubOrchestrationInstanceFailed):
            action = allocations.get(int(getattr(event, "task_scheduled_id", -1)))
            return action is not None and action.retry is not None and not action.is_retry_timer
        if event.event_type is EventType.TimerFired:
            action = allocations.get(int(getattr(event, "timer_id", -1)))
            return (
                action is not None
                and action.is_retry_timer
                and action.retry is not None
                and action.retry_attempts < action.retry.max_number_of_attempts
            )
        return False

    first = [e for e in new_events if not triggers_retry_step(e)]
    return first + [e for e in new_events if triggers_retry_step(e)]
