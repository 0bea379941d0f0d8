"""The host path (issue 18 item 5): the benchmark app run by ``python -m durable_ext start``, driven
through HTTP as users drive it.

A workload is started with a POST to the app's HTTP starter, which answers 202 with the Durable
Functions management URLs; the caller then polls ``statusQueryGetUri`` until the instance has ended,
and reads the output from that status. The host is a subprocess of its own on the scenario's Azurite,
with its own task hub, so its engine competes with nothing but the benchmark process (idle meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.harness import APP_DIR, PARTITION_COUNT, BenchmarkError

REPO_DIR = Path(__file__).resolve().parent.parent
READY_MARKER = "Host ready"
READY_TIMEOUT = 120.0
STOP_TIMEOUT = 60.0
TERMINAL = frozenset({"Completed", "Failed", "Terminated", "Canceled"})


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.asynccontextmanager
async def running_host(connection_string: str) -> AsyncIterator[str]:
    """Run ``python -m durable_ext start`` on a copy of the benchmark app with a task hub of its own;
    yields the base URL once the host printed that it is ready, and stops it with SIGTERM after."""
    with tempfile.TemporaryDirectory(prefix="bench-host-") as temp:
        app = Path(temp) / "app"
        shutil.copytree(APP_DIR, app, ignore=shutil.ignore_patterns("__pycache__"))
        hub = "BenchHost" + uuid.uuid4().hex[:8]
        durable = {"hubName": hub, "storageProvider": {"partitionCount": PARTITION_COUNT}}
        (app / "host.json").write_text(json.dumps({"version": "2.0", "extensions": {"durableTask": durable}}))
        port = _free_port()
        log = Path(temp) / "host.log"
        env = {
            **os.environ,
            "AzureWebJobsStorage": connection_string,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_DIR), os.environ.get("PYTHONPATH")])),
        }
        command = [sys.executable, "-m", "durable_ext", "start", "--app-dir", str(app), "--port", str(port)]
        with log.open("w") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=temp)
        try:
            await _wait_ready(process, log)
            yield f"http://127.0.0.1:{port}"
        finally:
            await _stop(process, log)


async def _wait_ready(process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while READY_MARKER not in log.read_text():
        if process.poll() is not None:
            raise BenchmarkError(f"the host exited while starting:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise BenchmarkError(
                f"the host was not ready after {READY_TIMEOUT:g} s:\n{log.read_text()[-3000:]}"
            )
        await asyncio.sleep(0.05)


async def _stop(process: subprocess.Popen[bytes], log: Path) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while process.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    if process.poll() is None:
        process.kill()
        process.wait()
        raise BenchmarkError(f"the host did not stop within {STOP_TIMEOUT:g} s:\n{log.read_text()[-3000:]}")


class HttpDriver:
    """Starts orchestrations through the app's HTTP starter and polls their status URLs."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self._session = session
        self._base_url = base_url

    async def run(
        self, name: str, payload: Any, *, expected: Any, timeout: float, poll_interval: float
    ) -> float:
        """Start ``name`` with ``payload``, poll until it ended; seconds from the POST to seeing it
        Completed with output ``expected`` (anything else is a :class:`BenchmarkError`)."""
        started = time.perf_counter()
        async with self._session.post(
            f"{self._base_url}/api/orchestrators/{name}", data=json.dumps(payload)
        ) as response:
            if response.status != 202:
                raise BenchmarkError(f"starting {name}: HTTP {response.status}: {await response.text()}")
            status_url = (await response.json())["statusQueryGetUri"]
        status = await self._wait(status_url, timeout, poll_interval)
        seconds = time.perf_counter() - started
        if status.get("runtimeStatus") != "Completed" or status.get("output") != expected:
            seen = f"{status.get('runtimeStatus')} with output {status.get('output')!r}"
            raise BenchmarkError(
                f"{name} through the host: {seen}, expected Completed with {json.dumps(expected)}"
            )
        return seconds

    async def storage_requests(self) -> dict[str, int]:
        """The host engine's storage requests so far by kind, from its ``/metrics`` (the scrape itself
        may add a queue-length sample of a few requests)."""
        async with self._session.get(f"{self._base_url}/metrics") as response:
            text = await response.text()
        counts: dict[str, int] = {}
        for family in text_string_to_metric_families(text):
            if family.name != "durable_ext_storage_requests":
                continue
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    kind = sample.labels["kind"]
                    counts[kind] = counts.get(kind, 0) + int(sample.value)
        return counts

    async def _wait(self, status_url: str, timeout: float, poll_interval: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            async with self._session.get(status_url) as response:
                status: dict[str, Any] = await response.json(content_type=None)
            if status.get("runtimeStatus") in TERMINAL:
                return status
            if time.monotonic() > deadline:
                raise BenchmarkError(f"{status_url}: {status.get('runtimeStatus')} after {timeout:g} s")
            await asyncio.sleep(poll_interval)
