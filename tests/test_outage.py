"""Storage outages (issue 15 item 6): 503 + Retry-After from the management API, one log line each way,
no tracebacks, and a host that restarts the Azurite it started when that process dies."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import aiohttp
import httpx
import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError, ServiceRequestError

from durable_ext.errors import AzuriteError, StorageError, StorageUnreachableError, ValidationError
from durable_ext.host.azurite import Azurite
from durable_ext.host.supervisor import RestartPolicy, supervise
from durable_ext.storage.outage import StorageHealth, is_outage
from tests.host_support import RunningHost, free_port, running_host, sample_app_dir, start_process

API = "/runtime/webhooks/durabletask"
AZURITE_DATA = ".durable_ext/azurite"
"""Where the host keeps the data of the Azurite it starts, inside the app directory."""
TIMEOUT = 30.0


def _http_error(status: int) -> HttpResponseError:
    error = HttpResponseError(message=f"HTTP {status}")
    error.status_code = status
    return error


def _wrapped(cause: BaseException, outer: Exception) -> Exception:
    outer.__cause__ = cause
    return outer


def _raised_while_handling(context: BaseException) -> Exception:
    error = KeyError("a bug in a handler")
    error.__context__ = context
    return error


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ConnectionRefusedError(), True),
        (ConnectionResetError(), True),
        (TimeoutError(), True),
        (ServiceRequestError("connection refused"), True),
        (aiohttp.ServerDisconnectedError(), True),
        (StorageUnreachableError("cannot reach"), True),
        (_http_error(503), True),
        (_http_error(500), True),
        (_wrapped(aiohttp.ClientConnectionError("refused"), HttpResponseError(message="GET failed")), True),
        (_wrapped(ServiceRequestError("refused"), StorageError("cannot create the hub")), True),
        (_http_error(501), False),
        (_http_error(409), False),
        (ResourceNotFoundError("no such table"), False),
        (ValidationError("bad instance ID"), False),
        (_raised_while_handling(ConnectionRefusedError()), False),
    ],
)
def test_is_outage_tells_unreachable_storage_from_other_errors(exc: Exception, expected: bool) -> None:
    assert is_outage(exc) is expected


def test_storage_health_logs_one_line_each_way(caplog: pytest.LogCaptureFixture) -> None:
    health = StorageHealth()
    with caplog.at_level(logging.INFO, logger="durable_ext.storage.outage"):
        health.succeeded("acct")
        assert not health.failed("acct", ValueError("a bug"))
        for _ in range(3):
            assert health.failed("acct", ConnectionRefusedError("refused"))
        assert not health.reachable("acct") and health.reachable("other")
        health.succeeded("acct")
        health.succeeded("acct")
    assert [r.getMessage() for r in caplog.records] == [
        "storage unreachable at acct: refused; retrying",
        "storage reachable again at acct",
    ]


class _DyingAzurite:
    """Stands in for an Azurite whose process is always found dead."""

    running = False
    returncode = 137

    def __init__(self, location: Path | None) -> None:
        self.location = location
        self.starts = 0

    def start(self) -> None:
        self.starts += 1

    def log_tail(self) -> str:
        return "killed"


FAST = RestartPolicy(limit=2, window=60, check_interval=0.01)


async def test_the_supervisor_gives_up_after_too_many_restarts(tmp_path: Path) -> None:
    dying = _DyingAzurite(tmp_path)
    lines: list[str] = []
    restarted: list[int] = []

    async def on_restart() -> None:
        restarted.append(dying.starts)

    with pytest.raises(AzuriteError, match=r"code 137\) again after 2 restarts within 60s.*\nkilled"):
        await supervise(cast(Azurite, dying), lines.append, on_restart, FAST)
    assert dying.starts == 2
    restarting = (
        f"Azurite exited unexpectedly (code 137); restarting it on the same ports and data ({tmp_path})"
    )
    assert lines == [f"{restarting}...", "Azurite is running again."] * 2
    assert restarted == [1, 2]


async def _never_called() -> None:
    raise AssertionError("no restart expected")


async def test_the_supervisor_does_not_restart_an_in_memory_azurite() -> None:
    dying = _DyingAzurite(None)
    with pytest.raises(AzuriteError, match="its data was in memory and is lost"):
        await supervise(cast(Azurite, dying), print, _never_called, FAST)
    assert dying.starts == 0


# ---- a real host -----------------------------------------------------------------------------------------


async def _until(check: Callable[[], Awaitable[bool] | bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if await result if inspect.isawaitable(result) else result:
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def _start(http: httpx.AsyncClient, payload: Any = None) -> str:
    response = await http.post(f"{API}/orchestrators/approval_workflow", json=payload)
    assert response.status_code == 202, response.text
    instance_id: str = response.json()["id"]
    return instance_id


async def _status(http: httpx.AsyncClient, instance_id: str) -> dict[str, Any]:
    response = await http.get(f"{API}/instances/{instance_id}")
    body: dict[str, Any] = response.json() if response.status_code in (200, 202) else {}
    return body


async def _waiting_for_approval(http: httpx.AsyncClient, instance_id: str) -> None:
    async def waiting() -> bool:
        return (await _status(http, instance_id)).get("customStatus") == "Waiting for approval"

    await _until(waiting, f"{instance_id} to wait for approval")


async def _approve_and_complete(http: httpx.AsyncClient, instance_id: str) -> None:
    approved = await http.post(f"{API}/instances/{instance_id}/raiseEvent/Approval", json=True)
    assert approved.status_code == 202, approved.text

    async def completed() -> bool:
        return (await _status(http, instance_id)).get("runtimeStatus") == "Completed"

    await _until(completed, f"{instance_id} to complete")
    assert (await _status(http, instance_id))["output"] == "approved"


def _assert_quiet(host: RunningHost) -> None:
    output = host.output()
    assert "Traceback" not in output, output[-4000:]
    assert output.count("storage unreachable at") == 1, output[-4000:]


async def test_the_api_answers_503_while_storage_is_down(tmp_path: Path) -> None:
    app = sample_app_dir(tmp_path, "Outage" + uuid.uuid4().hex[:8])
    with (
        Azurite(location=tmp_path / "azurite") as storage,
        running_host(app, storage.connection_string, tmp_path / "host.log") as host,
    ):
        async with httpx.AsyncClient(base_url=host.base_url, timeout=TIMEOUT) as http:
            instance_id = await _start(http)
            await _waiting_for_approval(http, instance_id)
            storage.stop()
            answers = await asyncio.gather(
                http.get(f"{API}/instances/{instance_id}"),
                http.get(f"{API}/instances/"),
                http.post(f"{API}/orchestrators/approval_workflow"),
                http.post(f"{API}/instances/{instance_id}/raiseEvent/Approval", json=True),
            )
            for answer in answers:
                assert answer.status_code == 503, (answer.request.url, answer.text)
                assert answer.headers["Retry-After"] == "5"
                assert answer.json()["error"].startswith("storage is unreachable: ")
                assert answer.json()["ExceptionMessage"] == answer.json()["error"]

            storage.start()
            await _approve_and_complete(http, instance_id)
            await _until(lambda: "storage reachable again at" in host.output(), "the recovery line")
        _assert_quiet(host)


def _consecutive_free_ports() -> int:
    """A port N such that N, N+1 and N+2 are free right now."""
    for _ in range(100):
        base = free_port()
        with socket.socket() as one, socket.socket() as two:
            try:
                one.bind(("127.0.0.1", base + 1))
                two.bind(("127.0.0.1", base + 2))
            except OSError:
                continue
        return base
    raise AssertionError("no three consecutive free ports")


def _child_pid(pid: int) -> int:
    """The one child process of ``pid``: the Azurite a host started."""
    # Per thread: the host restarts Azurite from a worker thread.
    children = [
        c for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()
    ]
    assert len(children) == 1, children
    return int(children[0])


def _persisted(data_dir: Path, text: str, service: str = "table") -> bool:
    """Whether Azurite has saved ``text`` in the database of ``service`` (it saves every few seconds)."""
    database = data_dir / f"__azurite_db_{service}__.json"
    return database.is_file() and text in database.read_text(errors="replace")


async def test_the_host_restarts_the_azurite_it_started(tmp_path: Path) -> None:
    app = sample_app_dir(tmp_path, "Restart" + uuid.uuid4().hex[:8])
    data_dir = app / AZURITE_DATA
    port = str(_consecutive_free_ports())
    with running_host(
        app, "UseDevelopmentStorage=true", tmp_path / "host.log", extra_args=["--azurite-port", port]
    ) as host:
        async with httpx.AsyncClient(base_url=host.base_url, timeout=TIMEOUT) as http:
            instance_id = await _start(http)
            await _waiting_for_approval(http, instance_id)
            # A kill -9 loses what Azurite has not saved yet; the test is about what it had.
            await _until(lambda: _persisted(data_dir, "Waiting for approval"), "Azurite to save")
            os.kill(_child_pid(host.process.pid), signal.SIGKILL)
            await _until(lambda: "Azurite is running again." in host.output(), "the restart")
            await _approve_and_complete(http, instance_id)
        output = host.output()
        assert "Azurite exited unexpectedly (code -9); restarting it on the same ports and data" in output
        assert "Traceback" not in output, output[-4000:]


async def test_the_host_gives_up_on_an_azurite_that_keeps_dying(tmp_path: Path) -> None:
    app = sample_app_dir(tmp_path, "Dying" + uuid.uuid4().hex[:8])
    log = tmp_path / "host.log"
    extra_args = ["--azurite-port", str(_consecutive_free_ports())]
    process = start_process(app, "UseDevelopmentStorage=true", output=log, extra_args=extra_args)
    try:
        await _until(lambda: "Host ready" in log.read_text(), "the host")
        # Killed before its first save, Azurite would come back without the hub's queues.
        await _until(lambda: _persisted(app / AZURITE_DATA, "control-01", "queue"), "Azurite to save")
        for restarts in range(1, 4):
            os.kill(_child_pid(process.pid), signal.SIGKILL)
            await _until(
                lambda n=restarts: log.read_text().count("Azurite is running again.") == n, "a restart"
            )
        os.kill(_child_pid(process.pid), signal.SIGKILL)
        await _until(lambda: process.poll() is not None, "the host to exit")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = log.read_text()
    assert process.returncode == 1, output[-4000:]
    assert "error: Azurite exited unexpectedly (code -9) again after 3 restarts within 60s" in output
    assert "Traceback" not in output, output[-4000:]
