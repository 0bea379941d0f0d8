"""The in-process executor: Python orchestrators run through azure-functions-durable 1.x.

This is the one module that knows df's internals; it implements
:class:`~durable_ext.executor.OrchestrationExecutor` and checks the installed df version at import.

The orchestrator runs through azure-functions-durable's own ``Orchestrator`` with the context JSON
the Functions host would send. Its returned state (done, output, error, actions) is the contract for
results. Event IDs need one more thing: df numbers every task it schedules with a sequence counter,
including the retry timers and re-tries of ``call_*_with_retry`` that never appear as actions (df
replays DTFx's retry loop itself). The host must write history events with exactly those numbers,
so :class:`_RecordingContext` observes each number df hands out and the action behind it.
"""

# ruff: noqa: E402 - df is imported only once its version is known to be one this module supports.
from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from importlib.metadata import PackageNotFoundError, version
from itertools import islice
from types import GeneratorType
from typing import Any

from durable_ext.config import DurableTaskOptions, HttpSettingsOptions
from durable_ext.errors import ConfigError


def _check_df_version() -> None:
    """Fail at import, clearly, on a df release whose internals this module was not written for.

    It subclasses df's orchestration context and replay loop and sets their private members, which
    change between releases without notice.
    """
    try:
        installed = version("azure-functions-durable")
    except PackageNotFoundError:
        raise ConfigError(
            "azure-functions-durable is not installed; run: pip install -r requirements.txt"
        ) from None
    if not installed.startswith(SUPPORTED_DF_SERIES):
        raise ConfigError(
            f"durable_ext runs orchestrators with azure-functions-durable {SUPPORTED_DF_SERIES}x, but "
            f"{installed} is installed; run: pip install azure-functions-durable==1.7.0"
        )


SUPPORTED_DF_SERIES = "1.7."
"""The azure-functions-durable releases this executor is written and tested against."""
_check_df_version()

from azure.durable_functions import Orchestrator
from azure.durable_functions.models import DurableOrchestrationContext
from azure.durable_functions.models.actions.CallHttpAction import CallHttpAction
from azure.durable_functions.models.actions.CreateTimerAction import CreateTimerAction
from azure.durable_functions.models.actions.NoOpAction import NoOpAction
from azure.durable_functions.models.DurableHttpRequest import DurableHttpRequest as DfHttpRequest
from azure.durable_functions.models.history.HistoryEvent import HistoryEvent as DfHistoryEvent
from azure.durable_functions.models.history.HistoryEventType import HistoryEventType
from azure.durable_functions.models.Task import (
    AtomicTask,
    RetryAbleTask,
    TaskBase,
    TaskState,
    TimerTask,
    WhenAllTask,
)
from azure.durable_functions.models.TaskOrchestrationExecutor import TaskOrchestrationExecutor

from durable_ext.app_loader import FunctionKind, FunctionRegistry, invalid_function_message
from durable_ext.durable_http import (
    FUNCTIONS_KEY_HEADER,
    HTTP_ACTIVITY_NAME,
    DurableHttpRequest,
    poll_delay,
)
from durable_ext.executor import (
    ActionKind,
    ExecutionRequest,
    NonDeterminismError,
    OrchestratorRun,
    RetryPolicy,
    ScheduledAction,
    check_determinism,
    scheduled_event_ids,
)
from durable_ext.failures import orchestrator_failure
from durable_ext.history import (
    EventType,
    ExecutionResumedEvent,
    ExecutionStartedEvent,
    ExecutionSuspendedEvent,
    FailureDetails,
    HistoryEvent,
    event_to_json,
)
from durable_ext.invocations import fail_current
from durable_ext.wire import TYPE_KEY, format_timespan, parse_datetime

logger = logging.getLogger(__name__)

DF_SCHEMA_VERSION = 2
"""``upperSchemaVersion`` we announce to df (its ReplaySchema V3: flat action lists)."""

_OUT_OF_PROC_MARKER = "$OutOfProcData$:"
_INDEX_KEY = "DurableExtIndex"
_RETRY_TIMER_METADATA = "-WithRetry timer"


DEFAULT_HTTP_POLL_INTERVAL = HttpSettingsOptions().default_async_request_sleep_time
"""Durable Functions' ``httpSettings.defaultAsyncRequestSleepTimeMilliseconds`` default."""

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


