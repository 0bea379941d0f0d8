"""Poison messages go to the hub's quarantine table instead of coming back for ever."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

from durable_ext.app_loader import FunctionRegistry
from durable_ext.client import TaskHubClient
from durable_ext.config import StorageProviderOptions
from durable_ext.doctor import FindingKind, diagnose, repair
from durable_ext.errors import StorageUnreachableError
from durable_ext.history import EventType, OrchestrationStatus, TaskCompletedEvent
from durable_ext.storage.quarantine import POISON_DEQUEUE_COUNT
from durable_ext.storage.queues import MessageQueue, ReceivedMessage
from durable_ext.storage.taskhub import TaskHub
from durable_ext.worker.activities import ActivityDispatcher
from durable_ext.worker.holds import HeldMessages
from durable_ext.worker.orchestrations import OrchestrationDispatcher
from tests.engine_support import engine_for, poll

TIMEOUT = 60.0


class _WorkerDies:
    """Stands in for an activity that takes its worker down: the work item is never completed."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, *_: Any) -> None:
        self.calls += 1
        raise RuntimeError("the worker died while running the activity")


async def _quarantined(hub: TaskHub) -> list[Any]:
    return [q async for q in hub.quarantine.list()]


async def test_a_work_item_that_never_completes_is_quarantined_and_fails_the_activity(
    hub: TaskHub, registry: FunctionRegistry, monkeypatch: Any
) -> None:
    dies = _WorkerDies()
    monkeypatch.setattr(ActivityDispatcher, "_execute", dies)
    provider = StorageProviderOptions(work_item_queue_visibility_timeout=timedelta(seconds=1))
    async with engine_for(hub, registry, "worker-p", storage_provider=provider) as running:
        client = TaskHubClient(hub, handoff=running)
        await client.start_new("catches", "poison-1")
        state = await client.wait_for_completion("poison-1", timeout=TIMEOUT)
    assert state.runtime_status is OrchestrationStatus.Completed
    assert "never completed: its work item was dequeued 6 times" in json.loads(state.output or "null")
    assert "quarantined in table" in json.loads(state.output or "null")
    # Five dequeues (plus the hand-over, which the queue does not count) ran; the sixth did not.
    assert dies.calls == POISON_DEQUEUE_COUNT + 1

    [quarantined] = await _quarantined(hub)
    assert quarantined.instance_id == "poison-1" and quarantined.event_type == "TaskScheduled"
    assert quarantined.queue_name == hub.work_item_queue.name
    assert quarantined.dequeue_count == POISON_DEQUEUE_COUNT + 1
    assert await hub.work_item_queue.approximate_count() == 0

    findings = await diagnose(hub)
    [finding] = [f for f in findings if f.kind is FindingKind.QUARANTINED_MESSAGE]
    assert finding.instance_id == "poison-1" and finding.fixable
    assert await repair(hub, [finding]) == [finding]
    assert await _quarantined(hub) == []
    [back] = await hub.work_item_queue.receive(32, timedelta(seconds=30))
    assert back.data.event.event_type is EventType.TaskScheduled
    assert back.data.instance_id == "poison-1"


async def test_a_control_message_whose_episode_keeps_failing_is_quarantined_and_requeued(
    hub: TaskHub, registry: FunctionRegistry, monkeypatch: Any
) -> None:
    client = TaskHubClient(hub)
    queue = await _start_dequeued_five_times(client, "poison-2")

    original = OrchestrationDispatcher._attempt

    async def broken(*_: Any) -> Any:
        raise RuntimeError("replay blew up")

    monkeypatch.setattr(OrchestrationDispatcher, "_attempt", broken)
    async with engine_for(hub, registry, "worker-q"):
        await poll(lambda: _has_quarantined(hub), "the start message to be quarantined")
        row = await client.get_status("poison-2")
        assert row is not None and row.runtime_status is OrchestrationStatus.Failed
        assert "quarantined 1 message(s)" in json.loads(row.output or "null")
        assert "replay blew up" in json.loads(row.output or "null")
    assert await queue.approximate_count() == 0

    monkeypatch.setattr(OrchestrationDispatcher, "_attempt", original)
    [finding] = [f for f in await diagnose(hub) if f.kind is FindingKind.QUARANTINED_MESSAGE]
    assert "ExecutionStarted" in finding.detail and "replay blew up" in finding.detail
    assert await repair(hub, [finding]) == [finding]
    async with engine_for(hub, registry, "worker-q") as running:
        state = await TaskHubClient(hub, handoff=running).wait_for_completion("poison-2", timeout=TIMEOUT)
    assert state.runtime_status is OrchestrationStatus.Completed and state.output == "32"


