"""Running ``python -m durable_ext start`` as a user does: a real process on a free port."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

REPO = Path(__file__).resolve().parents[1]
SAMPLE_PARTS = ("function_app.py", "orchestrators", "activities", "entities")


def sample_app_dir(tmp_path: Path, hub: str, *, extra_blueprints: Sequence[Path] = ()) -> Path:
    """A copy of the sample app with its own hub (2 partitions) and, optionally, more blueprints.

    Each extra blueprint module (a file defining ``bp``) is copied next to function_app.py and
    registered at its end, as a user adds one.
    """
    app = tmp_path / "app"
    app.mkdir()
    for name in SAMPLE_PARTS:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, app / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, app / name)
    with (app / "function_app.py").open("a") as function_app:
        for module in extra_blueprints:
            shutil.copy(module, app / module.name)
            function_app.write(f"\nfrom {module.stem} import bp as {module.stem}_bp\n")
            function_app.write(f"app.register_functions({module.stem}_bp)\n")
    host = {
        "version": "2.0",
        "extensions": {"durableTask": {"hubName": hub, "storageProvider": {"partitionCount": 2}}},
    }
    (app / "host.json").write_text(json.dumps(host))
    return app


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def distinct_free_ports(count: int) -> list[int]:
    """``count`` different TCP ports nothing listens on right now (all bound at once while picked)."""
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]


def host_env(connection_string: str, settings: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a host subprocess runs in: this repository importable, the given storage."""
    return {
        **os.environ,
        "AzureWebJobsStorage": connection_string,
        "PYTHONPATH": str(REPO),
        **(settings or {}),
    }


def start_command(app: Path, port: int = 0, global_args: Sequence[str] = ()) -> list[str]:
    """``python -m durable_ext [global_args] start --app-dir APP --port PORT`` (a free port by default)."""
    return [
        sys.executable,
        "-m",
        "durable_ext",
        *global_args,
        "start",
        "--app-dir",
        str(app),
        "--port",
        str(port or free_port()),
    ]


def start_process(
    app: Path,
    connection_string: str,
    port: int = 0,
    *,
    output: int | Path = subprocess.PIPE,
    extra_args: Sequence[str] = (),
    global_args: Sequence[str] = (),
) -> subprocess.Popen[str]:
    """``python -m durable_ext [global_args] start`` on ``app`` (plus ``extra_args``); stdout and
    stderr go to ``output`` (a pipe or a file)."""
    env = host_env(connection_string)
    command = [*start_command(app, port, global_args), *extra_args]
    if isinstance(output, Path):
        with output.open("w") as log:
            return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True, env=env)
    return subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, text=True, env=env)


def read_until(process: subprocess.Popen[str], marker: str, timeout: float = 60.0) -> str:
    """Read the process's piped output until a line contains ``marker``; the output read so far."""
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


@dataclass
class RunningHost:
    """A started host: where it listens and where its console output goes."""

    base_url: str
    log: Path
    process: subprocess.Popen[str]

    def output(self) -> str:
        return self.log.read_text()


@contextmanager
def running_host(
    app: Path,
    connection_string: str,
    log: Path,
    timeout: float = 60.0,
    extra_args: Sequence[str] = (),
    *,
    global_args: Sequence[str] = (),
) -> Iterator[RunningHost]:
    """Start the host with its output in the file ``log`` (a pipe would fill up and block it).

    Yields once it printed "Host ready"; stops it with SIGTERM afterwards and checks it exited cleanly.
    """
    port = free_port()
    process = start_process(
        app, connection_string, port, output=log, extra_args=extra_args, global_args=global_args
    )
    try:
        deadline = time.monotonic() + timeout
        while "Host ready" not in log.read_text():
            assert process.poll() is None, f"the host exited early:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"the host did not get ready:\n{log.read_text()}"
            time.sleep(0.05)
        yield RunningHost(f"http://127.0.0.1:{port}", log, process)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log.read_text()[-4000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@contextmanager
def serve_in_thread(app: Any, timeout: float = 30.0) -> Iterator[str]:
    """Serve the ASGI ``app`` with uvicorn on a free 127.0.0.1 port in a background thread.

    Yields the base URL (``http://127.0.0.1:PORT``) once the server accepts connections; stops it after.
    """
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name=f"test-server-{port}", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            assert thread.is_alive(), "the test server exited while starting"
            assert time.monotonic() < deadline, "the test server did not start in time"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
