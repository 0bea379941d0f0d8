"""The testing kit: DurableTestHost and the durable_host fixtures, run against the sample app."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import azure.durable_functions as df
import pytest

from durable_ext.history import (
    ExecutionCompletedEvent,
    ExecutionStartedEvent,
    OrchestrationStatus,
    TaskScheduledEvent,
)
from durable_ext.storage.account import StorageAccount
from durable_ext.storage.taskhub import TaskHub
from durable_ext.testing import (
    AsyncHostClient,
    DurableTestHost,
    HostClient,
    default_connection_string,
    shared_azurite,
)
from durable_ext.testing_host import STORAGE_SETTING

pytest_plugins = ["pytester"]

SAMPLE_APP = Path(__file__).resolve().parents[1]
"""The sample app (function_app.py at the repository root), the rootdir durable_host runs by default."""


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll ``condition`` every 50 ms until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_chain_completes_with_its_output_and_history(durable_host: HostClient) -> None:
    instance_id = durable_host.start("hello_sequence", instance_id="chain-1")
    status = durable_host.wait(instance_id)
    assert instance_id == "chain-1"
    assert status.runtime_status is OrchestrationStatus.Completed
    assert status.output == ["Hello Tokyo!", "Hello Seattle!", "Hello London!"]
    kinds = [type(event) for event in status.history]
    assert kinds.count(TaskScheduledEvent) == 3
    assert ExecutionStartedEvent in kinds
    assert ExecutionCompletedEvent in kinds


def test_an_external_event_completes_the_approval_workflow(durable_host: HostClient) -> None:
    instance_id = durable_host.start("approval_workflow", {"timeout_seconds": 600})
    durable_host.raise_event(instance_id, "Approval", True)
    status = durable_host.wait(instance_id)
    assert status.output == "approved"
    assert status.custom_status == "approved"


def test_an_entity_takes_signals_and_reads_back_its_state(durable_host: HostClient) -> None:
    entity = df.EntityId("Counter", "kit")
    assert durable_host.read_entity(entity) is None
    durable_host.signal_entity(entity, "add", 5)
    durable_host.signal_entity("@counter@kit", "add", 2)
    wait_until(lambda: durable_host.read_entity(entity) == 7, "the counter to reach 7")


def test_a_mocked_activity_changes_the_output(durable_host: HostClient) -> None:
    seen: list[str] = []

    def greet(city: str) -> str:
        seen.append(city)
        return f"Hi {city}"

    durable_host.mock_activity("say_hello", greet)
    assert durable_host.wait(durable_host.start("hello_sequence")).output == [
        "Hi Tokyo",
        "Hi Seattle",
        "Hi London",
    ]
    assert seen == ["Tokyo", "Seattle", "London"]
    durable_host.mock_activity("SAY_HELLO", "fixed")  # a value instead of a function; names ignore case
    assert durable_host.wait(durable_host.start("hello_sequence")).output == ["fixed"] * 3


def test_async_activities_and_async_mocks_mix_either_way(durable_host: HostClient) -> None:
    async def greet(city: str) -> str:
        return f"Ahoy {city}"

    durable_host.mock_activity("say_hello", greet)  # a sync activity, an async mock
    assert durable_host.wait(durable_host.start("hello_sequence")).output[0] == "Ahoy Tokyo"
    durable_host.mock_activity("check_status", lambda remaining: f"{remaining} left")  # the reverse
    assert durable_host.wait(durable_host.start("monitor", {"checks": 1})).output == "1 left"
    durable_host.mock_activity("check_status", greet)
    assert durable_host.wait(durable_host.start("monitor", {"checks": 1})).output == "Ahoy 1"


def test_mocking_an_activity_the_app_lacks_is_refused(durable_host: HostClient) -> None:
    with pytest.raises(ValueError, match="no activity named 'say_goodbye'"):
        durable_host.mock_activity("say_goodbye", "bye")


def test_a_failing_orchestrator_reports_failed_with_its_error(durable_host: HostClient) -> None:
    status = durable_host.wait(durable_host.start("fan_out_fan_in", 5000))
    assert status.runtime_status is OrchestrationStatus.Failed
    assert "the input must be a number of work items from 1 to 1000" in str(status.output)


def test_a_failing_activity_mock_fails_the_orchestration(durable_host: HostClient) -> None:
    def broken(city: str) -> str:
        raise RuntimeError(f"no greeting for {city}")

    durable_host.mock_activity("say_hello", broken)
    status = durable_host.wait(durable_host.start("hello_sequence"))
    assert status.runtime_status is OrchestrationStatus.Failed
    assert "no greeting for Tokyo" in str(status.output)


@pytest.mark.durable_app("tests/apps/v1_app")
def test_the_durable_app_marker_chooses_a_v1_app(durable_host: HostClient) -> None:
    status = durable_host.wait(durable_host.start("E1_HelloSequence"))
    assert status.output == ["Hello Tokyo!", "Hello Seattle!", "Hello London!"]


async def test_the_async_fixture_runs_on_the_tests_loop(durable_host_async: AsyncHostClient) -> None:
    durable_host_async.mock_activity("say_hello", lambda city: city.upper())
    instance_id = await durable_host_async.start("parent_with_sub_orchestration")
    status = await durable_host_async.wait(instance_id)
    assert status.output == {"greetings": ["TOKYO", "SEATTLE", "LONDON"], "parent": "FROM THE PARENT"}


async def test_an_async_host_deletes_its_task_hub_on_exit(azurite_connection_string: str) -> None:
    async with DurableTestHost(SAMPLE_APP, connection_string=azurite_connection_string) as client:
        status = await client.wait(await client.start("counter_orchestrator", "async-key"))
        assert status.output == 5
        hub_name = client.hub.names.hub
    account = StorageAccount.from_connection_string(azurite_connection_string)
    async with TaskHub(account, hub_name) as hub:
        info = await hub.info()
    assert not [r.name for r in info.resources if r.exists]


def test_a_sync_host_without_pytest_fixtures(azurite_connection_string: str) -> None:
    with DurableTestHost(SAMPLE_APP, connection_string=azurite_connection_string) as client:
        client.mock_activity("say_hello", lambda city: f"Hej {city}")
        status = client.wait(client.start("hello_sequence"))
    assert status.output == ["Hej Tokyo", "Hej Seattle", "Hej London"]


def test_the_default_storage_is_azure_web_jobs_storage(
    monkeypatch: pytest.MonkeyPatch, azurite_connection_string: str
) -> None:
    monkeypatch.setenv("AzureWebJobsStorage", azurite_connection_string)
    assert default_connection_string() == azurite_connection_string


def test_without_storage_a_host_runs_on_the_processs_own_azurite(monkeypatch: pytest.MonkeyPatch) -> None:
    # Development storage means Azurite's default ports, where nothing may listen: the shared one instead.
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    connection_string = default_connection_string()
    assert connection_string == shared_azurite().connection_string
    assert shared_azurite().running
    monkeypatch.delenv("AzureWebJobsStorage")
    with DurableTestHost(SAMPLE_APP) as client:
        assert client.wait(client.start("hello_sequence")).output[0] == "Hello Tokyo!"
    assert default_connection_string() == connection_string


USER_APP = """
import azure.durable_functions as df

