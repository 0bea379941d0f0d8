"""The ``start`` console against real Azurite: Executing/Executed pairs, failures with the app's
traceback, the app's own log lines, host.json's logging.logLevel, and no duplicates with --verbose."""

from __future__ import annotations

import json
import re
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.host_support import RunningHost, running_host, start_process

APP = textwrap.dedent(
    """
    import logging

    import azure.durable_functions as df
    import azure.functions as func

    app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)


    @app.route(route="start/{name}")
    @app.durable_client_input(client_name="client")
    async def starter(req: func.HttpRequest, client) -> func.HttpResponse:
        logging.info("starter was called for %s", req.route_params["name"])
        instance_id = await client.start_new(req.route_params["name"])
        return client.create_check_status_response(req, instance_id)


    @app.orchestration_trigger(context_name="context")
    def chain(context: df.DurableOrchestrationContext):
        greeting = yield context.call_activity("greet", "Tokyo")
        return greeting


    @app.orchestration_trigger(context_name="context")
    def failing(context: df.DurableOrchestrationContext):
        try:
            yield context.call_activity("explode", None)
        except Exception:
            return "caught"


    @app.orchestration_trigger(context_name="context")
    def crash(context: df.DurableOrchestrationContext):
        if not context.is_replaying:
            raise RuntimeError("the orchestrator gave up")
        yield context.call_activity("greet", "never")


    @app.entity_trigger(context_name="context")
    def counter(context: df.DurableEntityContext) -> None:
        logging.info("counter got %s", context.operation_name)
        context.set_state(context.get_state(lambda: 0) + context.get_input())


    @app.activity_trigger(input_name="city")
    def greet(city: str) -> str:
        logging.info("greeting %s from the activity", city)
        return f"Hello {city}!"


    def detonate() -> None:
        raise ValueError("the activity blew up")


    @app.activity_trigger(input_name="unused")
    def explode(unused: None) -> str:
        detonate()
        return "never"
    """
)

_LINE = re.compile(r"^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] (.*)$")
_GUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def _app(tmp_path: Path, log_levels: dict[str, str] | None = None) -> Path:
    app = tmp_path / "app"
    app.mkdir()
    (app / "function_app.py").write_text(APP)
    host: dict[str, object] = {
        "version": "2.0",
        "extensions": {
            "durableTask": {"hubName": "C" + uuid.uuid4().hex[:12], "storageProvider": {"partitionCount": 1}}
        },
    }
    if log_levels is not None:
        host["logging"] = {"logLevel": log_levels}
    (app / "host.json").write_text(json.dumps(host))
    return app


def _run(host: RunningHost, orchestrator: str) -> tuple[object, str]:
    """Start ``orchestrator`` through the HTTP starter and wait until it ended; its output and the
    console once the episode that ended it reported its Executed line."""
    with httpx.Client(base_url=host.base_url, timeout=30) as http:
        started = http.post(f"/api/start/{orchestrator}")
        assert started.status_code == 202, started.text
        status_url = started.json()["statusQueryGetUri"]
        deadline = time.monotonic() + 60
        while (body := http.get(status_url).json())["runtimeStatus"] not in ("Completed", "Failed"):
            assert time.monotonic() < deadline, body
            time.sleep(0.05)
    # The Executed line follows the checkpoint that ended the instance.
    episodes = sum(e["EventType"] == "OrchestratorStarted" for e in _history(host, status_url))
    _wait_for(host, f"Executed 'Functions.{orchestrator}'", episodes)
    return body["output"], host.output()


def _history(host: RunningHost, status_url: str) -> list[dict[str, object]]:
    with httpx.Client(timeout=30) as http:
        events: list[dict[str, object]] = http.get(status_url, params={"showHistory": "true"}).json()[
            "historyEvents"
        ]
    return events


def _wait_for(host: RunningHost, text: str, count: int = 1) -> None:
    deadline = time.monotonic() + 10
    while host.output().count(text) < count:
        assert time.monotonic() < deadline, host.output()
        time.sleep(0.05)


def _messages(output: str) -> list[str]:
    """The console's lines without their timestamps (lines without one are left out)."""
    return [m.group(1) for line in output.splitlines() if (m := _LINE.match(line))]


def _pairs(messages: list[str], function: str) -> list[tuple[str, str]]:
    """(Reason, outcome) of each Executing/Executed pair of ``function``, matched by Id."""
    executing = {
        m.group(2): m.group(1)
        for line in messages
        if (m := re.fullmatch(rf"Executing 'Functions\.{function}' \(Reason='(.*)', Id=({_GUID})\)", line))
    }
    executed = [
        (m.group(2), m.group(1))
        for line in messages
        if (
            m := re.fullmatch(
                rf"Executed 'Functions\.{function}' \((Succeeded|Failed), Id=({_GUID}), Duration=\d+ms\)",
                line,
            )
        )
    ]
    assert {id_ for id_, _ in executed} == set(executing), messages
    return [(executing[id_], outcome) for id_, outcome in executed]


