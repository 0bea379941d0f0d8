"""OpenTelemetry traces of orchestrations, activities and entities, as Durable Functions emits them.

Durable Functions' distributed tracing V2 (DurableTask.Core's ``TraceHelper``) carries a W3C trace
context in the history events and queue messages, and this module writes and reads the same members,
so that one trace runs from the request that started an instance through every episode, activity,
sub-orchestration and entity operation, on whichever worker runs them:

- ``ExecutionStartedEvent.ParentTraceContext``: ``TraceParent``/``TraceState`` of the span that
  created the instance (``create_orchestration:{name}``, or the parent's sub-orchestration call);
  the first episode adds ``SpanId`` and ``ActivityStartTime`` of the orchestration's own span, which
  the history row keeps for every later episode and worker.
- ``TaskScheduledEvent.ParentTraceContext``: the orchestration's trace with a fresh client span ID,
  the parent of the activity's execution span.
- ``SubOrchestrationInstanceCreatedEvent.ClientSpanId``: the client span ID the child's start carries.
- The entity ``RequestMessage``'s ``parentTraceContext`` and ``requestTime``.

Spans (names, kinds and ``durabletask.*`` attributes as DurableTask.Core's): the orchestration
(``orchestration:{name}``, server) is one span for the execution's whole life, emitted when it ends
with the start time kept in history, as DurableTask.Core does; its children are a client span per
activity and sub-orchestration (from scheduling to the result), each the parent of the execution's
server span, the entity operations (``entity:{name}:{operation}``) and the timers. Episodes plan
their spans (:class:`PlannedSpan`); the dispatcher emits them once the checkpoint is committed.

The SDK is set up from the standard ``OTEL_*`` variables (:func:`configure`). Without an exporter
every hook here returns at its first line and writes nothing to the messages, as DurableTask.Core
writes nothing when no listener takes its activities.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from durable_ext.errors import ConfigError
from durable_ext.executor import scheduled_event_ids
from durable_ext.history import (
    ExecutionCompletedEvent,
    ExecutionStartedEvent,
    HistoryEvent,
    OrchestrationStatus,
    SubOrchestrationInstanceCompletedEvent,
    SubOrchestrationInstanceCreatedEvent,
    SubOrchestrationInstanceFailedEvent,
    TaskCompletedEvent,
    TaskFailedEvent,
    TaskScheduledEvent,
    TimerCreatedEvent,
    TimerFiredEvent,
    TraceContext,
)

logger = logging.getLogger(__name__)

EXPORTER_VARIABLE = "OTEL_TRACES_EXPORTER"
PROTOCOL_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
DEFAULT_SERVICE_NAME = "durable_ext"
"""``service.name`` when neither ``OTEL_SERVICE_NAME`` nor ``OTEL_RESOURCE_ATTRIBUTES`` gives one."""
TRACER_NAME = "durable_ext"

# DurableTask.Core's Schema.Task attribute names and TraceActivityConstants values.
TYPE = "durabletask.type"
NAME = "durabletask.task.name"
VERSION = "durabletask.task.version"
INSTANCE_ID = "durabletask.task.instance_id"
EXECUTION_ID = "durabletask.task.execution_id"
STATUS = "durabletask.task.status"
TASK_ID = "durabletask.task.task_id"
OPERATION = "durabletask.task.operation"
TARGET_INSTANCE_ID = "durabletask.event.target_instance_id"
FIRE_AT = "durabletask.fire_at"

_EXPORTERS = ("otlp", "console", "none")
_SUCCEEDED = (OrchestrationStatus.Completed, OrchestrationStatus.ContinuedAsNew)
_RESULTS = (
    TaskCompletedEvent,
    TaskFailedEvent,
    SubOrchestrationInstanceCompletedEvent,
    SubOrchestrationInstanceFailedEvent,
)
_OTLP_PROTOCOL = "http/protobuf"
_PROPAGATOR = TraceContextTextMapPropagator()
_IDS = RandomIdGenerator()
# The span ID the next span takes: spans whose ID travelled in messages before the span was emitted.
_preset_span_id: ContextVar[int | None] = ContextVar("durable_ext_preset_span_id", default=None)


class _PresetIdGenerator(RandomIdGenerator):
    """Random IDs, except the span ID :func:`emit` presets."""

    def generate_span_id(self) -> int:
        preset = _preset_span_id.get()
        return preset if preset is not None else super().generate_span_id()


@dataclass
class _Active:
    provider: TracerProvider
    tracer: trace.Tracer


_active: _Active | None = None


def enabled() -> bool:
    """Whether spans are being made (an exporter is configured)."""
    return _active is not None


def tracer() -> trace.Tracer | None:
    """The tracer of durable_ext's spans, or None when not tracing."""
    return _active.tracer if _active is not None else None


