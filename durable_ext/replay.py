"""Replay: run a df orchestrator over its history and turn what it did into new work.

The orchestrator runs through azure-functions-durable's own ``Orchestrator`` with the context JSON
the Functions host would send. Its returned state (done, output, error, actions) is the contract for
results. Event IDs need one more thing: df numbers every task it schedules with a sequence counter,
including the retry timers and re-tries of ``call_*_with_retry`` that never appear as actions (df
replays DTFx's retry loop itself). The host must write history events with exactly those numbers,
so :class:`_RecordingContext` observes each number df hands out and the action behind it.
"""

from __future__ import annotations

import enum
import json
import logging
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from azure.durable_functions import Orchestrator
from azure.durable_functions.models import DurableOrchestrationContext
from azure.durable_functions.models.actions.NoOpAction import NoOpAction
from azure.durable_functions.models.history.HistoryEvent import HistoryEvent as DfHistoryEvent
from azure.durable_functions.models.history.HistoryEventType import HistoryEventType
from azure.durable_functions.models.Task import AtomicTask, RetryAbleTask, TaskBase
from azure.durable_functions.models.TaskOrchestrationExecutor import TaskOrchestrationExecutor

from durable_ext.history import (
    EventSentEvent,
    EventType,
    ExecutionResumedEvent,
    ExecutionStartedEvent,
    ExecutionSuspendedEvent,
    FailureDetails,
    HistoryEvent,
    SubOrchestrationInstanceCreatedEvent,
    TaskScheduledEvent,
    TimerCreatedEvent,
    event_to_json,
)
from durable_ext.wire import TYPE_KEY, parse_datetime

logger = logging.getLogger(__name__)

DF_SCHEMA_VERSION = 2
"""``upperSchemaVersion`` we announce to df (its ReplaySchema V3: flat action lists)."""

_OUT_OF_PROC_MARKER = "$OutOfProcData$:"
_INDEX_KEY = "DurableExtIndex"
_RETRY_TIMER_METADATA = "-WithRetry timer"


class ActionKind(enum.Enum):
    """What one df sequence number stands for."""

    ACTIVITY = "activity"
    TIMER = "timer"
    SUB_ORCHESTRATION = "sub-orchestration"
    CALL_ENTITY = "call entity"
    SIGNAL_ENTITY = "signal entity"
    CALL_HTTP = "call http"
    CONTINUE_AS_NEW = "continue as new"


# df ActionType numbers (azure.durable_functions.models.actions.ActionType).
_ACTION_KINDS = {
    0: ActionKind.ACTIVITY,
    1: ActionKind.ACTIVITY,
    2: ActionKind.SUB_ORCHESTRATION,
    3: ActionKind.SUB_ORCHESTRATION,
    4: ActionKind.CONTINUE_AS_NEW,
    5: ActionKind.TIMER,
    7: ActionKind.CALL_ENTITY,
    8: ActionKind.CALL_HTTP,
    9: ActionKind.SIGNAL_ENTITY,
}