async def test_a_storage_outage_never_quarantines(
    hub: TaskHub, registry: FunctionRegistry, monkeypatch: Any
) -> None:
    """Only genuine failures count: an episode failing because storage is away leaves messages be."""
    client = TaskHubClient(hub)
    queue = await _start_dequeued_five_times(client, "poison-3")
    calls = 0

    async def outage(*_: Any) -> Any:
        nonlocal calls
        calls += 1
        raise StorageUnreachableError("storage went away")

    async def failed_once() -> bool:
        return calls >= 1

    monkeypatch.setattr(OrchestrationDispatcher, "_attempt", outage)
    async with engine_for(hub, registry, "worker-r"):
        await poll(failed_once, "an episode to fail")
    assert await _quarantined(hub) == []
    assert await queue.approximate_count() == 1, "the message was abandoned, not taken out"
    row = await client.get_status("poison-3")
    assert row is not None and row.runtime_status is OrchestrationStatus.Pending


async def test_a_work_item_whose_result_waits_in_memory_is_never_run_again_nor_quarantined(
    hub: TaskHub, registry: FunctionRegistry, monkeypatch: Any
) -> None:
    """Storage slower than a hold: the work item of a result held in memory turns visible and comes
    back to the activity poller again and again while its episode waits. The holder adopts each copy;
    the activity does not run again and no dequeue count makes it poison."""
    runs: dict[str, int] = {}
    execute, attempt, adopt = (
        ActivityDispatcher._execute,
        OrchestrationDispatcher._attempt,
        HeldMessages.adopt,
    )
    renewing = asyncio.Event()
    episode_may_record = asyncio.Event()
    adopted: list[int] = []

    async def counted(self: ActivityDispatcher, message: ReceivedMessage) -> Any:
        runs[message.message_id] = runs.get(message.message_id, 0) + 1
        return await execute(self, message)

    async def waits_for_the_gate(
        self: OrchestrationDispatcher, session: Any, execution: Any, messages: Any, row: Any
    ) -> Any:
        if any(isinstance(m.data.event, TaskCompletedEvent) for m in messages):
            await episode_may_record.wait()
        return await attempt(self, session, execution, messages, row)

    def renew_due(self: HeldMessages) -> list[asyncio.Task[None]]:
        return renewing_due(self) if renewing.is_set() else []  # "renewals fell behind" until then

    def counts_adoptions(self: HeldMessages, redelivered: ReceivedMessage) -> bool:
        taken = adopt(self, redelivered)
        if taken:
            adopted.append(redelivered.dequeue_count)
        if redelivered.dequeue_count > POISON_DEQUEUE_COUNT + 1:
            # Renew again and let the episode record the result while this copy is still hidden.
            renewing.set()
            episode_may_record.set()
        return taken

    renewing_due = HeldMessages.renew_due
    monkeypatch.setattr(ActivityDispatcher, "_execute", counted)
    monkeypatch.setattr(OrchestrationDispatcher, "_attempt", waits_for_the_gate)
    monkeypatch.setattr(HeldMessages, "renew_due", renew_due)
    monkeypatch.setattr(HeldMessages, "adopt", counts_adoptions)
    provider = StorageProviderOptions(work_item_queue_visibility_timeout=timedelta(seconds=1))
    async with engine_for(hub, registry, "worker-s", storage_provider=provider) as running:
        client = TaskHubClient(hub, handoff=running)
        await client.start_new("chain", "late-renewals", "1")
        state = await client.wait_for_completion("late-renewals", timeout=TIMEOUT)
    assert state.runtime_status is OrchestrationStatus.Completed and state.output == "32"
    assert adopted and max(adopted) > POISON_DEQUEUE_COUNT + 1, adopted
    assert sorted(runs.values()) == [1] * 5, "each of the five activities ran once"
    assert await _quarantined(hub) == []


async def _start_dequeued_five_times(client: TaskHubClient, instance_id: str) -> MessageQueue:
    """Start ``chain`` with no engine running and dequeue its start message five times, as if five
    episodes had failed: each delivery raises the message's dequeue count."""
    await client.start_new("chain", instance_id, "1")
    queue = client.hub.control_queue_for(instance_id)
    for _ in range(POISON_DEQUEUE_COUNT):
        [message] = await queue.receive(1, timedelta(seconds=30))
        await queue.abandon(message, delay=timedelta(0))
    return queue


async def _has_quarantined(hub: TaskHub) -> bool:
    return bool(await _quarantined(hub))
