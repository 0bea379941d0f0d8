"""Issue 5's acceptance, end to end: the sample app under ``python -m durable_ext start``, driven only
over HTTP. Every sample runs to Completed through its check-status URLs, every df client method runs
inside an HTTP function, and schemathesis fuzzes the management API from its OpenAPI document.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.host_support import REPO, RunningHost, running_host, sample_app_dir

TIMEOUT = 60.0
API = "/runtime/webhooks/durabletask"


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, azurite_connection_string: str) -> Iterator[RunningHost]:
    """One host for the module: the sample app plus tests/apps/client_methods.py."""
    root = tmp_path_factory.mktemp("e2e")
    app = sample_app_dir(
        root, "E2e" + uuid.uuid4().hex[:8], extra_blueprints=[REPO / "tests" / "apps" / "client_methods.py"]
    )
    with running_host(app, azurite_connection_string, root / "host.log") as running:
        yield running
    output = running.output()
    assert "Traceback" not in output, output[-4000:]


@pytest.fixture(scope="module")
def http(host: RunningHost) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=host.base_url, timeout=TIMEOUT) as client:
        yield client


def _until(http: httpx.Client, url: str, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """GET ``url`` (a status URL) until ``done`` accepts its JSON; fail after TIMEOUT."""
    deadline = time.monotonic() + TIMEOUT
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = http.get(url)
        if response.status_code in (200, 202):
            body = response.json()
            if done(body):
                return body
        time.sleep(0.05)
    raise AssertionError(f"{url} never reached the expected state; last {body}")


def _completed(http: httpx.Client, url: str) -> Any:
    body = _until(http, url, lambda b: b["runtimeStatus"] not in ("Pending", "Running"))
    assert body["runtimeStatus"] == "Completed", body
    return body["output"]


def _start(http: httpx.Client, name: str, payload: Any = None) -> dict[str, str]:
    response = http.post(f"/api/orchestrators/{name}", json=payload)
    assert response.status_code == 202, response.text
    urls: dict[str, str] = response.json()
    assert response.headers["Location"] == urls["statusQueryGetUri"]
    return urls


def _client(http: httpx.Client, method: str, **args: Any) -> Any:
    """Call a df client method inside the app's ``client/{method}`` HTTP function."""
    response = http.post(f"/api/client/{method}", json=args)
    assert response.status_code == 200, f"{method}: {response.status_code} {response.text}"
    return response.json()["result"]


def _client_error(http: httpx.Client, method: str, **args: Any) -> str:
    response = http.post(f"/api/client/{method}", json=args)
    assert response.status_code == 409, f"{method} should have raised: {response.text}"
    return str(response.json()["error"])


# ---- the samples ------------------------------------------------------------------------------


def test_every_sample_completes_through_its_check_status_urls(http: httpx.Client) -> None:
    runs = {
        "hello_sequence": (None, ["Hello Tokyo!", "Hello Seattle!", "Hello London!"]),
        "fan_out_fan_in": (10, 385),
        "parent_with_sub_orchestration": (None, None),
        "retry_example": (None, None),
        "monitor": ({"checks": 2, "interval_seconds": 1}, None),
        "counter_orchestrator": ("e2e-counter", 5),
    }
    started = {name: _start(http, name, payload) for name, (payload, _) in runs.items()}
    approval = _start(http, "approval_workflow", {"timeout_seconds": 60})
    _until(http, approval["statusQueryGetUri"], lambda b: b["customStatus"] == "Waiting for approval")
    event = http.post(approval["sendEventPostUri"].replace("{eventName}", "Approval"), json=True)
    assert event.status_code == 202

    assert _completed(http, approval["statusQueryGetUri"]) == "approved"
    for name, (_, expected) in runs.items():
        output = _completed(http, started[name]["statusQueryGetUri"])
        if expected is not None:
            assert output == expected, name
        else:
            assert output is not None, name


