"""Replaying recorded histories against the current orchestrator code (``replay``, ``durable_ext.testing``).

A recorded history (:mod:`durable_ext.history_file`) runs through the executor the engine uses, built
from the app's settings as the engine builds it, with every event already played: nothing calls an
activity and nothing touches storage. Then what the code did is compared with what the history
recorded, in event order: each scheduling event (TaskScheduled, TimerCreated,
SubOrchestrationInstanceCreated, EventSent) with the action the code numbered with the same EventId,
then the end of the execution (ExecutionCompleted, ContinueAsNew, or none while it was still running)
with how the code ends. The first difference is a :class:`~durable_ext.errors.ReplayMismatchError`.

Inputs are compared only where the history recorded them (TaskScheduled and
SubOrchestrationInstanceCreated inputs need ``storeInputsInOrchestrationHistory``), a
sub-orchestration's instance ID only where the code chose one, and names case-insensitively, as
Durable Functions looks functions up.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from durable_ext.app_loader import load_app
from durable_ext.config import load_config
from durable_ext.entities import delivery_event, event_sent_for_call, request_from_event
from durable_ext.errors import ReplayMismatchError
from durable_ext.executor import (
    ActionKind,
    ExecutionRequest,
    NonDeterminismError,
    OrchestrationExecutor,
    OrchestratorRun,
    ScheduledAction,
    scheduling_event,
)
from durable_ext.history import (
    ContinueAsNewEvent,
    EventSentEvent,
    ExecutionCompletedEvent,
    HistoryEvent,
    OrchestrationStatus,
    SubOrchestrationInstanceCreatedEvent,
    TaskScheduledEvent,
    TimerCreatedEvent,
)
from durable_ext.history_file import RecordedHistory
from durable_ext.logs import hub_log
from durable_ext.replay import DfOrchestrationExecutor

logger = logging.getLogger(__name__)

_RUNNING = "running"
"""The kind of the end of an execution that has not ended: the code waits for more events."""
_END_EVENTS = ("ExecutionCompleted", "ContinueAsNew")
_ENDS = (*_END_EVENTS, _RUNNING)
_MAX_SHOWN = 200
"""Characters of an input or output a diff shows."""
_ANY_TIME = datetime(2000, 1, 1, tzinfo=UTC)
"""Timestamp of the events built from the code's actions only to be compared (times are not)."""


@dataclass(frozen=True)
class Step:
    """One thing an execution did, as a history event says it: its type and the members that matter."""

    kind: str
    """The history event type (``TaskScheduled``, ...), or ``running`` for an execution not ended."""
    name: str | None = None
    """Function, operation or event name; for ExecutionCompleted the status."""
    input: str | None = None
    """Input (or output) as JSON text, None when not recorded."""
    instance_id: str | None = None
    fire_at: datetime | None = None
    note: str | None = None
    """What a failure said (shown, not compared)."""
    source: str | None = None
    """Where the code produced it (``path:line``)."""

    def differs_from(self, other: Step) -> bool:
        """Whether ``other`` contradicts this step in a member both sides know."""
        return (
            self.kind != other.kind
            or _known_and_differ(self.name and self.name.lower(), other.name and other.name.lower())
            or _known_and_differ(_json_value(self.input), _json_value(other.input))
            or _known_and_differ(self.instance_id, other.instance_id)
            or _known_and_differ(self.fire_at, other.fire_at)
        )

    @property
    def verb(self) -> str:
        """How the code does it, in a diff: ``schedules``, ``ends with`` or ``does`` (nothing more)."""
        if self.kind in _END_EVENTS:
            return "ends with"
        return "does" if self.kind == _RUNNING else "schedules"

    def describe(self) -> str:
        """E.g. ``TaskScheduled 'say_hello' (input "Tokyo")``."""
        if self.kind == _RUNNING:
            return "nothing more (the orchestration waits for events)"
        text = self.kind
        if self.kind == "ExecutionCompleted":
            text += f" {self.name}"
        elif self.name is not None:
            text += f" {self.name!r}"
        if self.instance_id is not None:
            text += f" to instance {self.instance_id!r}"
        details = []
        if self.fire_at is not None:
            details.append(f"fire at {self.fire_at.isoformat()}")
        if self.input is not None:
            label = "output" if self.kind == "ExecutionCompleted" else "input"
            details.append(f"{label} {_shorten(self.input)}")
        if self.note:
            details.append(_shorten(self.note.splitlines()[0]))
        return text + (f" ({', '.join(details)})" if details else "")


def _known_and_differ(recorded: Any, actual: Any) -> bool:
    return recorded is not None and actual is not None and recorded != actual


