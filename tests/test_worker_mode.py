"""``worker`` next to ``start`` on one hub, the probes, and the graceful drain on SIGTERM: real processes
against Azurite."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.data.tables import TableClient

from durable_ext.client import TaskHubClient
from durable_ext.host.azurite import Azurite
from durable_ext.storage.account import StorageAccount
from durable_ext.storage.partitions import PartitionLease
from durable_ext.storage.queues import partition_index
from durable_ext.storage.taskhub import TaskHub
from tests.host_support import REPO, distinct_free_ports, host_env, sample_app_dir, start_command

SYSTEM_KEY = "probe-test-system-key-0123456789"
API = "/runtime/webhooks/durabletask"
GRACE_SECONDS = 30
TIMEOUT = 90.0


@dataclass
class Process:
    """A started ``start`` or ``worker`` process: its listener and its console output."""

    process: subprocess.Popen[str]
    base_url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text()


@contextmanager
def spawn(command: list[str], env: dict[str, str], base_url: str, log: Path, ready: str) -> Iterator[Process]:
    """Run ``command`` until it printed ``ready``; kill it afterwards if it is still running."""
    with log.open("w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        wait_for(lambda: ready in log.read_text() or process.poll() is not None, f"{ready!r} in {log}")
        assert process.poll() is None, f"exited early:\n{log.read_text()}"
        yield Process(process, base_url, log)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def worker_command(app: Path, admin_port: int, grace_seconds: float = GRACE_SECONDS) -> list[str]:
    """``python -m durable_ext -v worker`` on ``app`` with its probes on ``admin_port``."""
    command = [sys.executable, "-m", "durable_ext", "-v", "worker", "--app-dir", str(app)]
    return [*command, "--admin-port", str(admin_port), "--grace-period", str(grace_seconds)]


@contextmanager
def start_and_worker(
    app: Path, tmp_path: Path, connection_string: str, start_settings: dict[str, str]
) -> Iterator[tuple[Process, Process, int]]:
    """``start`` (with ``start_settings`` and an admin port) and a ``worker`` on ``app``, both ready;
    yields them and the admin port."""
    start_port, admin_port, worker_port = distinct_free_ports(3)
    with (
        spawn(
            [*start_command(app, start_port), "--admin-port", str(admin_port)],
            host_env(connection_string, start_settings),
            f"http://127.0.0.1:{start_port}",
            tmp_path / "start.log",
            "Host ready",
        ) as start,
        spawn(
            worker_command(app, worker_port),
            host_env(connection_string),
            f"http://127.0.0.1:{worker_port}",
            tmp_path / "worker.log",
            "Worker ready",
        ) as worker,
    ):
        yield start, worker, admin_port


def wait_for(condition: Callable[[], object], what: str, timeout: float = TIMEOUT) -> Any:
    """Poll ``condition`` until it answers something true (returned), failing after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = condition()
        if answer:
            return answer
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def leases(connection_string: str, hub: str) -> dict[str, PartitionLease]:
    with TableClient.from_connection_string(connection_string, f"{hub}Partitions") as table:
        rows = [PartitionLease.from_entity(entity) for entity in table.list_entities()]
    return {lease.partition_id: lease for lease in rows}


def owner_of(lease: PartitionLease, process: Process) -> bool:
    """Whether ``process`` holds ``lease`` (worker IDs are host:pid:suffix)."""
    return f":{process.process.pid}:" in (lease.current_owner or "")


def instance_on(partition: int, prefix: str) -> str:
    """An instance ID routed to control queue ``partition`` of a 2-partition hub."""
    return next(f"{prefix}-{n}" for n in range(1000) if partition_index(f"{prefix}-{n}", 2) == partition)


def ready(http: httpx.Client, url: str) -> bool:
    return http.get(f"{url}/readyz").status_code == 200


