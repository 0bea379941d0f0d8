"""Durable HTTP (``context.call_http``) end to end on real Azurite, against a local HTTP service."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from durable_ext.app_loader import FunctionKind, FunctionRegistry, load_app
from durable_ext.client import OrchestrationState, TaskHubClient
from durable_ext.config import ConfigError, HttpSettingsOptions, load_config
from durable_ext.durable_http import HTTP_ACTIVITY_NAME, DurableHttpRequest
from durable_ext.history import (
    EventType,
    ExecutionStartedEvent,
    HistoryEvent,
    OrchestrationInstance,
    OrchestrationStatus,
    OrchestratorStartedEvent,
    TaskScheduledEvent,
    TimerCreatedEvent,
)
from durable_ext.replay import run_orchestrator
from durable_ext.storage.taskhub import TaskHub
from durable_ext.worker.engine import Engine
from durable_ext.worker.http_activity import HttpActivity
from tests.engine_support import engine_for, poll
from tests.host_support import free_port, running_host, sample_app_dir, serve_in_thread

TIMEOUT = 60.0
APP_DIR = Path(__file__).parent / "apps" / "http_call_app"


@dataclass
class Seen:
    """One request the target service received."""

    method: str
    path: str
    headers: dict[str, str]
    body: str
    at: float


@dataclass
class Target:
    """The HTTP service the orchestrations call; it records every request it gets."""

    seen: list[Seen] = field(default_factory=list)
    polls_left: dict[str, int] = field(default_factory=dict)

    async def _record(self, request: Request) -> Seen:
        body = (await request.body()).decode()
        seen = Seen(request.method, request.url.path, dict(request.headers), body, time.monotonic())
        self.seen.append(seen)
        return seen

    async def echo(self, request: Request) -> Response:
        """Answers 200 with what it received; two X-Multi headers and one X-Reply."""
        seen = await self._record(request)
        reply = JSONResponse({"method": seen.method, "headers": seen.headers, "body": seen.body})
        reply.headers["X-Reply"] = "echo"
        reply.headers.append("X-Multi", "one")
        reply.headers.append("X-Multi", "two")
        return reply

    async def slow(self, request: Request) -> Response:
        """Answers after a second."""
        await self._record(request)
        await asyncio.sleep(1)
        return PlainTextResponse("late")

    async def start_job(self, request: Request) -> Response:
        """202 with a Location to poll ``polls`` times (query), with Retry-After unless ``?wait=no``."""
        await self._record(request)
        job = uuid.uuid4().hex
        self.polls_left[job] = int(request.query_params.get("polls", "1"))
        return self._accepted(request, job)

    async def job_status(self, request: Request) -> Response:
        """202 again until the job's polls are used up, then 200 with "done"."""
        await self._record(request)
        job = request.path_params["job"]
        self.polls_left[job] -= 1
        if self.polls_left[job] > 0:
            return self._accepted(request, job)
        return PlainTextResponse("done")

    def _accepted(self, request: Request, job: str) -> Response:
        headers = {"Location": f"{request.base_url}jobs/{job}?{request.url.query}"}
        if request.query_params.get("wait") != "no":
            headers["Retry-After"] = "1"
        return Response(status_code=202, headers=headers)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/echo", self.echo, methods=["GET", "POST", "PUT"]),
                Route("/slow", self.slow),
                Route("/jobs", self.start_job, methods=["POST"]),
                Route("/jobs/{job}", self.job_status, methods=["GET"]),
            ]
        )


@pytest.fixture
def target() -> Target:
    return Target()


@pytest.fixture
def base_url(target: Target) -> Iterator[str]:
    with serve_in_thread(target.app()) as url:
        yield url


@pytest.fixture(scope="module")
def http_registry() -> FunctionRegistry:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return load_app(APP_DIR)


@pytest.fixture
async def engine(hub: TaskHub, http_registry: FunctionRegistry) -> AsyncIterator[Engine]:
    quick = HttpSettingsOptions(default_async_request_sleep_time_milliseconds=300)
    async with engine_for(hub, http_registry, "worker-a", http_settings=quick) as running:
        yield running


@pytest.fixture
def client(hub: TaskHub, engine: Engine) -> TaskHubClient:
    return TaskHubClient(hub)


