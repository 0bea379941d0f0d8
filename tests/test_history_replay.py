"""Replay tests: histories recorded on Azurite, exported, replayed against the same and changed code."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from durable_ext.app_loader import load_app
from durable_ext.cli import main
from durable_ext.client import TaskHubClient
from durable_ext.errors import DurableExtError, MessageFormatError, ReplayMismatchError
from durable_ext.history import EventType, OrchestrationStatus
from durable_ext.history_file import FORMAT, export_history
from durable_ext.storage.account import StorageAccount
from durable_ext.storage.taskhub import TaskHub
from durable_ext.testing import replay
from tests.engine_support import engine_for, poll

REPO_DIR = Path(__file__).resolve().parents[1]
REPLAY_APP = Path(__file__).parent / "apps" / "replay_app"
CONNECTION_SETTING = "AzureWebJobsStorage"


@dataclass(frozen=True)
class Recorded:
    """Orchestrations run once on a task hub of the session's Azurite, and their exported histories."""

    hub: str
    connection_string: str
    instances: dict[str, str]
    """Instance ID by scenario."""
    files: dict[str, Path]
    """History file (exported with the Python function) by scenario."""


SCENARIOS = {
    "greetings": ("greetings", None),
    "countdown": ("countdown", "2"),
    "family": ("family", None),
    "persistent": ("persistent", None),
    "delegating": ("delegating", None),
    "big": ("big", None),
}
"""Scenarios that complete: orchestrator and input by name."""


async def _record(connection_string: str, hub_name: str, directory: Path) -> Recorded:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        registry = load_app(REPLAY_APP)
    account = StorageAccount.from_connection_string(connection_string)
    instances: dict[str, str] = {}
    files: dict[str, Path] = {}
    async with TaskHub(account, hub_name) as hub:
        await hub.create()
        async with engine_for(
            hub, registry, "recorder", store_inputs_in_orchestration_history=True
        ) as engine:
            client = TaskHubClient(hub, handoff=engine)
            for scenario, (name, payload) in SCENARIOS.items():
                instances[scenario] = await client.start_new(name, input=payload)
            instances["waiter"] = await client.start_new("waiter")
            for scenario, instance_id in instances.items():
                if scenario != "waiter":
                    state = await client.wait_for_completion(instance_id, timeout=60)
                    assert state.runtime_status is OrchestrationStatus.Completed, (scenario, state.output)

            async def waits_for_the_event() -> bool:
                load = await hub.tracking.load_history(instances["waiter"])
                return any(e.event_type is EventType.TaskCompleted for e in load.events)

            await poll(waits_for_the_event, "the waiter to take its activity's result")
        instances["child"] = f"{instances['family']}:0"
        for scenario, instance_id in instances.items():
            history = await export_history(hub, instance_id)
            files[scenario] = directory / f"{scenario}.json"
            files[scenario].write_text(history.dumps(), encoding="utf-8")
    return Recorded(hub_name, connection_string, instances, files)


async def _delete_hub(connection_string: str, hub_name: str) -> None:
    async with TaskHub(StorageAccount.from_connection_string(connection_string), hub_name) as hub:
        await hub.delete()


