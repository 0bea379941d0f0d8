"""History events of DurableTask.Core and their two storage forms.

The classes mirror ``DurableTask.Core.History.*Event`` member for member, so that rows and queue
messages written here are the ones the Durable Functions Azure Storage provider writes and reads
(docs/storage-protocol.md §3.3, §3.4, §4.1). Table rows keep nested objects as plain JSON
strings; queue JSON keeps them as objects with ``$type`` first.
"""

from __future__ import annotations

import enum
import json
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from durable_ext.errors import MessageFormatError
from durable_ext.wire import (
    TYPE_KEY,
    WireObject,
    field_specs,
    from_json_object,
    to_json_object,
    wire,
)


class EventType(enum.IntEnum):
    """``DurableTask.Core.History.EventType``; the ints travel in queue JSON, the names in tables."""

    ExecutionStarted = 0
    ExecutionCompleted = 1
    ExecutionFailed = 2
    ExecutionTerminated = 3
    TaskScheduled = 4
    TaskCompleted = 5
    TaskFailed = 6
    SubOrchestrationInstanceCreated = 7
    SubOrchestrationInstanceCompleted = 8
    SubOrchestrationInstanceFailed = 9
    TimerCreated = 10
    TimerFired = 11
    OrchestratorStarted = 12
    OrchestratorCompleted = 13
    EventSent = 14
    EventRaised = 15
    ContinueAsNew = 16
    GenericEvent = 17
    HistoryState = 18
    ExecutionSuspended = 19
    ExecutionResumed = 20
    ExecutionRewound = 21


class OrchestrationStatus(enum.IntEnum):
    """``DurableTask.Core.OrchestrationStatus``; names are the Instances table ``RuntimeStatus`` values."""

    Running = 0
    Completed = 1
    ContinuedAsNew = 2
    Failed = 3
    Canceled = 4
    Terminated = 5
    Pending = 6
    Suspended = 7

    @property
    def is_terminal(self) -> bool:
        """True for statuses after which an execution receives no more work."""
        return self in _TERMINAL_STATUSES


_TERMINAL_STATUSES = frozenset(
    {
        OrchestrationStatus.Completed,
        OrchestrationStatus.Failed,
        OrchestrationStatus.Canceled,
        OrchestrationStatus.Terminated,
    }
)


def utc_now() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(UTC)