def test_worker_runs_beside_start_and_drains_on_sigterm(
    tmp_path: Path, azurite_connection_string: str
) -> None:
    hub = "Worker" + uuid.uuid4().hex[:8]
    app = sample_app_dir(tmp_path, hub, extra_blueprints=[REPO / "tests" / "apps" / "slow_step.py"])
    marks = tmp_path / "marks"
    marks.mkdir()
    with (
        start_and_worker(
            app, tmp_path, azurite_connection_string, {"DURABLE_EXT_SYSTEM_KEY": SYSTEM_KEY}
        ) as (start, worker, admin_port),
        httpx.Client(timeout=30) as http,
    ):
        # The probes need no key, even where the management API does; the worker serves nothing else.
        assert http.get(f"{start.base_url}/admin/host/status").status_code == 401
        for url in (start.base_url, f"http://127.0.0.1:{admin_port}", worker.base_url):
            answer = http.get(f"{url}/healthz")
            assert answer.status_code == 200 and answer.json() == {"status": "Healthy"}
            wait_for(lambda url=url: ready(http, url), f"{url}/readyz")  # type: ignore[misc]
        body = http.get(f"{worker.base_url}/readyz").json()
        assert body["status"] == "Healthy"
        assert set(body["checks"]) == {"storage", "leases", "dispatchers", "draining"}
        assert SYSTEM_KEY not in http.get(f"{start.base_url}/readyz").text
        assert http.get(f"{worker.base_url}/api/orchestrators/slow_once").status_code == 404
        assert http.get(f"{worker.base_url}{API}/instances").status_code == 404

        # Once the leases are shared, each process runs the instances (and activities) of its queue.
        control = [f"{hub.lower()}-control-0{n}" for n in range(2)]
        rows = wait_for(
            lambda: (
                (found := leases(azurite_connection_string, hub))
                and any(owner_of(found[name], worker) for name in control)
                and any(owner_of(found[name], start) for name in control)
                and found
            ),
            "the two processes to own one partition each",
        )
        worker_queue = next(name for name in control if owner_of(rows[name], worker))
        worker_partition = control.index(worker_queue)

        def start_instance(instance_id: str, tag: str, seconds: float) -> None:
            job = {"dir": str(marks), "tag": tag, "seconds": seconds}
            url = f"{start.base_url}{API}/orchestrators/slow_once/{instance_id}"
            answer = http.post(url, params={"code": SYSTEM_KEY}, json=job)
            assert answer.status_code == 202, answer.text

        def output_of(instance_id: str) -> Any:
            url = f"{start.base_url}{API}/instances/{instance_id}"
            status = http.get(url, params={"code": SYSTEM_KEY}).json()
            assert status["runtimeStatus"] in ("Pending", "Running", "Completed"), status
            return status["runtimeStatus"] == "Completed" and status

        quick = instance_on(1 - worker_partition, "quick")
        slow = instance_on(worker_partition, "slow")
        start_instance(quick, "quick", 0)
        start_instance(slow, "slow", 5)
        assert wait_for(lambda: output_of(quick), quick)["output"] == start.process.pid

        # SIGTERM while the worker runs the 5 s activity.
        started = marks / f"slow.started.{worker.process.pid}"
        wait_for(started.exists, "the slow activity to start")
        expiry = leases(azurite_connection_string, hub)[worker_queue].expires_at
        assert expiry is not None
        worker.process.send_signal(signal.SIGTERM)
        assert worker.process.wait(timeout=GRACE_SECONDS + 15) == 0, worker.output()[-4000:]
        assert "Worker stopped." in worker.output()

        # The activity finished once, on the worker; the instance went on with start, which took the
        # released partition before the worker's lease would have expired.
        assert wait_for(lambda: output_of(slow), slow)["output"] == worker.process.pid
        assert (marks / "slow.finished").read_text() == f"{worker.process.pid}\n"
        assert [mark.name for mark in marks.glob("slow.started.*")] == [f"slow.started.{worker.process.pid}"]
        wait_for(
            lambda: owner_of(leases(azurite_connection_string, hub)[worker_queue], start),
            "start to take the released partition",
            timeout=max(0.0, (expiry - datetime.now(UTC)).total_seconds()),
        )
        assert "released" in worker.output()