async def _run(client: TaskHubClient, name: str, payload: Any) -> OrchestrationState:
    instance = await client.start_new(name, None, json.dumps(payload))
    return await client.wait_for_completion(instance, timeout=TIMEOUT)


async def _history(hub: TaskHub, instance_id: str) -> list[HistoryEvent]:
    return (await hub.tracking.load_history(instance_id)).events


def _output(state: OrchestrationState) -> Any:
    assert state.runtime_status is OrchestrationStatus.Completed, state.output
    return json.loads(state.output or "null")


async def test_get_sends_the_headers_and_returns_the_response(
    client: TaskHubClient, hub: TaskHub, target: Target, base_url: str
) -> None:
    state = await _run(client, "http_get", {"uri": f"{base_url}/echo", "headers": {"X-Test": "abc"}})
    response = _output(state)
    assert response["statusCode"] == 200
    headers = {key.lower(): value for key, value in response["headers"].items()}
    assert headers["x-reply"] == "echo"
    assert headers["x-multi"] == ["one", "two"], "a repeated header is an array"
    # As in Durable Functions: the response headers .NET keeps on the response, not content headers.
    assert "content-type" not in headers and "content-length" not in headers
    echoed = json.loads(response["content"])
    assert echoed["method"] == "GET"
    assert echoed["headers"]["x-test"] == "abc"
    assert echoed["headers"]["user-agent"]
    assert [s.method for s in target.seen] == ["GET"]
    events = await _history(hub, state.instance_id)
    scheduled = [e for e in events if isinstance(e, TaskScheduledEvent)]
    assert [(e.event_id, e.name) for e in scheduled] == [(0, HTTP_ACTIVITY_NAME)]


async def test_post_sends_the_content(client: TaskHubClient, target: Target, base_url: str) -> None:
    as_json = await _run(
        client,
        "http_post",
        {"uri": f"{base_url}/echo", "content": {"a": 1}, "headers": {"Content-Type": "application/json"}},
    )
    echoed = json.loads(_output(as_json)["content"])
    assert echoed["method"] == "POST"
    assert json.loads(echoed["body"]) == {"a": 1}
    assert echoed["headers"]["content-type"] == "application/json"
    as_text = await _run(client, "http_post", {"uri": f"{base_url}/echo", "content": "plain"})
    echoed = json.loads(_output(as_text)["content"])
    assert echoed["body"] == '"plain"', "df serializes content to JSON unless is_raw_str"
    assert echoed["headers"]["content-type"].startswith("text/plain"), "the extension's default"


async def test_202_is_polled_with_durable_timers(
    client: TaskHubClient, hub: TaskHub, target: Target, base_url: str
) -> None:
    state = await _run(client, "http_then_activity", f"{base_url}/jobs?polls=2")
    assert _output(state) == {"status": 200, "content": "done", "doubled": 42}
    assert [(s.method, s.path.split("/")[1]) for s in target.seen] == [
        ("POST", "jobs"),
        ("GET", "jobs"),
        ("GET", "jobs"),
    ]
    gaps = [b.at - a.at for a, b in zip(target.seen, target.seen[1:], strict=False)]
    assert all(gap >= 0.9 for gap in gaps), f"Retry-After: 1 honoured between polls: {gaps}"
    events = await _history(hub, state.instance_id)
    steps = [
        (e.event_type.name, e.event_id, getattr(e, "name", None))
        for e in events
        if e.event_type in (EventType.TaskScheduled, EventType.TimerCreated)
    ]
    # The extension's CallHttpAsync loop: request, then a timer and a poll per 202; then the activity.
    assert steps == [
        ("TaskScheduled", 0, HTTP_ACTIVITY_NAME),
        ("TimerCreated", 1, None),
        ("TaskScheduled", 2, HTTP_ACTIVITY_NAME),
        ("TimerCreated", 3, None),
        ("TaskScheduled", 4, HTTP_ACTIVITY_NAME),
        ("TaskScheduled", 5, "double"),
    ]
    timers = [e for e in events if isinstance(e, TimerCreatedEvent)]
    assert all(t.fire_at - t.timestamp == timedelta(seconds=1) for t in timers)


async def test_202_without_retry_after_waits_the_configured_interval(
    client: TaskHubClient, hub: TaskHub, base_url: str
) -> None:
    state = await _run(client, "http_then_activity", f"{base_url}/jobs?polls=1&wait=no")
    assert _output(state)["status"] == 200
    timers = [e for e in await _history(hub, state.instance_id) if isinstance(e, TimerCreatedEvent)]
    assert [t.fire_at - t.timestamp for t in timers] == [timedelta(milliseconds=300)]


