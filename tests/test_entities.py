"""Durable entities through the engine on real Azurite: signals, calls, delete, schedules, crashes."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest

from durable_ext.client import TaskHubClient
from durable_ext.history import OrchestrationStatus, utc_now
from durable_ext.storage.taskhub import TaskHub
from durable_ext.worker.engine import Engine
from tests.engine_support import poll

TIMEOUT = 90.0


@pytest.fixture
def client(hub: TaskHub, engine: Engine) -> TaskHubClient:
    return TaskHubClient(hub, handoff=engine)


async def _state_is(client: TaskHubClient, entity_id: str, expected: Any) -> bool:
    snapshot = await client.read_entity_state(entity_id)
    return snapshot.exists and json.loads(snapshot.state or "null") == expected


async def test_1000_signals_from_concurrent_clients_count_exactly(
    hub: TaskHub, client: TaskHubClient
) -> None:
    clients = [TaskHubClient(hub) for _ in range(4)]

    async def send(sender: TaskHubClient, count: int) -> None:
        for _ in range(count):
            await sender.signal_entity("@counter@total", "add", "1")

    await asyncio.gather(*(send(c, 250) for c in clients))
    await poll(lambda: _state_is(client, "@counter@total", 1000), "the counter to reach 1000")
    row = await hub.tracking.get_instance("@counter@total")
    assert row is not None and row.runtime_status is OrchestrationStatus.Running
    assert '"entityExists":true' in (row.custom_status or "")


async def test_orchestrator_calls_an_entity_and_catches_its_failure(client: TaskHubClient) -> None:
    instance = await client.start_new("use_counter", "use-1", json.dumps("k1"))
    state = await client.wait_for_completion(instance, timeout=TIMEOUT)
    assert state.runtime_status is OrchestrationStatus.Completed, state.output
    output = json.loads(state.output or "null")
    assert output["current"] == 5, "the signal (1) and the call (4) both landed before get"
    assert "operation failed after setting state" in output["failed"]
    assert output["after"] == 105, "df keeps the state an operation set before raising"
    assert await _state_is(client, "@counter@k1", 105)


async def test_delete_and_unknown_entities(client: TaskHubClient) -> None:
    await client.signal_entity("@counter@gone", "add", "3")
    await poll(lambda: _state_is(client, "@counter@gone", 3), "the counter to exist")
    await client.signal_entity("@counter@gone", "delete")
    await poll(lambda: _not_exists(client, "@counter@gone"), "the entity to be deleted")
    assert not (await client.read_entity_state("@counter@never")).exists


async def _not_exists(client: TaskHubClient, entity_id: str) -> bool:
    return not (await client.read_entity_state(entity_id)).exists


async def test_scheduled_signal_waits_for_its_time(client: TaskHubClient) -> None:
    await client.signal_entity("@counter@later", "add", "1")
    await poll(lambda: _state_is(client, "@counter@later", 1), "the first signal")
    due = utc_now() + timedelta(seconds=3)
    await client.signal_entity("@counter@later", "add", "10", scheduled_time=due)
    await poll(lambda: _state_is(client, "@counter@later", 11), "the scheduled signal")
    assert utc_now() >= due


async def test_crash_after_the_state_write_does_not_apply_operations_twice(
    hub: TaskHub, client: TaskHubClient
) -> None:
    original = hub.tracking.merge_instance
    calls = {"n": 0}

    async def crash_once(*args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("worker died after writing history")
        await original(*args, **kwargs)

    hub.tracking.merge_instance = crash_once  # type: ignore[method-assign]
    try:
        for _ in range(5):
            await client.signal_entity("@counter@once", "add", "1")
        await poll(lambda: _state_is(client, "@counter@once", 5), "all five signals")
        # The crashed batch's message comes back after its back-off; wait until it is gone too.
        queue = hub.control_queue_for("@counter@once")
        await poll(lambda: _queue_empty(queue), "the redelivered message to be handled")
        assert await _state_is(client, "@counter@once", 5)
        assert calls["n"] >= 2
    finally:
        hub.tracking.merge_instance = original  # type: ignore[method-assign]


async def _queue_empty(queue: Any) -> bool:
    return bool(await queue.approximate_count() == 0)
