"""``python -m durable_ext start`` as a user runs it: a real process against the session Azurite."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from durable_ext.errors import ConfigError
from durable_ext.host import azurite as azurite_module
from durable_ext.host.admin import host_id, stable_hash
from durable_ext.host.azurite import AzuritePorts, dev_connection_string, find_azurite
from durable_ext.host.local import LocalHost, LocalHostOptions, self_address
from durable_ext.storage.account import StorageAccount
from durable_ext.storage.taskhub import TaskHub
from tests.host_support import (
    REPO,
    distinct_free_ports,
    free_port,
    read_until,
    running_host,
    sample_app_dir,
    start_process,
)

DEV_STORAGE = "UseDevelopmentStorage=true"


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


async def test_azurite_is_installed_with_progress_before_it_is_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_azurite = find_azurite(install=False)
    # A checkout without node_modules, and an npm that takes a while, then provides the real Azurite.
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for manifest in ("package.json", "package-lock.json"):
        (checkout / manifest).write_text("{}")
    tools = tmp_path / "tools"
    tools.mkdir()
    npm = tools / "npm"
    npm.write_text(
        "#!/bin/sh\nsleep 1\nmkdir -p node_modules/.bin\n"
        f"ln -s {real_azurite} node_modules/.bin/azurite\necho 'added 1 package in 1s'\n"
    )
    npm.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv(azurite_module.ENV_EXECUTABLE, raising=False)
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(azurite_module, "_REPO_DIR", checkout)
    monkeypatch.setattr(azurite_module, "HEARTBEAT_SECONDS", 0.2)
    monkeypatch.chdir(tmp_path)
    app = sample_app_dir(tmp_path, "Install" + uuid.uuid4().hex[:8])
    (app / "local.settings.json").write_text(json.dumps({"Values": {"AzureWebJobsStorage": DEV_STORAGE}}))
    blob, queue, table = distinct_free_ports(3)
    lines: list[str] = []
    host = LocalHost(
        LocalHostOptions(
            app_dir=app,
            port=free_port(),
            azurite_in_memory=True,
            azurite_ports=AzuritePorts(blob=blob, queue=queue, table=table),
            output=lines.append,
        )
    )
    try:
        await host.prepare()
    finally:
        host.stop()
    installing = next(i for i, line in enumerate(lines) if line.startswith("Installing Azurite"))
    starting = next(i for i, line in enumerate(lines) if line.startswith("Starting Azurite"))
    assert installing < starting, lines
    between = lines[installing + 1 : starting]
    assert any(line.startswith("Still installing Azurite (") for line in between), lines
    assert "added 1 package in 1s" in between
    assert (checkout / "node_modules" / ".bin" / "azurite").resolve() == real_azurite.resolve()


SAMPLE_FUNCTIONS = sorted(
    [
        "approval_workflow", "check_status", "counter", "counter_orchestrator", "fan_out_fan_in",
        "flaky_activity", "get_work_items", "hello_sequence", "http_start", "monitor",
        "parent_with_sub_orchestration", "process_item", "retry_example", "say_hello",
    ],
    key=str.lower,
)  # fmt: skip


async def test_admin_routes_cors_and_function_allow_list(
    tmp_path: Path, azurite_connection_string: str
) -> None:
    app = sample_app_dir(tmp_path, "Admin" + uuid.uuid4().hex[:8])
    (app / "local.settings.json").write_text(json.dumps({"Values": {"DURABLE_EXT_SYSTEM_KEY": "s3cret"}}))
    web_app = "http://localhost:3000"
    extra = ["--verbose", "--cors", f"{web_app},http://Example.test", "--functions", "http_start"]
    extra += ["HELLO_sequence", "say_hello", "no_such_function"]
    with running_host(app, azurite_connection_string, tmp_path / "host.log", extra_args=extra) as host:
        startup = host.output()
        assert (
            "A function allow list has been specified, excluding all but the following functions: "
            "[http_start, HELLO_sequence, say_hello, no_such_function]"
        ) in startup
        assert "--functions names 'no_such_function', which is not a function of the app" in startup
        listed = startup[startup.index("Functions:") : startup.index("Host ready")]
        assert "hello_sequence: orchestrationTrigger" in listed
        assert "fan_out_fan_in" not in listed
        async with httpx.AsyncClient(base_url=host.base_url, timeout=30) as http:
            key = {"x-functions-key": "s3cret"}
            for path in ("/admin/host/status", "/admin/functions", "/admin/functions/http_start"):
                refused = await http.get(path)
                assert (refused.status_code, refused.content) == (401, b""), path
            ping = await http.get("/admin/host/ping")
            assert (ping.status_code, ping.content) == (200, b"")

            status = (await http.get("/admin/host/status", headers=key)).json()
            assert list(status) == [
                "id", "state", "version", "versionDetails", "platformVersion", "instanceId",
                "computerName", "processUptime", "functionAppContentEditingState",
            ]  # fmt: skip
            assert status["state"] == "Running"
            assert status["id"] == host_id(app.resolve(), {})
            assert isinstance(status["processUptime"], int) and status["processUptime"] > 0
            assert status["functionAppContentEditingState"] == "Unknown"

            # Every function of the app, also those the allow list leaves out, as the host lists them.
            functions = (await http.get("/admin/functions", headers=key)).json()
            assert [function["name"] for function in functions] == SAMPLE_FUNCTIONS
            starter = next(function for function in functions if function["name"] == "http_start")
            origin = host.base_url
            assert starter == (await http.get("/admin/functions/HTTP_START", headers=key)).json()
            assert starter["invoke_url_template"] == f"{origin}/api/orchestrators/{{functionname}}"
            assert starter["href"] == f"{origin}/admin/functions/http_start"
            assert starter["script_href"] == f"{origin}/admin/vfs{app.resolve()}/function_app.py"
            assert (starter["language"], starter["isDisabled"], starter["test_data"]) == (
                "python",
                False,
                None,
            )
            assert starter["config"]["bindings"] == [
                {"direction": "IN", "type": "durableClient", "name": "client"},
                {
                    "direction": "IN",
                    "type": "httpTrigger",
                    "name": "req",
                    "methods": ["POST"],
                    "authLevel": "ANONYMOUS",
                    "route": "orchestrators/{functionName}",
                },
                {"direction": "OUT", "type": "http", "name": "$return"},
            ]
            greeting = next(function for function in functions if function["name"] == "say_hello")
            assert greeting["invoke_url_template"] is None
            assert greeting["config"]["bindings"] == [
                {"direction": "IN", "type": "activityTrigger", "name": "name"}
            ]
            missing = await http.get("/admin/functions/nope", headers=key)
            assert (missing.status_code, missing.content) == (404, b"")

            # CORS as ASP.NET Core's middleware applies it in func start.
            preflight = await http.options(
                "/api/orchestrators/hello_sequence",
                headers={
                    "Origin": "http://example.test",
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "content-type,x-functions-key",
                },
            )
            assert preflight.status_code == 204
            assert preflight.headers["access-control-allow-origin"] == "http://example.test"
            assert preflight.headers["access-control-allow-methods"] == "POST"
            assert preflight.headers["access-control-allow-headers"] == "content-type,x-functions-key"
            assert preflight.headers["vary"] == "Origin"
            assert "access-control-allow-credentials" not in preflight.headers
            stranger = await http.options(
                "/api/orchestrators/hello_sequence",
                headers={"Origin": "http://evil.test", "Access-Control-Request-Method": "POST"},
            )
            assert stranger.status_code == 204
            assert not any(name.startswith("access-control-") for name in stranger.headers)

            started = await http.post("/api/orchestrators/hello_sequence", headers={"Origin": web_app})
            assert started.status_code == 202, started.text
            assert started.headers["access-control-allow-origin"] == web_app
            plain = await http.get("/admin/host/ping")
            assert "access-control-allow-origin" not in plain.headers
            # An orchestrator the allow list leaves out is not a function of this host.
            refused_start = await http.post(
                "/runtime/webhooks/durabletask/orchestrators/fan_out_fan_in", headers=key
            )
            assert refused_start.status_code == 400, refused_start.text
            status_url = started.json()["statusQueryGetUri"]
            deadline = time.monotonic() + 60
            while (body := (await http.get(status_url, headers=key)).json())["runtimeStatus"] != "Completed":
                assert body["runtimeStatus"] in ("Pending", "Running"), body
                assert time.monotonic() < deadline, body
                await asyncio.sleep(0.1)
            assert body["output"] == ["Hello Tokyo!", "Hello Seattle!", "Hello London!"]
    # --verbose after the command turns on durable_ext's engine detail.
    assert re.search(r"\] hub Admin\w+: engine \S+ started$", host.output(), re.MULTILINE), host.output()


async def test_local_settings_host_section_sets_port_address_and_cors(
    tmp_path: Path, azurite_connection_string: str
) -> None:
    app = sample_app_dir(tmp_path, "HostSec" + uuid.uuid4().hex[:8])
    port = free_port()
    host_section = {"LocalHttpPort": port, "LocalHttpAddress": "127.0.0.1", "CORS": "*"}
    (app / "local.settings.json").write_text(json.dumps({"Host": host_section}))
    command = [sys.executable, "-m", "durable_ext", "start", "--app-dir", str(app)]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "AzureWebJobsStorage": azurite_connection_string, "PYTHONPATH": str(REPO)},
    )
    try:
        read_until(process, f"Host ready on http://localhost:{port}")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            # No key configured: the admin routes are open, as under func start.
            status = await http.get("/admin/host/status", headers={"Origin": "http://anywhere.test"})
            assert status.status_code == 200
            assert status.json()["state"] == "Running"
            assert status.headers["access-control-allow-origin"] == "*"
            assert "vary" not in status.headers
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    assert process.returncode == 0


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--cors", "*", "--cors-credentials"], "error: --cors: the CORS protocol does not allow a wildcard"),
        (["--cors-credentials"], "error: CORS credentials are allowed but --cors names no origin"),
        (["--cors", "*,http://a.test"], "error: --cors: '*' allows every origin and cannot be listed"),
        (["--cors", "localhost:3000"], "error: --cors: 'localhost:3000' is not an origin"),
        (["--functions", "nope", "Nada"], "error: --functions names no function of the app; its functions"),
    ],
)
def test_start_refuses_flags_that_cannot_work(
    tmp_path: Path, azurite_connection_string: str, args: list[str], error: str
) -> None:
    app = sample_app_dir(tmp_path, "Flags" + uuid.uuid4().hex[:8])
    process = start_process(app, azurite_connection_string, extra_args=args)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 1
    assert error in output
    assert "Traceback" not in output
    assert "Starting Azurite" not in output


def test_host_id_is_the_hosts_local_default() -> None:
    # Utility.GetStableHash("abc"): ((23 * 31 + 97) * 31 + 98) * 31 + 99, and 32-bit wrap-around.
    assert stable_hash("abc") == 781547
    assert stable_hash("/home/user/app") == -1264128747
    app = Path("/srv/app")
    machine = "".join(ch for ch in socket.gethostname() if ch.isalnum())
    assert host_id(app, {}) == f"{machine}-{abs(stable_hash('/srv/app'))}"[:32].lower().rstrip("-")
    assert host_id(app, {"AzureFunctionsWebHost__hostid": "my-host"}) == "my-host"
    assert host_id(app, {"AzureFunctionsWebHost:HostId": "other"}) == "other"


@pytest.mark.parametrize(
    ("listening_on", "reached_at"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("localhost", "127.0.0.1"),
        ("0.0.0.0", "127.0.0.1"),
        ("::", "[::1]"),
        ("::1", "[::1]"),
        ("10.1.2.3", "10.1.2.3"),
        ("fe80::1", "[fe80::1]"),
        ("myhost", "myhost"),
    ],
)
def test_the_df_client_reaches_the_host_where_it_listens(listening_on: str, reached_at: str) -> None:
    """The df client's private calls go to an address the server listens on, not always to 127.0.0.1."""
    assert self_address(listening_on) == reached_at