@dataclass(frozen=True)
class TimerSplit:
    """When df splits a durable timer: one longer than ``max_delay`` waits in steps of ``interval``.

    The extension hands both to df in the context JSON (the Azure Storage provider's 6 and 3 days), so
    a long timer is a chain of ordinary timers in history, never a message that waits past what a
    queue allows.
    """

    max_delay: timedelta
    interval: timedelta

    def context_members(self) -> dict[str, str]:
        """The context JSON members df reads them from."""
        return {
            "maximumShortTimerDuration": format_timespan(self.max_delay),
            "longRunningTimerIntervalDuration": format_timespan(self.interval),
        }


class _RecordingContext(DurableOrchestrationContext):  # type: ignore[misc]
    """df's orchestration context, noting each sequence number it hands out and to what."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.allocated: dict[int, tuple[Any, TaskBase | None]] = {}
        self.http_poll_interval = DEFAULT_HTTP_POLL_INTERVAL
        """Wait before polling a 202 that has no Retry-After header."""
        self.generator: GeneratorType[Any, Any, Any] | None = None
        """The orchestrator's generator, once df has called the orchestrator function."""
        self.sources: dict[int, str] = {}
        """Where in the orchestrator each sequence number was handed out (``path:line``)."""
        self.allocated_at: dict[int, datetime] = {}
        """The orchestrator's current time when each sequence number was handed out."""

    @classmethod
    def for_history(
        cls,
        instance_id: str,
        events: Sequence[HistoryEvent],
        new_events_start: int,
        parent_instance_id: str | None,
        forms: DfEventForms | None = None,
        *,
        timer_split: TimerSplit | None = None,
        http_poll_interval: timedelta = DEFAULT_HTTP_POLL_INTERVAL,
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
            **(timer_split.context_members() if timer_split is not None else {}),
        )
        # The time zone object df's own parse produced, so every timestamp is of the same kind.
        tz = context.decision_started_event.timestamp.tzinfo
        context._histories = [
            df_history_event(data, events[data[_INDEX_KEY]].timestamp, tz) for data in history
        ]
        context.decision_started_event = next(
            e for e in context._histories if e.event_type == HistoryEventType.ORCHESTRATOR_STARTED
        )
        context.http_poll_interval = http_poll_interval
        return context

    @property
    def _actions(self) -> list[Any]:
        """The actions df's state reports: none. durable_ext reads what the orchestrator scheduled from
        the sequence numbers it recorded, and df's list holds every action of the execution, so
        serializing it would cost each episode in proportion to the history."""
        return []

    def call_http(self, *args: Any, **kwargs: Any) -> TaskBase:
        """df's ``call_http`` (same arguments), polling a 202 answer's Location as the extension does
        (see :class:`_DurableHttpTask`). A request the extension could not read (no uri) raises
        ``ValueError`` in the orchestrator, as a bad argument to any df call does."""
        first = super().call_http(*args, **kwargs)
        DurableHttpRequest.from_df_action(first.action_repr.http_request.to_json())
        return _DurableHttpTask(first, self)

    def _add_to_open_tasks(self, task: TaskBase) -> None:
        unnumbered = isinstance(task, AtomicTask) and task.id is None and not task._is_scheduled
        super()._add_to_open_tasks(task)
        if unnumbered and isinstance(task.id, int):
            self._allocate(task.id, task.action_repr, task)

    def _record_fire_and_forget_action(self, action: Any) -> None:
        self._allocate(self._sequence_number, action, None)
        super()._record_fire_and_forget_action(action)

    def _allocate(self, event_id: int, action: Any, task: TaskBase | None) -> None:
        """Note ``event_id``, the orchestrator's time and its line running (or suspended at a yield);
        in a generator the orchestrator delegates to with ``yield from``, that generator's line."""
        self.allocated[event_id] = (action, task)
        self.allocated_at[event_id] = self.current_utc_datetime
        generator = self.generator
        while generator is not None and isinstance(generator.gi_yieldfrom, GeneratorType):
            generator = generator.gi_yieldfrom
        frame = generator.gi_frame if generator is not None else None
        if frame is not None:
            self.sources[event_id] = f"{frame.f_code.co_filename}:{frame.f_lineno}"