app = df.DFApp()


@app.orchestration_trigger(context_name="context")
def double_it(context):
    value = yield context.call_activity("double", context.get_input())
    return value


@app.activity_trigger(input_name="number")
def double(number: int) -> int:
    return 2 * number
"""

USER_TESTS = """
def test_doubles(durable_host):
    assert durable_host.wait(durable_host.start("double_it", 21)).output == 42


def test_doubles_with_a_mock(durable_host):
    durable_host.mock_activity("double", lambda number: number + 1)
    assert durable_host.wait(durable_host.start("double_it", 21)).output == 22
"""


def _plugin_arguments() -> list[str]:
    """What loads the plugin in a pytest run of the source tree, where the entry point is not installed."""
    installed = entry_points(group="pytest11", name="durable_ext")
    return [] if installed else ["-p", "durable_ext.pytest_plugin"]


def test_a_users_test_file_passes_with_the_plugin(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, azurite_connection_string: str
) -> None:
    # The user's tests run on the session's Azurite rather than starting one of their own.
    monkeypatch.setenv("AzureWebJobsStorage", azurite_connection_string)
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(SAMPLE_APP), os.environ.get("PYTHONPATH")]))
    )
    pytester.makepyfile(function_app=USER_APP, test_user=USER_TESTS)
    result = pytester.runpytest_subprocess(*_plugin_arguments(), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


SETTINGS_APP = """
import json
import os

import azure.durable_functions as df

app = df.DFApp()
PREFIX_AT_IMPORT = os.environ["KIT_GREETING"]


@app.orchestration_trigger(context_name="context")
def greet(context: df.DurableOrchestrationContext):
    return (yield context.call_activity("read_settings", None))


@app.activity_trigger(input_name="unused")
def read_settings(unused: None) -> dict:
    return {
        "import": PREFIX_AT_IMPORT,
        "run": os.environ["KIT_GREETING"],
        "kept": os.environ["KIT_FROM_ENVIRONMENT"],
        "storage": os.environ["AzureWebJobsStorage"],
    }
"""


def test_app_settings_reach_the_app_as_environment_variables_while_the_host_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, azurite_connection_string: str
) -> None:
    (tmp_path / "function_app.py").write_text(SETTINGS_APP)
    (tmp_path / "host.json").write_text('{"version": "2.0"}')
    values = {
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
        "KIT_GREETING": "Hola",
        "KIT_FROM_ENVIRONMENT": "from local.settings.json",
    }
    (tmp_path / "local.settings.json").write_text(json.dumps({"IsEncrypted": False, "Values": values}))
    monkeypatch.delenv("KIT_GREETING", raising=False)
    monkeypatch.setenv("KIT_FROM_ENVIRONMENT", "from the environment")
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    with DurableTestHost(tmp_path, connection_string=azurite_connection_string) as client:
        status = client.wait(client.start("greet"))
    assert status.output == {
        "import": "Hola",
        "run": "Hola",
        "kept": "from the environment",
        # The app's own storage clients reach the storage the test host runs on.
        "storage": azurite_connection_string,
    }
    assert "KIT_GREETING" not in os.environ
    assert os.environ["KIT_FROM_ENVIRONMENT"] == "from the environment"
    assert os.environ[STORAGE_SETTING] == "UseDevelopmentStorage=true"