_SCHEDULING_EVENTS: dict[EventType, tuple[ActionKind, ...]] = {
    EventType.TaskScheduled: (ActionKind.ACTIVITY,),
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


@dataclass
class OrchestratorRun:
    """What one invocation of the orchestrator produced."""

    done: bool
    allocations: dict[int, ScheduledAction]
    output: str | None = None
    """Result as JSON text, when the orchestrator returned."""
    failure: FailureDetails | None = None
    continue_as_new: bool = False
    continue_as_new_input: str | None = None
    custom_status: str | None = None
    """Custom status as JSON text, or None when never set."""
    unconsumed_events: list[int] = field(default_factory=list)
    """Indexes (into the events replayed) of external events no task took: continue-as-new carries them."""


class NonDeterminismError(Exception):
    """The orchestrator scheduled something other than what its history records."""


class _RecordingContext(DurableOrchestrationContext):  # type: ignore[misc]
    """df's orchestration context, noting each sequence number it hands out and to what."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.allocated: dict[int, tuple[Any, TaskBase | None]] = {}

    @classmethod
    def for_history(
        cls,
        instance_id: str,
        events: Sequence[HistoryEvent],
        new_events_start: int,
        parent_instance_id: str | None,
        forms: DfEventForms | None = None,
    ) -> _RecordingContext:
        """The context df's ``from_json`` builds from the Functions host's context JSON, without its cost.

        df parses every event's Timestamp with dateutil on every replay, which made context creation
        the largest part of an episode; the events here already hold the datetime. df's constructor
        runs on the two events it reads itself (the first OrchestratorStarted and ExecutionStarted),
        then gets the whole history as df events made by :func:`df_history_event`.
        """
        history = history_to_df_json(events, new_events_start, forms)
        seed = [
            next(e for e in history if e["EventType"] == HistoryEventType.ORCHESTRATOR_STARTED),
            *[e for e in history if e["EventType"] == HistoryEventType.EXECUTION_STARTED][:1],
        ]
        started = next((e for e in events if isinstance(e, ExecutionStartedEvent)), None)
        context = cls(
            history=seed,
            instanceId=instance_id,
            isReplaying=new_events_start > 0,
            parentInstanceId=parent_instance_id,
            input=started.input if started is not None else None,
            upperSchemaVersion=DF_SCHEMA_VERSION,
        )
        # The time zone object df's own parse produced, so every timestamp is of the same kind.
        tz = context.decision_started_event.timestamp.tzinfo
        context._histories = [
            df_history_event(data, events[data[_INDEX_KEY]].timestamp, tz) for data in history
        ]
        context.decision_started_event = next(
            e for e in context._histories if e.event_type == HistoryEventType.ORCHESTRATOR_STARTED
        )
        return context

    def _add_to_open_tasks(self, task: TaskBase) -> None:
        unnumbered = isinstance(task, AtomicTask) and task.id is None and not task._is_scheduled
        super()._add_to_open_tasks(task)
        if unnumbered and isinstance(task.id, int):
            self.allocated[task.id] = (task.action_repr, task)

    def _record_fire_and_forget_action(self, action: Any) -> None:
        self.allocated[self._sequence_number] = (action, None)
        super()._record_fire_and_forget_action(action)


class _RecordingExecutor(TaskOrchestrationExecutor):  # type: ignore[misc]
    """df's replay loop, noting which external events a waiting task actually took.

    df stops reading history once the orchestrator finishes, and keeps events nobody waited for in a
    map it never prunes; neither tells what a continue-as-new must carry over, this does.
    """

    def __init__(self) -> None:
        super().__init__()
        self.consumed: set[int] = set()

    def set_task_value(self, event: Any, is_success: bool, id_key: str) -> None:
        if event.event_type == HistoryEventType.EVENT_RAISED and self.context.open_tasks.get(
            getattr(event, id_key)
        ):
            self.consumed.add(int(getattr(event, _INDEX_KEY, -1)))
        super().set_task_value(event, is_success, id_key)


class DfEventForms:
    """df's JSON form of history events, made once per event rather than once per replay.

    Replay hands df the whole history every episode; an execution keeps one of these so that only the
    episode's new events are converted. Entries keep their event alive, so an ``id`` is never reused.
    """

    def __init__(self) -> None:
        self._forms: dict[int, tuple[HistoryEvent, dict[str, Any]]] = {}

    def form(self, event: HistoryEvent) -> dict[str, Any]:
        """A fresh copy of ``event``'s df form (callers add per-replay members to it)."""
        entry = self._forms.get(id(event))
        if entry is None or entry[0] is not event:
            entry = (event, _strip_types(event_to_json(event)))
            self._forms[id(event)] = entry
        return dict(entry[1])


def history_to_df_json(
    events: Sequence[HistoryEvent], new_events_start: int, forms: DfEventForms | None = None
) -> list[dict[str, Any]]:
    """The ``history`` array df reads: queue-form events without ``$type``, ``IsPlayed`` set for old ones.

    Events that arrived while the instance was suspended are delivered after the resume (or not at all
    while it is still suspended), which is how DTFx buffers them.
    """
    ordered: list[tuple[int, HistoryEvent]] = []
    buffered: list[tuple[int, HistoryEvent]] = []
    suspended = False
    for index, event in enumerate(events):
        if isinstance(event, ExecutionSuspendedEvent):
            suspended = True
            ordered.append((index, event))
        elif isinstance(event, ExecutionResumedEvent):
            suspended = False
            ordered.append((index, event))
            ordered.extend(buffered)
            buffered = []
        elif suspended and event.event_type not in (
            EventType.OrchestratorStarted,
            EventType.OrchestratorCompleted,
        ):
            buffered.append((index, event))
        else:
            ordered.append((index, event))
    out = []
    for index, event in ordered:
        data = forms.form(event) if forms is not None else _strip_types(event_to_json(event))
        data["IsPlayed"] = index < new_events_start
        # df keeps unknown members as attributes: this one maps its events back to ours.
        data[_INDEX_KEY] = index
        out.append(data)
    return out


_DF_EVENT_DEFAULTS = {
    "_is_processed": False,
    "Name": None,
    "InstanceId": None,
    "TaskScheduledId": None,
    "Reason": None,
    "Details": None,
    "Input": None,
}
"""What df's ``HistoryEvent.__init__`` sets before copying the event's own members."""


def df_history_event(data: dict[str, Any], timestamp: datetime, tz: tzinfo | None) -> DfHistoryEvent:
    """df's ``HistoryEvent(**data)`` for an event whose Timestamp is ``timestamp``, without dateutil.

    ``tz`` is the UTC time zone object the timestamp gets, as dateutil's parse would give it.
    """
    event = DfHistoryEvent.__new__(DfHistoryEvent)
    members = event.__dict__
    members.update(_DF_EVENT_DEFAULTS)
    members.update(data)
    del members["EventType"], members["EventId"], members["IsPlayed"], members["Timestamp"]
    utc = timestamp.astimezone(UTC) if timestamp.tzinfo else timestamp.replace(tzinfo=UTC)
    members["_event_type"] = data["EventType"]
    members["_event_id"] = data["EventId"]
    members["_is_played"] = data["IsPlayed"]
    members["_timestamp"] = utc.replace(tzinfo=tz or UTC)
    return event


def _strip_types(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_types(v) for k, v in value.items() if k != TYPE_KEY}
    if isinstance(value, list):
        return [_strip_types(v) for v in value]
    return value


def run_orchestrator(
    user_function: Callable[..., Any],
    name: str,
    instance_id: str,
    events: Sequence[HistoryEvent],
    *,
    new_events_start: int,
    parent_instance_id: str | None = None,
    forms: DfEventForms | None = None,
) -> OrchestratorRun:
    """Run a df orchestrator (the callable df's decorator registered) over ``events``.

    ``events[new_events_start:]`` are the ones the orchestrator has not seen yet; ``forms`` keeps their
    df form for the next replay of the same execution.
    Raises :class:`NonDeterminismError` when df's tasks contradict the scheduling events in history.
    """
    generator_function = getattr(user_function, "orchestrator_function", None)
    if generator_function is None:
        raise TypeError(f"{name!r} is not an azure-functions-durable orchestrator")
    context = _RecordingContext.for_history(instance_id, events, new_events_start, parent_instance_id, forms)
    # What df's own wrapper does before handing the context to the generator.
    context._input_expected_type = getattr(user_function, "_df_input_type", None)
    state: dict[str, Any]
    failure: FailureDetails | None = None
    executor = _RecordingExecutor()
    try:
        orchestrator = Orchestrator(generator_function)
        orchestrator.task_orchestration_executor = executor
        state = json.loads(orchestrator.handle(context))
    except Exception as exc:  # df reports a failing orchestrator by raising with its state appended
        state, failure = _failed_state(name, exc)
    allocations = {
        event_id: _scheduled_action(event_id, action, task, context)
        for event_id, (action, task) in sorted(context.allocated.items())
    }
    _check_determinism(name, events, allocations)
    run = OrchestratorRun(done=bool(state.get("isDone")) or failure is not None, allocations=allocations)
    run.failure = failure
    run.custom_status = None if context.custom_status is None else json.dumps(context.custom_status)
    run.unconsumed_events = [
        index
        for index, event in enumerate(events)
        if event.event_type is EventType.EventRaised and index not in executor.consumed
    ]
    continue_as_new = next((a for a in allocations.values() if a.kind is ActionKind.CONTINUE_AS_NEW), None)
    if failure is None and continue_as_new is not None:
        run.continue_as_new = True
        run.continue_as_new_input = continue_as_new.input
    elif failure is None and run.done:
        run.output = json.dumps(state["output"]) if "output" in state else "null"
    return run


def _failed_state(name: str, exc: Exception) -> tuple[dict[str, Any], FailureDetails]:
    message = str(exc)
    state: dict[str, Any] = {}
    if _OUT_OF_PROC_MARKER in message:
        head, _, tail = message.partition(_OUT_OF_PROC_MARKER)
        try:
            state = json.loads(tail)
        except json.JSONDecodeError:
            state = {}
        message = head.strip()
    original = exc.__cause__ if exc.__cause__ is not None else exc
    error_message = state.get("error") or message or type(original).__name__
    stack = "".join(traceback.format_exception(original)) if original.__traceback__ is not None else None
    details = FailureDetails(
        error_type=type(original).__name__,
        error_message=f"Orchestrator function '{name}' failed: {error_message}",
        stack_trace=stack,
    )
    return state, details


def _action_json(action: Any) -> dict[str, Any]:
    data: dict[str, Any] = action.to_json()
    return data


def _retry_policy(options: dict[str, Any]) -> RetryPolicy:
    max_interval = options.get("maxRetryIntervalInMilliseconds")
    return RetryPolicy(
        first_retry_interval=timedelta(milliseconds=int(options["firstRetryIntervalInMilliseconds"])),
        max_number_of_attempts=int(options["maxNumberOfAttempts"]),
        backoff_coefficient=float(options.get("backoffCoefficient", 1.0)),
        max_retry_interval=timedelta(milliseconds=int(max_interval)) if max_interval else None,
    )


def _scheduled_action(
    event_id: int, action: Any, task: TaskBase | None, context: DurableOrchestrationContext
) -> ScheduledAction:
    if isinstance(action, NoOpAction):
        return _retry_step(event_id, action, task, context)
    data = _action_json(action)
    kind = _ACTION_KINDS.get(int(data["actionType"]))
    if kind is None:
        raise NonDeterminismError(f"df action type {data['actionType']} has no sequence number")
    fire_at = parse_datetime(data["fireAt"]) if data.get("fireAt") else None
    retry = _retry_policy(data["retryOptions"]) if isinstance(data.get("retryOptions"), dict) else None
    return ScheduledAction(
        event_id=event_id,
        kind=kind,
        name=data.get("functionName"),
        input=data.get("input"),
        instance_id=data.get("instanceId"),
        fire_at=fire_at,
        operation=data.get("operation"),
        retry=retry,
        retry_attempts=1 if retry else 0,
    )


def _retry_step(
    event_id: int, action: NoOpAction, task: TaskBase | None, context: DurableOrchestrationContext
) -> ScheduledAction:
    parent = getattr(task, "parent", None)
    if not isinstance(parent, RetryAbleTask):
        raise NonDeterminismError("df produced an anonymous task outside a retry")
    original = _action_json(parent.actions)
    retry = _retry_policy(original["retryOptions"])
    kind = _ACTION_KINDS[int(original["actionType"])]
    attempts = int(parent.num_attempts)
    if action.metadata == _RETRY_TIMER_METADATA:
        # df counts the failed attempts before asking for the timer (DTFx's RetryInterceptor delay).
        delay = retry.delay(attempts)
        return ScheduledAction(
            event_id=event_id,
            kind=ActionKind.TIMER,
            fire_at=parse_datetime(str(context.current_utc_datetime.isoformat())) + delay,
            retry=retry,
            retry_attempts=attempts,
            is_retry_timer=True,
        )
    return ScheduledAction(
        event_id=event_id,
        kind=kind,
        name=original.get("functionName"),
        input=original.get("input"),
        instance_id=original.get("instanceId"),
        retry=retry,
        retry_attempts=attempts,
    )


def scheduled_event_ids(events: Sequence[HistoryEvent]) -> dict[int, HistoryEvent]:
    """Scheduling events of an execution by their EventId."""
    return {e.event_id: e for e in events if e.event_type in _SCHEDULING_EVENTS}


def _check_determinism(
    name: str, events: Sequence[HistoryEvent], allocations: dict[int, ScheduledAction]
) -> None:
    for event_id, event in scheduled_event_ids(events).items():
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
                f"schedules {action.kind.value}{f' {action.name!r}' if action.name else ''} there"
            )


def new_actions(events: Sequence[HistoryEvent], run: OrchestratorRun) -> list[ScheduledAction]:
    """Actions df numbered in this run that have no scheduling event in history yet, in ID order."""
    known = scheduled_event_ids(events)
    return [
        action
        for event_id, action in sorted(run.allocations.items())
        if event_id not in known and action.kind is not ActionKind.CONTINUE_AS_NEW
    ]


def scheduling_event(action: ScheduledAction, timestamp: datetime, store_inputs: bool) -> HistoryEvent:
    """The history event that records ``action`` as scheduled."""
    if action.kind is ActionKind.ACTIVITY:
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
            version="",
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
