"""OpenTelemetry traces: one trace from the HTTP request through every episode, activity,
sub-orchestration and entity operation, carried in the messages and history as Durable Functions
carries it, so that another worker continues it."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from durable_ext import tracing
from durable_ext.app_loader import load_app
from durable_ext.client import TaskHubClient
from durable_ext.entities import EntityRequest
from durable_ext.errors import ConfigError
from durable_ext.history import (
    ExecutionStartedEvent,
    OrchestrationInstance,
    OrchestrationStatus,
    TaskScheduledEvent,
    TraceContext,
)
from durable_ext.host.local import LocalHost, LocalHostOptions
from durable_ext.storage.taskhub import TaskHub
from durable_ext.worker.engine import Engine
from tests.engine_support import engine_for, poll
from tests.host_support import free_port, host_env, read_until, sample_app_dir, start_command

TRACED_TREE = Path(__file__).parent / "apps" / "traced_tree.py"
CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on for the test, into memory."""
    exporter = InMemorySpanExporter()
    tracing.install(SimpleSpanProcessor(exporter))
    try:
        yield exporter
    finally:
        tracing.uninstall()


def one(spans: Sequence[ReadableSpan], name: str, kind: SpanKind) -> ReadableSpan:
    found = [s for s in spans if s.name == name and s.kind is kind]
    assert len(found) == 1, (name, kind, [(s.name, s.kind) for s in spans])
    return found[0]


def parent_of(span: ReadableSpan) -> int:
    assert span.parent is not None, span.name
    return span.parent.span_id


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def children(spans: Sequence[ReadableSpan], parent: ReadableSpan) -> list[tuple[str, SpanKind]]:
    return sorted(
        ((s.name, s.kind) for s in spans if s.parent is not None and s.parent.span_id == span_id(parent)),
        key=str,
    )


async def wait_for_spans(exporter: InMemorySpanExporter, name: str, count: int) -> list[ReadableSpan]:
    async def arrived() -> bool:
        return sum(s.name == name for s in exporter.get_finished_spans()) >= count

    await poll(arrived, f"{count} span(s) named {name}")
    return list(exporter.get_finished_spans())