class _DistinctClock:
    """The current time, never the same microsecond twice in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = datetime.min.replace(tzinfo=UTC)

    def __call__(self) -> datetime:
        with self._lock:
            now = max(utc_now(), self._last + timedelta(microseconds=1))
            self._last = now
            return now


distinct_utc_now = _DistinctClock()
"""The current time for an event a client sends (an external event, suspend, resume, terminate):
two sent by this process never share a timestamp, so that a worker tells a redelivered copy of one,
which carries the same timestamp, from a second event of the same name and payload
(``worker/history_index.py``)."""


@dataclass
class OrchestrationInstance(WireObject):
    """An instance ID and (optionally) one execution of it."""

    NET_TYPE: ClassVar[str] = "DurableTask.Core.OrchestrationInstance"
    instance_id: str = wire("InstanceId", "")
    execution_id: str | None = wire("ExecutionId")


@dataclass
class ParentInstance(WireObject):
    """The parent orchestration of a sub-orchestration."""

    NET_TYPE: ClassVar[str] = "DurableTask.Core.ParentInstance"
    name: str | None = wire("Name")
    orchestration_instance: OrchestrationInstance | None = wire("OrchestrationInstance")
    task_schedule_id: int = wire("TaskScheduleId", -1)
    version: str | None = wire("Version")


@dataclass
class FailureDetails(WireObject):
    """Structured error of a failed task or orchestration."""

    NET_TYPE: ClassVar[str] = "DurableTask.Core.FailureDetails"
    error_type: str = wire("ErrorType", "")
    error_message: str = wire("ErrorMessage", "")
    stack_trace: str | None = wire("StackTrace")
    inner_failure: FailureDetails | None = wire("InnerFailure")
    is_non_retriable: bool = wire("IsNonRetriable", False)
    properties: dict[str, Any] | None = wire("Properties")

    def __str__(self) -> str:
        # FailureDetails.ToString() is what the Instances table's Output column shows.
        return f"{self.error_type}: {self.error_message}"


@dataclass
class TraceContext(WireObject):
    """W3C trace context carried by some events (``DistributedTraceContext``)."""

    NET_TYPE: ClassVar[str] = "DurableTask.Core.Tracing.DistributedTraceContext"
    trace_parent: str | None = wire("TraceParent")
    trace_state: str | None = wire("TraceState")
    id: str | None = wire("Id")
    span_id: str | None = wire("SpanId")
    activity_start_time: datetime | None = wire("ActivityStartTime")


@dataclass(kw_only=True)
class HistoryEvent(WireObject):
    """Base of every history event: ID, replay flag and timestamp."""

    event_type: ClassVar[EventType]
    event_id: int = wire("EventId", -1)
    is_played: bool = wire("IsPlayed", False)
    timestamp: datetime = wire("Timestamp", factory=utc_now)


@dataclass(kw_only=True)
class ExecutionStartedEvent(HistoryEvent):
    """First event of an execution: name, input and parent of the orchestration."""

    event_type = EventType.ExecutionStarted
    NET_TYPE = "DurableTask.Core.History.ExecutionStartedEvent"
    orchestration_instance: OrchestrationInstance | None = wire("OrchestrationInstance")
    parent_instance: ParentInstance | None = wire("ParentInstance")
    name: str | None = wire("Name")
    version: str | None = wire("Version")
    input: str | None = wire("Input")
    tags: dict[str, str] | None = wire("Tags")
    correlation: str | None = wire("Correlation")
    parent_trace_context: TraceContext | None = wire("ParentTraceContext")
    scheduled_start_time: datetime | None = wire("ScheduledStartTime")
    generation: int = wire("Generation", 0)
    generate_new_trace: bool = wire("GenerateNewTrace", False)


@dataclass(kw_only=True)
class ExecutionCompletedEvent(HistoryEvent):
    """Last event of an execution: final status and result or failure."""

    event_type = EventType.ExecutionCompleted
    NET_TYPE = "DurableTask.Core.History.ExecutionCompletedEvent"
    orchestration_status: OrchestrationStatus = wire("OrchestrationStatus", OrchestrationStatus.Completed)
    result: str | None = wire("Result")
    failure_details: FailureDetails | None = wire("FailureDetails")


@dataclass(kw_only=True)
class ContinueAsNewEvent(ExecutionCompletedEvent):
    """The execution ended by continuing as new (``ContinueAsNewEvent : ExecutionCompletedEvent``)."""

    event_type = EventType.ContinueAsNew
    NET_TYPE = "DurableTask.Core.History.ContinueAsNewEvent"
    orchestration_status: OrchestrationStatus = wire(
        "OrchestrationStatus", OrchestrationStatus.ContinuedAsNew
    )


@dataclass(kw_only=True)
class ExecutionTerminatedEvent(HistoryEvent):
    """A client terminated the instance; ``input`` is the reason."""

    event_type = EventType.ExecutionTerminated
    NET_TYPE = "DurableTask.Core.History.ExecutionTerminatedEvent"
    input: str | None = wire("Input")


@dataclass(kw_only=True)
class ExecutionSuspendedEvent(HistoryEvent):
    """A client suspended the instance."""

    event_type = EventType.ExecutionSuspended
    NET_TYPE = "DurableTask.Core.History.ExecutionSuspendedEvent"
    reason: str | None = wire("Reason")


@dataclass(kw_only=True)
class ExecutionResumedEvent(HistoryEvent):
    """A client resumed a suspended instance."""

    event_type = EventType.ExecutionResumed
    NET_TYPE = "DurableTask.Core.History.ExecutionResumedEvent"
    reason: str | None = wire("Reason")


@dataclass(kw_only=True)
class ExecutionRewoundEvent(HistoryEvent):
    """A client rewound a failed instance."""

    event_type = EventType.ExecutionRewound
    NET_TYPE = "DurableTask.Core.History.ExecutionRewoundEvent"
    reason: str | None = wire("Reason")
    parent_execution_id: str | None = wire("ParentExecutionId")
    instance_id: str | None = wire("InstanceId")
    parent_trace_context: TraceContext | None = wire("ParentTraceContext")


@dataclass(kw_only=True)
class TaskScheduledEvent(HistoryEvent):
    """The orchestrator scheduled an activity; ``event_id`` is the task's sequence number."""

    event_type = EventType.TaskScheduled
    NET_TYPE = "DurableTask.Core.History.TaskScheduledEvent"
    name: str | None = wire("Name")
    version: str | None = wire("Version")
    input: str | None = wire("Input")
    parent_trace_context: TraceContext | None = wire("ParentTraceContext")
    tags: dict[str, str] | None = wire("Tags")