class _DurableHttpTask(WhenAllTask):  # type: ignore[misc]
    """A durable HTTP call: its first request and, while the answer is a 202 with a Location header,
    a durable timer and a GET of that location (the extension's ``CallHttpAsync`` loop).

    Each step is a task df numbers when the previous one completes, like the steps of df's own
    ``RetryAbleTask``, so the sequence numbers are those the extension's history has: the request,
    then timer and poll request pairs. The task's value is the last answer.
    """

    def __init__(self, first: TaskBase, context: _RecordingContext) -> None:
        super().__init__([first], context._replay_schema)
        self.action_repr = first.action_repr
        self._context = context
        self._request: DfHttpRequest = first.action_repr.http_request
        self._location: str | None = None
        """Where to poll once the running timer fires."""

    def try_set_value(self, child: TaskBase) -> None:
        """Finish with ``child``'s answer, or schedule the next step of the polling loop."""
        if child.state is TaskState.FAILED:
            self.set_value(is_error=True, value=child.result)
            return
        if self._location is not None:
            self._add_step(CallHttpAction(self._poll_request(self._location)), AtomicTask)
            self._location = None
            return
        poll = poll_delay(child.result, self._context.http_poll_interval)
        if poll is None:
            self.set_value(is_error=False, value=child.result)
            return
        self._location, delay = poll
        self._add_step(CreateTimerAction(self._context.current_utc_datetime + delay), TimerTask)

    def _poll_request(self, location: str) -> DfHttpRequest:
        headers = {
            k: v for k, v in (self._request.headers or {}).items() if k.lower() != FUNCTIONS_KEY_HEADER
        }
        return DfHttpRequest("GET", location, None, headers, self._request.token_source)

    def _add_step(self, action: Any, constructor: type[AtomicTask]) -> None:
        step = self._context._generate_task(action, parent=self, task_constructor=constructor)
        self.children.append(step)
        self.pending_tasks.add(step)
        self._context._add_to_open_tasks(step)


class _RecordingExecutor(TaskOrchestrationExecutor):  # type: ignore[misc]
    """df's replay loop, noting which external events a waiting task actually took.

    df stops reading history once the orchestrator finishes, and keeps events nobody waited for in a
    map it never prunes; neither tells what a continue-as-new must carry over, this does.
    """

    def __init__(self) -> None:
        super().__init__()
        self.consumed: set[int] = set()

    def execute(self, context: _RecordingContext, history: list[Any], fn: Callable[..., Any]) -> str:
        """df's ``execute``, handing the orchestrator's generator to the context as soon as it exists."""

        def started(orchestration_context: Any) -> Any:
            evaluated = fn(orchestration_context)
            if isinstance(evaluated, GeneratorType):
                context.generator = evaluated
            return evaluated

        state: str = super().execute(context, history, started)
        return state

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
    return [_df_form(event, index, new_events_start, forms) for index, event in ordered]


def _df_form(
    event: HistoryEvent, index: int, new_events_start: int, forms: DfEventForms | None
) -> dict[str, Any]:
    """The df form of ``event``, the ``index``-th of its execution's history."""
    data = forms.form(event) if forms is not None else _strip_types(event_to_json(event))
    data["IsPlayed"] = index < new_events_start
    # df keeps unknown members as attributes: this one maps its events back to ours.
    data[_INDEX_KEY] = index
    return data


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
    timer_split: TimerSplit | None = None,
    http_poll_interval: timedelta = DEFAULT_HTTP_POLL_INTERVAL,
) -> OrchestratorRun:
    """Run a df orchestrator (the callable df's decorator registered) over ``events``.

    ``events[new_events_start:]`` are the ones the orchestrator has not seen yet; ``forms`` keeps their
    df form for the next replay of the same execution.
    Raises :class:`NonDeterminismError` when df's tasks contradict the scheduling events in history.
    """
    request = ExecutionRequest(name, instance_id, events, new_events_start, parent_instance_id)
    live = _LiveOrchestration.start(
        user_function,
        request,
        forms,
        timer_split=timer_split,
        http_poll_interval=http_poll_interval,
    )
    return live.run


_SUSPENSION_EVENTS = frozenset({EventType.ExecutionSuspended, EventType.ExecutionResumed})
"""Events after which df reads history in another order than it was written (see history_to_df_json)."""