# --- set-up ------------------------------------------------------------------------------------------


def exporter_names(settings: Mapping[str, str]) -> list[str]:
    """The exporters ``OTEL_TRACES_EXPORTER`` names (``otlp``, ``console``; ``none`` or unset: none).

    Raises :class:`ConfigError` for any other name, and for an OTLP protocol other than http/protobuf.
    """
    raw = settings.get(EXPORTER_VARIABLE, "")
    names = [name.strip().lower() for name in raw.split(",") if name.strip()]
    unknown = [name for name in names if name not in _EXPORTERS]
    if unknown:
        raise ConfigError(
            f"{EXPORTER_VARIABLE}={raw!r}: unknown exporter {unknown[0]!r}; durable_ext exports traces "
            "with otlp (OTLP over HTTP) or console, or none"
        )
    chosen = [name for name in names if name != "none"]
    if "otlp" in chosen:
        for variable in PROTOCOL_VARIABLES:
            protocol = settings.get(variable)
            if protocol and protocol != _OTLP_PROTOCOL:
                raise ConfigError(
                    f"{variable}={protocol!r}: durable_ext sends OTLP over HTTP only; set it to "
                    f"{_OTLP_PROTOCOL} (and the endpoint to the collector's HTTP port, 4318 by default)"
                )
    return chosen


def _exporter(name: str) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter()
    # Imported here: it loads protobuf, which a host without OTLP export need not pay for.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415

    # It reads OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, _HEADERS, _TIMEOUT and the rest itself.
    return OTLPSpanExporter()


def configure(settings: Mapping[str, str]) -> bool:
    """Set up exporting from the ``OTEL_*`` variables in ``settings``; False when none names an exporter.

    ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` describe the service (the SDK reads them
    from the environment), ``OTEL_TRACES_SAMPLER`` samples. Raises :class:`ConfigError` as
    :func:`exporter_names` does, before anything is set up.
    """
    names = exporter_names(settings)
    if not names:
        return False
    install(*(BatchSpanProcessor(_exporter(name)) for name in names))
    logger.info("exporting traces with %s", ", ".join(names))
    return True


def install(*processors: SpanProcessor) -> TracerProvider:
    """Make spans from now on and hand them to ``processors`` (a test's in-memory exporter, say).

    The provider also becomes OpenTelemetry's global one, unless the app set one already, so that
    spans the app's own code makes join the same traces.
    """
    global _active  # noqa: PLW0603 - one set-up per process, read by every hook
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    provider = TracerProvider(resource=resource, id_generator=_PresetIdGenerator())
    for processor in processors:
        provider.add_span_processor(processor)
    _active = _Active(provider, provider.get_tracer(TRACER_NAME))
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(provider)
    return provider


def uninstall() -> None:
    """Stop making spans, after exporting what is pending."""
    global _active  # noqa: PLW0603 - see install
    if _active is not None:
        _active.provider.shutdown()
    _active = None


def flush() -> None:
    """Export the spans still waiting in a batch (a host does this when it stops)."""
    if _active is not None:
        _active.provider.force_flush()


# --- W3C trace context in messages ---------------------------------------------------------------------


def traceparent(context: SpanContext) -> str:
    """The W3C ``traceparent`` of ``context``."""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags) & 0xFF:02x}"


def _carried(context: SpanContext) -> TraceContext:
    state = context.trace_state.to_header() if context.trace_state else None
    return TraceContext(trace_parent=traceparent(context), trace_state=state or None)


def _parsed(carried: TraceContext | None) -> SpanContext | None:
    """The span context a message carries; None when it carries none or an unreadable one."""
    if carried is None or not carried.trace_parent:
        return None
    headers = {"traceparent": carried.trace_parent}
    if carried.trace_state:
        headers["tracestate"] = carried.trace_state
    context = trace.get_current_span(_PROPAGATOR.extract(headers)).get_span_context()
    return context if context.is_valid else None


def _span_id(text: str | None) -> int | None:
    """A span ID as history stores it (16 hex digits); None when absent or unreadable, since a
    message may come from any writer."""
    try:
        value = int(text, 16) if text else 0
    except ValueError:
        return None
    return value if 0 < value < 1 << 64 else None