def test_management_urls_of_the_check_status_payload_work(http: httpx.Client) -> None:
    urls = _start(http, "approval_workflow", {"timeout_seconds": 60})
    _until(http, urls["statusQueryGetUri"], lambda b: b["runtimeStatus"] == "Running")
    assert http.post(urls["suspendPostUri"].replace("{text}", "pause")).status_code == 202
    _until(http, urls["statusQueryGetUri"], lambda b: b["runtimeStatus"] == "Suspended")
    assert http.post(urls["resumePostUri"].replace("{text}", "go")).status_code == 202
    _until(http, urls["statusQueryGetUri"], lambda b: b["runtimeStatus"] == "Running")
    assert http.post(urls["terminatePostUri"].replace("{text}", "stop")).status_code == 202
    body = _until(http, urls["statusQueryGetUri"], lambda b: b["runtimeStatus"] == "Terminated")
    assert body["output"] == "stop"
    assert http.post(urls["suspendPostUri"].replace("{text}", "late")).status_code == 410
    assert http.post(urls["rewindPostUri"].replace("{text}", "late")).status_code == 410
    purged = http.delete(urls["purgeHistoryDeleteUri"])
    assert purged.status_code == 200 and purged.json() == {"instancesDeleted": 1}
    assert http.get(urls["statusQueryGetUri"]).status_code == 404


# ---- every df client method inside an HTTP function ---------------------------------------------


def test_df_client_start_status_events_and_queries(http: httpx.Client) -> None:
    before = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
    instance = _client(http, "start_new", name="wait_for_go", instance_id="e2e-go", input={"n": 1})
    assert instance == "e2e-go"
    assert "already exists" in _client_error(http, "start_new", name="wait_for_go", instance_id="e2e-go")
    _until(http, f"{API}/instances/e2e-go", lambda b: b["runtimeStatus"] == "Running")
    _client(http, "raise_event", instance_id="e2e-go", event_name="go", event_data={"ready": True})
    _until(http, f"{API}/instances/e2e-go", lambda b: b["runtimeStatus"] == "Completed")

    status = _client(http, "get_status", instance_id="e2e-go", show_history=True, show_history_output=True)
    assert status["runtimeStatus"] == "Completed" and status["output"] == {"ready": True}
    assert status["input"] == {"n": 1}
    assert status["historyEvents"][0]["EventType"] == "ExecutionStarted"
    everything = _client(http, "get_status_all")
    assert "e2e-go" in {s["instanceId"] for s in everything}
    completed = _client(http, "get_status_by", created_time_from=before, runtime_status=["Completed"])
    assert "e2e-go" in {s["instanceId"] for s in completed}
    assert "gone" in _client_error(http, "raise_event", instance_id="e2e-go", event_name="go")


def test_df_client_terminate_suspend_resume_rewind_and_purge(http: httpx.Client, tmp_path: Path) -> None:
    _client(http, "start_new", name="wait_for_go", instance_id="e2e-life")
    _until(http, f"{API}/instances/e2e-life", lambda b: b["runtimeStatus"] == "Running")
    _client(http, "suspend", instance_id="e2e-life", reason="pause")
    _until(http, f"{API}/instances/e2e-life", lambda b: b["runtimeStatus"] == "Suspended")
    _client(http, "resume", instance_id="e2e-life", reason="go on")
    _until(http, f"{API}/instances/e2e-life", lambda b: b["runtimeStatus"] == "Running")
    _client(http, "terminate", instance_id="e2e-life", reason="done")
    _until(http, f"{API}/instances/e2e-life", lambda b: b["runtimeStatus"] == "Terminated")
    assert _client(http, "purge_instance_history", instance_id="e2e-life") == 1
    assert http.get(f"{API}/instances/e2e-life").status_code == 404

    gate = tmp_path / "gate-open"
    _client(http, "start_new", name="gated", instance_id="e2e-gated", input=str(gate))
    _until(http, f"{API}/instances/e2e-gated", lambda b: b["runtimeStatus"] == "Failed")
    gate.touch()
    _client(http, "rewind", instance_id="e2e-gated", reason="gate opened")
    body = _until(http, f"{API}/instances/e2e-gated", lambda b: b["runtimeStatus"] == "Completed")
    assert body["output"] == ["Hello Gate!", "passed"]
    assert "failed" in _client_error(http, "rewind", instance_id="e2e-gated", reason="again")

    created_from = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    purged = _client(
        http, "purge_instance_history_by", created_time_from=created_from, runtime_status=["Completed"]
    )
    assert purged >= 1
    assert http.get(f"{API}/instances/e2e-gated").status_code == 404