@dataclass(kw_only=True)
class TaskCompletedEvent(HistoryEvent):
    """An activity returned ``result`` (JSON)."""

    event_type = EventType.TaskCompleted
    NET_TYPE = "DurableTask.Core.History.TaskCompletedEvent"
    task_scheduled_id: int = wire("TaskScheduledId", -1)
    result: str | None = wire("Result")


@dataclass(kw_only=True)
class TaskFailedEvent(HistoryEvent):
    """An activity raised."""

    event_type = EventType.TaskFailed
    NET_TYPE = "DurableTask.Core.History.TaskFailedEvent"
    task_scheduled_id: int = wire("TaskScheduledId", -1)
    reason: str | None = wire("Reason")
    details: str | None = wire("Details")
    failure_details: FailureDetails | None = wire("FailureDetails")


@dataclass(kw_only=True)
class SubOrchestrationInstanceCreatedEvent(HistoryEvent):
    """The orchestrator started a sub-orchestration."""

    event_type = EventType.SubOrchestrationInstanceCreated
    NET_TYPE = "DurableTask.Core.History.SubOrchestrationInstanceCreatedEvent"
    name: str | None = wire("Name")
    version: str | None = wire("Version")
    instance_id: str | None = wire("InstanceId")
    input: str | None = wire("Input")
    client_span_id: str | None = wire("ClientSpanId")
    tags: dict[str, str] | None = wire("Tags")


@dataclass(kw_only=True)
class SubOrchestrationInstanceCompletedEvent(HistoryEvent):
    """A sub-orchestration completed with ``result``."""

    event_type = EventType.SubOrchestrationInstanceCompleted
    NET_TYPE = "DurableTask.Core.History.SubOrchestrationInstanceCompletedEvent"
    task_scheduled_id: int = wire("TaskScheduledId", -1)
    result: str | None = wire("Result")


@dataclass(kw_only=True)
class SubOrchestrationInstanceFailedEvent(HistoryEvent):
    """A sub-orchestration failed."""

    event_type = EventType.SubOrchestrationInstanceFailed
    NET_TYPE = "DurableTask.Core.History.SubOrchestrationInstanceFailedEvent"
    task_scheduled_id: int = wire("TaskScheduledId", -1)
    reason: str | None = wire("Reason")
    details: str | None = wire("Details")
    failure_details: FailureDetails | None = wire("FailureDetails")


@dataclass(kw_only=True)
class TimerCreatedEvent(HistoryEvent):
    """The orchestrator created a durable timer."""

    event_type = EventType.TimerCreated
    NET_TYPE = "DurableTask.Core.History.TimerCreatedEvent"
    fire_at: datetime | None = wire("FireAt")


@dataclass(kw_only=True)
class TimerFiredEvent(HistoryEvent):
    """A durable timer fired; ``timer_id`` is the TimerCreated event's ID."""

    event_type = EventType.TimerFired
    NET_TYPE = "DurableTask.Core.History.TimerFiredEvent"
    timer_id: int = wire("TimerId", -1)
    fire_at: datetime | None = wire("FireAt")


@dataclass(kw_only=True)
class OrchestratorStartedEvent(HistoryEvent):
    """Opens an episode; its timestamp is the orchestrator's current time."""

    event_type = EventType.OrchestratorStarted
    NET_TYPE = "DurableTask.Core.History.OrchestratorStartedEvent"


@dataclass(kw_only=True)
class OrchestratorCompletedEvent(HistoryEvent):
    """Closes an episode."""

    event_type = EventType.OrchestratorCompleted
    NET_TYPE = "DurableTask.Core.History.OrchestratorCompletedEvent"


@dataclass(kw_only=True)
class EventSentEvent(HistoryEvent):
    """The orchestrator sent an event (or an entity request) to another instance."""

    event_type = EventType.EventSent
    NET_TYPE = "DurableTask.Core.History.EventSentEvent"
    instance_id: str | None = wire("InstanceId")
    name: str | None = wire("Name")
    input: str | None = wire("Input")


@dataclass(kw_only=True)
class EventRaisedEvent(HistoryEvent):
    """An external event (or entity response) arrived."""

    event_type = EventType.EventRaised
    NET_TYPE = "DurableTask.Core.History.EventRaisedEvent"
    name: str | None = wire("Name")
    input: str | None = wire("Input")
    parent_trace_context: TraceContext | None = wire("ParentTraceContext")


@dataclass(kw_only=True)
class GenericEvent(HistoryEvent):
    """Free-form event; legacy rewind uses it to wake an instance."""

    event_type = EventType.GenericEvent
    NET_TYPE = "DurableTask.Core.History.GenericEvent"
    data: str | None = wire("Data")


