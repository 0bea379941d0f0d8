"""The drain scenario (issue 20): rolling SIGTERM restarts of every worker while the load runs.

Each worker in turn gets SIGTERM and must drain: take no more work, finish its running episodes and
activities, release its partition leases and exit with 0. Its replacement is launched on the same
port, and the next worker is drained only once that one answers 200 on ``/readyz``. Next to the checks
every run ends with, a drain scenario checks each drain (exit code 0, no lease still naming the drained
process once it is gone, its partitions taken by a live worker before its lease would have expired,
so nobody waited a lease period) and that every activity of the ``ledger`` instances ran exactly once
per scheduled task, which a graceful drain guarantees where a kill does not.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from chaos.checks import owner_pid, poll_until
from chaos.cluster import Cluster, Worker
from durable_ext.storage.taskhub import TaskHub

logger = logging.getLogger(__name__)

LEDGER_SETTING = "CHAOS_LEDGER_DIR"
"""The app setting naming the directory the ``record`` activity writes to (chaos/app/function_app.py,
which reads it under the same name)."""
TAKEOVER_POLL = 0.2
"""Seconds between two looks at the leases while the drained partitions find new owners."""
BALANCE_TIMEOUT = 60.0
"""How long a worker gets to take a partition share before it is drained anyway: a drain that hands
partitions over is the one worth checking, and a freshly started worker owns none at first."""


@dataclass
class DrainRecord:
    """One SIGTERM: the slot, the process, what it held and how the drain went."""

    number: int
    at: datetime
    worker: int
    pid: int
    leases: dict[str, datetime | None]
    """The partitions the process held just before, with their lease expiry."""
    exit_code: int | None = None
    """None: it did not exit within the stop timeout and was killed."""
    finished_in_drain: int = 0
    """Ledger activities the process finished between its SIGTERM and its exit: work the drain let
    complete rather than leave to run again elsewhere."""
    replacement_pid: int | None = None
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Scene:
    """What every drain of a run works on."""

    cluster: Cluster
    hub: TaskHub
    http: httpx.AsyncClient
    ledger: Path


async def rolling_restarts(cluster: Cluster, hub: TaskHub, rounds: int, ledger: Path) -> list[DrainRecord]:
    """SIGTERM every worker in turn, ``rounds`` times, each replaced and ready before the next;
    ``ledger`` is the directory the ``record`` activity writes to."""
    records: list[DrainRecord] = []
    async with httpx.AsyncClient(timeout=5.0) as http:
        scene = _Scene(cluster, hub, http, ledger)
        for _ in range(rounds):
            for worker in cluster.workers:
                records.append(await _drain(len(records) + 1, worker, scene))
    return records


def _ledger_lines(ledger: Path, pid: int) -> int:
    path = ledger / f"ledger-{pid}.txt"
    return len(path.read_text().splitlines()) if path.exists() else 0


async def _drain(number: int, worker: Worker, scene: _Scene) -> DrainRecord:
    cluster, hub = scene.cluster, scene.hub
    pid = worker.pid
    assert pid is not None, "worker was never launched"
    await poll_until(lambda: _owns_nothing(hub, pid), BALANCE_TIMEOUT, TAKEOVER_POLL)
    held = {
        lease.partition_id: lease.expires_at
        for lease in await hub.leases()
        if owner_pid(lease.current_owner) == pid
    }
    record = DrainRecord(number, datetime.now(UTC), worker.index, pid, held)
    logger.info("drain %d: worker %d (pid %d) holding %s", number, worker.index, pid, sorted(held) or "none")
    before = _ledger_lines(scene.ledger, pid)
    record.exit_code = await asyncio.to_thread(worker.stop)
    record.finished_in_drain = _ledger_lines(scene.ledger, pid) - before
    if record.exit_code != 0:
        record.problems.append(f"exited with {record.exit_code} after SIGTERM (0 is a complete drain)")
    kept = [lease.partition_id for lease in await hub.leases() if owner_pid(lease.current_owner) == pid]
    if kept:
        record.problems.append(f"still named owner of {kept} after it exited: leases not released")
    worker.launch()
    record.replacement_pid = worker.pid
    await worker.wait_readyz(scene.http)
    record.problems += await _takeover(hub, cluster, held)
    return record


async def _owns_nothing(hub: TaskHub, pid: int) -> list[str]:
    """A finding while process ``pid`` holds no partition lease (for :func:`poll_until`)."""
    if any(owner_pid(lease.current_owner) == pid for lease in await hub.leases()):
        return []
    return [f"pid {pid} owns no partition"]


async def _takeover(hub: TaskHub, cluster: Cluster, held: dict[str, datetime | None]) -> list[str]:
    """Poll until a live worker owns each partition in ``held``, at the latest until the drained
    leases would have expired; the partitions still waiting then."""
    expiries = [expiry for expiry in held.values() if expiry is not None]
    if not held or not expiries:
        return []

    async def orphans() -> list[str]:
        owners = {lease.partition_id: owner_pid(lease.current_owner) for lease in await hub.leases()}
        live = cluster.live_pids()
        return [
            f"{partition}: no live owner before its drained lease would have expired ({held[partition]})"
            for partition in sorted(held)
            if owners.get(partition) not in live
        ]

    remaining = max(0.0, (min(expiries) - datetime.now(UTC)).total_seconds())
    return await poll_until(orphans, remaining, TAKEOVER_POLL)


def ledger_counts(ledger_dir: Path) -> Counter[str]:
    """How often each ledger key was written, over every process's file."""
    return Counter(
        line
        for path in sorted(ledger_dir.glob("ledger-*.txt"))
        for line in path.read_text().splitlines()
        if line
    )


def side_effect_findings(counts: Counter[str], scheduled: Iterable[str]) -> list[str]:
    """Tasks whose side effect was not recorded exactly once, and side effects of no scheduled task."""
    wanted = set(scheduled)
    findings = [f"{key}: ran {counts[key]} times" for key in sorted(wanted) if counts[key] != 1]
    findings += [f"{key}: ran {counts[key]} times, never scheduled" for key in sorted(set(counts) - wanted)]
    return findings