@pytest.fixture
def console(tmp_path: Path, azurite_connection_string: str) -> Iterator[RunningHost]:
    with running_host(_app(tmp_path), azurite_connection_string, tmp_path / "console.log") as host:
        yield host


def test_each_invocation_has_an_executing_and_executed_line(console: RunningHost) -> None:
    output, console_text = _run(console, "chain")
    assert output == "Hello Tokyo!"
    messages = _messages(console_text)
    http_reason = "This function was programmatically called via the host APIs."
    assert _pairs(messages, "starter") == [(http_reason, "Succeeded")]
    # Two episodes: the start, then the activity's result.
    assert _pairs(messages, "chain") == [("(null)", "Succeeded")] * 2
    assert _pairs(messages, "greet") == [("(null)", "Succeeded")]
    # The app's own logging.info, between its function's lines, with no -v.
    assert "starter was called for chain" in messages
    assert "greeting Tokyo from the activity" in messages
    assert messages.index("greeting Tokyo from the activity") > next(
        i for i, m in enumerate(messages) if m.startswith("Executing 'Functions.greet'")
    )


def test_a_failed_activity_shows_the_error_with_the_apps_traceback(console: RunningHost) -> None:
    result, output = _run(console, "failing")
    assert result == "caught"
    messages = _messages(output)
    assert _pairs(messages, "explode") == [("(null)", "Failed")]
    executed = next(i for i, m in enumerate(messages) if m.startswith("Executed 'Functions.explode' (Failed"))
    error = messages[executed + 1 : executed + 7]
    assert error[0] == (
        "System.Private.CoreLib: Exception while executing function: Functions.explode. "
        "System.Private.CoreLib: Result: Failure"
    )
    assert error[1] == "Exception: ValueError: the activity blew up"
    assert re.fullmatch(r'Stack:   File ".*function_app\.py", line \d+, in explode', error[2]), error
    assert error[3].strip() == "detonate()"
    assert re.fullmatch(r'  File ".*function_app\.py", line \d+, in detonate', error[4]), error
    assert error[5].strip() == 'raise ValueError("the activity blew up")'
    assert "durable_ext/" not in output, "only the app's frames belong in the console"
    # The orchestrator caught the failure: its episodes succeeded.
    assert {outcome for _, outcome in _pairs(messages, "failing")} == {"Succeeded"}


def test_log_level_of_a_function_hides_its_lines(tmp_path: Path, azurite_connection_string: str) -> None:
    app = _app(tmp_path, {"Function.greet": "warning", "default": "Information"})
    with running_host(app, azurite_connection_string, tmp_path / "console.log") as host:
        messages = _messages(_run(host, "chain")[1])
    assert "starter was called for chain" in messages
    assert "greeting Tokyo from the activity" not in messages
    assert not any("'Functions.greet'" in m for m in messages)
    assert len(_pairs(messages, "chain")) == 2


def test_an_invalid_log_level_stops_start(tmp_path: Path, azurite_connection_string: str) -> None:
    process = start_process(_app(tmp_path, {"Function": "Verbose"}), azurite_connection_string)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "error: Invalid logging.logLevel.Function in " in output
    assert '"Verbose" is not a log level (use one of Trace, Debug, Information, Warning, Error' in output


def test_verbose_adds_engine_detail_without_duplicates(
    tmp_path: Path, azurite_connection_string: str
) -> None:
    with running_host(
        _app(tmp_path), azurite_connection_string, tmp_path / "console.log", global_args=["-v"]
    ) as host:
        messages = _messages(_run(host, "chain")[1])
    assert any(m.startswith("hub ") and "engine" in m for m in messages), messages
    assert len(_pairs(messages, "starter")) == 1
    invocation_lines = [m for m in messages if m.startswith(("Executing '", "Executed '"))]
    assert len(invocation_lines) == len(set(invocation_lines)) == 8, invocation_lines


def test_a_failed_orchestrator_shows_the_apps_traceback(console: RunningHost) -> None:
    result, output = _run(console, "crash")
    assert result == "Orchestrator function 'crash' failed: the orchestrator gave up"
    messages = _messages(output)
    assert _pairs(messages, "crash") == [("(null)", "Failed")]
    executed = next(i for i, m in enumerate(messages) if m.startswith("Executed 'Functions.crash' (Failed"))
    assert messages[executed + 2] == "Exception: RuntimeError: the orchestrator gave up"
    assert re.fullmatch(r'Stack:   File ".*function_app\.py", line \d+, in crash', messages[executed + 3])
    assert "durable_ext/" not in output
    assert output.count('raise RuntimeError("the orchestrator gave up")') == 1, "one report of the failure"


def test_an_entity_batch_is_one_invocation(console: RunningHost) -> None:
    with httpx.Client(base_url=console.base_url, timeout=30) as http:
        signalled = http.post(
            "/runtime/webhooks/durabletask/entities/counter/k", params={"op": "add"}, json=2
        )
        assert signalled.status_code == 202, signalled.text
    _wait_for(console, "Executed 'Functions.counter'")
    messages = _messages(console.output())
    assert _pairs(messages, "counter") == [("(null)", "Succeeded")]
    assert "counter got add" in messages