async def test_polling_survives_a_worker_restart(
    hub: TaskHub, http_registry: FunctionRegistry, target: Target, base_url: str
) -> None:
    client = TaskHubClient(hub)
    instance = await client.start_new("http_then_activity", None, json.dumps(f"{base_url}/jobs?polls=1"))
    first = engine_for(hub, http_registry, "worker-a")
    await first.start()
    try:

        async def timer_created() -> bool:
            return any(e.event_type is EventType.TimerCreated for e in await _history(hub, instance))

        await poll(timer_created, "the poll timer", TIMEOUT)
    finally:
        await first.stop(graceful=False)  # as if the process died
    async with engine_for(hub, http_registry, "worker-b"):
        state = await client.wait_for_completion(instance, timeout=TIMEOUT)
    assert _output(state) == {"status": 200, "content": "done", "doubled": 42}
    assert [s.method for s in target.seen] == ["POST", "GET"], "the first request is not sent again"


async def test_connection_refused_fails_the_call(client: TaskHubClient) -> None:
    port = free_port()
    state = await _run(client, "http_catch", f"http://127.0.0.1:{port}/nothing")
    assert _output(state).startswith(f"caught: Connection refused (127.0.0.1:{port})")


async def test_an_unknown_host_fails_the_call(client: TaskHubClient) -> None:
    state = await _run(client, "http_catch", "http://nowhere.invalid/x")
    reason = _output(state).split(" \n ")[0]
    # .NET's HttpRequestException text: the resolver's message, then the host and port.
    assert re.fullmatch(r"caught: \S.* \(nowhere\.invalid:80\)", reason), reason


async def test_token_source_is_refused(client: TaskHubClient, target: Target, base_url: str) -> None:
    state = await _run(client, "http_with_identity", f"{base_url}/echo")
    text = _output(state)
    assert text.startswith("caught: call_http with a token_source (AzureManagedIdentity) is not supported")
    assert target.seen == [], "nothing is sent without the token"


def test_a_call_without_uri_fails_the_orchestration(http_registry: FunctionRegistry) -> None:
    function = http_registry.get("http_get", FunctionKind.ORCHESTRATOR)
    assert function is not None
    now = datetime.now(UTC)
    started = ExecutionStartedEvent(
        timestamp=now,
        orchestration_instance=OrchestrationInstance("no-uri", "e1"),
        name="http_get",
        version="",
        input=json.dumps({"uri": None}),
    )
    events = [OrchestratorStartedEvent(timestamp=now), started]
    run = run_orchestrator(function.callable, "http_get", "no-uri", events, new_events_start=0)
    assert run.failure is not None
    assert "Orchestrator function 'http_get' failed:" in run.failure.error_message
    assert "needs a method and a uri" in run.failure.error_message
    assert run.allocations == {}


def test_the_extension_request_form_is_read() -> None:
    """The HTTP activity input as the extension writes it (request object in an array, TimeSpan
    timeout, repeated headers as arrays), and as a JSON string in the array (older extensions)."""
    written = {
        "method": "put",
        "uri": "http://example.test/x",
        "headers": {"Accept": ["a", "b"], "X-One": "1"},
        "content": "body",
        "tokenSource": None,
        "asynchronousPatternEnabled": False,
        "timeout": "00:00:05",
    }
    request = DurableHttpRequest.from_task_input(json.dumps([written]))
    assert request == DurableHttpRequest(
        method="PUT",
        uri="http://example.test/x",
        headers={"Accept": ["a", "b"], "X-One": "1"},
        content="body",
        asynchronous_pattern_enabled=False,
        timeout=timedelta(seconds=5),
    )
    assert DurableHttpRequest.from_task_input(json.dumps([json.dumps(written)])) == request
    assert DurableHttpRequest.from_task_input(request.to_task_input()) == request