async def test_the_apps_development_storage_settings_follow_azurite_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """UseDevelopmentStorage=true in the app's settings means the Azurite that --azurite-port moved."""
    blob, queue, table = distinct_free_ports(3)
    ports = AzuritePorts(blob=blob, queue=queue, table=table)
    settings = {
        "AzureWebJobsStorage": DEV_STORAGE,
        "BackupStorage": "usedevelopmentstorage=TRUE",
        "ProxiedStorage": f"{DEV_STORAGE};DevelopmentStorageProxyUri=http://proxy.test",
        "Greeting": "hello=world",
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)  # restored after the test, whatever the host writes
    app = sample_app_dir(tmp_path, "Ports" + uuid.uuid4().hex[:8])
    (app / "local.settings.json").write_text(json.dumps({"Values": settings}))
    host = LocalHost(
        LocalHostOptions(app_dir=app, port=free_port(), azurite_in_memory=True, azurite_ports=ports)
    )
    try:
        await host.prepare()
    finally:
        host.stop()
    moved = dev_connection_string("127.0.0.1", ports)
    seen = {name: os.environ[name] for name in settings}
    assert seen == {**settings, "AzureWebJobsStorage": moved, "BackupStorage": moved}


async def test_a_v1_allow_list_imports_only_its_functions(
    tmp_path: Path,
    azurite_connection_string: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AzureWebJobsStorage", azurite_connection_string)  # the host exports its settings
    activity = {"bindings": [{"name": "value", "type": "activityTrigger", "direction": "in"}]}
    for name, code in (("Wanted", "def main(value):\n    return value\n"), ("Broken", "import not_here\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "function.json").write_text(json.dumps(activity))
        (tmp_path / name / "__init__.py").write_text(code)
    hub = "Allow" + uuid.uuid4().hex[:8]
    (tmp_path / "host.json").write_text(
        json.dumps({"version": "2.0", "extensions": {"durableTask": {"hubName": hub}}})
    )
    settings = {"Values": {"AzureWebJobsStorage": azurite_connection_string}}
    (tmp_path / "local.settings.json").write_text(json.dumps(settings))

    def host(*functions: str) -> LocalHost:
        return LocalHost(LocalHostOptions(app_dir=tmp_path, port=free_port(), functions=functions))

    with pytest.raises(ConfigError, match="names no function of the app; its functions are: Broken, Wanted"):
        await host("nothing").prepare()
    running = host("wanted", "nothing")
    try:
        await running.prepare()
    finally:
        running.stop()
    assert running.registry is not None
    assert [f.function_name for f in running.registry.functions] == ["Wanted"]
    assert "--functions names 'nothing', which is not a function of the app" in caplog.text