def _with_span_id(context: SpanContext, span_id: int) -> SpanContext:
    return SpanContext(
        context.trace_id,
        span_id,
        is_remote=True,
        trace_flags=context.trace_flags,
        trace_state=context.trace_state,
    )


def _parent(context: SpanContext | None) -> Context | None:
    return trace.set_span_in_context(trace.NonRecordingSpan(context)) if context is not None else None


def _nanos(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000_000)


def _span_name(kind: str, name: str | None, version: str | None = None) -> str:
    # DurableTask.Core's CreateSpanName.
    return f"{kind}:{name}@({version})" if version else f"{kind}:{name}"


def _task_attributes(kind: str, name: str | None, instance_id: str, version: str | None) -> dict[str, str]:
    attributes = {TYPE: kind, NAME: name or "", INSTANCE_ID: instance_id}
    if version:
        attributes[VERSION] = version
    return attributes


@dataclass(frozen=True)
class PlannedSpan:
    """A span whose ID and times were decided before it is emitted (they travelled in history and
    messages): episodes plan them, and :func:`emit` makes them once the checkpoint is committed, so
    that an episode another worker re-runs after a lost checkpoint race is traced once."""

    name: str
    kind: SpanKind
    parent: SpanContext | None
    span_id: int
    start: datetime
    end: datetime
    attributes: Mapping[str, str | int]
    error: str | None = None
    """Marks the span failed, with this description."""
    succeeded: bool = False
    """Marks the span OK, as DurableTask.Core marks a completed orchestration (others stay unset)."""


def emit(spans: Sequence[PlannedSpan]) -> None:
    """Make and end the planned spans (nothing when tracing stopped meanwhile)."""
    active = _active
    if active is None:
        return
    for planned in spans:
        token = _preset_span_id.set(planned.span_id)
        try:
            span = active.tracer.start_span(
                planned.name,
                _parent(planned.parent),
                kind=planned.kind,
                attributes=planned.attributes,
                start_time=_nanos(planned.start),
            )
        finally:
            _preset_span_id.reset(token)
        if planned.error is not None:
            span.set_status(Status(StatusCode.ERROR, planned.error))
        elif planned.succeeded:
            span.set_status(Status(StatusCode.OK))
        span.end(_nanos(planned.end))


# --- the client ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def create_orchestration(started: ExecutionStartedEvent) -> Iterator[None]:
    """``create_orchestration:{name}`` (producer) around sending a start, child of the current span
    (the HTTP request's); the start message carries it as the orchestration's parent."""
    active = _active
    instance = started.orchestration_instance
    if active is None or instance is None:
        yield
        return
    attributes = _task_attributes("orchestration", started.name, instance.instance_id, started.version)
    attributes[EXECUTION_ID] = instance.execution_id or ""
    with active.tracer.start_as_current_span(
        _span_name("create_orchestration", started.name, started.version),
        kind=SpanKind.PRODUCER,
        attributes=attributes,
    ) as span:
        started.parent_trace_context = _carried(span.get_span_context())
        yield


@contextlib.contextmanager
def signal_entity(entity_id: str, entity_name: str, operation: str) -> Iterator[TraceContext | None]:
    """``entity:{name}:{operation}`` (producer) around a client's signal; yields the trace context the
    request carries (None when not tracing)."""
    active = _active
    if active is None:
        yield None
        return
    attributes = {TYPE: "entity", OPERATION: "signal_entity", TARGET_INSTANCE_ID: entity_id}
    with active.tracer.start_as_current_span(
        f"entity:{entity_name}:{operation}", kind=SpanKind.PRODUCER, attributes=attributes
    ) as span:
        yield _carried(span.get_span_context())


# --- orchestrations --------------------------------------------------------------------------------------


def orchestration_context(started: ExecutionStartedEvent, now: datetime) -> TraceContext | None:
    """The trace context of the orchestration's span, for what it schedules; None when not traced.

    The first episode gives the span its ID and start time in the ExecutionStarted event, which
    history keeps: every later episode, on any worker, continues the same span.
    """
    carried = started.parent_trace_context
    if _active is None or carried is None:
        return None
    parent = _parsed(carried)
    if parent is None:
        return None
    span_id = _span_id(carried.span_id)
    if span_id is None:
        span_id = _IDS.generate_span_id()
        carried.span_id = f"{span_id:016x}"
        carried.id = traceparent(_with_span_id(parent, span_id))
        carried.activity_start_time = now
    return _carried(_with_span_id(parent, span_id))