class _LiveOrchestration:
    """An orchestrator df is running: its context, df's replay loop and the generator inside it,
    positioned after the events seen so far, and what was made of those events.

    A full replay builds one over the whole history (:meth:`start`). Kept between the episodes of an
    execution, the next episode hands df only the events that came since (:meth:`resume`), through
    the same event processing df's replay loop does, so the cost of an episode no longer grows with
    the history. Its :attr:`run` is the whole execution's, as a full replay's would be.
    """

    def __init__(
        self,
        user_function: Callable[..., Any],
        request: ExecutionRequest,
        context: _RecordingContext,
        executor: _RecordingExecutor,
    ) -> None:
        self.user_function = user_function
        self.name = request.name
        self.instance_id = request.instance_id
        self.context = context
        self.executor = executor
        self.seen: list[HistoryEvent] = []
        """The events df has been handed, in order (the prefix of the next request's events)."""
        self.scheduling: dict[int, HistoryEvent] = {}
        """The scheduling events among :attr:`seen`, by EventId."""
        self.raised: list[int] = []
        """Indexes of the external events among :attr:`seen`."""
        self.actions: dict[int, ScheduledAction] = {}
        """Every sequence number df handed out, as an action."""
        self.allocated_count = 0
        """How many of the context's sequence numbers :attr:`actions` holds."""
        self.retry_steps: set[int] = set()
        """Sequence numbers of retry steps, whose actions are made again at every run."""
        self.suspended = False
        """Whether :attr:`seen` holds a suspension or resumption, which df reads out of order."""
        self.run = OrchestratorRun(done=False, allocations={})
        """What the orchestrator did over :attr:`seen`."""

    @classmethod
    def start(
        cls,
        user_function: Callable[..., Any],
        request: ExecutionRequest,
        forms: DfEventForms | None,
        *,
        timer_split: TimerSplit | None,
        http_poll_interval: timedelta,
    ) -> _LiveOrchestration:
        """A full replay: a new generator over all of ``request.events``."""
        generator_function = getattr(user_function, "orchestrator_function", None)
        if generator_function is None:
            raise TypeError(f"{request.name!r} is not an azure-functions-durable orchestrator")
        context = _RecordingContext.for_history(
            request.instance_id,
            request.events,
            request.new_events_start,
            request.parent_instance_id,
            forms,
            timer_split=timer_split,
            http_poll_interval=http_poll_interval,
        )
        # What df's own wrapper does before handing the context to the generator.
        context._input_expected_type = getattr(user_function, "_df_input_type", None)
        live = cls(user_function, request, context, _RecordingExecutor())
        orchestrator = Orchestrator(generator_function)
        orchestrator.task_orchestration_executor = live.executor
        live._finish(request.events, lambda: orchestrator.handle(context))
        return live

    @property
    def resumable(self) -> bool:
        """Whether the orchestrator is waiting for events, in a generator that can take them."""
        return (
            not self.run.done
            and not self.suspended
            and isinstance(getattr(self.executor, "generator", None), GeneratorType)
        )

    def doubt(self, user_function: Callable[..., Any], request: ExecutionRequest) -> str | None:
        """Why feeding df the rest of ``request.events`` might not give what a full replay would, or
        None: it is the same orchestrator of the same instance, and the events extend, unchanged,
        those already seen, with no suspension among the new ones."""
        seen = len(self.seen)
        if (
            user_function is not self.user_function
            or request.name != self.name
            or request.instance_id != self.instance_id
        ):
            return "another orchestrator function"
        if seen > request.new_events_start or request.events[:seen] != self.seen:
            return "the history is not the one the live orchestrator saw"
        if any(e.event_type in _SUSPENSION_EVENTS for e in request.events[seen:]):
            return "the instance was suspended or resumed"
        return None

    def resume(self, request: ExecutionRequest) -> OrchestratorRun:
        """Hand df the events of ``request`` not seen yet (when :meth:`doubt` has none)."""
        events = request.events
        executor = self.executor
        # The time zone object of the context's own timestamps (see _RecordingContext.for_history).
        tz = self.context.decision_started_event.timestamp.tzinfo
        for index in range(len(self.seen), len(events)):
            event = events[index]
            df_event = df_history_event(
                _df_form(event, index, request.new_events_start, None), event.timestamp, tz
            )
            self.context._histories.append(df_event)
            if not executor.has_execution_completed:
                # What df's replay loop does with each event (TaskOrchestrationExecutor.execute).
                executor._is_processing_new_events = index >= request.new_events_start
                executor.process_event(df_event)
        self._finish(events, executor.get_orchestrator_state_str)
        return self.run

    def _finish(self, events: Sequence[HistoryEvent], state_of: Callable[[], str]) -> None:
        """Make :attr:`run` of df's state once it has seen ``events``; ``state_of`` gives that state."""
        failure: FailureDetails | None = None
        try:
            state: dict[str, Any] = json.loads(state_of())
        except Exception as exc:  # df reports a failing orchestrator by raising with its state appended
            state, failure = _failed_state(self.name, exc)
        tail = events[len(self.seen) :]
        self.suspended = self.suspended or any(e.event_type in _SUSPENSION_EVENTS for e in tail)
        allocations, changed = self._allocations()
        # Scheduling events and actions already compared, in an earlier run, need no second look.
        scheduling = scheduled_event_ids(tail)
        self.scheduling.update(scheduling)
        fresh = scheduling.keys() | changed
        check_determinism(
            self.name, {i: self.scheduling[i] for i in fresh if i in self.scheduling}, allocations
        )
        first = len(self.seen)
        self.raised += [
            first + offset for offset, e in enumerate(tail) if e.event_type is EventType.EventRaised
        ]
        self.seen = list(events)
        run = OrchestratorRun(done=bool(state.get("isDone")) or failure is not None, allocations=allocations)
        run.failure = failure
        run.custom_status = (
            None if self.context.custom_status is None else json.dumps(self.context.custom_status)
        )
        run.unconsumed_events = [i for i in self.raised if i not in self.executor.consumed]
        # Continuing as new ends the execution, so its action is one of this run's.
        continue_as_new = next(
            (allocations[i] for i in changed if allocations[i].kind is ActionKind.CONTINUE_AS_NEW), None
        )
        if failure is None and continue_as_new is not None:
            run.continue_as_new = True
            run.continue_as_new_input = continue_as_new.input
        elif failure is None and run.done:
            run.output = json.dumps(state["output"]) if "output" in state else "null"
        self.run = run

    def _allocations(self) -> tuple[dict[int, ScheduledAction], set[int]]:
        """Every sequence number df handed out, as actions; and those made now rather than reused.

        df hands numbers out in order and never takes one back, so only the numbers handed out since
        the last run are new; a retry step's action reads its retry's state, so it is made again.
        """
        allocated = self.context.allocated
        changed = set(self.retry_steps)
        changed.update(islice(allocated, self.allocated_count, None))
        self.allocated_count = len(allocated)
        for event_id in changed:
            action, task = allocated[event_id]
            self.actions[event_id] = _scheduled_action(event_id, action, task, self.context)
            if isinstance(action, NoOpAction):
                self.retry_steps.add(event_id)
        return dict(self.actions), changed


