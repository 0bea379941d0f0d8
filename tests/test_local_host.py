"""``python -m durable_ext start`` as a user runs it: a real process against the session Azurite."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from durable_ext.storage.account import StorageAccount
from durable_ext.storage.taskhub import TaskHub

REPO = Path(__file__).resolve().parents[1]


def _app_dir(tmp_path: Path, hub: str) -> Path:
    app = tmp_path / "app"
    app.mkdir()
    for name in ("function_app.py", "orchestrators", "activities", "entities"):
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, app / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, app / name)
    host = {
        "version": "2.0",
        "extensions": {"durableTask": {"hubName": hub, "storageProvider": {"partitionCount": 2}}},
    }
    (app / "host.json").write_text(json.dumps(host))
    return app


def _start(app: Path, connection_string: str) -> subprocess.Popen[str]:
    env = {**os.environ, "AzureWebJobsStorage": connection_string, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "durable_ext", "start", "--app-dir", str(app)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def _read_until(process: subprocess.Popen[str], marker: str, timeout: float = 60.0) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        seen += line
        if marker in line:
            return seen
    raise AssertionError(f"{marker!r} not printed in time; output so far:\n{seen}")


async def test_start_creates_the_hub_lists_functions_and_stops_on_sigterm(
    tmp_path: Path, azurite_connection_string: str
) -> None:
    hub_name = "Start" + uuid.uuid4().hex[:8]
    process = _start(_app_dir(tmp_path, hub_name), azurite_connection_string)
    try:
        output = _read_until(process, "Host ready")
        assert f"Task hub: {hub_name} (2 partitions)" in output
        assert "hello_sequence: orchestrationTrigger" in output
        assert "counter: entityTrigger" in output
        assert "http_start: [POST] http://localhost:7071/api/orchestrators/{functionName}" in output
        async with TaskHub(
            StorageAccount.from_connection_string(azurite_connection_string), hub_name, 2
        ) as hub:
            assert (await hub.info()).exists
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=30)
        assert process.returncode == 0
        assert "Host stopped." in rest
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize(
    ("app_code", "expected"),
    [
        (None, "no function_app.py"),
        (
            "import azure.functions as func\n\nraise RuntimeError('boom at import')\n",
            "RuntimeError: boom at import",
        ),
    ],
)
def test_start_reports_app_errors_without_a_durable_ext_traceback(
    tmp_path: Path, azurite_connection_string: str, app_code: str | None, expected: str
) -> None:
    app = tmp_path / "bad"
    app.mkdir()
    if app_code is not None:
        (app / "function_app.py").write_text(app_code)
    process = _start(app, azurite_connection_string)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 1
    assert expected in output
    assert "Starting Azurite" not in output
    assert "durable_ext/" not in output.replace(str(app), ""), "only the user's frames may be shown"
    if app_code is not None:
        assert 'function_app.py", line 3' in output
