"""Durable entities: IDs, the messages entities exchange, their stored state, and running a batch.

Everything here is pure (no storage). The shapes are the ones Durable Functions writes, so that a task
hub stays readable by DF tools and by the .NET host:

- Entity instance IDs are ``@{name lower-cased}@{key}`` (``EntityId.GetSchedulerIdFromEntityId``).
- A request (operation call or signal) travels as an ``EventRaised`` named ``op`` (or ``op@{utc:o}`` for
  a delayed signal) whose input is the .NET ``RequestMessage`` JSON; an orchestration records the same
  JSON in its ``EventSent`` event. The answer to a call is an ``EventRaised`` named by the request GUID
  whose input is the ``ResponseMessage`` JSON (docs/storage-protocol.md §4.2).
- Between batches an entity is an orchestration instance whose input is the ``SchedulerState`` JSON and
  whose custom status is the ``EntityStatus`` JSON (docs/storage-protocol.md §2.7).
- A batch runs through azure-functions-durable's own ``Entity`` wrapper with the JSON the .NET host's
  ``EntityTriggerAttributeBindingProvider`` builds (df's entity-call contract,
  ``user_fn(batch_json: str) -> str``).

Operation inputs are double-encoded on the wire. An orchestrator's action carries the input as JSON text
(``"5"``); the .NET host serializes that *string* into ``RequestMessage.input`` (``"\\"5\\""``), the HTTP
API does the same with the Python client's body, and df's ``get_input`` decodes twice.
:attr:`EntityRequest.input` holds the wire value verbatim; :func:`request_event` and
:func:`event_sent_for_call` take the single-encoded JSON text and do the encoding.

This core does not implement critical sections (lock/release messages, which df for Python cannot
send) nor the .NET message sorter; ``lockedBy``, ``suspended`` and ``sorter`` are kept as read.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from durable_ext.errors import MessageFormatError, ValidationError
from durable_ext.executor import ActionKind, ScheduledAction
from durable_ext.history import EventRaisedEvent, EventSentEvent, FailureDetails, TraceContext, utc_now
from durable_ext.wire import format_datetime, from_json_object, parse_datetime, to_json_object

logger = logging.getLogger(__name__)

REQUEST_EVENT_NAME = "op"
"""Name of the event that carries a request to an entity (``EntityMessageEventNames``)."""

MAX_SIGNAL_DELAY = timedelta(days=6)
"""Longest delay DF puts on a delayed signal's queue message (``MaximumDelayTime``, Azure Storage)."""

SIGNAL_DELAY_HOP = timedelta(days=3)
"""Delay used instead when a signal is due later than :data:`MAX_SIGNAL_DELAY`
(``LongRunningTimerIntervalLength``); the entity re-sends it on arrival."""

ERROR_EXCEPTION_TYPE = "Error"
"""``exceptionType`` the .NET host writes in the response to an out-of-process entity's failed operation."""

# What Newtonsoft writes for an unset DateTime (DateTime.MinValue, Kind Unspecified).
_DOTNET_MIN_DATETIME = "0001-01-01T00:00:00"
_DELAYED_PREFIX = REQUEST_EVENT_NAME + "@"
# RequestMessage members this module models; any other member is kept verbatim in `extra`.
_REQUEST_MEMBERS = frozenset(
    {
        "op", "signal", "input", "id", "parent", "parentExecution", "due", "Timestamp", "Predecessor",
        "parentTraceContext", "requestTime",
    }
)  # fmt: skip