def _failed_state(name: str, exc: Exception) -> tuple[dict[str, Any], FailureDetails]:
    """df's state and the failure of an orchestrator that raised ``exc``; the app's exception is also
    the failure of the running invocation."""
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
    fail_current(original)
    reason, details = orchestrator_failure(
        name, state.get("error") or message or type(original).__name__, original.__traceback__
    )
    return state, FailureDetails(
        error_type=type(original).__name__, error_message=reason, stack_trace=details
    )


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
    event_id: int, action: Any, task: TaskBase | None, context: _RecordingContext
) -> ScheduledAction:
    # Built with its source at once: this runs for every sequence number of every replay.
    source = context.sources.get(event_id)
    if isinstance(action, NoOpAction):
        return _retry_step(event_id, action, task, context, source)
    data = _action_json(action)
    kind = _ACTION_KINDS.get(int(data["actionType"]))
    if kind is None:
        raise NonDeterminismError(f"df action type {data['actionType']} has no sequence number")
    if kind is ActionKind.CALL_HTTP:
        request = DurableHttpRequest.from_df_action(data["httpRequest"])  # checked by call_http
        return ScheduledAction(
            event_id, kind, name=HTTP_ACTIVITY_NAME, input=request.to_task_input(), source=source
        )
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
        version=data.get("version"),
        source=source,
    )


def _retry_step(
    event_id: int, action: NoOpAction, task: TaskBase | None, context: _RecordingContext, source: str | None
) -> ScheduledAction:
    parent = getattr(task, "parent", None)
    if not isinstance(parent, RetryAbleTask):
        raise NonDeterminismError("df produced an anonymous task outside a retry")
    original = _action_json(parent.actions)
    retry = _retry_policy(original["retryOptions"])
    kind = _ACTION_KINDS[int(original["actionType"])]
    attempts = int(parent.num_attempts)
    if action.metadata == _RETRY_TIMER_METADATA:
        # df counts the failed attempts before asking for the timer (DTFx's RetryInterceptor delay),
        # which starts at the orchestrator's time when the attempt's failure arrived.
        delay = retry.delay(attempts)
        failed_at = context.allocated_at[event_id]
        return ScheduledAction(
            event_id=event_id,
            kind=ActionKind.TIMER,
            fire_at=parse_datetime(failed_at.isoformat()) + delay,
            retry=retry,
            retry_attempts=attempts,
            is_retry_timer=True,
            source=source,
        )
    return ScheduledAction(
        event_id=event_id,
        kind=kind,
        name=original.get("functionName"),
        input=original.get("input"),
        instance_id=original.get("instanceId"),
        retry=retry,
        retry_attempts=attempts,
        version=original.get("version"),
        source=source,
    )


