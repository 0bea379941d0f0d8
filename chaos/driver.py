"""One fault-suite run: Azurite on disk, the workers, the load, the faults (kills and an outage, or
rolling drains), the checks."""

from __future__ import annotations

import asyncio
import logging
import random
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from chaos.api import ManagementApi
from chaos.checks import (
    InstanceOutcome,
    duplicate_events,
    entity_mismatches,
    instance_rows,
    judge_instances,
    owner_pid,
    ownership_problems,
    poll_until,
    queue_leftovers,
    wait_for_instances,
)
from chaos.cluster import Cluster, Worker
from chaos.drain import LEDGER_SETTING, DrainRecord, ledger_counts, rolling_restarts, side_effect_findings
from chaos.recovery import InstanceTimeline, KillRecord, RecoverySummary, recoveries
from chaos.workload import DRAIN_KINDS, EVENT_NAME, KINDS, InstanceSpec, Workload, build_workload
from durable_ext.config import load_config
from durable_ext.history import EventType
from durable_ext.host.azurite import Azurite
from durable_ext.storage.account import StorageAccount
from durable_ext.storage.queues import partition_index
from durable_ext.storage.taskhub import TaskHub
from durable_ext.storage.tracking import InstanceState

logger = logging.getLogger(__name__)

PREFIX = "chaos-"
EVENT_DELAY = (0.5, 3.0)
"""Seconds between an ``event`` instance's start and its event: before or while it waits, both valid."""
DRAIN_ESTIMATE = 6.0
"""Seconds a drain and the replacement's start take on two busy cores: the load is paced to last
about as long as the rolling restarts, so that every drain finds work in flight."""


@dataclass(frozen=True)
class RunConfig:
    """The size and pace of a run."""

    kills: int
    instances: int
    workers: int
    outage: float
    seed: int
    kill_interval: tuple[float, float]
    settle_timeout: float
    """How long instances, queues and leases get to settle after the last fault."""
    keep: Path | None = None
    """Keep Azurite's data and the worker logs here instead of a temporary directory."""
    drain_rounds: int = 0
    """Rounds of rolling SIGTERM restarts of every worker: the drain scenario, instead of kills and an
    outage (0: the kill scenario)."""

    @property
    def drains(self) -> bool:
        """Whether this is a drain scenario run."""
        return self.drain_rounds > 0


@dataclass
class RunResult:
    """Everything the report prints."""

    config: RunConfig
    seconds: float = 0.0
    chaos_seconds: float = 0.0
    expected_instances: int = 0
    outcome: InstanceOutcome = field(default_factory=lambda: InstanceOutcome([], [], []))
    duplicated: list[str] = field(default_factory=list)
    entity_mismatches: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    ownership: list[str] = field(default_factory=list)
    recovery: RecoverySummary = field(default_factory=lambda: RecoverySummary([]))
    kills: list[KillRecord] = field(default_factory=list)
    outages: list[tuple[datetime, datetime]] = field(default_factory=list)
    drains: list[DrainRecord] = field(default_factory=list)
    side_effects: list[str] = field(default_factory=list)
    """Ledger tasks whose activity did not run exactly once (drain scenario)."""
    restarts: int = 0
    tracebacks: int = 0
    log_dir: Path | None = None

    @property
    def failed(self) -> bool:
        """Whether any invariant was violated."""
        return bool(
            self.outcome.lost
            or self.outcome.stuck
            or self.outcome.wrong
            or self.duplicated
            or self.entity_mismatches
            or self.leftovers
            or self.ownership
            or self.recovery.violations()
            or self.side_effects
            or any(drain.problems for drain in self.drains)
        )


def run(config: RunConfig) -> RunResult:
    """Run the suite; the result says what held and what did not."""
    if config.keep is not None:
        config.keep.mkdir(parents=True, exist_ok=True)
        return asyncio.run(_run_in(config, config.keep))
    with tempfile.TemporaryDirectory(prefix="chaos-") as temp:
        return asyncio.run(_run_in(config, Path(temp)))


async def _run_in(config: RunConfig, root: Path) -> RunResult:
    began = time.monotonic()
    result = RunResult(config, log_dir=root)
    azurite = Azurite(location=root / "azurite")
    await asyncio.to_thread(azurite.start)
    ledger = root / "ledger"
    ledger.mkdir(exist_ok=True)
    cluster = Cluster(config.workers, azurite.connection_string, root, {LEDGER_SETTING: str(ledger)})
    rng = random.Random(config.seed)
    api = ManagementApi(cluster, rng)
    options = load_config(Path(__file__).parent / "app").durable_task
    account = StorageAccount.from_connection_string(azurite.connection_string)
    try:
        await cluster.start()
        async with TaskHub(account, options.hub_name, options.storage_provider.partition_count) as hub:
            workload = build_workload(config.instances, rng, DRAIN_KINDS if config.drains else KINDS)
            chaos_run = _ChaosRun(config, workload, cluster, api, hub, azurite, rng, ledger)
            await chaos_run.faults(result)
            await chaos_run.check(result)
            result.side_effects = side_effect_findings(ledger_counts(ledger), workload.ledger_keys())
    finally:
        await api.close()
        await asyncio.to_thread(cluster.stop)
        await asyncio.to_thread(azurite.stop)
    result.restarts = sum(worker.launches - 1 for worker in cluster.workers)
    result.tracebacks = cluster.count_in_logs("Traceback")
    result.seconds = time.monotonic() - began
    return result