def test_df_client_entities(http: httpx.Client) -> None:
    assert _client(http, "read_entity_state", entity_name="Counter", entity_key="e2e-c") == {
        "exists": False,
        "state": None,
    }
    for amount in (1, 2, 3):
        _client(
            http, "signal_entity", entity_name="Counter", entity_key="e2e-c", operation="add", input=amount
        )
    deadline = time.monotonic() + TIMEOUT
    while (state := _client(http, "read_entity_state", entity_name="Counter", entity_key="e2e-c"))[
        "state"
    ] != 6:
        assert time.monotonic() < deadline, state
        time.sleep(0.05)
    assert state["exists"] is True
    unknown = http.post(f"{API}/entities/NoSuchEntity/k?op=add", json=1)
    assert unknown.status_code == 400 and "NoSuchEntity" in unknown.json()["error"]


def test_df_client_http_helpers(http: httpx.Client) -> None:
    instance = _client(http, "start_new", name="hello_sequence", instance_id="e2e-helpers")
    check = http.post("/api/client/create_check_status_response", json={"instance_id": instance})
    assert check.status_code == 202 and check.json()["id"] == instance
    payload = _client(http, "create_http_management_payload", instance_id=instance)
    assert set(payload) >= {
        "id",
        "statusQueryGetUri",
        "sendEventPostUri",
        "terminatePostUri",
        "rewindPostUri",
    }
    assert payload["statusQueryGetUri"].startswith(
        f"{http.base_url}{API}/instances/".replace("127.0.0.1", "127.0.0.1")
    )
    waited = http.post(
        "/api/client/wait_for_completion_or_create_check_status_response",
        json={"instance_id": instance, "timeout_ms": 30000},
    )
    assert waited.status_code == 200
    assert waited.json() == ["Hello Tokyo!", "Hello Seattle!", "Hello London!"]
    _client(http, "start_new", name="wait_for_go", instance_id="e2e-waiting")
    timed_out = http.post(
        "/api/client/wait_for_completion_or_create_check_status_response",
        json={"instance_id": "e2e-waiting", "timeout_ms": 300},
    )
    assert timed_out.status_code == 202 and timed_out.json()["id"] == "e2e-waiting"
    _client(http, "terminate", instance_id="e2e-waiting", reason="cleanup")


# ---- the OpenAPI document and the fuzzer -------------------------------------------------------


def test_openapi_document_describes_every_route(http: httpx.Client) -> None:
    document = http.get(f"{API}/openapi.json").json()
    assert document["openapi"].startswith("3.")
    assert set(document["paths"]) >= {
        "/orchestrators/{functionName}",
        "/instances",
        "/instances/{instanceId}",
        "/instances/{instanceId}/rewind",
        "/instances/{instanceId}/raiseEvent/{eventName}",
        "/entities/{entityName}/{entityKey}",
    }


def test_schemathesis_finds_no_server_error(host: RunningHost, tmp_path: Path) -> None:
    """Every check of tests/schemathesis.toml (see there for the three left out), on a short run."""
    schemathesis = shutil.which("st", path=str(Path(sys.executable).parent)) or shutil.which("st")
    assert schemathesis is not None, "schemathesis (requirements-dev.txt) is not installed"
    result = subprocess.run(
        [
            schemathesis,
            "--config-file",
            str(Path(__file__).parent / "schemathesis.toml"),
            "run",
            f"{host.base_url}{API}/openapi.json",
            "--max-examples",
            "25",
            "--request-timeout",
            "30",
            "--seed",
            "1",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
        cwd=tmp_path,  # its example database goes there, not into the repository
        env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks", "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "passed" in result.stdout