class DfExecutionMemo:
    """What :class:`DfOrchestrationExecutor` keeps between the episodes of one execution: the df
    forms of its events, and the orchestrator still running when warm continuation is on."""

    def __init__(self) -> None:
        self.forms: DfEventForms | None = None
        self.live: _LiveOrchestration | None = None


class DfOrchestrationExecutor:
    """:class:`~durable_ext.executor.OrchestrationExecutor` for the Python orchestrators of an app.

    With ``warm`` (the default), an execution's orchestrator stays alive in its memo between episodes
    and the next episode continues it with the new events only, when nothing casts doubt on it (see
    :meth:`_LiveOrchestration.doubt`); otherwise, and always with ``warm`` off, every episode
    replays the whole history through a new generator. Both give the same run.
    """

    def __init__(
        self,
        registry: FunctionRegistry,
        timer_split: TimerSplit | None = None,
        http_poll_interval: timedelta = DEFAULT_HTTP_POLL_INTERVAL,
        *,
        warm: bool = True,
    ) -> None:
        self._registry = registry
        self._timer_split = timer_split
        self._http_poll_interval = http_poll_interval
        self._warm = warm
        self.runs: Counter[str] = Counter()
        """Runs by how they went: ``continued`` (warm) or ``replayed`` (from event 0)."""

    @classmethod
    def for_options(cls, registry: FunctionRegistry, options: DurableTaskOptions) -> DfOrchestrationExecutor:
        """The executor the engine runs ``registry``'s orchestrators with under ``options``: the storage
        provider's timer split, ``httpSettings``' polling interval and ``warmContinuation``."""
        provider = options.storage_provider
        return cls(
            registry,
            TimerSplit(provider.max_timer_delay, provider.long_timer_interval),
            http_poll_interval=options.http_settings.default_async_request_sleep_time,
            warm=options.warm_continuation,
        )

    def has_orchestrator(self, name: str) -> bool:
        """Whether the app registered an orchestrator called ``name`` that is not disabled."""
        return self._registry.runnable(name, FunctionKind.ORCHESTRATOR) is not None

    def missing_orchestrator_message(self, name: str) -> str:
        """Durable Functions' text for an orchestrator that does not exist or is disabled."""
        return invalid_function_message(self._registry, name, FunctionKind.ORCHESTRATOR)

    def new_memo(self) -> DfExecutionMemo:
        """What an execution keeps between its episodes."""
        return DfExecutionMemo()

    def events_to_run(self, memo: object, past: int, new: int) -> int:
        """The new events only when a live orchestrator is kept to continue (a doubt found when it runs
        may still make it replay), else every event."""
        if isinstance(memo, DfExecutionMemo) and memo.live is not None:
            return new
        return past + new

    def execute(self, request: ExecutionRequest, memo: object) -> OrchestratorRun:
        """Run the orchestrator through df over ``request.events``: continue the live one in ``memo``
        when it can take them, else replay them all."""
        function = self._registry.runnable(request.name, FunctionKind.ORCHESTRATOR)
        if function is None:
            raise KeyError(request.name)
        kept = memo if isinstance(memo, DfExecutionMemo) else DfExecutionMemo()
        # Taken out before it runs: an orchestrator that raises half-way is never continued.
        live, kept.live = kept.live, None
        doubt = live.doubt(function.callable, request) if live is not None else "no live orchestrator"
        if live is not None and doubt is None:
            self.runs["continued"] += 1
            live.resume(request)
        else:
            logger.debug("instance %s: replaying its history (%s)", request.instance_id, doubt)
            self.runs["replayed"] += 1
            forms = kept.forms or DfEventForms()
            live = _LiveOrchestration.start(
                function.callable,
                request,
                forms,
                timer_split=self._timer_split,
                http_poll_interval=self._http_poll_interval,
            )
            kept.forms = forms
        if self._warm and live.resumable:
            kept.live = live
            # The live orchestrator holds its events in df's form already; should a replay be needed
            # after all, it converts them once more rather than every execution keeping two copies.
            kept.forms = None
        return live.run