@dataclass
class _ChaosRun:
    """The pieces of one run, once everything is up."""

    config: RunConfig
    workload: Workload
    cluster: Cluster
    api: ManagementApi
    hub: TaskHub
    azurite: Azurite
    rng: random.Random
    ledger: Path
    """Where the ``record`` activity writes down each run."""
    raised: dict[str, int] = field(default_factory=dict)
    """Instance → how often its event may have been raised."""

    async def faults(self, result: RunResult) -> None:
        """Start the load and the faults (kills, or rolling drains) together and wait for both."""
        began = time.monotonic()
        config = self.config
        if config.drains:
            duration = config.drain_rounds * config.workers * DRAIN_ESTIMATE
        else:
            duration = config.kills * sum(config.kill_interval) / 2 + config.outage
        load = asyncio.create_task(self._load(duration / max(1, config.instances)))
        try:
            if config.drains:
                rounds = config.drain_rounds
                result.drains = await rolling_restarts(self.cluster, self.hub, rounds, self.ledger)
            else:
                await self._kill_loop(result)
            await load
        finally:
            load.cancel()
        result.chaos_seconds = time.monotonic() - began

    async def _load(self, pace: float) -> None:
        """Start every instance, ``pace`` seconds apart, and raise the events of those that wait for one."""
        events: list[asyncio.Task[None]] = []
        for spec in self.workload.instances:
            await self.api.start(spec.kind, spec.instance_id, spec.payload)
            if spec.event_payload is not None:
                delay = self.rng.uniform(*EVENT_DELAY)
                events.append(asyncio.create_task(self._raise_later(spec, delay)))
            await asyncio.sleep(pace)
        await asyncio.gather(*events)

    async def _raise_later(self, spec: InstanceSpec, delay: float) -> None:
        await asyncio.sleep(delay)
        times = await self.api.raise_event(spec.instance_id, EVENT_NAME, spec.event_payload)
        self.raised[spec.instance_id] = times

    async def _kill_loop(self, result: RunResult) -> None:
        """Kill a random ready worker ``kills`` times, restarting each; the outage halfway through."""
        config = self.config
        outage_before = config.kills // 2 + 1 if config.outage > 0 else None
        restarts: list[asyncio.Task[None]] = []
        for number in range(1, config.kills + 1):
            # Random pauses between faults are the point; nothing waits on a condition here.
            await asyncio.sleep(self.rng.uniform(*config.kill_interval))
            if number == outage_before:
                result.outages.append(await _outage(self.azurite, config.outage))
            victim = await self.cluster.pick_ready(self.rng)
            result.kills.append(await _kill(number, victim, self.hub))
            victim.launch()
            restarts.append(asyncio.create_task(victim.wait_ready()))
        await asyncio.gather(*restarts)

    async def check(self, result: RunResult) -> None:
        """Wait for the hub to settle, then check every invariant."""
        hub, settle = self.hub, self.config.settle_timeout
        expected = {spec.instance_id: spec.expected for spec in self.workload.instances}
        expected.update(self.workload.expected_children())
        result.expected_instances = len(expected)
        await wait_for_instances(hub, expected, PREFIX, settle)
        rows = await instance_rows(hub, PREFIX)
        result.outcome = judge_instances(rows, expected)
        result.leftovers = await poll_until(lambda: queue_leftovers(hub), settle)
        result.ownership = await poll_until(self._ownership, settle)
        wanted = self.workload.entity_states
        states = {key: await self.api.entity_state("counter", key) for key in wanted}
        result.entity_mismatches = entity_mismatches(states, wanted)
        timelines = await _histories(hub, rows, expected, self.raised, result)
        result.recovery = recoveries(result.kills, timelines, result.outages)

    async def _ownership(self) -> list[str]:
        leases = await self.hub.leases()
        return ownership_problems(leases, self.cluster.live_pids(), self.hub.names.partition_count)


async def _kill(number: int, victim: Worker, hub: TaskHub) -> KillRecord:
    """SIGKILL ``victim`` and record the leases it held just before."""
    pid = victim.pid
    assert pid is not None
    leases = {
        lease.partition_id: lease.expires_at
        for lease in await hub.leases()
        if owner_pid(lease.current_owner) == pid
    }
    at = datetime.now(UTC)
    victim.kill()
    logger.info("kill %d: worker %d (pid %d) holding %s", number, victim.index, pid, sorted(leases) or "none")
    return KillRecord(number, at, victim.index, pid, leases)


async def _outage(azurite: Azurite, seconds: float) -> tuple[datetime, datetime]:
    """Stop Azurite for ``seconds`` (it saves its data on SIGTERM) and start it again on the same data."""
    start = datetime.now(UTC)
    logger.info("storage outage: stopping Azurite for %g s", seconds)
    await asyncio.to_thread(azurite.stop)
    await asyncio.sleep(seconds)
    await asyncio.to_thread(azurite.start)
    logger.info("storage outage over")
    return start, datetime.now(UTC)


async def _histories(
    hub: TaskHub,
    rows: dict[str, InstanceState],
    expected: dict[str, object],
    raised: dict[str, int],
    result: RunResult,
) -> dict[str, InstanceTimeline]:
    """Check each instance's history for duplicates; the timelines the recovery figures need."""
    timelines: dict[str, InstanceTimeline] = {}
    for instance_id in sorted(expected):
        events = (await hub.tracking.load_history(instance_id)).events
        limits = {EVENT_NAME: raised.get(instance_id, 0)}
        result.duplicated += [f"{instance_id}: {finding}" for finding in duplicate_events(events, limits)]
        row = rows.get(instance_id)
        if row is None or row.created_time is None:
            continue
        starts = [e.timestamp for e in events if e.event_type is EventType.OrchestratorStarted]
        completed = row.completed_time if row.runtime_status and row.runtime_status.is_terminal else None
        progress = sorted([*starts, *([completed] if completed else [])])
        partition = hub.names.control_queue(partition_index(instance_id, hub.names.partition_count))
        timelines[instance_id] = InstanceTimeline(partition, row.created_time, progress, completed)
    return timelines
