"""One scenario's world: a fresh task hub on a fresh Azurite, the engine in-process, a client.

:class:`BenchEnv` is entered once per scenario on the connection string of that scenario's own
Azurite. It probes the storage ceiling first (nothing else runs yet), creates the hub, starts an
:class:`~durable_ext.worker.engine.Engine` whose task hub counts its storage requests, waits until the
engine owns every partition, and warms the engine up with one orchestration that is not measured.

Lease timings: the engine uses the DT.AS defaults (acquire interval 10 s) with a 100 ms fast interval.
On a fresh hub its very first pass claims every partition, so a short acquire interval would not make
ownership any faster; it would only add a partition-table read and one renewal per partition to every
pass, which would show up in every request count and in the idle figure. Instead the harness waits
until :attr:`TablePartitionManager.owned` holds all partitions before anything is measured.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
import warnings
from collections.abc import AsyncIterator, Iterable
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

from benchmarks.counting import RequestCounter
from benchmarks.probe import ProbeResult, probe_storage
from durable_ext.app_loader import FunctionRegistry, load_app
from durable_ext.client import OrchestrationState, TaskHubClient
from durable_ext.config import DurableTaskOptions
from durable_ext.history import OrchestrationStatus
from durable_ext.storage.account import StorageAccount
from durable_ext.storage.taskhub import TaskHub
from durable_ext.storage.tracking import InstanceQuery
from durable_ext.worker.engine import Engine
from durable_ext.worker.partitions import PartitionManagerOptions

APP_DIR = Path(__file__).resolve().parent / "app"
PARTITION_COUNT = 4
"""The Durable Functions default."""
BENCH_LEASES = PartitionManagerOptions(fast_interval=timedelta(milliseconds=100))
OWNERSHIP_TIMEOUT = 30.0
BULK_POLL_SECONDS_PER_THOUSAND = 0.5
"""Seconds between the queries of :meth:`BenchEnv.wait_all` for an unfinished instance, per thousand
instances waited for (at least 0.1 s, at most 5 s): Azurite evaluates such a query over every row of
the Instances table, so polling a large hub as often as a small one would slow the workload measured."""
WARMUP_TIMEOUT = 60.0
_NOISY_WARNING = "azure.functions df_loads was called without expected_type"


class BenchmarkError(Exception):
    """The engine did something wrong under load (hang, wrong result): a bug to report, not a figure."""


def load_bench_app() -> FunctionRegistry:
    """The registry of benchmarks/app/function_app.py."""
    # azure-functions warns on the root logger that an app without HTTP functions has no auth level.
    root = logging.getLogger()
    auth_note = _DropMessage("Auth level is not applied")
    root.addFilter(auth_note)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return load_app(APP_DIR)
    finally:
        root.removeFilter(auth_note)


class _DropMessage(logging.Filter):
    """Drops log records whose message starts with ``prefix``."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self._prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep every record but the dropped kind."""
        return not record.getMessage().startswith(self._prefix)


class LogWatch(logging.Handler):
    """Keeps durable_ext's warnings and errors of one scenario, to report anything unusual."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Remember one warning or error."""
        self.records.append(f"{record.levelname} {record.name}: {record.getMessage()}")