def _dumps(value: Any) -> str:
    # Newtonsoft's compact form; it does not escape non-ASCII characters either.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _loads_object(text: str, what: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except (TypeError, json.JSONDecodeError) as exc:
        raise MessageFormatError(f"{what} is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise MessageFormatError(f"{what} is not a JSON object: {text[:200]!r}")
    return data


def _optional_str(data: Mapping[str, Any], key: str, what: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise MessageFormatError(f"{what}: member {key!r} must be a string, not {value!r}")
    return value


def _dotnet_datetime(value: datetime | None) -> str:
    return format_datetime(value) if value is not None else _DOTNET_MIN_DATETIME


def _optional_datetime(data: Mapping[str, Any], key: str, what: str) -> datetime | None:
    raw = _optional_str(data, key, what)
    return None if raw is None or raw.startswith(_DOTNET_MIN_DATETIME) else parse_datetime(raw)


def _trace_context(value: Any, what: str) -> TraceContext | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise MessageFormatError(f"{what}: member 'parentTraceContext' must be an object, not {value!r}")
    return from_json_object(TraceContext, value)


def _round_trip_o(value: datetime) -> str:
    """.NET's ``{utc:o}``: always seven fractional digits, then ``Z``."""
    utc = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond:06d}0Z"


# --- entity IDs --------------------------------------------------------------------------------------


def entity_instance_id(name: str, key: str) -> str:
    """The instance ID of entity ``name``/``key``: ``@{name.lower()}@{key}``.

    Raises :class:`ValidationError` when the name is empty or contains ``@``, or the key is empty.
    Instance-ID character rules (no ``/ \\ # ?``, no control characters) are the client's to enforce.
    """
    if not name:
        raise ValidationError("entity name must not be empty")
    if "@" in name:
        raise ValidationError(f"entity name {name!r} contains '@', which separates name and key in IDs")
    if not key:
        raise ValidationError(f"entity key for entity {name!r} must not be empty")
    return f"@{name.lower()}@{key}"


def parse_entity_instance_id(instance_id: str) -> tuple[str, str]:
    """``(name, key)`` of an entity instance ID; the key is everything after the second ``@``.

    Raises :class:`ValidationError` when ``instance_id`` is not ``@name@key`` with both parts non-empty.
    """
    second = instance_id.find("@", 1) if instance_id.startswith("@") else -1
    if second < 2 or second == len(instance_id) - 1:
        raise ValidationError(f"{instance_id!r} is not an entity instance ID (expected '@name@key')")
    return instance_id[1:second], instance_id[second + 1 :]


# --- messages ----------------------------------------------------------------------------------------


@dataclass
class EntityRequest:
    """An operation sent to an entity: the .NET ``RequestMessage``.

    ``input`` is the wire ``input`` member verbatim (double-encoded JSON for df apps, see the module
    docstring); ``extra`` keeps members this module does not model (``lockset``, ``pos``, ...) so that
    a request read from storage is written back unchanged.
    """

    id: str
    """The request GUID, lower-case ``D`` format; a call's response event is named by it."""
    operation: str | None
    input: str | None = None
    is_signal: bool = False
    parent_instance_id: str | None = None
    """The calling orchestration, or None for a client signal."""
    parent_execution_id: str | None = None
    scheduled_time: datetime | None = None
    """When a delayed signal is due (``due``); None to run it when it arrives."""
    timestamp: datetime | None = None
    """Sender's time, for the .NET message sorter; None is written as DateTime.MinValue, as a client does."""
    predecessor: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    parent_trace_context: TraceContext | None = None
    """The W3C trace context of the caller's span (``parentTraceContext``, durable_ext/tracing.py)."""
    request_time: datetime | None = None
    """When the caller sent it (``requestTime``), the start of a call's client span."""

    @property
    def event_name(self) -> str:
        """``op``, or ``op@{utc:o}`` with the due time of a delayed signal (request_event caps it)."""
        if self.scheduled_time is None:
            return REQUEST_EVENT_NAME
        return _DELAYED_PREFIX + _round_trip_o(self.scheduled_time)

    def to_json_object(self) -> dict[str, Any]:
        """The ``RequestMessage`` members in .NET declaration order, defaults omitted where DF omits them."""
        data: dict[str, Any] = {"op": self.operation}
        if self.is_signal:
            data["signal"] = True
        if self.input is not None:
            data["input"] = self.input
        data["id"] = self.id
        if self.parent_instance_id is not None:
            data["parent"] = self.parent_instance_id
        if self.parent_execution_id is not None:
            data["parentExecution"] = self.parent_execution_id
        if self.scheduled_time is not None:
            data["due"] = format_datetime(self.scheduled_time)
        data["Timestamp"] = _dotnet_datetime(self.timestamp)
        data["Predecessor"] = _dotnet_datetime(self.predecessor)
        data.update(self.extra)
        if self.parent_trace_context is not None:
            data["parentTraceContext"] = to_json_object(self.parent_trace_context, typed=False)
        if self.request_time is not None:
            data["requestTime"] = format_datetime(self.request_time)
        return data

    def to_json_text(self) -> str:
        """The ``RequestMessage`` JSON text."""
        return _dumps(self.to_json_object())

    @classmethod
    def from_json_object(cls, data: Mapping[str, Any]) -> EntityRequest:
        """Read a ``RequestMessage`` object; raises :class:`MessageFormatError` without a valid ``id``."""
        what = "entity request"
        try:
            request_id = str(uuid.UUID(str(data["id"])))
        except (KeyError, ValueError) as exc:
            raise MessageFormatError(f"{what} has no valid 'id' GUID: {data.get('id')!r}") from exc
        return cls(
            id=request_id,
            operation=_optional_str(data, "op", what),
            input=_optional_str(data, "input", what),
            is_signal=data.get("signal") is True,
            parent_instance_id=_optional_str(data, "parent", what),
            parent_execution_id=_optional_str(data, "parentExecution", what),
            scheduled_time=_optional_datetime(data, "due", what),
            timestamp=_optional_datetime(data, "Timestamp", what),
            predecessor=_optional_datetime(data, "Predecessor", what),
            extra={k: v for k, v in data.items() if k not in _REQUEST_MEMBERS},
            parent_trace_context=_trace_context(data.get("parentTraceContext"), what),
            request_time=_optional_datetime(data, "requestTime", what),
        )

    @classmethod
    def from_json_text(cls, text: str) -> EntityRequest:
        """Read ``RequestMessage`` JSON text."""
        return cls.from_json_object(_loads_object(text, "entity request"))

    def to_event(self) -> EventRaisedEvent:
        """The event that delivers this request to its entity (sent to the entity's control queue)."""
        return EventRaisedEvent(name=self.event_name, input=self.to_json_text())


@dataclass
class EntityResponse:
    """The answer to a call: the .NET ``ResponseMessage``.

    df's ``ResponseMessage.from_dict`` treats the presence of ``exceptionType`` as failure and decodes
    ``result`` (JSON text) as the value, or as the error message.
    """

    result: str | None
    exception_type: str | None = None
    failure_details: FailureDetails | None = None
    """Only DTFx.Core's entity runtime writes it; kept when read."""

    @property
    def is_error(self) -> bool:
        """Whether the operation failed."""
        return self.exception_type is not None

    def to_json_text(self) -> str:
        """``{"result":…,"exceptionType":…,"failureDetails":…}``; the last two only when set."""
        data: dict[str, Any] = {"result": self.result}
        if self.exception_type is not None:
            data["exceptionType"] = self.exception_type
        if self.failure_details is not None:
            data["failureDetails"] = to_json_object(self.failure_details, typed=False)
        return _dumps(data)

    @classmethod
    def from_json_text(cls, text: str) -> EntityResponse:
        """Read ``ResponseMessage`` JSON text."""
        what = "entity response"
        data = _loads_object(text, what)
        details = data.get("failureDetails")
        if details is not None and not isinstance(details, dict):
            raise MessageFormatError(f"{what}: 'failureDetails' must be an object, not {details!r}")
        return cls(
            result=_optional_str(data, "result", what),
            exception_type=_optional_str(data, "exceptionType", what),
            failure_details=from_json_object(FailureDetails, details) if details is not None else None,
        )


# --- stored state ------------------------------------------------------------------------------------


@dataclass
class SchedulerState:
    """An entity between batches: the .NET ``SchedulerState``, stored as the execution's input
    (docs/storage-protocol.md §2.7)."""

    entity_exists: bool = False
    state: str | None = None
    """The entity's state as JSON text (what df's ``entityState`` returned), None when it has none."""
    queue: list[EntityRequest] = field(default_factory=list)
    """Requests received but not run yet, oldest first."""
    locked_by: str | None = None
    """Orchestration holding the entity's lock (critical sections: kept, not interpreted)."""
    suspended: bool = False
    sorter: dict[str, Any] = field(default_factory=dict)
    """The .NET ``MessageSorter``, kept verbatim."""

    def to_json_text(self) -> str:
        """``{"exists","state","queue","lockedBy","suspended","sorter"}`` with default members omitted.

        ``sorter`` is always written: .NET initialises it to an empty object, which is not a default.
        """
        data: dict[str, Any] = {}
        if self.entity_exists:
            data["exists"] = True
        if self.state is not None:
            data["state"] = self.state
        if self.queue:
            data["queue"] = [request.to_json_object() for request in self.queue]
        if self.locked_by is not None:
            data["lockedBy"] = self.locked_by
        if self.suspended:
            data["suspended"] = True
        data["sorter"] = self.sorter
        return _dumps(data)

    @classmethod
    def from_json_text(cls, text: str | None) -> SchedulerState:
        """Read the scheduler state; None, ``""`` or ``"null"`` (new or purged entity) is the empty state."""
        if not text or text == "null":
            return cls()
        what = "entity scheduler state"
        data = _loads_object(text, what)
        queue = data.get("queue")
        queue = [] if queue is None else queue
        sorter = data.get("sorter")
        sorter = {} if sorter is None else sorter
        if not isinstance(queue, list) or not all(isinstance(item, dict) for item in queue):
            raise MessageFormatError(f"{what}: 'queue' must be a list of request objects")
        if not isinstance(sorter, dict):
            raise MessageFormatError(f"{what}: 'sorter' must be an object")
        return cls(
            entity_exists=data.get("exists") is True,
            state=_optional_str(data, "state", what),
            queue=[EntityRequest.from_json_object(item) for item in queue],
            locked_by=_optional_str(data, "lockedBy", what),
            suspended=data.get("suspended") is True,
            sorter=sorter,
        )


def entity_status_json(state: SchedulerState) -> str:
    """The Instances ``CustomStatus`` of an entity: ``EntityStatus`` with default members omitted."""
    data: dict[str, Any] = {}
    if state.entity_exists:
        data["entityExists"] = True
    if state.queue:
        data["queueSize"] = len(state.queue)
    if state.locked_by is not None:
        data["lockedBy"] = state.locked_by
    return _dumps(data)


# --- running a batch ---------------------------------------------------------------------------------


@dataclass
class OperationOutcome:
    """What one operation of a batch did."""

    request: EntityRequest
    result: str | None
    """The result as JSON text; for a failure the JSON text of the error message (what df returns)."""
    is_error: bool
    error: str | None
    """The error message, decoded, when ``is_error``."""
    duration_ms: float
    started_ms: float | None = None
    """When it started, in milliseconds since the epoch, as df reports it (``startTime``)."""


@dataclass
class OutboundSignal:
    """A signal an entity sent to another entity during a batch (df's ``signals`` output)."""

    target_instance_id: str
    operation: str
    input: str | None
    """Wire input, used verbatim as the request's ``input`` (as the .NET host does)."""

    def to_request(self, request_id: str, sender_instance_id: str) -> EntityRequest:
        """The request to deliver; entities send with no parent execution (their sorter spans executions)."""
        return EntityRequest(
            id=request_id,
            operation=self.operation,
            input=self.input,
            is_signal=True,
            parent_instance_id=sender_instance_id,
        )


@dataclass
class EntityBatchResult:
    """The outcome of :func:`run_entity_batch`.

    ``state`` is the state to checkpoint: entity existence and state after the batch, and in ``queue``
    the requests the batch size left for the next batch.
    """

    state: SchedulerState
    outcomes: list[OperationOutcome]
    signals: list[OutboundSignal]


def run_entity_batch(
    user_function: Callable[..., Any],
    entity_id: str,
    state: SchedulerState,
    requests: Sequence[EntityRequest],
    max_batch: int,
) -> EntityBatchResult:
    """Run queued and new operations on an entity through df's entity wrapper, in one call.

    ``user_function`` is the callable df registered (``RegisteredFunction.callable``). The operations
    considered are ``state.queue`` followed by ``requests``; the first ``max_batch`` run, the others are
    returned in the result's ``state.queue``. An operation that raises fails alone: df keeps the state
    it set before raising and runs the later operations. If the call itself fails (df raises or returns
    something unreadable) every operation fails and the entity's state is unchanged.
    """
    if max_batch < 1:
        raise ValidationError(f"max_batch must be at least 1, not {max_batch}")
    name, key = parse_entity_instance_id(entity_id)
    pending = [*state.queue, *requests]
    batch, rest = pending[:max_batch], pending[max_batch:]
    context = {
        "self": {"name": name, "key": key},
        "exists": state.entity_exists,
        "state": state.state,
        "batch": [
            {"name": request.operation, "input": request.input, "isSignal": request.is_signal}
            for request in batch
        ],
    }
    started = time.perf_counter()
    try:
        output = _parse_batch_output(user_function(json.dumps(context)), len(batch))
    except Exception as exc:  # a failing batch must answer its callers, not take the dispatcher down
        elapsed = (time.perf_counter() - started) * 1000
        message = f"entity {entity_id!r} failed to run a batch of {len(batch)} operation(s): {exc}"
        logger.warning("%s", message, exc_info=True)
        return EntityBatchResult(
            state=_with_queue(state, state.entity_exists, state.state, rest),
            outcomes=[OperationOutcome(r, _dumps(message), True, message, elapsed) for r in batch],
            signals=[],
        )
    exists, entity_state, results, signals = output
    outcomes = [_outcome(request, result) for request, result in zip(batch, results, strict=True)]
    logger.debug(
        "Entity %s ran %d operation(s), %d failed, %d left queued",
        entity_id,
        len(batch),
        sum(o.is_error for o in outcomes),
        len(rest),
    )
    # A deleted entity has no state, whatever df reports for it ("null").
    return EntityBatchResult(
        state=_with_queue(state, exists, entity_state if exists else None, rest),
        outcomes=outcomes,
        signals=signals,
    )


def _with_queue(
    state: SchedulerState, exists: bool, entity_state: str | None, queue: list[EntityRequest]
) -> SchedulerState:
    return SchedulerState(
        entity_exists=exists,
        state=entity_state,
        queue=queue,
        locked_by=state.locked_by,
        suspended=state.suspended,
        sorter=state.sorter,
    )


def _parse_batch_output(
    output: Any, batch_size: int
) -> tuple[bool, str | None, list[dict[str, Any]], list[OutboundSignal]]:
    if not isinstance(output, str):
        raise MessageFormatError(f"the entity function returned {type(output).__name__}, not a JSON string")
    what = "entity batch output"
    data = _loads_object(output, what)
    results = data.get("results")
    if not isinstance(results, list) or len(results) != batch_size:
        raise MessageFormatError(f"{what}: expected {batch_size} results, got {results!r}")
    if not all(isinstance(result, dict) for result in results):
        raise MessageFormatError(f"{what}: every result must be an object")
    raw_signals = data.get("signals") or []
    if not isinstance(raw_signals, list):
        raise MessageFormatError(f"{what}: 'signals' must be a list")
    signals = [_signal(raw) for raw in raw_signals]
    return data.get("entityExists") is True, _optional_str(data, "entityState", what), results, signals


def _signal(raw: Any) -> OutboundSignal:
    # .NET's OutOfProcResult.Signal: {"target": {"name", "key"}, "name", "input"}.
    what = "entity signal"
    target = raw.get("target") if isinstance(raw, dict) else None
    if not isinstance(target, dict) or not isinstance(raw.get("name"), str):
        raise MessageFormatError(f"{what} is malformed: {raw!r}")
    try:
        target_id = entity_instance_id(str(target.get("name") or ""), str(target.get("key") or ""))
    except ValidationError as exc:
        raise MessageFormatError(f"{what} has an invalid target: {exc}") from exc
    return OutboundSignal(target_id, raw["name"], _optional_str(raw, "input", what))


def _outcome(request: EntityRequest, result: Mapping[str, Any]) -> OperationOutcome:
    value = _optional_str(result, "result", "entity operation result")
    is_error = result.get("isError") is True
    duration = result.get("duration")
    started = result.get("startTime")
    return OperationOutcome(
        request=request,
        result=value,
        is_error=is_error,
        error=_error_text(value) if is_error else None,
        duration_ms=float(duration) if isinstance(duration, int | float) else 0.0,
        started_ms=float(started) if isinstance(started, int | float) else None,
    )


def _error_text(result: str | None) -> str:
    # df returns the message JSON-encoded; show it decoded, or as is when it is not JSON.
    if result is None:
        return ""
    try:
        decoded = json.loads(result)
    except json.JSONDecodeError:
        return result
    return decoded if isinstance(decoded, str) else result


# --- events ------------------------------------------------------------------------------------------


def request_from_event(event: EventRaisedEvent) -> EntityRequest | None:
    """The request an ``op``/``op@{time}`` event carries; None for any other event name.

    Other names an entity receives (``release``, ``continue``, responses) are not requests. A delayed
    signal's ``scheduled_time`` is its ``due`` member, or the time in the event name when that is absent.
    Raises :class:`MessageFormatError` when the input or the time in the name cannot be read.
    """
    name = event.name or ""
    if name != REQUEST_EVENT_NAME and not name.startswith(_DELAYED_PREFIX):
        return None
    if event.input is None:
        raise MessageFormatError(f"entity request event {name!r} has no input")
    request = EntityRequest.from_json_text(event.input)
    if request.scheduled_time is None and name != REQUEST_EVENT_NAME:
        request.scheduled_time = parse_datetime(name[len(_DELAYED_PREFIX) :])
    return request


def response_event(request: EntityRequest, outcome: OperationOutcome) -> EventRaisedEvent:
    """The event answering a call, for the control queue of the caller (``request.parent_*``).

    Named by the request GUID, input the ``ResponseMessage`` JSON: ``exceptionType`` ``Error`` on failure,
    as the .NET host answers for out-of-process entities. A missing result is sent as ``"null"`` because
    df's ``ResponseMessage`` requires a string. Raises :class:`ValidationError` for a signal.
    """
    if request.is_signal or request.parent_instance_id is None:
        raise ValidationError(f"request {request.id} is a signal: signals get no response")
    response = EntityResponse(
        result=outcome.result if outcome.result is not None else "null",
        exception_type=ERROR_EXCEPTION_TYPE if outcome.is_error else None,
    )
    return EventRaisedEvent(name=request.id, input=response.to_json_text())


def _encode_input(input_json: str | None) -> str | None:
    return None if input_json is None else json.dumps(input_json)


def request_event(
    target_instance_id: str,
    operation: str,
    input_json: str | None,
    *,
    request_id: str,
    is_signal: bool,
    parent_instance_id: str | None,
    parent_execution_id: str | None,
    scheduled_time: datetime | None,
    now: datetime | None = None,
    trace: TraceContext | None = None,
) -> EventRaisedEvent:
    """The event an orchestration or client sends to entity ``target_instance_id``.

    ``input_json`` is the JSON text of the operation input (None for none). A delayed signal is named
    ``op@{time}``: the due time, or ``now`` + :data:`SIGNAL_DELAY_HOP` when it is more than
    :data:`MAX_SIGNAL_DELAY` away (queue messages cannot wait longer); ``due`` keeps the real time.
    ``trace`` is the sender's span, which the request carries with its send time.
    """
    parse_entity_instance_id(target_instance_id)
    if not operation:
        raise ValidationError("entity operation name must not be empty")
    try:
        guid = str(uuid.UUID(request_id))
    except ValueError:
        raise ValidationError(f"request ID {request_id!r} is not a GUID") from None
    request = EntityRequest(
        id=guid,
        operation=operation,
        input=_encode_input(input_json),
        is_signal=is_signal,
        parent_instance_id=parent_instance_id,
        parent_execution_id=parent_execution_id,
        scheduled_time=scheduled_time,
        parent_trace_context=trace,
        request_time=(now or utc_now()) if trace is not None else None,
    )
    event = request.to_event()
    if scheduled_time is not None:
        current = now or utc_now()
        if scheduled_time - current > MAX_SIGNAL_DELAY:
            event.name = _DELAYED_PREFIX + _round_trip_o(current + SIGNAL_DELAY_HOP)
    return event


def call_request_id(instance_id: str, execution_id: str, event_id: int) -> str:
    """The GUID of the request an orchestration's CallEntity/SignalEntity action ``event_id`` sends.

    Deterministic (UUID v5 in the URL namespace, as DF's own ``NewGuid``) so that re-running an episode
    whose checkpoint failed after its messages were sent reproduces the same request: the response to the
    first delivery then still matches the ``EventSent`` that finally gets written. The execution ID keeps
    IDs distinct across continue-as-new, which restarts event IDs at 0.
    """
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{instance_id}_{execution_id}_{event_id}"))


def event_sent_for_call(
    action: ScheduledAction,
    *,
    instance_id: str,
    execution_id: str,
    timestamp: datetime,
    trace: TraceContext | None = None,
) -> EventSentEvent:
    """The history event recording an orchestration's CallEntity or SignalEntity action.

    ``EventSent`` with the entity's instance ID, name ``op`` and the ``RequestMessage`` JSON as input;
    df's replay reads the call's response name from its ``id``. ``timestamp`` is the episode's
    orchestrator time (also the request's sorter timestamp and, with the orchestration's span
    ``trace``, its request time). Deliver it with :func:`delivery_event`.
    """
    if action.kind not in (ActionKind.CALL_ENTITY, ActionKind.SIGNAL_ENTITY):
        raise ValidationError(f"action {action.event_id} is a {action.kind.value}, not an entity action")
    if action.instance_id is None or not action.operation:
        raise ValidationError(f"entity action {action.event_id} has no target entity or operation")
    parse_entity_instance_id(action.instance_id)
    request = EntityRequest(
        id=call_request_id(instance_id, execution_id, action.event_id),
        operation=action.operation,
        input=_encode_input(action.input),
        is_signal=action.kind is ActionKind.SIGNAL_ENTITY,
        parent_instance_id=instance_id,
        parent_execution_id=execution_id,
        timestamp=timestamp,
        parent_trace_context=trace,
        request_time=timestamp if trace is not None else None,
    )
    return EventSentEvent(
        event_id=action.event_id,
        timestamp=timestamp,
        instance_id=action.instance_id,
        name=request.event_name,
        input=request.to_json_text(),
    )


def delivery_event(sent: EventSentEvent) -> EventRaisedEvent:
    """The event that delivers an ``EventSent`` to its target (``sent.instance_id``), as DTFx sends it."""
    return EventRaisedEvent(timestamp=sent.timestamp, name=sent.name, input=sent.input)
