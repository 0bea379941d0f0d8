"""A worker that dies holding messages strands nothing for longer than its lease plus a short hold.

Messages a worker dequeued or handed to itself are hidden only for a renewed hold, not for the
five-minute visibility timeout, so the next owner of the partition reads them soon after the lease
of the dead worker expires.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from durable_ext.app_loader import FunctionRegistry
from durable_ext.client import TaskHubClient
from durable_ext.history import EventType, HistoryEvent, OrchestrationStatus
from durable_ext.storage.taskhub import TaskHub
from durable_ext.worker import holds
from durable_ext.worker.engine import Engine
from tests.engine_support import engine_for, poll

INSTANCES = [f"crash-{n}" for n in range(4)]
RECOVERY = 30.0
"""Lease (3 s in tests) plus the hold (3 s here) with room to spare; the five-minute visibility
timeout the messages were dequeued under, were it still in force, would exceed it by far."""


async def _scheduled(hub: TaskHub, instance_id: str, activity: str) -> bool:
    events = (await hub.tracking.load_history(instance_id)).events
    return any(
        e.event_type is EventType.TaskScheduled and getattr(e, "name", None) == activity for e in events
    )


async def _completed(client: TaskHubClient) -> bool:
    for instance_id in INSTANCES:
        state = await client.get_status(instance_id)
        if state is None or state.runtime_status is not OrchestrationStatus.Completed:
            return False
    return True


async def _crash(engine: Engine, tasks: set[asyncio.Task[Any]]) -> None:
    """Stop ``engine`` as kill -9 would: no lease released, no message deleted or made visible."""
    await engine.partitions.stop(graceful=False)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _assert_exactly_once(events: list[HistoryEvent]) -> None:
    kinds = [e.event_type for e in events]
    assert kinds.count(EventType.ExecutionCompleted) == 1
    assert kinds.count(EventType.EventRaised) == 1
    scheduled = [e.event_id for e in events if e.event_type is EventType.TaskScheduled]
    done = [getattr(e, "task_scheduled_id", None) for e in events if e.event_type is EventType.TaskCompleted]
    assert sorted(scheduled) == sorted(done) and len(set(done)) == len(done)


@dataclass
class _DyingWorker:
    """An engine running ``five_steps`` instances, each waiting at its gated third step."""

    engine: Engine
    client: TaskHubClient
    gates: set[str]
    before: set[asyncio.Task[Any]]

    async def crash(self) -> None:
        await _crash(self.engine, asyncio.all_tasks() - self.before - {asyncio.current_task()})  # type: ignore[operator]


async def _five_steps_on_a_dying_worker(
    hub: TaskHub, registry: FunctionRegistry, monkeypatch: pytest.MonkeyPatch, instance_ids: list[str]
) -> _DyingWorker:
    monkeypatch.setattr(holds, "MESSAGE_HOLD", timedelta(seconds=3))
    function = registry.get("five_steps")
    assert function is not None
    gates: set[str] = function.callable.orchestrator_function.__globals__["OPEN_GATES"]
    before = asyncio.all_tasks()
    dying = engine_for(hub, registry, "worker-dies")
    await dying.start()
    client = TaskHubClient(hub, handoff=dying)
    for instance_id in instance_ids:
        await client.start_new("five_steps", instance_id, f'"{instance_id}"')
    for instance_id in instance_ids:
        await poll(lambda i=instance_id: _scheduled(hub, i, "held"), f"{instance_id} to run its held step")
    return _DyingWorker(dying, client, gates, before)


async def test_instances_held_by_a_dead_worker_resume_soon_after_its_lease_expires(
    hub: TaskHub, registry: FunctionRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    dying = await _five_steps_on_a_dying_worker(hub, registry, monkeypatch, INSTANCES)

    # The worker takes the events in memory but never gets to record them: it hangs, then dies.
    hung = asyncio.Event()
    dying.engine.orchestrations._episode = lambda *_: hung.wait()  # type: ignore[method-assign]
    for instance_id in INSTANCES:
        await dying.client.raise_event(instance_id, "extra", '"x"')
    await dying.crash()
    dying.gates.update(f"{instance_id}-3" for instance_id in INSTANCES)

    async with engine_for(hub, registry, "worker-lives") as living:
        await poll(lambda: _completed(TaskHubClient(hub, handoff=living)), "every instance", RECOVERY)
    for instance_id in INSTANCES:
        _assert_exactly_once((await hub.tracking.load_history(instance_id)).events)


async def test_a_row_left_behind_by_pipelined_episodes_is_repaired_after_a_crash(
    hub: TaskHub, registry: FunctionRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An instance's next episode commits before the previous one's Instances write: with those writes
    # hanging, a two-episode orchestration ends in history while its row still says Pending.
    monkeypatch.setattr(holds, "MESSAGE_HOLD", timedelta(seconds=3))
    before = asyncio.all_tasks()
    dying = engine_for(hub, registry, "worker-dies")
    await dying.start()
    hung = asyncio.Event()

    async def never_written(*_: Any) -> None:
        await hung.wait()

    monkeypatch.setattr(hub.instances, "checkpointed", never_written)
    await TaskHubClient(hub, handoff=dying).start_new("fan_out", "ahead", "1")

    async def ended_in_history() -> bool:
        events = (await hub.tracking.load_history("ahead")).events
        return any(e.event_type is EventType.ExecutionCompleted for e in events)

    await poll(ended_in_history, "the history to record the end")
    row = await hub.tracking.get_instance("ahead")
    assert row is not None and row.runtime_status is OrchestrationStatus.Pending
    await _crash(dying, asyncio.all_tasks() - before - {asyncio.current_task()})  # type: ignore[operator]
    monkeypatch.delattr(hub.instances, "checkpointed")

    async def repaired() -> bool:
        state = await TaskHubClient(hub).get_status("ahead")
        return state is not None and state.runtime_status is OrchestrationStatus.Completed

    async with engine_for(hub, registry, "worker-lives"):
        await poll(repaired, "the row to be repaired from history", RECOVERY)
    events = (await hub.tracking.load_history("ahead")).events
    kinds = [e.event_type for e in events]
    assert kinds.count(EventType.ExecutionCompleted) == 1 and kinds.count(EventType.TaskCompleted) == 1
    state = await TaskHubClient(hub).get_status("ahead")
    assert state is not None and state.output == "0"


async def test_an_event_recorded_before_its_message_was_deleted_is_recorded_once(
    hub: TaskHub, registry: FunctionRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker records the external event in history, then dies before it deletes the event's
    # message: the message comes back to the next owner, which must not record the event again.
    dying = await _five_steps_on_a_dying_worker(hub, registry, monkeypatch, ["redelivered"])
    hung = asyncio.Event()

    async def never_deleted(*_: Any) -> None:
        await hung.wait()

    for queue in hub.control_queues:
        monkeypatch.setattr(queue, "delete", never_deleted)
    await dying.client.raise_event("redelivered", "extra", '"x"')

    async def recorded() -> bool:
        events = (await hub.tracking.load_history("redelivered")).events
        return any(e.event_type is EventType.EventRaised for e in events)

    await poll(recorded, "the event to be recorded")
    await dying.crash()
    for queue in hub.control_queues:
        monkeypatch.delattr(queue, "delete")
    dying.gates.add("redelivered-3")

    async def completed() -> bool:
        state = await TaskHubClient(hub).get_status("redelivered")
        return state is not None and state.runtime_status is OrchestrationStatus.Completed

    async with engine_for(hub, registry, "worker-lives"):
        await poll(completed, "the instance to complete", RECOVERY)
    _assert_exactly_once((await hub.tracking.load_history("redelivered")).events)