def link_scheduled(orchestration: TraceContext | None, scheduled: Iterable[HistoryEvent]) -> None:
    """Give each activity and sub-orchestration the episode schedules its client span ID."""
    context = _parsed(orchestration)
    if context is None:
        return
    for event in scheduled:
        if isinstance(event, TaskScheduledEvent):
            event.parent_trace_context = _carried(_with_span_id(context, _IDS.generate_span_id()))
        elif isinstance(event, SubOrchestrationInstanceCreatedEvent):
            event.client_span_id = f"{_IDS.generate_span_id():016x}"


def sub_orchestration_parent(
    orchestration: TraceContext | None, created: SubOrchestrationInstanceCreatedEvent
) -> TraceContext | None:
    """The ParentTraceContext of a sub-orchestration's start: its call's client span."""
    context = _parsed(orchestration)
    span_id = _span_id(created.client_span_id)
    if context is None or span_id is None:
        return None
    return _carried(_with_span_id(context, span_id))


def task_ends(
    orchestration: TraceContext | None,
    instance_id: str,
    history: Sequence[HistoryEvent],
    arrived: Iterable[HistoryEvent],
    now: datetime,
    *,
    name: str,
) -> list[PlannedSpan]:
    """The client spans of the activities and sub-orchestrations whose results ``arrived`` (from the
    scheduling event in ``history`` until now, with the ID their execution's span names as parent), and
    the spans of the timers that fired (``orchestration:{name}:timer``; ``name`` is the orchestration's)."""
    context = _parsed(orchestration)
    if _active is None or context is None:
        return []
    scheduled = scheduled_event_ids(history)
    spans: list[PlannedSpan] = []
    for result in arrived:
        if isinstance(result, TimerFiredEvent):
            timer = scheduled.get(result.timer_id)
            if isinstance(timer, TimerCreatedEvent):
                spans.append(_timer(context, instance_id, name, timer, now))
            continue
        if not isinstance(result, _RESULTS):
            continue
        origin = scheduled.get(result.task_scheduled_id)
        span_id = _client_span_id(origin)
        if (
            not isinstance(origin, TaskScheduledEvent | SubOrchestrationInstanceCreatedEvent)
            or span_id is None
        ):
            continue
        kind = "activity" if isinstance(origin, TaskScheduledEvent) else "orchestration"
        error = None
        if isinstance(result, TaskFailedEvent | SubOrchestrationInstanceFailedEvent):
            error = result.reason or f"{kind} failed"
        spans.append(
            PlannedSpan(
                _span_name(kind, origin.name, origin.version),
                SpanKind.CLIENT,
                context,
                span_id,
                origin.timestamp,
                now,
                {
                    **_task_attributes(kind, origin.name, instance_id, origin.version),
                    TASK_ID: origin.event_id,
                },
                error,
            )
        )
    return spans


def _timer(
    context: SpanContext, instance_id: str, name: str, timer: TimerCreatedEvent, now: datetime
) -> PlannedSpan:
    attributes: dict[str, str | int] = {
        TYPE: "timer",
        NAME: name,
        INSTANCE_ID: instance_id,
        TASK_ID: timer.event_id,
    }
    if timer.fire_at is not None:
        attributes[FIRE_AT] = timer.fire_at.isoformat()
    return PlannedSpan(
        f"orchestration:{name}:timer",
        SpanKind.INTERNAL,
        context,
        _IDS.generate_span_id(),
        timer.timestamp,
        now,
        attributes,
    )


def _client_span_id(origin: HistoryEvent | None) -> int | None:
    if isinstance(origin, SubOrchestrationInstanceCreatedEvent):
        return _span_id(origin.client_span_id)
    if isinstance(origin, TaskScheduledEvent):
        context = _parsed(origin.parent_trace_context)
        return context.span_id if context is not None else None
    return None