def _json_value(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _shorten(text: str) -> str:
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def event_step(event: HistoryEvent) -> Step | None:
    """The step a scheduling or end event records; None for any other event."""
    if isinstance(event, TaskScheduledEvent):
        return Step(event.event_type.name, event.name, event.input)
    if isinstance(event, TimerCreatedEvent):
        return Step(event.event_type.name, fire_at=event.fire_at)
    if isinstance(event, SubOrchestrationInstanceCreatedEvent):
        return Step(event.event_type.name, event.name, event.input, event.instance_id)
    if isinstance(event, EventSentEvent):
        request = request_from_event(delivery_event(event))
        if request is None:
            return Step(event.event_type.name, event.name, event.input, event.instance_id)
        # The request carries the operation's input JSON as a JSON string.
        entity_input = _json_value(request.input)
        if not isinstance(entity_input, str):
            entity_input = request.input
        return Step(event.event_type.name, request.operation, entity_input, event.instance_id)
    if isinstance(event, ContinueAsNewEvent):
        return Step(event.event_type.name, input=event.result)
    if isinstance(event, ExecutionCompletedEvent):
        status = event.orchestration_status
        output = event.result if status is OrchestrationStatus.Completed else None
        note = event.result if status is OrchestrationStatus.Failed else None
        return Step(event.event_type.name, status.name, output, note=note)
    return None


def action_step(action: ScheduledAction, history: RecordedHistory) -> Step:
    """The step of an action the code scheduled: the event the engine would record, as a step."""
    if action.kind in (ActionKind.CALL_ENTITY, ActionKind.SIGNAL_ENTITY):
        event: HistoryEvent = event_sent_for_call(
            action,
            instance_id=history.instance_id,
            execution_id=history.execution_id or "",
            timestamp=_ANY_TIME,
        )
    else:
        event = scheduling_event(action, _ANY_TIME, store_inputs=True)
    step = event_step(event)
    assert step is not None  # every scheduling event has a step
    return Step(step.kind, step.name, step.input, step.instance_id, step.fire_at, source=action.source)


def outcome_step(run: OrchestratorRun) -> Step:
    """How the code ended the execution (or that it waits for more)."""
    if run.failure is not None:
        return Step("ExecutionCompleted", OrchestrationStatus.Failed.name, note=run.failure.error_message)
    if run.continue_as_new:
        return Step("ContinueAsNew", input=run.continue_as_new_input)
    if run.done:
        return Step("ExecutionCompleted", OrchestrationStatus.Completed.name, run.output)
    return Step(_RUNNING)


@dataclass(frozen=True)
class Mismatch:
    """The first difference between a history and the code."""

    event_index: int
    """Position of the history event in the recorded events."""
    recorded: Step
    actual: Step


def find_mismatch(
    history: RecordedHistory, allocations: dict[int, ScheduledAction], outcome: Step
) -> Mismatch | None:
    """Walk the history's scheduling and end events against the code's actions and ``outcome``."""
    actions = {i: a for i, a in allocations.items() if a.kind is not ActionKind.CONTINUE_AS_NEW}
    for index, event in enumerate(history.events):
        recorded = event_step(event)
        if recorded is None:
            continue
        if recorded.kind in _ENDS:
            return _end_mismatch(index, recorded, actions, outcome, history)
        action = actions.pop(event.event_id, None)
        actual = action_step(action, history) if action is not None else outcome
        if action is None or recorded.differs_from(actual):
            return Mismatch(index, recorded, actual)
    return _end_mismatch(len(history.events) - 1, Step(_RUNNING), actions, outcome, history)


def _end_mismatch(
    index: int,
    recorded: Step,
    actions: dict[int, ScheduledAction],
    outcome: Step,
    history: RecordedHistory,
) -> Mismatch | None:
    """Compare the end: actions history has no event for, then how the execution ends."""
    if recorded.name == OrchestrationStatus.Terminated.name:
        return None  # a client ended it: what the code would have done next never happened
    if actions:
        return Mismatch(index, recorded, action_step(actions[min(actions)], history))
    return Mismatch(index, recorded, outcome) if recorded.differs_from(outcome) else None


class HistoryReplayer:
    """Replays recorded histories against the orchestrators of the app in ``app_dir``."""

    def __init__(self, app_dir: Path) -> None:
        """Load the app's settings and functions, and the executor the engine would run them with."""
        self.app_dir = Path(app_dir).resolve()
        config = load_config(self.app_dir)
        self._executor: OrchestrationExecutor = DfOrchestrationExecutor.for_options(
            load_app(self.app_dir, settings=config.settings), config.durable_task
        )

    def replay(self, history: RecordedHistory) -> None:
        """Raise :class:`ReplayMismatchError` with a readable diff when the code departs from ``history``."""
        label = f"orchestration {history.name!r} (instance {history.instance_id!r})"
        if not self._executor.has_orchestrator(history.name):
            raise ReplayMismatchError(f"{label}: {self._executor.missing_orchestrator_message(history.name)}")
        request = ExecutionRequest(
            history.name,
            history.instance_id,
            history.events,
            new_events_start=len(history.events),
            parent_instance_id=history.parent_instance_id,
        )
        try:
            run = self._executor.execute(request, self._executor.new_memo())
        except NonDeterminismError as exc:
            mismatch = find_mismatch(history, exc.allocations, Step(_RUNNING))
            if mismatch is None:  # the executor's own check saw more than the comparison
                raise ReplayMismatchError(f"{label}: {exc}") from exc
        else:
            mismatch = find_mismatch(history, run.allocations, outcome_step(run))
        if mismatch is not None:
            raise self._error(label, mismatch)
        hub_log(logger, history.hub or "-").instance(history.instance_id).info(
            "%s replays its %d recorded events cleanly", label, len(history.events)
        )

    def _error(self, label: str, mismatch: Mismatch) -> ReplayMismatchError:
        recorded, actual = mismatch.recorded, mismatch.actual
        if recorded.kind == _RUNNING:
            head = f"history ends at event #{mismatch.event_index} with the orchestration still running"
        else:
            head = f"history event #{mismatch.event_index} recorded {recorded.describe()}"
        source = self._relative(actual.source)
        where = f" at {source}" if source else ""
        return ReplayMismatchError(
            f"{label}: {head}, the code now {actual.verb} {actual.describe()}{where}",
            event_index=mismatch.event_index,
            recorded=recorded.describe(),
            actual=actual.describe(),
            source=source,
        )

    def _relative(self, source: str | None) -> str | None:
        """``source`` with its path relative to the app directory when it lies inside it."""
        if source is None:
            return None
        path, _, line = source.rpartition(":")
        try:
            return f"{Path(path).resolve().relative_to(self.app_dir)}:{line}"
        except ValueError:
            return source
