"""A v1 (function.json) app and ``AzureWebJobs.<name>.Disabled`` under ``python -m durable_ext start``.

tests/apps/v1_app is modelled on the official samples (function chaining, fan-out/fan-in, the counter
entity, HTTP starters answering through ``$return`` and through a named output binding, shared code
imported relatively). Each host runs as a user runs it, on the session Azurite with a hub of its own,
driven over HTTP only.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.host_support import REPO, RunningHost, running_host, sample_app_dir

V1_APP = REPO / "tests" / "apps" / "v1_app"
TIMEOUT = 60.0
API = "/runtime/webhooks/durabletask"
KEY = "s3cret"


def v1_app_dir(root: Path, hub: str, settings: dict[str, str] | None = None) -> Path:
    """A copy of the v1 test app with its own hub (2 partitions) and app settings."""
    app = root / "app"
    shutil.copytree(V1_APP, app, ignore=shutil.ignore_patterns("__pycache__"))
    host = {
        "version": "2.0",
        "extensions": {"durableTask": {"hubName": hub, "storageProvider": {"partitionCount": 2}}},
    }
    (app / "host.json").write_text(json.dumps(host))
    (app / "local.settings.json").write_text(json.dumps({"IsEncrypted": False, "Values": settings or {}}))
    return app


def until(probe: Callable[[], Any], what: str, timeout: float = TIMEOUT) -> Any:
    """Call ``probe`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = probe()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def final_status(http: httpx.Client, url: str) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        body: dict[str, Any] = http.get(url).json()
        return body if body["runtimeStatus"] not in ("Pending", "Running") else None

    result: dict[str, Any] = until(ended, f"{url} to end")
    return result


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, azurite_connection_string: str) -> Iterator[RunningHost]:
    root = tmp_path_factory.mktemp("v1")
    app = v1_app_dir(root, "V1e2e" + uuid.uuid4().hex[:8])
    with running_host(app, azurite_connection_string, root / "host.log") as running:
        yield running
    assert "Traceback" not in running.output(), running.output()[-4000:]


@pytest.fixture(scope="module")
def http(host: RunningHost) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=host.base_url, timeout=TIMEOUT) as client:
        yield client


def test_the_console_lists_v1_functions_and_warns_about_unserved_bindings(host: RunningHost) -> None:
    output = host.output()
    port = host.base_url.rsplit(":", 1)[1]
    assert f"HttpStart: [POST,GET] http://localhost:{port}/api/orchestrators/{{functionName}}" in output
    assert "E1_HelloSequence: orchestrationTrigger" in output
    assert "Counter: entityTrigger" in output
    assert output.count("Function SendNotice: durable_ext cannot serve its twilioSms output 'message'") == 1
    assert "Function QueueWorker has a queueTrigger trigger, which durable_ext does not run" in output


def test_function_chaining_through_a_return_output_and_the_legacy_client_binding(http: httpx.Client) -> None:
    started = http.post("/api/orchestrators/E1_HelloSequence")
    assert started.status_code == 202, started.text
    assert started.headers["Location"] == started.json()["statusQueryGetUri"]
    status = final_status(http, started.json()["statusQueryGetUri"])
    assert status["runtimeStatus"] == "Completed", status
    assert status["output"] == ["Hello Tokyo!", "Hello Seattle!", "Hello London!"]


def test_fan_out_fan_in_through_a_named_output_binding(http: httpx.Client) -> None:
    started = http.post("/api/named/E2_FanOut", json=10)
    assert started.status_code == 202, started.text
    status = final_status(http, started.json()["statusQueryGetUri"])
    assert status["runtimeStatus"] == "Completed", status
    assert status["output"] == 385


def test_counter_entity_called_and_signalled_from_an_orchestration(http: httpx.Client) -> None:
    started = http.post("/api/orchestrators/CounterOrchestration")
    assert started.status_code == 202, started.text
    urls = started.json()
    status = final_status(http, urls["statusQueryGetUri"])
    assert status["runtimeStatus"] == "Completed", status
    # The signal (add 3) is sent before the call (add 4), from the same orchestration: in order.
    assert status["output"] == 7
    entity = http.get(f"{API}/entities/Counter/{urls['id']}")
    assert entity.status_code == 200
    assert entity.json() == 7


def test_an_activity_with_an_unserved_output_binding_still_runs(http: httpx.Client) -> None:
    started = http.post("/api/orchestrators/E4_Notify", json="+1555")
    status = final_status(http, started.json()["statusQueryGetUri"])
    assert status["runtimeStatus"] == "Completed", status
    assert status["output"] == "sent to +1555"


# --- AzureWebJobs.<name>.Disabled ---------------------------------------------------------------------

DISABLED = {
    "DURABLE_EXT_SYSTEM_KEY": KEY,
    "AzureWebJobs.HttpStartNamed.Disabled": "true",
    "AzureWebJobs.E1_HelloSequence.Disabled": "1",
    "AzureWebJobs.Counter.Disabled": "true",
}


@pytest.fixture(scope="module")
def disabled_app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("v1disabled")
    return v1_app_dir(root, "V1off" + uuid.uuid4().hex[:8], DISABLED)


@pytest.fixture(scope="module")
def disabled_host(disabled_app: Path, azurite_connection_string: str) -> Iterator[RunningHost]:
    with running_host(disabled_app, azurite_connection_string, disabled_app.parent / "host.log") as running:
        yield running


@pytest.fixture(scope="module")
def keyed(disabled_host: RunningHost) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=disabled_host.base_url, timeout=TIMEOUT, params={"code": KEY}) as client:
        yield client


def test_disabled_functions_are_announced(disabled_host: RunningHost) -> None:
    output = disabled_host.output()
    for name in ("HttpStartNamed", "E1_HelloSequence", "Counter"):
        assert f"Function 'Functions.{name}' is disabled" in output


def test_a_disabled_http_function_is_404_unless_the_caller_has_admin_rights(
    disabled_host: RunningHost,
) -> None:
    with httpx.Client(base_url=disabled_host.base_url, timeout=TIMEOUT) as anonymous:
        # The key check comes first (401), then the disabled check: 404 with an empty body.
        assert anonymous.post("/api/named/E2_FanOut", json=1).status_code == 401
        refused = anonymous.post("/api/named/E2_FanOut", json=1, headers={"x-functions-key": "wrong"})
        assert refused.status_code == 401
    with httpx.Client(base_url=disabled_host.base_url, timeout=TIMEOUT) as admin:
        ran = admin.post("/api/named/E2_FanOut", params={"code": KEY}, json=1)
    assert ran.status_code == 202, ran.text


def test_a_disabled_anonymous_http_function_is_404(tmp_path: Path, azurite_connection_string: str) -> None:
    settings = {"DURABLE_EXT_SYSTEM_KEY": KEY, "AzureWebJobs.HttpStart.Disabled": "true"}
    app = v1_app_dir(tmp_path, "V1http" + uuid.uuid4().hex[:8], settings)
    with running_host(app, azurite_connection_string, tmp_path / "host.log") as running:
        answer = httpx.post(f"{running.base_url}/api/orchestrators/E2_FanOut", timeout=TIMEOUT)
        assert (answer.status_code, answer.content) == (404, b"")
        admin = httpx.post(f"{running.base_url}/api/orchestrators/E2_FanOut?code={KEY}", timeout=TIMEOUT)
        assert admin.status_code == 202, admin.text


def test_starting_a_disabled_orchestrator_is_accepted_and_fails_with_dfs_text(keyed: httpx.Client) -> None:
    started = keyed.post("/api/orchestrators/E1_HelloSequence")
    assert started.status_code == 202, started.text
    status = final_status(keyed, started.json()["statusQueryGetUri"])
    assert status["runtimeStatus"] == "Failed", status
    assert (
        "The function 'E1_HelloSequence' doesn't exist, is disabled, or is not an orchestrator function."
        " Additional info: The following are the known orchestrator functions: 'CounterOrchestration',"
        " 'E1_HelloSequence', 'E2_FanOut', 'E4_Notify'."
    ) in status["output"]


def test_a_disabled_entity_leaves_its_operations_queued(
    disabled_host: RunningHost, keyed: httpx.Client
) -> None:
    key = uuid.uuid4().hex
    # Durable Functions still knows a disabled entity: the signal is accepted...
    assert keyed.post(f"{API}/entities/Counter/{key}", params={"op": "add"}, json=5).status_code == 202
    until(lambda: "entity Counter is disabled" in disabled_host.output(), "the disabled entity's warning")
    # ...and not applied: the entity has no state.
    assert keyed.get(f"{API}/entities/Counter/{key}").status_code == 404


def test_a_disabled_activity_waits_and_runs_once_enabled(
    tmp_path: Path, azurite_connection_string: str
) -> None:
    settings = {"AzureWebJobs_E2_Square_Disabled": "TRUE"}
    app = v1_app_dir(tmp_path, "V1act" + uuid.uuid4().hex[:8], settings)
    with httpx.Client(timeout=TIMEOUT) as http:
        with running_host(app, azurite_connection_string, tmp_path / "disabled.log") as disabled:
            started = http.post(f"{disabled.base_url}{API}/orchestrators/E2_FanOut", json=3)
            assert started.status_code == 202, started.text
            status_path = started.json()["statusQueryGetUri"].removeprefix(disabled.base_url)
            until(
                lambda: "activity E2_Square is disabled" in disabled.output(),
                "the disabled activity's warning",
            )
            assert http.get(disabled.base_url + status_path).json()["runtimeStatus"] == "Running"
        # Enabled again: the work items left in the queue run, and the orchestration completes.
        (app / "local.settings.json").write_text(json.dumps({"Values": {}}))
        with running_host(app, azurite_connection_string, tmp_path / "enabled.log") as enabled:
            status = final_status(http, enabled.base_url + status_path)
    assert status["runtimeStatus"] == "Completed", status
    assert status["output"] == 14


def test_disabled_functions_of_a_v2_app(tmp_path: Path, azurite_connection_string: str) -> None:
    app = sample_app_dir(tmp_path, "V2off" + uuid.uuid4().hex[:8])
    settings = {
        "DURABLE_EXT_SYSTEM_KEY": KEY,
        "AzureWebJobs.http_start.Disabled": "true",
        "AzureWebJobs.hello_sequence.Disabled": "true",
        "AzureWebJobs.process_item.Disabled": "true",
    }
    (app / "local.settings.json").write_text(json.dumps({"Values": settings}))
    with (
        running_host(app, azurite_connection_string, tmp_path / "host.log") as running,
        httpx.Client(base_url=running.base_url, timeout=TIMEOUT) as http,
    ):
        anonymous = http.post("/api/orchestrators/fan_out_fan_in")
        assert (anonymous.status_code, anonymous.content) == (404, b"")
        # The key gives admin rights: the disabled function runs for its holder.
        started = http.post("/api/orchestrators/hello_sequence", params={"code": KEY})
        assert started.status_code == 202, started.text
        status = final_status(http, started.json()["statusQueryGetUri"])
        assert status["runtimeStatus"] == "Failed", status
        assert "The function 'hello_sequence' doesn't exist, is disabled" in status["output"]
        fan_out = http.post(f"{API}/orchestrators/fan_out_fan_in", params={"code": KEY}, json=2)
        assert fan_out.status_code == 202, fan_out.text
        until(lambda: "activity process_item is disabled" in running.output(), "the activity's warning")
        assert http.get(fan_out.json()["statusQueryGetUri"]).json()["runtimeStatus"] == "Running"
