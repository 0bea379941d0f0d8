"""``python -m durable_ext start`` as a user runs it: a real process against the session Azurite."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from durable_ext.storage.account import StorageAccount
from durable_ext.storage.taskhub import TaskHub
from tests.host_support import REPO, free_port, read_until, sample_app_dir, start_process


async def test_start_serves_the_sample_app_end_to_end(tmp_path: Path, azurite_connection_string: str) -> None:
    hub_name = "Start" + uuid.uuid4().hex[:8]
    port = free_port()
    process = start_process(sample_app_dir(tmp_path, hub_name), azurite_connection_string, port)
    try:
        output = read_until(process, "Host ready")
        assert f"Task hub: {hub_name} (2 partitions)" in output
        assert "hello_sequence: orchestrationTrigger" in output
        assert "counter: entityTrigger" in output
        assert f"http_start: [POST] http://localhost:{port}/api/orchestrators/{{functionName}}" in output
        async with httpx.AsyncClient(timeout=30) as http:
            # A caller that presents the key gets it back in the management URLs (see
            # test_limits_and_keys for anonymous callers, who do not).
            started = await http.post(
                f"http://127.0.0.1:{port}/api/orchestrators/hello_sequence", params={"code": "s3cret"}
            )
            assert started.status_code == 202, started.text
            status_url = started.json()["statusQueryGetUri"]
            assert started.headers["Location"] == status_url
            deadline = time.monotonic() + 60
            while True:
                status = await http.get(status_url)
                body = status.json()
                if body["runtimeStatus"] in ("Completed", "Failed") or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
        assert body["runtimeStatus"] == "Completed", body
        assert body["output"] == ["Hello Tokyo!", "Hello Seattle!", "Hello London!"]
        async with TaskHub(
            StorageAccount.from_connection_string(azurite_connection_string), hub_name, 2
        ) as hub:
            assert (await hub.info()).exists
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=30)
        assert process.returncode == 0
        assert "Executed 'Functions.http_start' (Succeeded" in rest
        assert "Host stopped." in rest
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize(
    ("app_code", "expected"),
    [
        (None, "no function_app.py and no function folders"),
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
    process = start_process(app, azurite_connection_string)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 1
    assert expected in output
    assert "Starting Azurite" not in output
    assert "durable_ext/" not in output.replace(str(app), ""), "only the user's frames may be shown"
    if app_code is not None:
        assert 'function_app.py", line 3' in output


async def test_system_key_guards_the_api_but_not_the_in_process_df_client(
    tmp_path: Path, azurite_connection_string: str
) -> None:
    app = sample_app_dir(tmp_path, "Keyed" + uuid.uuid4().hex[:8])
    (app / "local.settings.json").write_text(json.dumps({"Values": {"DURABLE_EXT_SYSTEM_KEY": "s3cret"}}))
    port = free_port()
    process = start_process(app, azurite_connection_string, port)
    try:
        read_until(process, "Host ready")
        async with httpx.AsyncClient(timeout=30) as http:
            # A caller that presents the key gets it back in the management URLs (see
            # test_limits_and_keys for anonymous callers, who do not).
            started = await http.post(
                f"http://127.0.0.1:{port}/api/orchestrators/hello_sequence", params={"code": "s3cret"}
            )
            assert started.status_code == 202, started.text
            payload = started.json()
            assert "/rpc/" not in started.text, "the private RPC path must not leak into payloads"
            assert "code=s3cret" in payload["statusQueryGetUri"]
            bare = payload["statusQueryGetUri"].replace("code=s3cret", "")
            assert (await http.get(bare)).status_code == 401
            assert (await http.get(payload["statusQueryGetUri"])).status_code in (200, 202)
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)


def test_listening_beyond_loopback_requires_a_system_key(
    tmp_path: Path, azurite_connection_string: str
) -> None:
    app = sample_app_dir(tmp_path, "Open" + uuid.uuid4().hex[:8])
    env = {**os.environ, "AzureWebJobsStorage": azurite_connection_string, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "durable_ext", "start", "--app-dir", str(app), "--host", "0.0.0.0"],
        capture_output=True,
        check=False,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 1
    assert "DURABLE_EXT_SYSTEM_KEY" in result.stderr


def test_port_in_use_is_a_clear_error(tmp_path: Path, azurite_connection_string: str) -> None:
    app = sample_app_dir(tmp_path, "Busy" + uuid.uuid4().hex[:8])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = start_process(app, azurite_connection_string, port)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 1
    assert f"error: port {port} on 127.0.0.1 is in use" in output
    assert "Traceback" not in output