@dataclass(kw_only=True)
class HistoryStateEvent(HistoryEvent):
    """Snapshot of the orchestration state (not written by the Azure Storage provider)."""

    event_type = EventType.HistoryState
    NET_TYPE = "DurableTask.Core.History.HistoryStateEvent"
    state: dict[str, Any] | None = wire("State")


EVENT_CLASSES: dict[EventType, type[HistoryEvent]] = {
    cls.event_type: cls
    for cls in (
        ExecutionStartedEvent,
        ExecutionCompletedEvent,
        ContinueAsNewEvent,
        ExecutionTerminatedEvent,
        ExecutionSuspendedEvent,
        ExecutionResumedEvent,
        ExecutionRewoundEvent,
        TaskScheduledEvent,
        TaskCompletedEvent,
        TaskFailedEvent,
        SubOrchestrationInstanceCreatedEvent,
        SubOrchestrationInstanceCompletedEvent,
        SubOrchestrationInstanceFailedEvent,
        TimerCreatedEvent,
        TimerFiredEvent,
        OrchestratorStartedEvent,
        OrchestratorCompletedEvent,
        EventSentEvent,
        EventRaisedEvent,
        GenericEvent,
        HistoryStateEvent,
    )
}
"""Event class per type. ``ExecutionFailed`` (2) has no class in DurableTask.Core and never occurs."""


def _event_class(event_type: Any) -> type[HistoryEvent]:
    try:
        kind = EventType(event_type) if isinstance(event_type, int) else EventType[str(event_type)]
        return EVENT_CLASSES[kind]
    except (KeyError, ValueError):
        raise MessageFormatError(f"unknown or unsupported history EventType {event_type!r}") from None


def event_to_json(event: HistoryEvent) -> dict[str, Any]:
    """Queue form: ``$type`` first, ``EventType`` as an int, then the members, base members last."""
    body = to_json_object(event, typed=True)
    base = {spec.wire for spec in field_specs(HistoryEvent)}
    out: dict[str, Any] = {TYPE_KEY: body.pop(TYPE_KEY), "EventType": int(event.event_type)}
    out.update((k, v) for k, v in body.items() if k not in base)
    out.update((k, v) for k, v in body.items() if k in base)
    return out


def event_from_json(data: dict[str, Any]) -> HistoryEvent:
    """Read the queue form; the class comes from ``EventType`` (``$type`` is only a hint)."""
    if "EventType" not in data:
        raise MessageFormatError("history event JSON has no EventType")
    return from_json_object(_event_class(data["EventType"]), data)


# Table columns that hold JSON text rather than a native Edm value.
_TIMESTAMP_COLUMN = "_Timestamp"


def event_to_columns(event: HistoryEvent) -> dict[str, Any]:
    """Table form of an event's own columns (no keys, no ExecutionId).

    Scalars become native Edm values and None scalars are omitted; nested objects become JSON text
    without ``$type``, with the literal ``"null"`` for None, as TableEntityConverter writes them.
    """
    columns: dict[str, Any] = {"EventType": event.event_type.name}
    for spec in field_specs(type(event)):
        value = getattr(event, spec.attr)
        column = _TIMESTAMP_COLUMN if spec.wire == "Timestamp" else spec.wire
        if _is_json_column(spec.kind):
            plain = to_json_object(value, typed=False) if hasattr(value, "NET_TYPE") else value
            columns[column] = json.dumps(plain, separators=(",", ":"))
        elif value is None:
            continue
        elif isinstance(value, enum.Enum):
            columns[column] = value.name
        elif isinstance(value, datetime):
            columns[column] = value.astimezone(UTC)
        else:
            columns[column] = value
    return columns


def event_from_columns(columns: dict[str, Any]) -> HistoryEvent:
    """Inverse of :func:`event_to_columns`; extra columns (keys, ExecutionId, ...) are ignored."""
    if "EventType" not in columns:
        raise MessageFormatError("history row has no EventType column")
    cls = _event_class(columns["EventType"])
    data: dict[str, Any] = {}
    for spec in field_specs(cls):
        column = _TIMESTAMP_COLUMN if spec.wire == "Timestamp" else spec.wire
        if column not in columns:
            continue
        value = columns[column]
        if _is_json_column(spec.kind) and isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise MessageFormatError(f"history row column {column} is not JSON: {exc}") from exc
        data[spec.wire] = value
    return from_json_object(cls, data)


def _is_json_column(kind: Any) -> bool:
    return hasattr(kind, "NET_TYPE") or getattr(kind, "__origin__", None) is dict
