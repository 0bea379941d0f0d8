"""Tests of the command line (durable_ext.cli) against the session's real Azurite."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.storage.queue import QueueClient

from durable_ext.cli import COMMANDS, main
from durable_ext.config import load_config
from durable_ext.errors import ConfigError
from durable_ext.host.azurite import Azurite, AzuritePorts, dev_connection_string, ports_answer
from durable_ext.storage.account import StorageAccount
from durable_ext.storage.taskhub import TaskHub, TaskHubInfo

REPO_DIR = Path(__file__).resolve().parents[1]
CONNECTION_SETTING = "AzureWebJobsStorage"
PARTITIONS = 3


# --- helpers --------------------------------------------------------------------------------------------


def unique_hub() -> str:
    """A task hub name no other test uses."""
    return "CliHub" + uuid.uuid4().hex[:10]


def write_app(directory: Path, hub_name: str, partition_count: int = PARTITIONS) -> Path:
    """Write a minimal Functions app (just host.json) for ``hub_name`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    host = {
        "version": "2.0",
        "extensions": {
            "durableTask": {"hubName": hub_name, "storageProvider": {"partitionCount": partition_count}}
        },
    }
    (directory / "host.json").write_text(json.dumps(host))
    return directory


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound by the OS, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def free_port_run(attempts: int = 20) -> int:
    """A port N such that N, N+1 and N+2 are all free on 127.0.0.1 right now."""
    for _ in range(attempts):
        base = closed_port()
        try:
            with socket.create_server(("127.0.0.1", base + 1)), socket.create_server(("127.0.0.1", base + 2)):
                return base
        except OSError:
            continue
    raise RuntimeError("found no three consecutive free ports")


def hub_info(connection_string: str, hub_name: str) -> TaskHubInfo:
    """Inspect a hub directly through TaskHub, independently of the CLI."""

    async def run() -> TaskHubInfo:
        account = StorageAccount.from_connection_string(connection_string)
        async with TaskHub(account, hub_name, PARTITIONS) as hub:
            return await hub.info()

    return asyncio.run(run())


def resource_rows(text: str) -> dict[str, tuple[str, str, str]]:
    """Parse the Resources table of ``hub info``: name -> (kind, state, messages)."""
    lines = text.splitlines()
    start = lines.index("Resources:") + 2  # skip the header row
    rows: dict[str, tuple[str, str, str]] = {}
    for line in lines[start:]:
        if not line.strip():
            break
        kind, name, state, messages = line.split()
        rows[name] = (kind, state, messages)
    return rows


def partition_rows(text: str) -> list[list[str]]:
    """Parse the Partitions table of ``hub info`` into cells (header excluded)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Partitions (")) + 2
    return [line.split() for line in lines[start:] if line.strip()]


def subprocess_env(connection_string: str) -> dict[str, str]:
    """The environment for running ``python -m durable_ext`` from any directory."""
    python_path = os.pathsep.join(p for p in (str(REPO_DIR), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, CONNECTION_SETTING: connection_string, "PYTHONPATH": python_path}


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run main() in-process; return (exit code, stdout, stderr)."""
    capsys.readouterr()  # drop anything printed before
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


class FakeTty(io.StringIO):
    """Stdin that claims to be a terminal and answers with prepared text."""

    def isatty(self) -> bool:
        return True


# --- fixtures -------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _restore_azure_log_level() -> Iterator[None]:
    """main() quiets the 'azure' logger; give other tests back whatever level it had."""
    azure_logger = logging.getLogger("azure")
    level = azure_logger.level
    yield
    azure_logger.setLevel(level)


@pytest.fixture
def storage_env(monkeypatch: pytest.MonkeyPatch, azurite_connection_string: str) -> str:
    """Point AzureWebJobsStorage at the session Azurite; returns the connection string."""
    monkeypatch.setenv(CONNECTION_SETTING, azurite_connection_string)
    return azurite_connection_string


@pytest.fixture
def app(tmp_path: Path, storage_env: str) -> Iterator[tuple[Path, str]]:
    """An app directory with a unique hub name; the hub is deleted afterwards if a test created it."""
    name = unique_hub()
    yield write_app(tmp_path / "app", name), name

    async def cleanup() -> None:
        async with TaskHub(StorageAccount.from_connection_string(storage_env), name, PARTITIONS) as hub:
            await hub.delete()

    asyncio.run(cleanup())


# --- hub create / info / delete -------------------------------------------------------------------------


def test_create_info_delete_round_trip(
    app: tuple[Path, str], storage_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    app_dir, name = app
    lower = name.lower()
    control_queues = [f"{lower}-control-{i:02d}" for i in range(PARTITIONS)]
    tables = [f"{name}History", f"{name}Instances", f"{name}Partitions"]

    code, out, err = run_cli(capsys, "hub", "create", "--app-dir", str(app_dir))
    assert (code, err) == (0, "")
    assert f"Created task hub {name!r} ({PARTITIONS} partitions)" in out
    for resource in [*tables, *control_queues, f"{lower}-workitems", f"{lower}-applease"]:
        assert any(line.split()[1:] == [resource, "created"] for line in out.splitlines()[1:]), resource
    assert hub_info(storage_env, name).exists

    # Creating again is idempotent and says so.
    code, out, _ = run_cli(capsys, "hub", "create", "--app-dir", str(app_dir))
    assert code == 0
    assert "already exists" in out
    assert " created\n" not in out

    # A message in the work-item queue shows up as a count.
    with QueueClient.from_connection_string(storage_env, f"{lower}-workitems") as work_items:
        work_items.send_message("hello")

    code, out, err = run_cli(capsys, "hub", "info", "--app-dir", str(app_dir))
    assert (code, err) == (0, "")
    assert f"Task hub:        {name}\n" in out
    assert f"Partition count: {PARTITIONS}\n" in out
    assert "State:           exists\n" in out
    assert "devstoreaccount1" in out
    assert "AccountKey" not in out
    assert "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq" not in out
    rows = resource_rows(out)
    for queue_name in control_queues:
        assert rows[queue_name] == ("queue", "exists", "0")
    assert rows[f"{lower}-workitems"] == ("queue", "exists", "1")
    for table in tables:
        assert rows[table] == ("table", "exists", "-")
    assert rows[f"{lower}-applease"] == ("container", "exists", "-")
    assert not any(n.startswith(f"{lower}-control-") for n in rows if n not in control_queues)
    partitions = partition_rows(out)
    assert [row[0] for row in partitions] == control_queues
    assert all(row[1:] == ["-", "-", "-", "no"] for row in partitions)  # unowned, not draining

    code, json_out, err = run_cli(capsys, "hub", "info", "--app-dir", str(app_dir), "--json")
    assert (code, err) == (0, "")
    data = json.loads(json_out)
    assert data["hub"] == name
    assert data["partition_count"] == PARTITIONS
    assert data["exists"] is True
    assert "AccountKey" not in data["account"]
    assert data["account"] in out
    assert {r["name"]: (r["kind"], "exists" if r["exists"] else "missing") for r in data["resources"]} == {
        n: (kind, state) for n, (kind, state, _) in rows.items()
    }
    counts = {r["name"]: r["message_count"] for r in data["resources"] if r["kind"] == "queue"}
    assert counts == {**dict.fromkeys(control_queues, 0), f"{lower}-workitems": 1}
    assert [p["partition_id"] for p in data["partitions"]] == control_queues
    assert all(
        (p["current_owner"], p["next_owner"], p["expires_at"], p["is_draining"]) == (None, None, None, False)
        for p in data["partitions"]
    )

    code, out, err = run_cli(capsys, "hub", "delete", "--app-dir", str(app_dir), "--yes")
    assert (code, err) == (0, "")
    assert f"Deleted task hub {name!r}" in out
    assert f"{lower}-control-02" in out
    assert not any(r.exists for r in hub_info(storage_env, name).resources)

    code, out, err = run_cli(capsys, "hub", "info", "--app-dir", str(app_dir))
    assert code == 1
    assert "State:           missing\n" in out
    assert all(state == "missing" for _, state, _ in resource_rows(out).values())
    assert "  (no rows)" in out
    assert err == (
        f"hint: task hub {name!r} does not exist; "
        f"create it with `python -m durable_ext hub create --app-dir {app_dir}`\n"
    )

    code, json_out, _ = run_cli(capsys, "hub", "info", "--app-dir", str(app_dir), "--json")
    assert code == 1
    data = json.loads(json_out)
    assert data["exists"] is False
    assert not any(r["exists"] for r in data["resources"])
    assert data["partitions"] == []

    # Deleting a hub that is gone is not an error.
    code, out, _ = run_cli(capsys, "hub", "delete", "--app-dir", str(app_dir), "--yes")
    assert code == 0
    assert "nothing to delete" in out


def test_info_as_subprocess_uses_current_directory(
    app: tuple[Path, str], storage_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    app_dir, name = app
    assert run_cli(capsys, "hub", "create", "--app-dir", str(app_dir))[0] == 0

    result = subprocess.run(
        [sys.executable, "-m", "durable_ext", "hub", "info"],
        cwd=app_dir,
        env=subprocess_env(storage_env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert f"Task hub:        {name}\n" in result.stdout
    rows = resource_rows(result.stdout)
    assert rows[f"{name.lower()}-control-02"] == ("queue", "exists", "0")
    assert rows[f"{name}Partitions"] == ("table", "exists", "-")


def test_delete_without_yes_on_non_tty_refuses(
    app: tuple[Path, str],
    storage_env: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app_dir, name = app
    assert run_cli(capsys, "hub", "create", "--app-dir", str(app_dir))[0] == 0
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))

    code, out, err = run_cli(capsys, "hub", "delete", "--app-dir", str(app_dir))
    assert code == 2
    assert out == ""
    assert err.startswith(f"error: refusing to delete task hub {name!r} without confirmation")
    assert "--yes" in err
    assert hub_info(storage_env, name).exists


def test_delete_asks_on_a_tty(
    app: tuple[Path, str],
    storage_env: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app_dir, name = app
    assert run_cli(capsys, "hub", "create", "--app-dir", str(app_dir))[0] == 0

    monkeypatch.setattr(sys, "stdin", FakeTty("n\n"))
    code, out, err = run_cli(capsys, "hub", "delete", "--app-dir", str(app_dir))
    assert code == 1
    assert f"Delete task hub {name!r}" in out  # the prompt
    assert "nothing was deleted" in err
    assert hub_info(storage_env, name).exists

    monkeypatch.setattr(sys, "stdin", FakeTty("yes\n"))
    code, out, err = run_cli(capsys, "hub", "delete", "--app-dir", str(app_dir))
    assert (code, err) == (0, "")
    assert f"Deleted task hub {name!r}" in out
    assert not hub_info(storage_env, name).exists


# --- errors ---------------------------------------------------------------------------------------------


def test_unreachable_storage_in_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = closed_port()
    monkeypatch.setenv(CONNECTION_SETTING, dev_connection_string("127.0.0.1", AzuritePorts(port, port, port)))
    app_dir = write_app(tmp_path, unique_hub())

    for argv in (["info"], ["create"], ["delete", "--yes"]):
        code, out, err = run_cli(capsys, "hub", *argv, "--app-dir", str(app_dir))
        assert code == 1, argv
        assert out == ""
        assert err.startswith(
            f"error: cannot reach Azure Storage at devstoreaccount1 (http://127.0.0.1:{port}/"
        )
        assert err.endswith("is Azurite running?\n")
        assert err.count("\n") == 1


def test_unreachable_storage_as_subprocess_fails_fast(tmp_path: Path) -> None:
    port = closed_port()
    app_dir = write_app(tmp_path, unique_hub())
    env = subprocess_env(dev_connection_string("127.0.0.1", AzuritePorts(port, port, port)))

    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "durable_ext", "hub", "info", "--app-dir", str(app_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    elapsed = time.monotonic() - started

    assert result.returncode == 1
    assert result.stdout == ""
    assert "cannot reach Azure Storage" in result.stderr
    assert "is Azurite running?" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1
    assert elapsed < 10, f"hub info against a closed port took {elapsed:.1f}s"


def test_invalid_hub_name_is_a_config_error(
    tmp_path: Path, storage_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    app_dir = write_app(tmp_path, "a-b")
    with pytest.raises(ConfigError) as expected:
        load_config(app_dir.resolve())
    assert "'a-b'" in str(expected.value)

    for argv in (["info"], ["create"], ["delete", "--yes"]):
        code, out, err = run_cli(capsys, "hub", *argv, "--app-dir", str(app_dir))
        assert (code, out) == (1, ""), argv
        assert err == f"error: {expected.value}\n"


def test_missing_connection_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in [k for k in os.environ if k.lower() == CONNECTION_SETTING.lower()]:
        monkeypatch.delenv(variable)
    app_dir = write_app(tmp_path, unique_hub())
    missing = (
        f"error: App setting {CONNECTION_SETTING!r} (the storage connection string, or "
        f"{CONNECTION_SETTING}__accountName and the other settings of an identity-based connection) is "
        "missing or empty; "
    )

    code, out, err = run_cli(capsys, "hub", "info", "--app-dir", str(app_dir))
    assert (code, out) == (1, "")
    local = app_dir / "local.settings.json"
    assert err == (
        f"{missing}{local} does not exist: create it with "
        '{"IsEncrypted": false, "Values": {"AzureWebJobsStorage": "UseDevelopmentStorage=true"}}'
        " (or run `python -m durable_ext init`)\n"
    )

    local.write_text(json.dumps({"Values": {"FUNCTIONS_WORKER_RUNTIME": "python"}}))
    code, out, err = run_cli(capsys, "hub", "info", "--app-dir", str(app_dir))
    assert (code, out) == (1, "")
    paste = '"AzureWebJobsStorage": "UseDevelopmentStorage=true"'
    assert err == f'{missing}for Azurite, add {paste} to "Values" in {local}\n'


def test_local_settings_supply_the_connection_string(
    app: tuple[Path, str],
    azurite_connection_string: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app_dir, name = app
    monkeypatch.delenv(CONNECTION_SETTING)
    settings = {"IsEncrypted": False, "Values": {CONNECTION_SETTING: azurite_connection_string}}
    (app_dir / "local.settings.json").write_text(json.dumps(settings))

    code, out, _ = run_cli(capsys, "hub", "info", "--app-dir", str(app_dir))
    assert code == 1
    assert f"Task hub:        {name}\n" in out


def test_missing_app_dir(tmp_path: Path, storage_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope"
    code, out, err = run_cli(capsys, "hub", "info", "--app-dir", str(missing))
    assert (code, out) == (1, "")
    assert err == f"error: app directory {missing} does not exist or is not a directory\n"


@pytest.mark.parametrize(
    "argv",
    [[], ["hub"], ["nosuchcommand"], ["hub", "info", "--bogus"], ["azurite", "--port-base", "65535"]],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert "usage:" in err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    assert "hub" in out
    assert "azurite" in out


def test_command_registry() -> None:
    assert list(COMMANDS) == [
        *("init", "hub", "azurite", "start", "worker", "dashboard", "doctor", "lint", "history", "replay"),
        "check-deploy",
    ]


@pytest.mark.parametrize("command", ["start", "worker"])
def test_grace_period_must_be_seconds(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(capsys, command, "--app-dir", str(tmp_path), "--grace-period", "-1")
    assert code == 2
    assert "--grace-period: must be 0 or more, got -1" in err
    monkeypatch.setenv("DURABLE_EXT_GRACE_PERIOD", "soon")
    code, _, err = run_cli(capsys, command, "--app-dir", str(tmp_path))
    assert code == 1
    assert "error: DURABLE_EXT_GRACE_PERIOD: not a number of seconds: 'soon'" in err


# --- azurite --------------------------------------------------------------------------------------------


def test_azurite_port_in_use(azurite: Azurite, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "azurite", "--port-base", str(azurite.ports.blob))
    assert (code, out) == (1, "")
    assert err.startswith("error: Cannot start Azurite: blob port")
    assert "already in use" in err


# `python -m durable_ext azurite ...`, except that SIGINT gets Python's default handler back: a parent that
# ignores SIGINT (e.g. a non-interactive shell's background job) passes that on, and a terminal user's
# Ctrl-C is what the test imitates.
_LAUNCHER = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv[0] = 'durable_ext'; runpy.run_module('durable_ext', run_name='__main__', alter_sys=True)"
)


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_azurite_runs_in_foreground_until_signalled(stop_signal: signal.Signals, tmp_path: Path) -> None:
    base = free_port_run()
    ports = AzuritePorts(blob=base, queue=base + 1, table=base + 2)
    process = subprocess.Popen(
        [sys.executable, "-c", _LAUNCHER, "azurite", "--port-base", str(base)],
        cwd=tmp_path,
        env=subprocess_env(""),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    try:
        expected = dev_connection_string("127.0.0.1", ports)
        deadline = time.monotonic() + 120
        seen: list[str] = []
        while expected not in seen:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            assert line is not None, f"azurite command exited early after printing {seen}"
            seen.append(line.rstrip("\n"))
        assert ports_answer("127.0.0.1", ports)
        assert any("in memory" in line for line in seen)

        process.send_signal(stop_signal)
        assert process.wait(timeout=30) == 0
        assert process.stderr is not None
        stderr = process.stderr.read()
        assert "Azurite stopped." in stderr
        assert "Traceback" not in stderr
        assert not ports_answer("127.0.0.1", ports, timeout=0.2)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# --- init and broken files ------------------------------------------------------------------------------


def run_module(cwd: Path, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m durable_ext ARGV`` in ``cwd`` (this checkout importable), with its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "durable_ext", *argv],
        cwd=cwd,
        env=env or subprocess_env(""),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_init_writes_what_func_init_writes_and_never_overwrites(tmp_path: Path) -> None:
    app_dir = tmp_path / "new"
    result = run_module(tmp_path, "init", "--app-dir", "new")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "Writing new/host.json\nWriting new/local.settings.json\n"
    host = json.loads((app_dir / "host.json").read_text())
    assert host["version"] == "2.0"
    assert host["extensionBundle"] == {
        "id": "Microsoft.Azure.Functions.ExtensionBundle",
        "version": "[4.*, 5.0.0)",
    }
    local = json.loads((app_dir / "local.settings.json").read_text())
    assert local == {
        "IsEncrypted": False,
        "Values": {"FUNCTIONS_WORKER_RUNTIME": "python", "AzureWebJobsStorage": "UseDevelopmentStorage=true"},
    }
    # What init wrote is a configuration durable_ext loads, pointing at Azurite.
    assert (
        load_config(app_dir, environ={}).storage_connection().connection_string
        == "UseDevelopmentStorage=true"
    )

    (app_dir / "host.json").write_text('{"version": "2.0"}')
    result = run_module(app_dir, "init")
    assert result.returncode == 0
    assert result.stdout == (
        "host.json already exists. Skipped!\nlocal.settings.json already exists. Skipped!\n"
    )
    assert (app_dir / "host.json").read_text() == '{"version": "2.0"}'


BROKEN_HOST_JSON = {
    "invalid JSON": (b'{"version": "2.0",}', "invalid JSON at line 1, column 19"),
    "empty": (b"  \n", "is empty"),
    "BOM": (b'\xef\xbb\xbf{"version": "2.0"}', "starts with a UTF-8 byte order mark"),
    "not UTF-8": (b'{"hubName": "caf\xe9"}', "is not UTF-8 text (byte 0xe9 at offset 16)"),
}


@pytest.mark.parametrize("kind", list(BROKEN_HOST_JSON))
@pytest.mark.parametrize(
    "argv",
    [["start"], ["hub", "info"], ["doctor"], ["azurite"], ["init"], ["--help"]],
    ids=" ".join,
)
def test_a_broken_host_json_is_one_line_from_every_command(
    tmp_path: Path, kind: str, argv: list[str]
) -> None:
    content, detail = BROKEN_HOST_JSON[kind]
    (tmp_path / "host.json").write_bytes(content)
    result = run_module(tmp_path, *argv, env=subprocess_env("UseDevelopmentStorage=true"))
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.startswith(f"error: {tmp_path / 'host.json'}")
    assert detail in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert (tmp_path / "host.json").read_bytes() == content