async def test_one_trace_from_the_http_request_to_every_activity_child_and_entity(
    tmp_path: Path,
    azurite_connection_string: str,
    monkeypatch: pytest.MonkeyPatch,
    spans: InMemorySpanExporter,
) -> None:
    monkeypatch.setenv("AzureWebJobsStorage", azurite_connection_string)
    app = sample_app_dir(tmp_path, "Traced" + uuid.uuid4().hex[:8], extra_blueprints=[TRACED_TREE])
    lines: list[str] = []
    port = free_port()
    host = LocalHost(LocalHostOptions(app_dir=app, port=port, output=lines.append))
    stop = asyncio.Event()
    running = asyncio.create_task(host.run(stop))
    try:
        await poll(_ready(lines, running), "Host ready")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            started = await http.post(
                "/api/orchestrators/traced_parent",
                headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"},
            )
            assert started.status_code == 202, started.text
            status_url = started.json()["statusQueryGetUri"]
            body = await _final_status(http, status_url)
        assert body["runtimeStatus"] == "Completed", body
        assert body["output"] == ["Hello Tokyo!", "Hello Seattle!", None]
        finished = await wait_for_spans(spans, "entity:counter:reset", 1)
    finally:
        stop.set()
        await running

    # Every span made for this instance belongs to the caller's trace.
    traced = [s for s in finished if s.context is not None and f"{s.context.trace_id:032x}" == CALLER_TRACE]
    request = one(traced, "POST /api/orchestrators/{functionName}", SpanKind.SERVER)
    assert f"{parent_of(request):016x}" == CALLER_SPAN
    assert request.attributes is not None and request.attributes["http.response.status_code"] == 202
    # The df client in http_start passed the request's span on as traceparent to the management API.
    api = one(traced, "POST /runtime/webhooks/durabletask/orchestrators/{functionName}", SpanKind.SERVER)
    assert parent_of(api) == span_id(request)
    create = one(traced, "create_orchestration:traced_parent", SpanKind.PRODUCER)
    assert parent_of(create) == span_id(api)
    orchestration = one(traced, "orchestration:traced_parent", SpanKind.SERVER)
    assert parent_of(orchestration) == span_id(create)
    assert orchestration.attributes is not None
    assert orchestration.attributes["durabletask.type"] == "orchestration"
    assert orchestration.attributes["durabletask.task.name"] == "traced_parent"
    assert orchestration.attributes["durabletask.task.status"] == "Completed"
    instance_id = str(orchestration.attributes["durabletask.task.instance_id"])
    assert children(traced, orchestration) == sorted(
        [
            ("activity:say_hello", SpanKind.CLIENT),
            ("orchestration:traced_child", SpanKind.CLIENT),
            ("entity:counter:add", SpanKind.CLIENT),
            ("entity:counter:reset", SpanKind.CONSUMER),
        ],
        key=str,
    )
    by_parent = {(s.name, s.kind, parent_of(s)): s for s in traced if s.parent is not None}
    activity_call = next(
        s for s in traced if s.name == "activity:say_hello" and s.kind is SpanKind.CLIENT
        and parent_of(s) == span_id(orchestration)
    )  # fmt: skip
    activity = by_parent["activity:say_hello", SpanKind.SERVER, span_id(activity_call)]
    assert (
        activity.attributes is not None and activity.attributes["durabletask.task.instance_id"] == instance_id
    )
    assert activity.start_time is not None and activity_call.start_time is not None
    assert activity_call.start_time <= activity.start_time
    child_call = one(traced, "orchestration:traced_child", SpanKind.CLIENT)
    child = by_parent["orchestration:traced_child", SpanKind.SERVER, span_id(child_call)]
    child_call_activity = by_parent["activity:say_hello", SpanKind.CLIENT, span_id(child)]
    assert ("activity:say_hello", SpanKind.SERVER, span_id(child_call_activity)) in by_parent
    entity_call = one(traced, "entity:counter:add", SpanKind.CLIENT)
    entity = by_parent["entity:counter:add", SpanKind.SERVER, span_id(entity_call)]
    assert entity.attributes is not None
    assert entity.attributes["durabletask.task.instance_id"] == f"@counter@{instance_id}"
    assert entity.attributes["durabletask.task.operation"] == "call_entity"
    # Nothing of the instance fell out of the tree: every span has its parent in the trace.
    ids = {span_id(s) for s in traced}
    assert all(parent_of(s) in ids for s in traced if s is not request)


def _ready(lines: list[str], running: asyncio.Task[bool]) -> Callable[[], Awaitable[bool]]:
    async def ready() -> bool:
        if running.done():
            running.result()
            raise AssertionError(f"the host stopped: {lines}")
        return any("Host ready" in line for line in lines)

    return ready


async def _final_status(http: httpx.AsyncClient, status_url: str) -> dict[str, object]:
    deadline = time.monotonic() + 60
    while True:
        body: dict[str, object] = (await http.get(status_url)).json()
        if body["runtimeStatus"] in ("Completed", "Failed") or time.monotonic() > deadline:
            return body
        await asyncio.sleep(0.1)