def test_readyz_fails_while_storage_is_down(tmp_path: Path) -> None:
    hub = "Ready" + uuid.uuid4().hex[:8]
    app = sample_app_dir(tmp_path, hub)
    (port,) = distinct_free_ports(1)
    with (
        Azurite() as azurite,
        spawn(
            worker_command(app, port),
            host_env(azurite.connection_string),
            f"http://127.0.0.1:{port}",
            tmp_path / "worker.log",
            "Worker ready",
        ) as worker,
        httpx.Client(timeout=30) as http,
    ):
        wait_for(lambda: ready(http, worker.base_url), "the worker to get ready")
        azurite.stop()
        answer = wait_for(
            lambda: (reply := http.get(f"{worker.base_url}/readyz")).status_code == 503 and reply,
            "readyz to fail",
        )
        body = answer.json()
        assert body["status"] == "Unhealthy"
        assert body["checks"]["storage"] == {"status": "Unhealthy", "description": "storage is unreachable"}
        assert http.get(f"{worker.base_url}/healthz").status_code == 200
        # Storage is away: the leases are left to expire, and the worker still exits cleanly.
        worker.process.send_signal(signal.SIGTERM)
        assert worker.process.wait(timeout=GRACE_SECONDS + 15) == 0, worker.output()[-4000:]


@asynccontextmanager
async def draining_slow_activity(
    tmp_path: Path, connection_string: str, account: StorageAccount, tag: str, seconds: float
) -> AsyncIterator[Process]:
    """A ``worker`` (grace period ``seconds``) running ``slow_once`` for ``seconds``, sent SIGTERM once
    the activity has started."""
    hub = tag.capitalize() + uuid.uuid4().hex[:8]
    app = sample_app_dir(tmp_path, hub, extra_blueprints=[REPO / "tests" / "apps" / "slow_step.py"])
    (port,) = distinct_free_ports(1)
    command = worker_command(app, port, grace_seconds=seconds)
    env = host_env(connection_string)
    with spawn(command, env, f"http://127.0.0.1:{port}", tmp_path / "worker.log", "Worker ready") as worker:
        async with TaskHub(account, hub, partition_count=2) as task_hub:
            job = {"dir": str(tmp_path), "tag": tag, "seconds": 600}
            await TaskHubClient(task_hub).start_new("slow_once", tag, json.dumps(job))
        wait_for((tmp_path / f"{tag}.started.{worker.process.pid}").exists, "the slow activity to start")
        worker.process.send_signal(signal.SIGTERM)
        yield worker
        assert not (tmp_path / f"{tag}.finished").exists()


async def test_a_drain_past_the_grace_period_exits_3(
    tmp_path: Path, azurite_connection_string: str, storage_account: StorageAccount
) -> None:
    async with draining_slow_activity(
        tmp_path, azurite_connection_string, storage_account, "late", 1
    ) as worker:
        # Well before the activity's 600 s are up.
        assert worker.process.wait(timeout=30) == 3, worker.output()[-4000:]
        assert "Worker stopped before in-flight work finished." in worker.output()


@pytest.mark.parametrize(("second", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
async def test_a_second_signal_during_the_drain_exits_at_once(
    tmp_path: Path,
    azurite_connection_string: str,
    storage_account: StorageAccount,
    second: signal.Signals,
    code: int,
) -> None:
    draining = draining_slow_activity(tmp_path, azurite_connection_string, storage_account, "twice", 600)
    async with draining as worker:
        wait_for(lambda: "draining" in worker.output(), "the drain to start")
        worker.process.send_signal(second)
        # Long before the grace period or the activity would end.
        assert worker.process.wait(timeout=30) == code, worker.output()[-4000:]
        assert f"Worker stopped at once ({second.name} during the drain)" in worker.output()


def test_listener_ports_are_checked_before_anything_starts(
    tmp_path: Path, azurite_connection_string: str
) -> None:
    app = sample_app_dir(tmp_path, "Ports" + uuid.uuid4().hex[:8])
    env = host_env(azurite_connection_string)
    port, busy = distinct_free_ports(2)
    same = subprocess.run(
        [*start_command(app, port), "--admin-port", str(port)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert same.returncode == 1
    assert "error: --admin-port must differ from the HTTP port" in same.stderr
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", busy))
        listener.listen()
        taken = subprocess.run(
            worker_command(app, busy), env=env, capture_output=True, text=True, check=False
        )
    assert taken.returncode == 1
    assert f"port {busy} on 127.0.0.1 is in use: stop the other process or pass --admin-port" in taken.stderr
