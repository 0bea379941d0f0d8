"""The table partition manager (docs/storage-protocol.md §6.2) against a real Azurite Partitions table."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.core.exceptions import ServiceRequestError
from azure.data.tables import TableEntity, UpdateMode
from azure.data.tables.aio import TableClient, TableServiceClient

from durable_ext.storage.partitions import PartitionLease
from durable_ext.storage.taskhub import TaskHub
from durable_ext.worker.partitions import PartitionManagerOptions, TablePartitionManager

OPTIONS = PartitionManagerOptions(
    acquire_interval=timedelta(seconds=0.2),
    lease_interval=timedelta(seconds=1),
    claim_duration=timedelta(seconds=1.5),
    fast_interval=timedelta(seconds=0.05),
    drain_timeout=timedelta(seconds=2),
    operation_timeout=timedelta(seconds=5),
    shutdown_timeout=timedelta(seconds=10),
)
TOLERANCE = timedelta(milliseconds=5)


@dataclass
class Registry:
    """Which worker listens to which queue right now, across the workers of one test."""

    holders: dict[str, str] = field(default_factory=dict)
    overlaps: list[str] = field(default_factory=list)


class RecordingListener:
    """Records start/stop calls; ``stop_listening`` holds the queue until ``release_stops`` is set."""

    def __init__(self, name: str, registry: Registry) -> None:
        self.name = name
        self.registry = registry
        self.listening: set[str] = set()
        self.release_stops = asyncio.Event()
        self.release_stops.set()
        self.on_start: Callable[[str], Awaitable[None]] | None = None

    async def start_listening(self, partition_id: str) -> None:
        holder = self.registry.holders.get(partition_id)
        if holder is not None and holder != self.name:
            self.registry.overlaps.append(f"{self.name} started {partition_id} while {holder} listens")
        self.registry.holders[partition_id] = self.name
        self.listening.add(partition_id)
        if self.on_start is not None:
            await self.on_start(partition_id)

    async def stop_listening(self, partition_id: str) -> None:
        await self.release_stops.wait()
        self.listening.discard(partition_id)
        if self.registry.holders.get(partition_id) == self.name:
            del self.registry.holders[partition_id]

    def die(self) -> None:
        """The worker process is gone: it listens to nothing any more."""
        for partition_id in self.listening:
            if self.registry.holders.get(partition_id) == self.name:
                del self.registry.holders[partition_id]
        self.listening.clear()


@dataclass
class Worker:
    name: str
    table: TableClient
    listener: RecordingListener
    manager: TablePartitionManager

    async def run_pass(self) -> None:
        await self.manager.run_pass()


class Cluster:
    """The workers of one test, each with its own Partitions table client."""

    def __init__(self, hub: TaskHub, service: TableServiceClient) -> None:
        self.hub = hub
        self.service = service
        self.table = service.get_table_client(hub.names.partitions_table)
        self.registry = Registry()
        self.workers: list[Worker] = []
        self.all = frozenset(hub.names.control_queues)

    def add(self, name: str, options: PartitionManagerOptions = OPTIONS) -> Worker:
        table = self.service.get_table_client(self.hub.names.partitions_table)
        listener = RecordingListener(name, self.registry)
        manager = TablePartitionManager(
            table, name, listener, options, hub_name=self.hub.names.hub, storage=self.hub.account.describe()
        )
        worker = Worker(name, table, listener, manager)
        self.workers.append(worker)
        return worker

    async def rows(self) -> dict[str, PartitionLease]:
        return {
            lease.partition_id: lease
            for lease in [PartitionLease.from_entity(e) async for e in self.table.list_entities()]
        }

    def assert_exclusive(self, workers: Iterable[Worker]) -> None:
        """No queue is listened to by two workers, now or at any earlier moment."""
        assert self.registry.overlaps == []
        seen: set[str] = set()
        for worker in workers:
            assert not seen & worker.listener.listening
            seen |= worker.listener.listening

    async def step(
        self, workers: list[Worker], until: Callable[[], Awaitable[bool]], rounds: int = 30
    ) -> None:
        """Run passes round-robin (checking exclusivity after each) until ``until`` holds."""
        for _ in range(rounds):
            for worker in workers:
                await worker.run_pass()
                self.assert_exclusive(workers)
            if await until():
                return
        pytest.fail(f"not reached after {rounds} rounds: {await self.rows()}")

    async def settled(self, counts: list[int]) -> bool:
        """Every row has a listening owner, nobody is mid-hand-over, and the sorted counts match."""
        rows = await self.rows()
        if any(row.next_owner or row.is_draining or row.current_owner is None for row in rows.values()):
            return False
        owned = {w.name: w.manager.owned for w in self.workers}
        if any(row.partition_id not in owned.get(row.current_owner or "", ()) for row in rows.values()):
            return False
        return sorted(len(w.manager.owned) for w in self.workers) == counts


@pytest.fixture
async def cluster(hub: TaskHub) -> AsyncIterator[Cluster]:
    service = hub.account.table_service()
    the_cluster = Cluster(hub, service)
    yield the_cluster
    for worker in the_cluster.workers:
        await worker.manager.stop(graceful=False)
    await service.close()


async def eventually(condition: Callable[[], bool | Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail("condition not met in time")
        await asyncio.sleep(0.02)


def manager_tasks() -> list[asyncio.Task[object]]:
    names = ("partition-manager-", "stop-listening-")
    return [t for t in asyncio.all_tasks() if t.get_name().startswith(names) and not t.done()]


async def test_one_worker_claims_every_partition(cluster: Cluster) -> None:
    worker = cluster.add("w1")
    before = datetime.now(UTC)
    await worker.run_pass()
    after = datetime.now(UTC)

    assert worker.manager.owned == cluster.all
    assert worker.listener.listening == cluster.all
    for row in (await cluster.rows()).values():
        assert row.current_owner == "w1"
        assert row.next_owner is None
        assert not row.is_draining
        assert row.owned_since is not None and before <= row.owned_since <= after
        assert row.last_renewal == row.owned_since
        assert row.expires_at is not None and row.expires_at > datetime.now(UTC)
        assert abs(row.expires_at - row.owned_since - OPTIONS.claim_duration) < TOLERANCE


async def test_renewal_extends_the_lease(cluster: Cluster) -> None:
    worker = cluster.add("w1")
    passes = []
    for _ in range(3):
        await worker.run_pass()
        passes.append(await cluster.rows())

    claimed, first, second = passes
    for partition_id in cluster.all:
        a, b, c = claimed[partition_id], first[partition_id], second[partition_id]
        assert a.owned_since == b.owned_since == c.owned_since
        assert a.last_renewal and b.last_renewal and c.last_renewal
        assert a.last_renewal < b.last_renewal < c.last_renewal
        assert b.expires_at and c.expires_at and c.expires_at > b.expires_at
        assert abs(c.expires_at - c.last_renewal - OPTIONS.lease_interval) < TOLERANCE
        assert c.current_owner == "w1"
    assert worker.manager.owned == cluster.all


async def test_a_second_worker_takes_half(cluster: Cluster) -> None:
    w1 = cluster.add("w1")
    await w1.run_pass()
    w2 = cluster.add("w2")

    await cluster.step([w2, w1], until=lambda: cluster.settled([2, 2]))
    # Balanced is a steady state: nobody asks for more.
    for _ in range(3):
        await cluster.step([w1, w2], until=lambda: cluster.settled([2, 2]), rounds=1)
    rows = await cluster.rows()
    assert {p for p, row in rows.items() if row.current_owner == "w1"} == w1.listener.listening
    assert {p for p, row in rows.items() if row.current_owner == "w2"} == w2.listener.listening


async def test_hand_over_waits_for_the_drain(cluster: Cluster) -> None:
    w1 = cluster.add("w1")
    await w1.run_pass()
    w1.listener.release_stops.clear()
    w2 = cluster.add("w2")

    await w2.run_pass()
    asked = {p for p, row in (await cluster.rows()).items() if row.next_owner == "w2"}
    assert len(asked) == 2
    assert not w2.manager.owned

    await w1.run_pass()
    rows = await cluster.rows()
    for partition_id in asked:
        assert rows[partition_id].current_owner == "w1"
        assert rows[partition_id].is_draining
    assert w1.manager.owned == cluster.all - asked
    assert w1.listener.listening == cluster.all, "the listener has not finished its sessions yet"

    await w2.run_pass()
    await w1.run_pass()
    rows_while_draining = await cluster.rows()
    for partition_id in asked:
        row, before = rows_while_draining[partition_id], rows[partition_id]
        assert row.current_owner == "w1" and row.is_draining
        assert row.expires_at and before.expires_at and row.expires_at > before.expires_at
    assert not w2.manager.owned

    w1.listener.release_stops.set()
    await eventually(lambda: w1.listener.listening == cluster.all - asked)
    await w1.run_pass()
    released = await cluster.rows()
    for partition_id in asked:
        assert released[partition_id].current_owner is None
        assert released[partition_id].next_owner == "w2"
        assert not released[partition_id].is_draining

    await w2.run_pass()
    assert w2.manager.owned == asked
    claimed = await cluster.rows()
    for partition_id in asked:
        assert claimed[partition_id].current_owner == "w2"
        assert claimed[partition_id].next_owner is None
    cluster.assert_exclusive([w1, w2])


async def test_a_drain_that_hangs_is_given_up_after_the_timeout(cluster: Cluster) -> None:
    w1 = cluster.add("w1", replace(OPTIONS, drain_timeout=timedelta(seconds=0.3)))
    await w1.run_pass()
    w1.listener.release_stops.clear()
    w2 = cluster.add("w2")
    await w2.run_pass()
    await w1.run_pass()
    started = time.monotonic()

    async def released() -> bool:
        await w1.run_pass()
        return sum(row.current_owner is None for row in (await cluster.rows()).values()) == 2

    await eventually(released)
    assert time.monotonic() - started >= 0.25
    await w2.run_pass()
    assert len(w2.manager.owned) == 2


async def test_three_workers_share_four_partitions_2_1_1(cluster: Cluster) -> None:
    workers = [cluster.add(name) for name in ("w1", "w2", "w3")]

    await cluster.step(workers, until=lambda: cluster.settled([1, 1, 2]))
    for _ in range(3):
        await cluster.step(workers, until=lambda: cluster.settled([1, 1, 2]), rounds=1)


async def test_graceful_stop_hands_every_partition_to_the_other_worker(cluster: Cluster) -> None:
    w1, w2 = cluster.add("w1"), cluster.add("w2")
    await w1.manager.start()
    await w2.manager.start()
    await eventually(lambda: cluster.settled([2, 2]))

    await w1.manager.stop()
    assert not w1.manager.owned
    assert not w1.listener.listening
    assert all(row.current_owner != "w1" for row in (await cluster.rows()).values())

    await eventually(lambda: cluster.settled([0, 4]))
    assert w2.manager.owned == cluster.all
    for row in (await cluster.rows()).values():
        assert row.current_owner == "w2"
        assert not row.is_draining
        assert row.next_owner is None
    assert cluster.registry.overlaps == []


async def test_a_crashed_workers_rows_are_claimed_only_after_they_expire(cluster: Cluster) -> None:
    w1 = cluster.add("w1")
    await w1.manager.start()
    await eventually(lambda: w1.manager.owned == cluster.all)
    await w1.manager.stop(graceful=False)
    w1.listener.die()
    assert not manager_tasks()
    crashed = await cluster.rows()
    assert all(row.current_owner == "w1" for row in crashed.values())
    expiry = {p: row.expires_at for p, row in crashed.items()}

    w2 = cluster.add("w2")
    passes_before_expiry = 0

    async def claimed_all() -> bool:
        nonlocal passes_before_expiry
        await w2.run_pass()
        finished = datetime.now(UTC)
        if all(finished < e for e in expiry.values() if e is not None):
            passes_before_expiry += 1
            assert not w2.manager.owned
        for partition_id, row in (await cluster.rows()).items():
            if row.current_owner == "w2":
                old_expiry = expiry[partition_id]
                assert row.owned_since and old_expiry and row.owned_since >= old_expiry
            else:
                assert row.current_owner == "w1"
        return w2.manager.owned == cluster.all

    await eventually(claimed_all)
    assert passes_before_expiry > 0
    cluster.assert_exclusive([w1, w2])


async def test_a_412_aborts_the_pass_and_the_next_pass_recovers(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    w1 = cluster.add("w1")
    second = sorted(cluster.all)[1]
    list_entities = w1.table.list_entities

    async def read_then_touch(*args: Any, **kwargs: Any) -> AsyncIterator[TableEntity]:
        async for entity in list_entities(*args, **kwargs):
            yield entity
        # Someone else writes one row between our read and our write: its ETag changes.
        monkeypatch.setattr(w1.table, "list_entities", list_entities)
        touched: TableEntity = await cluster.table.get_entity("", second)
        await cluster.table.update_entity(touched, mode=UpdateMode.MERGE)

    monkeypatch.setattr(w1.table, "list_entities", read_then_touch)
    with caplog.at_level(logging.INFO, logger="durable_ext.worker.partitions"):
        await w1.run_pass()

    # The pass's writes are one transaction: none of them happened.
    assert w1.manager.owned == set()
    assert not any(row.current_owner for row in (await cluster.rows()).values())
    conflicts = [r.getMessage() for r in caplog.records if "changed since it was read" in r.getMessage()]
    assert conflicts and second in conflicts[0]
    assert f"hub {cluster.hub.names.hub} worker w1:" in conflicts[0]

    await w1.run_pass()
    assert w1.manager.owned == cluster.all
    assert all(row.current_owner == "w1" for row in (await cluster.rows()).values())


async def test_a_pass_writes_its_rows_in_one_request(cluster: Cluster) -> None:
    w1 = cluster.add("w1")
    await w1.run_pass()
    sent: list[str] = []
    submit, update = w1.table.submit_transaction, w1.table.update_entity

    async def counted_submit(*args: Any, **kwargs: Any) -> Any:
        sent.append("transaction")
        return await submit(*args, **kwargs)

    async def counted_update(*args: Any, **kwargs: Any) -> Any:
        sent.append("update")
        return await update(*args, **kwargs)

    w1.table.submit_transaction = counted_submit  # type: ignore[method-assign]
    w1.table.update_entity = counted_update  # type: ignore[method-assign]
    before = await cluster.rows()
    await w1.run_pass()

    assert sent == ["transaction"]
    after = await cluster.rows()
    for partition_id in cluster.all:
        renewed, claimed = after[partition_id].last_renewal, before[partition_id].last_renewal
        assert renewed is not None and claimed is not None and renewed > claimed
    assert w1.manager.owned == cluster.all


async def test_the_loop_survives_storage_errors_and_timeouts(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    w1 = cluster.add("w1", replace(OPTIONS, operation_timeout=timedelta(seconds=0.3)))
    list_entities = w1.table.list_entities
    calls = 0

    class Hangs:
        def __aiter__(self) -> Hangs:
            return self

        async def __anext__(self) -> TableEntity:
            await asyncio.sleep(60)
            raise StopAsyncIteration

    def flaky(*args: Any, **kwargs: Any) -> object:
        nonlocal calls
        calls += 1
        if calls == 1:
            return Hangs()
        if calls <= 3:
            raise ServiceRequestError("connection refused")
        return list_entities(*args, **kwargs)

    monkeypatch.setattr(w1.table, "list_entities", flaky)
    with caplog.at_level(logging.WARNING, logger="durable_ext.worker.partitions"):
        await w1.manager.start()
        await eventually(lambda: w1.manager.owned == cluster.all)

    messages = [r.getMessage() for r in caplog.records]
    assert any("took longer than" in m for m in messages)
    # Two failed passes, one outage: logged once when storage goes away and once when it is back.
    assert sum("connection refused" in m for m in messages) == 1
    assert sum("storage reachable again" in m for m in messages) == 1
    assert calls >= 4


async def test_stop_is_idempotent_and_releases_the_rows(cluster: Cluster) -> None:
    worker = cluster.add("w1")
    await worker.manager.stop()
    await worker.manager.start()
    await worker.manager.start()
    await eventually(lambda: worker.manager.owned == cluster.all)

    await worker.manager.stop()
    await worker.manager.stop()
    await worker.manager.stop(graceful=False)

    assert not worker.manager.owned
    assert not worker.listener.listening
    assert not manager_tasks()
    for row in (await cluster.rows()).values():
        assert row.current_owner is None
        assert row.next_owner is None
        assert not row.is_draining