async def test_the_trace_context_in_history_lets_another_worker_continue_the_span(
    tmp_path: Path, hub: TaskHub, spans: InMemorySpanExporter
) -> None:
    app = sample_app_dir(tmp_path, hub.names.hub, extra_blueprints=[TRACED_TREE])
    registry = load_app(app)
    client = TaskHubClient(hub)
    async with engine_for(hub, registry, "worker-a"):
        instance_id = await client.start_new("traced_handover")

        async def waiting() -> bool:
            events = (await hub.tracking.load_history(instance_id)).events
            return sum(type(e).__name__ == "TaskCompletedEvent" for e in events) == 1

        await poll(waiting, "the first activity's result in history")
    # Worker A has stopped; what it knew of the trace is in the History table only.
    history = (await hub.tracking.load_history(instance_id)).events
    started = next(e for e in history if isinstance(e, ExecutionStartedEvent))
    stored = started.parent_trace_context
    assert stored is not None and stored.span_id is not None and stored.activity_start_time is not None
    first_call = next(e for e in history if isinstance(e, TaskScheduledEvent)).parent_trace_context
    assert first_call is not None and first_call.trace_parent is not None
    assert first_call.trace_parent.split("-")[1] == stored.trace_parent.split("-")[1]  # type: ignore[union-attr]
    assert not [s for s in spans.get_finished_spans() if s.name.startswith("orchestration:")]

    async with engine_for(hub, registry, "worker-b"):
        await client.raise_event(instance_id, "go", json.dumps(True))
        state = await client.wait_for_completion(instance_id, timeout=60)
    assert state.runtime_status is OrchestrationStatus.Completed
    finished = spans.get_finished_spans()
    create = one(finished, "create_orchestration:traced_handover", SpanKind.PRODUCER)
    orchestration = one(finished, "orchestration:traced_handover", SpanKind.SERVER)
    # Worker B emitted the span with the ID and start time worker A chose and stored.
    assert f"{span_id(orchestration):016x}" == stored.span_id
    assert parent_of(orchestration) == span_id(create)
    assert orchestration.start_time == int(stored.activity_start_time.timestamp() * 1_000_000_000)
    calls = [s for s in finished if s.name == "activity:say_hello" and s.kind is SpanKind.CLIENT]
    executions = [s for s in finished if s.name == "activity:say_hello" and s.kind is SpanKind.SERVER]
    assert len(calls) == len(executions) == 2
    assert {parent_of(s) for s in calls} == {span_id(orchestration)}
    assert {parent_of(s) for s in executions} == {span_id(s) for s in calls}
    # The first call's client span is the one worker A wrote into the TaskScheduled event.
    assert int(first_call.trace_parent.split("-")[2], 16) in {span_id(s) for s in calls}