async def test_a_request_past_its_timeout_fails(target: Target, base_url: str) -> None:
    request = DurableHttpRequest("GET", f"{base_url}/slow", timeout=timedelta(milliseconds=200))
    event = TaskScheduledEvent(event_id=7, name=HTTP_ACTIVITY_NAME, input=request.to_task_input())
    activity = HttpActivity("Tests")
    try:
        result = await activity.run(event, "timeout-1")
    finally:
        await activity.close()
    assert result.event_type is EventType.TaskFailed
    assert getattr(result, "task_scheduled_id", None) == 7
    assert getattr(result, "reason", "").startswith("The request was canceled due to the configured")
    assert [s.path for s in target.seen] == ["/slow"]


async def test_multipart_content_is_refused(target: Target, base_url: str) -> None:
    headers = {"Content-Type": "multipart/form-data; boundary=x"}
    request = DurableHttpRequest("POST", f"{base_url}/echo", headers=dict(headers), content="--x--")
    event = TaskScheduledEvent(event_id=1, name=HTTP_ACTIVITY_NAME, input=request.to_task_input())
    result = await HttpActivity("Tests").run(event, "multipart-1")
    assert getattr(result, "reason", None) == "Multipart content is not supported with CallHttpAsync."
    assert target.seen == []


def _host_json(tmp_path: Path, http_settings: object) -> Path:
    host = {"version": "2.0", "extensions": {"durableTask": {"httpSettings": http_settings}}}
    (tmp_path / "host.json").write_text(json.dumps(host))
    return tmp_path


def test_http_settings_are_read(tmp_path: Path) -> None:
    app = _host_json(tmp_path, {"defaultAsyncRequestSleepTimeMilliseconds": 5000})
    config = load_config(app, environ={"AzureWebJobsStorage": "UseDevelopmentStorage=true"})
    assert config.durable_task.http_settings.default_async_request_sleep_time == timedelta(seconds=5)
    default = load_config(_host_json(tmp_path, {}), environ={})
    assert default.durable_task.http_settings.default_async_request_sleep_time_milliseconds == 30000
    section = "AzureFunctionsJobHost__extensions__durableTask__httpSettings"
    override = f"{section}__defaultAsyncRequestSleepTimeMilliseconds"
    overridden = load_config(app, environ={override: "250"})
    assert overridden.durable_task.http_settings.default_async_request_sleep_time_milliseconds == 250


@pytest.mark.parametrize(
    ("settings", "environ", "message"),
    [
        ({"userAgent": "me"}, {}, "Unsupported key extensions.durableTask.httpSettings.userAgent"),
        ({"defaultAsyncRequestSleepTimeMilliseconds": -1}, {}, "must be between 0 and"),
        ({"defaultAsyncRequestSleepTimeMilliseconds": "soon"}, {}, "expected an integer"),
        (
            {},
            {"AzureFunctionsJobHost__extensions__durableTask__httpSettings__proxy": "x"},
            "Unsupported key extensions.durableTask.httpSettings.proxy",
        ),
    ],
)
def test_bad_http_settings_are_refused(
    tmp_path: Path, settings: dict[str, Any], environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(_host_json(tmp_path, settings), environ=environ)


def test_the_docs_pattern_through_start(tmp_path: Path, azurite_connection_string: str) -> None:
    """``start`` with an orchestrator that calls the app's own starter: 202 with the status URL and
    ``Retry-After: 10``, polled through the management API until the started orchestration is done."""
    sample = Path(__file__).parent / "apps" / "durable_http_sample.py"
    app = sample_app_dir(tmp_path, "Http" + uuid.uuid4().hex[:8], extra_blueprints=[sample])
    with (
        running_host(app, azurite_connection_string, tmp_path / "host.log") as host,
        httpx.Client(base_url=host.base_url, timeout=TIMEOUT) as http,
    ):
        starter = f"{host.base_url}/api/orchestrators/hello_sequence"
        started = http.post("/api/orchestrators/call_starter", json=starter)
        assert started.status_code == 202
        status_url = started.json()["statusQueryGetUri"]
        deadline = time.monotonic() + TIMEOUT
        while (status := http.get(status_url).json())["runtimeStatus"] in ("Pending", "Running"):
            assert time.monotonic() < deadline, f"call_starter did not finish: {status}"
            time.sleep(0.2)
    assert status["runtimeStatus"] == "Completed", status
    assert status["output"]["statusCode"] == 200
    called = json.loads(status["output"]["content"])
    assert called["name"] == "hello_sequence"
    assert called["output"] == ["Hello Tokyo!", "Hello Seattle!", "Hello London!"]