@pytest.fixture(scope="module")
def recorded(azurite_connection_string: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    """The scenarios, run and exported once for the module; the hub is deleted afterwards."""
    hub_name = "Replay" + uuid.uuid4().hex[:10]
    directory = tmp_path_factory.mktemp("histories")
    try:
        yield asyncio.run(_record(azurite_connection_string, hub_name, directory))
    finally:
        asyncio.run(_delete_hub(azurite_connection_string, hub_name))


def app_copy(tmp_path: Path, *edits: tuple[str, str], hub: str | None = None) -> Path:
    """A copy of the replay app with each ``(old, new)`` text replaced once (and another hub name)."""
    directory = tmp_path / ("app" + uuid.uuid4().hex[:6])
    shutil.copytree(REPLAY_APP, directory)
    script = directory / "function_app.py"
    source = script.read_text()
    for old, new in edits:
        assert source.count(old) == 1, old
        source = source.replace(old, new)
    script.write_text(source)
    if hub is not None:
        host = json.loads((directory / "host.json").read_text())
        host["extensions"]["durableTask"]["hubName"] = hub
        (directory / "host.json").write_text(json.dumps(host))
    return directory


def line_of(app_dir: Path, text: str) -> str:
    """``function_app.py:N`` of the one line holding ``text``."""
    lines = (app_dir / "function_app.py").read_text().splitlines()
    (number,) = [i for i, line in enumerate(lines, start=1) if text in line]
    return f"function_app.py:{number}"


def cli_env(connection_string: str) -> dict[str, str]:
    python_path = os.pathsep.join(p for p in (str(REPO_DIR), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, CONNECTION_SETTING: connection_string, "PYTHONPATH": python_path}


def run_module(cwd: Path, connection_string: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "durable_ext", *argv],
        cwd=cwd,
        env=cli_env(connection_string),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def mismatch(app_dir: Path, file: Path) -> ReplayMismatchError:
    with pytest.raises(ReplayMismatchError) as caught:
        replay(app_dir, file)
    return caught.value


# --- export ---------------------------------------------------------------------------------------------


def test_exported_file_is_the_documented_envelope(recorded: Recorded) -> None:
    data = json.loads(recorded.files["greetings"].read_text())
    assert data["format"] == FORMAT
    assert data["hub"] == recorded.hub
    assert data["instanceId"] == recorded.instances["greetings"]
    assert data["name"] == "greetings"
    assert data["executionId"]
    first = data["events"][0]
    assert list(first)[:2] == ["$type", "EventType"]
    kinds = [e["$type"].rsplit(".", 1)[1] for e in data["events"]]
    assert kinds.count("TaskScheduledEvent") == 3
    assert kinds.count("TimerCreatedEvent") == 1
    assert kinds[-2:] == ["ExecutionCompletedEvent", "OrchestratorCompletedEvent"]
    scheduled = [e for e in data["events"] if e["EventType"] == 4]
    assert [(e["Name"], e["Input"]) for e in scheduled] == [
        ("say_hello", '"Tokyo"'),
        ("say_hello", '"Seattle"'),
        ("say_hello", '"London"'),
    ]


async def test_large_payloads_are_read_back_from_their_blobs(recorded: Recorded) -> None:
    instance_id = recorded.instances["big"]
    account = StorageAccount.from_connection_string(recorded.connection_string)
    history_table = f"{recorded.hub}History"
    async with account.table_service() as tables:
        query = f"PartitionKey eq '{instance_id}' and InputBlobName ne ''"
        rows = [row async for row in tables.get_table_client(history_table).query_entities(query)]
    assert rows, "the test needs an input large enough to be offloaded"
    events = json.loads(recorded.files["big"].read_text())["events"]
    scheduled = next(e for e in events if e["EventType"] == 4)
    completed = next(e for e in events if e["EventType"] == 5)
    assert json.loads(scheduled["Input"]) == "B" * 40_000
    assert json.loads(completed["Result"]) == f"Hello {'B' * 40_000}!"


def test_cli_export_reads_the_hub_of_the_app_settings(recorded: Recorded, tmp_path: Path) -> None:
    app_dir = app_copy(tmp_path, hub=recorded.hub)
    out = tmp_path / "exported.json"
    instance_id = recorded.instances["greetings"]
    result = run_module(app_dir, recorded.connection_string, "history", "export", instance_id, "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert json.loads(out.read_text()) == json.loads(recorded.files["greetings"].read_text())
    replay(REPLAY_APP, out)


def test_cli_export_with_hub_and_connection_flags_to_stdout(
    recorded: Recorded, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(CONNECTION_SETTING, raising=False)
    monkeypatch.setenv("OTHER_STORAGE", recorded.connection_string)
    instance_id = recorded.instances["countdown"]
    app_dir = str(app_copy(tmp_path))
    flags = ["--app-dir", app_dir, "--task-hub", recorded.hub]
    for connection in (recorded.connection_string, "OTHER_STORAGE"):
        capsys.readouterr()
        code = main(["history", "export", instance_id, *flags, "--connection", connection])
        out, err = capsys.readouterr()
        assert code == 0, err
        assert json.loads(out) == json.loads(recorded.files["countdown"].read_text())


def test_cli_export_of_an_unknown_instance(
    recorded: Recorded, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = ["--app-dir", str(app_copy(tmp_path)), "--task-hub", recorded.hub]
    code = main(["history", "export", "no-such-instance", *flags, "--connection", recorded.connection_string])
    assert code == 1
    assert "has no history for instance 'no-such-instance'" in capsys.readouterr().err


def _replay_app_calls() -> list[str]:
    """The activity calls the replay app recorded since it was last imported. Its module is found by
    file: the loader imports a script under another name when another app's function_app is loaded."""
    script = (REPLAY_APP / "function_app.py").resolve()
    module = next(
        m
        for m in list(sys.modules.values())
        if getattr(m, "__file__", None) and Path(m.__file__).resolve() == script
    )
    calls: list[str] = module.CALLS
    return calls


# --- clean replays --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scenario", ["greetings", "countdown", "family", "child", "persistent", "waiter", "delegating", "big"]
)
def test_unchanged_code_replays_cleanly_without_running_activities(recorded: Recorded, scenario: str) -> None:
    history = replay(REPLAY_APP, recorded.files[scenario])
    assert history.instance_id == recorded.instances[scenario]
    assert _replay_app_calls() == []


def test_countdown_history_is_the_last_generation(recorded: Recorded) -> None:
    data = json.loads(recorded.files["countdown"].read_text())
    started = next(e for e in data["events"] if e["EventType"] == 0)
    assert started["Input"] == "0"
    child = json.loads(recorded.files["child"].read_text())
    parent = next(e for e in child["events"] if e["EventType"] == 0)["ParentInstance"]
    assert parent["OrchestrationInstance"]["InstanceId"] == recorded.instances["family"]


def test_cli_replay_without_storage(recorded: Recorded, tmp_path: Path) -> None:
    files = [str(file) for file in recorded.files.values()]
    # Nothing answers there: a replay that touched storage would fail.
    unreachable = (
        "DefaultEndpointsProtocol=http;AccountName=x;AccountKey=eA==;TableEndpoint=http://127.0.0.1:9"
    )
    result = run_module(REPLAY_APP, unreachable, "replay", *files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(files)} of {len(files)} histories replay cleanly." in result.stdout


# --- changed code ---------------------------------------------------------------------------------------


def test_renamed_activity(recorded: Recorded, tmp_path: Path) -> None:
    app_dir = app_copy(tmp_path, ('"say_hello", "Seattle"', '"say_goodbye", "Seattle"'))
    error = mismatch(app_dir, recorded.files["greetings"])
    where = line_of(app_dir, '"say_goodbye", "Seattle"')
    assert str(error) == (
        f"orchestration 'greetings' (instance {recorded.instances['greetings']!r}): history event "
        f"#{error.event_index} recorded TaskScheduled 'say_hello' (input \"Seattle\"), the code now "
        f"schedules TaskScheduled 'say_goodbye' (input \"Seattle\") at {where}"
    )
    assert error.source == where
    events = json.loads(recorded.files["greetings"].read_text())["events"]
    assert events[error.event_index]["Name"] == "say_hello"
    assert events[error.event_index]["Input"] == '"Seattle"'


def test_changed_input(recorded: Recorded, tmp_path: Path) -> None:
    app_dir = app_copy(tmp_path, ('"say_hello", "London"', '"say_hello", "Lisbon"'))
    error = mismatch(app_dir, recorded.files["greetings"])
    assert error.recorded == "TaskScheduled 'say_hello' (input \"London\")"
    assert error.actual == "TaskScheduled 'say_hello' (input \"Lisbon\")"
    assert error.source == line_of(app_dir, "Lisbon")


def test_extra_timer(recorded: Recorded, tmp_path: Path) -> None:
    extra = "    yield context.create_timer(context.current_utc_datetime)  # extra\n"
    anchor = '    results.append((yield context.call_activity("say_hello", "Seattle")))\n'
    app_dir = app_copy(tmp_path, (anchor, extra + anchor))
    error = mismatch(app_dir, recorded.files["greetings"])
    assert error.recorded == "TaskScheduled 'say_hello' (input \"Seattle\")"
    assert error.actual.startswith("TimerCreated (fire at ")
    assert error.source == line_of(app_dir, "# extra")
    assert "the code now schedules TimerCreated (fire at " in str(error)


def test_removed_step(recorded: Recorded, tmp_path: Path) -> None:
    app_dir = app_copy(
        tmp_path, ('    results.append((yield context.call_activity("say_hello", "London")))\n', "")
    )
    error = mismatch(app_dir, recorded.files["greetings"])
    assert error.recorded == "TaskScheduled 'say_hello' (input \"London\")"
    assert error.actual == ('ExecutionCompleted Completed (output ["Hello Tokyo!", "Hello Seattle!"])')
    assert "the code now ends with ExecutionCompleted Completed" in str(error)


def test_changed_timer(recorded: Recorded, tmp_path: Path) -> None:
    app_dir = app_copy(tmp_path, ("timedelta(milliseconds=50)", "timedelta(minutes=5)"))
    error = mismatch(app_dir, recorded.files["greetings"])
    assert error.recorded.startswith("TimerCreated (fire at ")
    assert error.actual.startswith("TimerCreated (fire at ")
    assert error.recorded != error.actual
    assert error.source == line_of(app_dir, "timedelta(minutes=5)")


def test_continue_as_new_where_history_completed(recorded: Recorded, tmp_path: Path) -> None:
    app_dir = app_copy(tmp_path, ("if remaining > 0:", "if remaining > -1:"))
    error = mismatch(app_dir, recorded.files["countdown"])
    assert error.recorded == 'ExecutionCompleted Completed (output "liftoff")'
    assert error.actual == "ContinueAsNew (input -1)"


def test_changed_retry_interval(recorded: Recorded, tmp_path: Path) -> None:
    app_dir = app_copy(
        tmp_path, ("first_retry_interval_in_milliseconds=50", "first_retry_interval_in_milliseconds=9000")
    )
    error = mismatch(app_dir, recorded.files["persistent"])
    assert error.recorded.startswith("TimerCreated (fire at ")
    assert error.actual.startswith("TimerCreated (fire at ")
    assert error.source == line_of(app_dir, "call_activity_with_retry")


def test_not_waiting_any_more(recorded: Recorded, tmp_path: Path) -> None:
    app_dir = app_copy(tmp_path, ('yield context.wait_for_external_event("go")', '"no wait"'))
    error = mismatch(app_dir, recorded.files["waiter"])
    events = json.loads(recorded.files["waiter"].read_text())["events"]
    assert str(error).endswith(
        f"history ends at event #{len(events) - 1} with the orchestration still running, "
        'the code now ends with ExecutionCompleted Completed (output "no wait")'
    )


def test_source_line_inside_a_generator_delegated_to(recorded: Recorded, tmp_path: Path) -> None:
    app_dir = app_copy(tmp_path, ('_greet(context, "Nairobi")', '_greet(context, "Lagos")'))
    error = mismatch(app_dir, recorded.files["delegating"])
    assert error.actual == "TaskScheduled 'say_hello' (input \"Lagos\")"
    assert error.source == line_of(app_dir, 'return (yield context.call_activity("say_hello", city))')


def test_changed_sub_orchestration_input(recorded: Recorded, tmp_path: Path) -> None:
    app_dir = app_copy(tmp_path, ('"child_greeting", "Paris"', '"child_greeting", "Rome"'))
    error = mismatch(app_dir, recorded.files["family"])
    assert (
        error.recorded
        == "SubOrchestrationInstanceCreated 'child_greeting' to instance "
        + repr(recorded.instances["child"])
        + ' (input "Paris")'
    )
    assert error.actual == "SubOrchestrationInstanceCreated 'child_greeting' (input \"Rome\")"
    assert error.source == line_of(app_dir, '"child_greeting", "Rome"')


def test_changed_entity_operation(recorded: Recorded, tmp_path: Path) -> None:
    app_dir = app_copy(tmp_path, ('"greetings"), "add", 1)', '"greetings"), "add", 2)'))
    error = mismatch(app_dir, recorded.files["family"])
    assert error.recorded == "EventSent 'add' to instance '@tally@greetings' (input 1)"
    assert error.actual == "EventSent 'add' to instance '@tally@greetings' (input 2)"


def test_removed_orchestrator(recorded: Recorded, tmp_path: Path) -> None:
    app_dir = app_copy(tmp_path, ("def child_greeting(", "def kid_greeting("))
    error = mismatch(app_dir, recorded.files["child"])
    assert "child_greeting" in str(error)


def test_cli_replay_reports_each_file_and_exits_1(recorded: Recorded, tmp_path: Path) -> None:
    app_dir = app_copy(tmp_path, ('"say_hello", "Seattle"', '"say_goodbye", "Seattle"'))
    files = [str(recorded.files["greetings"]), str(recorded.files["countdown"])]
    result = run_module(app_dir, recorded.connection_string, "replay", *files)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"FAIL {files[0]}: orchestration 'greetings'" in result.stdout
    assert "recorded TaskScheduled 'say_hello' (input \"Seattle\")" in result.stdout
    where = line_of(app_dir, '"say_goodbye", "Seattle"')
    assert f"at {where}" in result.stdout
    assert f"ok   {files[1]}: 'countdown'" in result.stdout
    assert "1 of 2 histories replay cleanly." in result.stdout


# --- bad files ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON"),
        ('{"format": "something-else/2", "events": []}', "is not a durable_ext history"),
        ("[1, 2]", "is not a durable_ext history"),
        (json.dumps({"format": FORMAT, "instanceId": "i", "events": {}}), "'events' must be a list"),
        (json.dumps({"format": FORMAT, "events": []}), "'instanceId' must be a non-empty string"),
        (
            json.dumps({"format": FORMAT, "instanceId": "i", "events": [{"EventType": 99}]}),
            "event #0: unknown or unsupported history EventType 99",
        ),
        (
            json.dumps({"format": FORMAT, "instanceId": "i", "events": [{"EventType": 12}]}),
            "has no ExecutionStarted event",
        ),
    ],
)
def test_bad_files_give_a_clear_error(tmp_path: Path, content: str, message: str) -> None:
    file = tmp_path / "bad.json"
    file.write_text(content)
    with pytest.raises(DurableExtError, match="history file") as caught:
        replay(REPLAY_APP, file)
    assert message in str(caught.value)
    assert str(file) in str(caught.value)


def test_cli_replay_of_a_missing_and_a_corrupt_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text('{"format": "durable-ext-history/1", "instanceId": "i", "events": [{"EventType": 0}')
    code = main(["replay", "--app-dir", str(REPLAY_APP), str(tmp_path / "missing.json"), str(corrupt)])
    out, err = capsys.readouterr()
    assert code == 1
    assert f"error: cannot read history file {tmp_path / 'missing.json'}" in err
    assert f"error: history file {corrupt} is not valid JSON" in err
    assert "0 of 2 histories replay cleanly." in out


def test_wrong_format_is_a_message_format_error(tmp_path: Path) -> None:
    file = tmp_path / "other.json"
    file.write_text('{"format": "durable-ext-history/99"}')
    with pytest.raises(MessageFormatError, match="found 'durable-ext-history/99'"):
        replay(REPLAY_APP, file)


# --- v1 apps --------------------------------------------------------------------------------------------

V1_APP = Path(__file__).parent / "apps" / "v1_app"


async def test_v1_app_history_replays_and_mismatches_name_the_function_folder(
    hub: TaskHub, tmp_path: Path
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        registry = load_app(V1_APP)
    async with engine_for(hub, registry, "v1-recorder") as engine:
        client = TaskHubClient(hub, handoff=engine)
        instance_id = await client.start_new("E1_HelloSequence")
        state = await client.wait_for_completion(instance_id, timeout=60)
    assert state.runtime_status is OrchestrationStatus.Completed
    file = tmp_path / "v1.json"
    file.write_text((await export_history(hub, instance_id)).dumps())
    assert replay(V1_APP, file).name == "E1_HelloSequence"

    changed = tmp_path / "v1_changed"
    shutil.copytree(V1_APP, changed)
    script = changed / "E1_HelloSequence" / "__init__.py"
    script.write_text(script.read_text().replace('"E1_SayHello", "London"', '"E1_SayGoodbye", "London"'))
    error = mismatch(changed, file)
    # Without storeInputsInOrchestrationHistory history has no inputs: only the name is compared.
    assert error.recorded == "TaskScheduled 'E1_SayHello'"
    assert error.actual == "TaskScheduled 'E1_SayGoodbye' (input \"London\")"
    number = (
        script.read_text()
        .splitlines()
        .index('    result3 = yield context.call_activity("E1_SayGoodbye", "London")')
    )
    assert error.source == f"E1_HelloSequence/__init__.py:{number + 1}"


def test_events_in_the_history_tables_naming_convert(recorded: Recorded, tmp_path: Path) -> None:
    """A history saved by another tool (EventType names as the History table has them, no $type)
    replays once wrapped in the envelope."""
    data = json.loads(recorded.files["family"].read_text())
    for event in data["events"]:
        del event["$type"]
        event["EventType"] = EventType(event["EventType"]).name
    converted = {"format": FORMAT, "instanceId": data["instanceId"], "events": data["events"]}
    file = tmp_path / "converted.json"
    file.write_text(json.dumps(converted))
    assert replay(REPLAY_APP, file).name == "family"


def test_cli_replay_shows_the_apps_traceback_when_it_fails_to_load(
    recorded: Recorded, tmp_path: Path
) -> None:
    app_dir = app_copy(tmp_path, ("CALLS: list[str] = []", "CALLS: list[str] = 1 / 0"))
    result = run_module(app_dir, recorded.connection_string, "replay", str(recorded.files["greetings"]))
    assert result.returncode == 1
    assert "ZeroDivisionError" in result.stderr
    assert "function_app.py" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("error: ")