class BenchEnv:
    """A fresh hub with a running engine and a client; ``async with BenchEnv(...) as env``."""

    def __init__(
        self, connection_string: str, registry: FunctionRegistry, probe_iterations: int, *, warm: bool = True
    ) -> None:
        """``warm``: the engine's ``warmContinuation`` (off replays every episode, to compare)."""
        self.connection_string = connection_string
        self.account = StorageAccount.from_connection_string(connection_string)
        self.warm = warm
        self.registry = registry
        self.probe_iterations = probe_iterations
        self.counter = RequestCounter()
        self.hub_name = "Bench" + uuid.uuid4().hex[:10]
        self.partition_count = PARTITION_COUNT
        self.probe: ProbeResult | None = None
        self.log_watch = LogWatch()
        self._engine_hub: TaskHub | None = None
        self._client_hub: TaskHub | None = None
        self._engine: Engine | None = None
        self._client: TaskHubClient | None = None

    @property
    def engine(self) -> Engine:
        """The running engine."""
        assert self._engine is not None, "BenchEnv not entered"
        return self._engine

    @property
    def client(self) -> TaskHubClient:
        """A client on its own, uncounted task hub object (same hub in storage)."""
        assert self._client is not None, "BenchEnv not entered"
        return self._client

    async def __aenter__(self) -> BenchEnv:
        logging.getLogger("durable_ext").addHandler(self.log_watch)
        try:
            self.probe = await probe_storage(self.account, self.probe_iterations)
            self._engine_hub = TaskHub(
                self.account.observed_by(self.counter), self.hub_name, self.partition_count
            )
            self._client_hub = TaskHub(self.account, self.hub_name, self.partition_count)
            await self._client_hub.create()
            options = DurableTaskOptions(hub_name=self.hub_name, warm_continuation=self.warm)
            self._engine = Engine(self._engine_hub, self.registry, options, partition_options=BENCH_LEASES)
            await self._engine.start()
            # Wired as the local host wires it: the engine takes what the client sends directly.
            self._client = TaskHubClient(self._client_hub, handoff=self._engine)
            await self._wait_for_ownership()
            await self.warm_up()
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._close()

    async def _close(self) -> None:
        try:
            if self._engine is not None:
                await self._engine.stop()
        finally:
            for hub in (self._engine_hub, self._client_hub):
                if hub is not None:
                    await hub.close()
            logging.getLogger("durable_ext").removeHandler(self.log_watch)

    async def _wait_for_ownership(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + OWNERSHIP_TIMEOUT
        wanted = self.partition_count
        while len(self.engine.partitions.owned) < wanted:
            if loop.time() > deadline:
                raise BenchmarkError(
                    f"hub {self.hub_name}: the only engine owns {sorted(self.engine.partitions.owned)} "
                    f"after {OWNERSHIP_TIMEOUT:g} s, not all {wanted} partitions"
                )
            await asyncio.sleep(0.02)

    async def warm_up(self) -> None:
        """Run one one-activity orchestration (not measured): imports, connections, first replay."""
        await self.run("one_activity", None, expected=1, instance_id="warmup", timeout=WARMUP_TIMEOUT)

    def reset_counts(self) -> None:
        """Start counting the engine's storage requests from zero."""
        self.counter.reset()

    async def run(
        self,
        name: str,
        payload: Any,
        *,
        expected: Any,
        instance_id: str | None = None,
        timeout: float,
        poll_interval: float = 0.01,
    ) -> OrchestrationState:
        """Start ``name`` with ``payload``, wait for it and check that its output is ``expected``."""
        started = await self.client.start_new(name, instance_id, json.dumps(payload))
        state = await self.wait(started, timeout, poll_interval)
        check_output(self.hub_name, state, expected)
        return state

    async def wait(self, instance_id: str, timeout: float, poll_interval: float = 0.01) -> OrchestrationState:
        """Wait for ``instance_id`` to end; a timeout is a :class:`BenchmarkError`."""
        try:
            return await self.client.wait_for_completion(instance_id, timeout, poll_interval)
        except TimeoutError as exc:
            raise BenchmarkError(str(exc)) from exc

    async def wait_all(self, instance_ids: Iterable[str], timeout: float) -> list[OrchestrationState]:
        """Wait for every instance; their final states, in the order of ``instance_ids``.

        Polls one query for an unfinished instance among those whose ID starts with the IDs' common
        prefix (one request however many are waited for; reading each instance's status in turn would
        add seconds per thousand instances to the measured time), then reads the final states page by
        page.
        """
        ids = list(instance_ids)
        prefix = _common_prefix(ids)
        poll_interval = min(5.0, max(0.1, BULK_POLL_SECONDS_PER_THOUSAND * len(ids) / 1000))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        unfinished = InstanceQuery(
            statuses=frozenset(s for s in OrchestrationStatus if not s.is_terminal), instance_id_prefix=prefix
        )
        while (await self.client.query_instances(unfinished, page_size=1, show_input=False)).instances:
            if loop.time() > deadline:
                pending = await self._unfinished(ids)
                raise BenchmarkError(
                    f"hub {self.hub_name}: {len(pending)} of {len(ids)} instances did not complete within "
                    f"{timeout:g} s; first few: {pending[:5]}"
                )
            await asyncio.sleep(poll_interval)
        everything = InstanceQuery(instance_id_prefix=prefix)
        states = {state.instance_id: state async for state in self._states(everything)}
        missing = [instance_id for instance_id in ids if instance_id not in states]
        if missing:
            raise BenchmarkError(f"hub {self.hub_name}: no status of {len(missing)} instances: {missing[:5]}")
        return [states[instance_id] for instance_id in ids]

    async def _states(self, query: InstanceQuery) -> AsyncIterator[OrchestrationState]:
        token: str | None = None
        while True:
            page = await self.client.query_instances(query, page_size=1000, continuation_token=token)
            for state in page.instances:
                yield state
            token = page.continuation_token
            if token is None:
                return

    async def _unfinished(self, ids: list[str]) -> list[str]:
        unfinished: list[str] = []
        for instance_id in ids:
            state = await self.client.get_status(instance_id)
            status = state.runtime_status if state is not None else None
            if status is None or not status.is_terminal:
                unfinished.append(f"{instance_id}={status.name if status is not None else 'missing'}")
        return unfinished


def _common_prefix(ids: list[str]) -> str:
    """The longest string every ID starts with (the first and last in sort order share it with all)."""
    if not ids:
        return ""
    first, last = min(ids), max(ids)
    length = next((i for i, (a, b) in enumerate(zip(first, last, strict=False)) if a != b), len(first))
    return first[:length]


def check_output(hub_name: str, state: OrchestrationState, expected: Any) -> None:
    """Raise :class:`BenchmarkError` unless ``state`` is Completed with output ``expected``."""
    output = json.loads(state.output) if state.output is not None else None
    if state.runtime_status is not OrchestrationStatus.Completed or output != expected:
        status = state.runtime_status.name if state.runtime_status is not None else "unknown"
        raise BenchmarkError(
            f"hub {hub_name} instance {state.instance_id}: {status} with output {state.output!r}, "
            f"expected Completed with {json.dumps(expected)}"
        )


def configure_logging() -> None:
    """Quiet logs: the SDKs log every request at INFO, the engine every episode."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=_NOISY_WARNING, category=DeprecationWarning)
