"""The processes under test: ``python -m durable_ext start`` workers sharing one hub on one Azurite.

Each worker is started as a user starts one, from ``chaos/app`` on a port of its own, with
``AzureWebJobsStorage`` set to the suite's Azurite: an explicit connection string (not
``UseDevelopmentStorage=true``) is why ``start`` launches no Azurite of its own. A killed worker is
started again on the same port with the same settings, and gets a new lease owner name (its process ID
is part of it), as a real restarted host does.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

logger = logging.getLogger(__name__)

REPO_DIR = Path(__file__).resolve().parent.parent
APP_DIR = Path(__file__).resolve().parent / "app"
READY_MARKER = "Host ready"
READY_TIMEOUT = 120.0
STOP_TIMEOUT = 40.0
"""How long a SIGTERMed worker may take to exit: its drain's grace period (30 s) and some."""
POLL_INTERVAL = 0.1


class ClusterError(Exception):
    """A worker could not be started (not a fault of the engine under test, but the run is void)."""


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Worker:
    """One ``start`` process slot: its port and log survive restarts, its process does not."""

    index: int
    port: int
    log: Path
    connection_string: str
    settings: Mapping[str, str] = field(default_factory=dict)
    """More environment variables (app settings) for its processes."""
    process: subprocess.Popen[bytes] | None = None
    launches: int = 0
    ready: bool = False
    pids: list[int] = field(default_factory=list)
    """Every process this slot ran, oldest first."""

    @property
    def base_url(self) -> str:
        """Where its HTTP host listens."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        """Whether its current process runs."""
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        """The current process's ID."""
        return self.process.pid if self.process is not None else None

    def launch(self) -> None:
        """Start a fresh process; its output goes to the end of the slot's log."""
        env = {
            **os.environ,
            **self.settings,
            "AzureWebJobsStorage": self.connection_string,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_DIR), os.environ.get("PYTHONPATH")])),
        }
        command = [sys.executable, "-m", "durable_ext", "start", "--app-dir", str(APP_DIR)]
        command += ["--port", str(self.port)]
        self.ready = False
        with self.log.open("ab") as log:
            # A file, not a pipe: nobody reads the output while the worker runs, and a full pipe blocks it.
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_DIR
            )
        self.launches += 1
        self.pids.append(self.process.pid)
        logger.info("worker %d: launched pid %d on port %d", self.index, self.process.pid, self.port)

    async def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Return once the current process printed its ready line; relaunch it if it exits first.

        A worker started while storage is down exits with an error; it is launched again until ready.
        """
        await self._wait_until(self._printed_ready, "ready", timeout)

    async def wait_readyz(self, http: httpx.AsyncClient, timeout: float = READY_TIMEOUT) -> None:
        """Return once the current process answers 200 on ``/readyz`` (storage reachable, leases
        renewed, dispatchers running, not draining); relaunch it if it exits first."""
        await self._wait_until(lambda: self._answers_ready(http), "answering 200 on /readyz", timeout)

    async def _wait_until(self, ready: Callable[[], Awaitable[bool]], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not await ready():
            if time.monotonic() > deadline:
                raise ClusterError(f"worker {self.index} not {what} after {timeout:g} s; see {self.log}")
            if not self.alive:
                logger.info("worker %d exited before it was ready; launching it again", self.index)
                self.launch()
            await asyncio.sleep(POLL_INTERVAL)
        self.ready = True

    async def _printed_ready(self) -> bool:
        return self._ready_lines() >= self.launches

    async def _answers_ready(self, http: httpx.AsyncClient) -> bool:
        try:
            response = await http.get(f"{self.base_url}/readyz")
        except httpx.TransportError:
            return False  # not listening yet
        return response.status_code == 200

    def _ready_lines(self) -> int:
        return self.log.read_text(errors="replace").count(READY_MARKER)

    def kill(self) -> int:
        """SIGKILL the current process and reap it; its process ID."""
        process = self.process
        assert process is not None, "worker was never launched"
        self.ready = False
        process.send_signal(signal.SIGKILL)
        process.wait()
        return process.pid

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit in time; the exit code of the SIGTERM (None when
        it had to be killed, or had already exited)."""
        process = self.process
        if process is None or process.poll() is not None:
            return None
        self.ready = False
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            logger.warning("worker %d ignored SIGTERM for %g s; killing it", self.index, STOP_TIMEOUT)
            self.kill()
            return None


class Cluster:
    """``count`` worker slots on one connection string, their logs in ``log_dir``."""

    def __init__(
        self, count: int, connection_string: str, log_dir: Path, settings: Mapping[str, str] | None = None
    ) -> None:
        """``settings``: more environment variables (app settings) for every worker."""
        extra = dict(settings or {})
        self.workers = [
            Worker(index, free_port(), log_dir / f"worker-{index}.log", connection_string, extra)
            for index in range(count)
        ]

    async def start(self) -> None:
        """Launch every worker and wait until all are ready."""
        for worker in self.workers:
            worker.launch()
        await asyncio.gather(*(worker.wait_ready() for worker in self.workers))

    def ready_workers(self) -> list[Worker]:
        """The workers whose current process is ready and alive."""
        return [worker for worker in self.workers if worker.ready and worker.alive]

    async def pick_ready(self, rng: random.Random, timeout: float = READY_TIMEOUT) -> Worker:
        """A random ready worker, waiting for one if none is."""
        deadline = time.monotonic() + timeout
        while not (ready := self.ready_workers()):
            if time.monotonic() > deadline:
                raise ClusterError(f"no worker ready for {timeout:g} s")
            await asyncio.sleep(POLL_INTERVAL)
        return rng.choice(ready)

    def live_pids(self) -> set[int]:
        """The process IDs of the workers running now."""
        return {worker.pid for worker in self.workers if worker.alive and worker.pid is not None}

    def stop(self) -> None:
        """Stop every worker."""
        for worker in self.workers:
            worker.stop()

    def count_in_logs(self, text: str) -> int:
        """How often ``text`` occurs in all worker logs (e.g. tracebacks)."""
        return sum(w.log.read_text(errors="replace").count(text) for w in self.workers if w.log.exists())