async def test_without_an_exporter_nothing_is_traced_or_written(hub: TaskHub, tmp_path: Path) -> None:
    assert not tracing.enabled()
    app = sample_app_dir(tmp_path, hub.names.hub, extra_blueprints=[TRACED_TREE])
    client = TaskHubClient(hub)
    async with engine_for(hub, load_app(app), "worker-a"):
        instance_id = await client.start_new("traced_child", input=json.dumps("Oslo"))
        state = await client.wait_for_completion(instance_id, timeout=60)
    assert state.runtime_status is OrchestrationStatus.Completed
    history = (await hub.tracking.load_history(instance_id)).events
    assert [e for e in history if getattr(e, "parent_trace_context", None) is not None] == []


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, "unknown exporter 'jaeger'"),
        ({"OTEL_TRACES_EXPORTER": "console,zipkin"}, "unknown exporter 'zipkin'"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "OTEL_EXPORTER_OTLP_PROTOCOL='grpc': durable_ext sends OTLP over HTTP only",
        ),
    ],
)
def test_exporters_it_cannot_use_are_refused(settings: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        tracing.configure(settings)
    assert not tracing.enabled()


@pytest.mark.parametrize(
    ("settings", "names"),
    [
        ({}, []),
        ({"OTEL_TRACES_EXPORTER": "none"}, []),
        ({"OTEL_TRACES_EXPORTER": "Console"}, ["console"]),
        (
            {"OTEL_TRACES_EXPORTER": "otlp, console", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
            ["otlp", "console"],
        ),
    ],
)
def test_exporter_names(settings: dict[str, str], names: list[str]) -> None:
    assert tracing.exporter_names(settings) == names


def test_start_prints_the_spans_with_the_console_exporter(
    tmp_path: Path, azurite_connection_string: str
) -> None:
    app = sample_app_dir(tmp_path, "Console" + uuid.uuid4().hex[:8])
    port = free_port()
    settings = {"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "hello-app"}
    process = subprocess.Popen(
        start_command(app, port),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=host_env(azurite_connection_string, settings),
    )
    try:
        read_until(process, "Host ready")
        caller = {"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"}
        started = httpx.post(f"http://127.0.0.1:{port}/api/orchestrators/hello_sequence", headers=caller)
        assert started.status_code == 202, started.text
        status_url = started.json()["statusQueryGetUri"]
        deadline = time.monotonic() + 60
        while httpx.get(status_url).json()["runtimeStatus"] != "Completed":
            assert time.monotonic() < deadline, "hello_sequence did not complete"
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, output
    # The batch of spans still pending is printed when the host stops.
    assert '"name": "orchestration:hello_sequence"' in output
    assert output.count('"name": "activity:say_hello"') == 6  # a client and a server span per call
    assert f'"trace_id": "0x{CALLER_TRACE}"' in output
    assert '"service.name": "hello-app"' in output


def test_start_refuses_an_unknown_exporter(tmp_path: Path, azurite_connection_string: str) -> None:
    app = sample_app_dir(tmp_path, "Refused" + uuid.uuid4().hex[:8])
    result = subprocess.run(
        start_command(app),
        capture_output=True,
        text=True,
        env=host_env(azurite_connection_string, {"OTEL_TRACES_EXPORTER": "jaeger"}),
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "OTEL_TRACES_EXPORTER='jaeger': unknown exporter 'jaeger'" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


async def test_a_client_signal_a_failed_operation_and_a_timer_are_traced(
    hub: TaskHub, engine: Engine, spans: InMemorySpanExporter
) -> None:
    client = TaskHubClient(hub)
    entity_id = f"@counter@{uuid.uuid4().hex[:8]}"
    await client.signal_entity(entity_id, "fail_after_set")
    instance_id = await client.start_new("timer")
    assert (
        await client.wait_for_completion(instance_id, timeout=60)
    ).runtime_status is OrchestrationStatus.Completed
    finished = await wait_for_spans(spans, "entity:counter:fail_after_set", 2)
    signal = one(finished, "entity:counter:fail_after_set", SpanKind.PRODUCER)
    assert signal.parent is None  # no span was current: the signal starts a trace
    operation = one(finished, "entity:counter:fail_after_set", SpanKind.CONSUMER)
    assert parent_of(operation) == span_id(signal)
    assert operation.status.status_code is StatusCode.ERROR
    assert "operation failed after setting state" in (operation.status.description or "")
    orchestration = one(finished, "orchestration:timer", SpanKind.SERVER)
    assert orchestration.status.status_code is StatusCode.OK
    timer = one(finished, "orchestration:timer:timer", SpanKind.INTERNAL)
    assert parent_of(timer) == span_id(orchestration)
    assert timer.attributes is not None and timer.attributes["durabletask.type"] == "timer"


@pytest.mark.usefixtures("spans")
def test_unreadable_trace_contexts_from_storage_are_not_followed() -> None:
    now = datetime.now(UTC)
    garbled = ExecutionStartedEvent(
        orchestration_instance=OrchestrationInstance("i", "e"),
        parent_trace_context=TraceContext(trace_parent="00-not-a-traceparent-01"),
    )
    assert tracing.orchestration_context(garbled, now) is None
    bad_span = TraceContext(trace_parent=f"00-{CALLER_TRACE}-{CALLER_SPAN}-01", span_id="zz")
    started = ExecutionStartedEvent(
        orchestration_instance=OrchestrationInstance("i", "e"), parent_trace_context=bad_span
    )
    context = tracing.orchestration_context(started, now)
    # A span ID that cannot be read is replaced, in the event that history will keep.
    assert context is not None and context.trace_parent is not None
    assert bad_span.span_id is not None and bad_span.span_id != "zz"
    assert context.trace_parent == f"00-{CALLER_TRACE}-{bad_span.span_id}-01"
    assert bad_span.activity_start_time == now


def test_entity_requests_carry_the_trace_context_in_durable_functions_members() -> None:
    written = {
        "op": "add",
        "input": "1",
        "id": str(uuid.uuid4()),
        "parent": "caller",
        "Timestamp": "2026-12-06T10:00:00Z",
        "Predecessor": "0001-01-01T00:00:00",
        "parentTraceContext": {"TraceParent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01", "TraceState": "k=v"},
        "requestTime": "2026-12-06T10:00:00.5+00:00",
    }
    request = EntityRequest.from_json_text(json.dumps(written))
    assert request.parent_trace_context == TraceContext(f"00-{CALLER_TRACE}-{CALLER_SPAN}-01", "k=v")
    assert request.request_time == datetime(2026, 12, 6, 10, 0, 0, 500000, UTC)
    again = request.to_json_object()
    assert again["parentTraceContext"]["TraceParent"] == f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    assert EntityRequest.from_json_object(again) == request
    assert "parentTraceContext" not in request.extra