def orchestration_end(
    started: ExecutionStartedEvent, completion: ExecutionCompletedEvent, now: datetime
) -> list[PlannedSpan]:
    """``orchestration:{name}`` (server): the execution's one span, from its first episode to ``now``."""
    carried = started.parent_trace_context
    instance = started.orchestration_instance
    span_id = _span_id(carried.span_id) if carried is not None else None
    if _active is None or carried is None or span_id is None or instance is None:
        return []
    status = completion.orchestration_status
    attributes: dict[str, str | int] = {
        **_task_attributes("orchestration", started.name, instance.instance_id, started.version),
        STATUS: status.name,
    }
    error = None
    if status not in _SUCCEEDED:
        details = completion.failure_details
        error = str(details) if details is not None else completion.result or status.name
    return [
        PlannedSpan(
            _span_name("orchestration", started.name, started.version),
            SpanKind.SERVER,
            _parsed(carried),
            span_id,
            carried.activity_start_time or started.timestamp,
            now,
            attributes,
            error,
            succeeded=error is None,
        )
    ]


def restart_span(started: ExecutionStartedEvent, rewound: TraceContext | None) -> None:
    """A rewound execution is a new span: forget the failed one's ID, under the rewind's parent when
    the rewind carries one (DurableTask.Core's rewind does the same)."""
    carried = rewound or started.parent_trace_context
    if carried is not None:
        started.parent_trace_context = TraceContext(
            trace_parent=carried.trace_parent, trace_state=carried.trace_state
        )


def continued_trace(started: ExecutionStartedEvent) -> TraceContext | None:
    """What the next generation's start carries after continue-as-new: the same parent, a new span."""
    carried = started.parent_trace_context
    if carried is None:
        return None
    return TraceContext(trace_parent=carried.trace_parent, trace_state=carried.trace_state)


# --- activities and entities -------------------------------------------------------------------------------


class ExecutionSpan:
    """The span of one activity execution, to mark failed; a no-op when not tracing."""

    def __init__(self, span: trace.Span | None) -> None:
        self._span = span

    def fail(self, reason: str) -> None:
        """Mark the execution failed with ``reason``."""
        if self._span is not None:
            self._span.set_status(Status(StatusCode.ERROR, reason))


_NOT_TRACED = ExecutionSpan(None)


@contextlib.contextmanager
def activity_execution(event: TaskScheduledEvent, instance_id: str) -> Iterator[ExecutionSpan]:
    """``activity:{name}`` (server) around running a work item, current while the activity runs, child
    of the client span its TaskScheduled message names."""
    active = _active
    parent = _parsed(event.parent_trace_context) if active is not None else None
    if active is None or parent is None:
        yield _NOT_TRACED
        return
    attributes: dict[str, str | int] = {
        **_task_attributes("activity", event.name, instance_id, event.version),
        TASK_ID: event.event_id,
    }
    with active.tracer.start_as_current_span(
        _span_name("activity", event.name, event.version),
        _parent(parent),
        kind=SpanKind.SERVER,
        attributes=attributes,
    ) as span:
        yield ExecutionSpan(span)


@dataclass
class EntityOperation:
    """One operation of an entity batch, as its spans need it."""

    operation: str
    is_signal: bool
    parent: TraceContext | None
    requested: datetime | None
    started: datetime
    duration: timedelta
    error: str | None


def entity_operations(
    entity_id: str, entity_name: str, operations: Iterable[EntityOperation]
) -> list[PlannedSpan]:
    """``entity:{name}:{operation}`` spans of a batch, after it ran (df runs the batch in one call).

    A signal is one consumer span; a call is a client span from the request to the end of the
    operation, parent of the operation's server span, as Durable Functions' entity shim emits them.
    """
    spans: list[PlannedSpan] = []
    for op in operations:
        parent = _parsed(op.parent)
        if parent is None:
            continue
        name = f"entity:{entity_name}:{op.operation}"
        attributes = {
            TYPE: "entity",
            INSTANCE_ID: entity_id,
            OPERATION: "signal_entity" if op.is_signal else "call_entity",
        }
        ended = op.started + op.duration
        if not op.is_signal:
            call = PlannedSpan(
                name,
                SpanKind.CLIENT,
                parent,
                _IDS.generate_span_id(),
                min(op.requested or op.started, op.started),
                ended,
                {**attributes, TARGET_INSTANCE_ID: entity_id},
                op.error,
            )
            spans.append(call)
            parent = _with_span_id(parent, call.span_id)
        kind = SpanKind.CONSUMER if op.is_signal else SpanKind.SERVER
        spans.append(
            PlannedSpan(name, kind, parent, _IDS.generate_span_id(), op.started, ended, attributes, op.error)
        )
    return spans


def from_epoch_ms(value: int | float) -> datetime:
    """A time df gives in milliseconds since the epoch."""
    return datetime.fromtimestamp(value / 1000, UTC)
