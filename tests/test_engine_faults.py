"""Faults are normal: crashes between checkpoint steps, lost ownership, duplicate deliveries, failover."""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.queue.aio import QueueClient

from durable_ext.app_loader import FunctionRegistry
from durable_ext.client import TaskHubClient
from durable_ext.config import StorageProviderOptions
from durable_ext.errors import OwnershipLostError
from durable_ext.history import (
    EventRaisedEvent,
    EventType,
    ExecutionStartedEvent,
    HistoryEvent,
    OrchestrationInstance,
    OrchestrationStatus,
    TaskCompletedEvent,
    TimerFiredEvent,
    utc_now,
)
from durable_ext.messages import MessageData, TaskMessage
from durable_ext.storage.taskhub import TaskHub
from durable_ext.storage.tracking import InstanceState
from durable_ext.worker.engine import Engine
from tests.engine_support import engine_for, poll

TIMEOUT = 60.0


def _assert_exactly_once(events: list[HistoryEvent]) -> None:
    scheduled = [e.event_id for e in events if e.event_type is EventType.TaskScheduled]
    done = [e.task_scheduled_id for e in events if e.event_type is EventType.TaskCompleted]  # type: ignore[attr-defined]
    assert sorted(scheduled) == sorted(done) and len(set(done)) == len(done)


class _FailOnce:
    """Wraps a coroutine method so that its n-th call raises ``error``."""

    def __init__(self, target: Any, name: str, error: Exception, on_call: int = 1) -> None:
        self.original = getattr(target, name)
        self.error = error
        self.on_call = on_call
        self.calls = 0
        setattr(target, name, self)

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls == self.on_call:
            raise self.error
        return await self.original(*args, **kwargs)


async def test_crash_before_history_write_reruns_the_episode_without_duplicates(
    hub: TaskHub, engine: Engine
) -> None:
    # The first checkpoint sends its activity message, then "crashes" before writing history.
    crash = _FailOnce(hub.tracking, "append_history", ConnectionError("worker died"))
    client = TaskHubClient(hub)
    await client.start_new("chain", "crash-1", "1")
    state = await client.wait_for_completion("crash-1", timeout=TIMEOUT)
    assert crash.calls > 1
    assert state.runtime_status is OrchestrationStatus.Completed and state.output == "32"
    events = (await hub.tracking.load_history("crash-1")).events
    _assert_exactly_once(events)
    assert [e.event_type for e in events].count(EventType.TaskScheduled) == 5


async def test_503_during_the_instances_write_is_retried_not_called_split_brain(
    hub: TaskHub, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    busy = HttpResponseError(message="Server Busy")
    busy.status_code = 503
    crash = _FailOnce(hub.tracking, "merge_instance", busy, on_call=2)
    client = TaskHubClient(hub)
    await client.start_new("chain", "crash-2", "1")
    state = await client.wait_for_completion("crash-2", timeout=TIMEOUT)
    assert crash.calls > 2
    assert state.output == "32"
    _assert_exactly_once((await hub.tracking.load_history("crash-2")).events)
    assert "sentinel conflict" not in caplog.text, "a 503 is not a lost ownership race"


async def test_lost_sentinel_race_abandons_instead_of_failing(hub: TaskHub, engine: Engine) -> None:
    lost = _FailOnce(hub.tracking, "append_history", OwnershipLostError("another worker committed"))
    client = TaskHubClient(hub)
    await client.start_new("chain", "split-1", "1")
    state = await client.wait_for_completion("split-1", timeout=TIMEOUT)
    assert lost.calls > 1
    assert state.runtime_status is OrchestrationStatus.Completed


async def test_a_second_activity_result_is_ignored(hub: TaskHub, engine: Engine) -> None:
    client = TaskHubClient(hub)
    instance = await client.start_new("approval", "dup-1", "30")
    await poll(lambda: _has_event(hub, instance, EventType.TimerCreated), "the approval timer")
    execution = (await hub.tracking.load_history(instance)).execution_id
    # Activities are at-least-once: deliver a result twice for the timer's ID (a completed task).
    fired = TimerFiredEvent(timer_id=0, fire_at=utc_now())
    for _ in range(2):
        await hub.control_queue_for(instance).send(
            MessageData(TaskMessage(fired, OrchestrationInstance(instance, execution)))
        )
    state = await client.wait_for_completion(instance, timeout=TIMEOUT)
    assert json.loads(state.output or "null") == "timed out"
    events = (await hub.tracking.load_history(instance)).events
    assert [e.event_type for e in events].count(EventType.TimerFired) == 1


async def test_result_for_an_unknown_task_waits_instead_of_corrupting_history(
    hub: TaskHub, engine: Engine
) -> None:
    client = TaskHubClient(hub)
    instance = await client.start_new("approval", "ooo-1", "30")
    await poll(lambda: _has_event(hub, instance, EventType.TimerCreated), "the approval timer")
    execution = (await hub.tracking.load_history(instance)).execution_id
    stray = TaskCompletedEvent(task_scheduled_id=99, result="1")
    await hub.control_queue_for(instance).send(
        MessageData(TaskMessage(stray, OrchestrationInstance(instance, execution)))
    )
    await client.raise_event(instance, "Approval", '"ok"')
    await client.wait_for_completion(instance, timeout=TIMEOUT)
    events = (await hub.tracking.load_history(instance)).events
    assert EventType.TaskCompleted not in [e.event_type for e in events]


async def test_long_timer_hops_through_the_queue(hub: TaskHub, engine: Engine) -> None:
    client = TaskHubClient(hub)
    instance = await client.start_new("approval", "hop-1", json.dumps(30 * 24 * 3600))  # a 30-day timer
    await poll(lambda: _has_event(hub, instance, EventType.TimerCreated), "the long timer")
    execution = (await hub.tracking.load_history(instance)).execution_id
    created = next(
        e
        for e in (await hub.tracking.load_history(instance)).events
        if e.event_type is EventType.TimerCreated
    )
    # An early copy of the timer message (what a 6-day hop delivers) must go back to sleep, not fire.
    early = TimerFiredEvent(timer_id=created.event_id, fire_at=created.fire_at)  # type: ignore[attr-defined]
    queue = hub.control_queue_for(instance)
    sends = _Counter(queue, "send")
    await queue.send(MessageData(TaskMessage(early, OrchestrationInstance(instance, execution))))
    await poll(lambda: _at_least(sends, 2), "the early timer to be sent back with a delay")
    assert EventType.TimerFired not in [
        e.event_type for e in (await hub.tracking.load_history(instance)).events
    ]
    await client.terminate(instance, "done testing")
    state = await client.wait_for_completion(instance, timeout=TIMEOUT)
    assert state.runtime_status is OrchestrationStatus.Terminated


async def test_terminate_running_instance(hub: TaskHub, engine: Engine) -> None:
    client = TaskHubClient(hub)
    instance = await client.start_new("approval", "term-1", "30")
    await poll(lambda: _has_event(hub, instance, EventType.TimerCreated), "the approval timer")
    await client.terminate(instance, "no longer needed")
    state = await client.wait_for_completion(instance, timeout=TIMEOUT)
    assert (state.runtime_status, state.output) == (OrchestrationStatus.Terminated, "no longer needed")
    types = [e.event_type for e in (await hub.tracking.load_history(instance)).events]
    assert types[-3:] == [
        EventType.ExecutionTerminated,
        EventType.ExecutionCompleted,
        EventType.OrchestratorCompleted,
    ]


async def test_suspend_buffers_events_until_resume(hub: TaskHub, engine: Engine) -> None:
    client = TaskHubClient(hub)
    instance = await client.start_new("approval", "susp-1", "30")
    await poll(lambda: _has_event(hub, instance, EventType.TimerCreated), "the approval timer")
    await client.suspend(instance, "paused")
    await poll(lambda: _status_is(client, instance, OrchestrationStatus.Suspended), "Suspended")
    await client.raise_event(instance, "Approval", '"while paused"')
    await poll(lambda: _has_event(hub, instance, EventType.EventRaised), "the event in history")
    assert (await client.get_status(instance)).runtime_status is OrchestrationStatus.Suspended  # type: ignore[union-attr]
    await client.resume(instance, "go on")
    state = await client.wait_for_completion(instance, timeout=TIMEOUT)
    assert json.loads(state.output or "null") == "approved: while paused"


async def test_two_engines_share_partitions_and_fail_over(hub: TaskHub, registry: FunctionRegistry) -> None:
    client = TaskHubClient(hub)
    first = engine_for(hub, registry, "worker-1")
    second = engine_for(hub, registry, "worker-2")
    await first.start()
    await second.start()
    try:
        await poll(lambda: _split(first, second), "the partitions to be split 2/2")
        ids = [await client.start_new("chain", f"shared-{i}", str(i)) for i in range(8)]
        for instance_id in ids:
            state = await client.wait_for_completion(instance_id, timeout=TIMEOUT)
            assert state.runtime_status is OrchestrationStatus.Completed
        await first.stop()
        await poll(lambda: _owns_all(second), "the survivor to own every partition")
        late = [await client.start_new("chain", f"late-{i}", "1") for i in range(4)]
        for instance_id in late:
            assert (await client.wait_for_completion(instance_id, timeout=TIMEOUT)).output == "32"
    finally:
        await first.stop()
        await second.stop()


async def test_history_is_never_read_for_a_new_instance_and_kept_in_memory_between_episodes(
    hub: TaskHub, registry: FunctionRegistry
) -> None:
    loads = _Counter(hub.tracking, "load_history")
    async with engine_for(hub, registry, "worker-x"):
        client = TaskHubClient(hub)
        await client.start_new("chain", "ext-1", "1")
        state = await client.wait_for_completion("ext-1", timeout=TIMEOUT)
    assert state.output == "32"
    assert loads.calls == 0, "a first execution has no history to read, and then it is kept in memory"


class _Counter:
    def __init__(self, target: Any, name: str) -> None:
        self.original = getattr(target, name)
        self.calls = 0
        setattr(target, name, self)

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return await self.original(*args, **kwargs)


async def _has_event(hub: TaskHub, instance_id: str, event_type: EventType) -> bool:
    return event_type in [e.event_type for e in (await hub.tracking.load_history(instance_id)).events]


async def _status_is(client: TaskHubClient, instance_id: str, status: OrchestrationStatus) -> bool:
    state = await client.get_status(instance_id)
    return state is not None and state.runtime_status is status


async def _at_least(counter: _Counter, calls: int) -> bool:
    return counter.calls >= calls


async def _split(first: Engine, second: Engine) -> bool:
    return len(first.orchestrations.owned) == 2 and len(second.orchestrations.owned) == 2


async def _owns_all(engine: Engine) -> bool:
    return len(engine.orchestrations.owned) == 4


async def test_concurrent_double_start_runs_only_the_execution_storage_chose(
    hub: TaskHub, registry: FunctionRegistry
) -> None:
    client = TaskHubClient(hub)
    # What a client that lost the start race leaves behind: its start message, queued first,
    # but the Instances row (written with a conditional insert) names the winner.
    await hub.control_queue_for("race-1").send(_start_message("race-1", "loser", "1"))
    await client.start_new("chain", "race-1", "2")
    winner = (await client.get_status("race-1")).execution_id  # type: ignore[union-attr]
    async with engine_for(hub, registry, "worker-r"):
        state = await client.wait_for_completion("race-1", timeout=TIMEOUT)
    assert state.output == "64", "the winner's input (2) ran, not the loser's (1)"
    history = await hub.tracking.load_history("race-1")
    assert history.execution_id == winner == state.execution_id
    assert [e.event_type for e in history.events].count(EventType.ExecutionStarted) == 1


async def test_start_message_without_its_row_waits_for_the_row(hub: TaskHub, engine: Engine) -> None:
    # A client enqueues first and writes the row right after; a worker that sees the message first
    # must neither run it blindly nor drop it.
    await hub.control_queue_for("norow-1").send(_start_message("norow-1", "e1", "1"))
    engine.enqueued(hub.control_queue_for("norow-1").name)
    await poll(lambda: _was_received(hub, "norow-1"), "the worker to see the start")
    assert (await hub.tracking.load_history("norow-1")).events == []
    await hub.tracking.insert_instance(
        InstanceState("norow-1", execution_id="e1", name="chain", runtime_status=OrchestrationStatus.Pending)
    )
    state = await TaskHubClient(hub).wait_for_completion("norow-1", timeout=TIMEOUT)
    assert state.output == "32"


async def _was_received(hub: TaskHub, instance_id: str) -> bool:
    async with QueueClient.from_queue_url(
        f"{hub.account.queue_endpoint}/{hub.control_queue_for(instance_id).name}",
        credential={"account_name": hub.account.account_name, "account_key": hub.account.account_key},
    ) as raw:
        return not await raw.peek_messages()


async def test_terminate_before_a_scheduled_start_keeps_it_from_running(hub: TaskHub, engine: Engine) -> None:
    client = TaskHubClient(hub, handoff=engine)
    instance = await client.start_new(
        "chain", "later-1", "1", scheduled_start_time=utc_now() + timedelta(seconds=3)
    )
    await client.terminate(instance, "changed my mind")
    await poll(lambda: _status_is(client, instance, OrchestrationStatus.Terminated), "Terminated")
    queue = hub.control_queue_for(instance)
    await poll(lambda: _queue_drained(queue), "the delayed start message to be handled")
    state = await client.get_status(instance)
    assert state is not None and (state.runtime_status, state.output) == (
        OrchestrationStatus.Terminated,
        "changed my mind",
    )
    assert (await hub.tracking.load_history(instance)).events == []


async def _queue_drained(queue: Any) -> bool:
    return bool(await queue.approximate_count() == 0)


async def _completed_then_row_forced_running(
    hub: TaskHub, client: TaskHubClient, instance_id: str
) -> str | None:
    await client.start_new("chain", instance_id, "1")
    state = await client.wait_for_completion(instance_id, timeout=TIMEOUT)
    assert state.runtime_status is OrchestrationStatus.Completed
    # The "split brain" users see: History says Completed, the Instances row still says Running.
    await hub.tracking.merge_instance(
        InstanceState(instance_id, runtime_status=OrchestrationStatus.Running), columns=["RuntimeStatus"]
    )
    return state.execution_id


async def _send_event(hub: TaskHub, instance_id: str, name: str) -> None:
    event = EventRaisedEvent(name=name, input='"late"')
    await hub.control_queue_for(instance_id).send(
        MessageData(TaskMessage(event, OrchestrationInstance(instance_id, None)))
    )


async def test_instances_row_stuck_running_is_repaired_by_the_next_message(
    hub: TaskHub, engine: Engine
) -> None:
    client = TaskHubClient(hub, handoff=engine)
    await _completed_then_row_forced_running(hub, client, "stuck-1")
    await client.raise_event("stuck-1", "poke", '"x"')  # the client still believes it is Running
    await poll(lambda: _status_is(client, "stuck-1", OrchestrationStatus.Completed), "the row to be repaired")
    state = await client.get_status("stuck-1")
    assert state is not None and state.output == "32"
    assert EventType.EventRaised not in [
        e.event_type for e in (await hub.tracking.load_history("stuck-1")).events
    ]


async def test_allow_replaying_terminal_instances_records_late_events(
    hub: TaskHub, registry: FunctionRegistry
) -> None:
    async with engine_for(hub, registry, "worker-replay") as running:
        running.orchestrations._provider = dataclasses.replace(
            running.orchestrations._provider, allow_replaying_terminal_instances=True
        )
        client = TaskHubClient(hub, handoff=running)
        await _completed_then_row_forced_running(hub, client, "replay-1")
        await _send_event(hub, "replay-1", "late")
        await poll(lambda: _has_event(hub, "replay-1", EventType.EventRaised), "the late event in history")
        state = await client.get_status("replay-1")
        assert state is not None and (state.runtime_status, state.output) == (
            OrchestrationStatus.Completed,
            "32",
        )
        events = (await hub.tracking.load_history("replay-1")).events
        assert [e.event_type for e in events].count(EventType.ExecutionCompleted) == 1


def _start_message(instance_id: str, execution_id: str, input_json: str) -> MessageData:
    """A client's start of ``chain`` for one execution, without the Instances row a client writes."""
    instance = OrchestrationInstance(instance_id, execution_id)
    started = ExecutionStartedEvent(
        orchestration_instance=instance, name="chain", version="", input=input_json
    )
    return MessageData(TaskMessage(started, instance))


class _DropOnce:
    """Wraps a plain method so that its first call is swallowed: the consumer "dies" holding the message."""

    def __init__(self, target: Any, name: str) -> None:
        self.original = getattr(target, name)
        self.dropped: list[Any] = []
        setattr(target, name, self)

    def __call__(self, *args: Any) -> Any:
        if not self.dropped:
            self.dropped.append(args)
            return None
        return self.original(*args)


async def test_a_work_item_handed_over_to_a_worker_that_dies_runs_when_its_claim_expires(
    hub: TaskHub, registry: FunctionRegistry
) -> None:
    provider = StorageProviderOptions(work_item_queue_visibility_timeout=timedelta(seconds=2))
    async with engine_for(hub, registry, "worker-h", storage_provider=provider) as running:
        lost = _DropOnce(running.activities, "deliver")
        client = TaskHubClient(hub, handoff=running)
        await client.start_new("chain", "handoff-1", "1")
        state = await client.wait_for_completion("handoff-1", timeout=TIMEOUT)
    assert state.output == "32", "the held work item came back from the queue and ran"
    (message,) = lost.dropped[0]
    assert message.data.event.event_type is EventType.TaskScheduled
    _assert_exactly_once((await hub.tracking.load_history("handoff-1")).events)


async def test_a_purged_and_restarted_instance_is_not_run_from_its_cached_history(
    hub: TaskHub, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    client = TaskHubClient(hub, handoff=engine)
    await client.start_new("chain", "stale-1", "1")
    assert (await client.wait_for_completion("stale-1", timeout=TIMEOUT)).output == "32"
    await client.purge_instance("stale-1")
    await client.start_new("chain", "stale-1", "2")
    state = await client.wait_for_completion("stale-1", timeout=TIMEOUT)
    assert state.output == "64"
    history = await hub.tracking.load_history("stale-1")
    assert history.execution_id == state.execution_id
    _assert_exactly_once(history.events)
    assert "episode failed" not in caplog.text, "the stale cache entry is replaced, not an error"


async def test_activity_results_of_an_owned_instance_skip_the_control_queue(
    hub: TaskHub, engine: Engine
) -> None:
    sent: list[EventType] = []
    for queue in hub.control_queues:
        original = queue.put

        async def put(message: MessageData, *args: Any, _original: Any = original) -> Any:
            sent.append(message.event.event_type)
            return await _original(message, *args)

        queue.put = put  # type: ignore[method-assign]
    client = TaskHubClient(hub, handoff=engine)
    await client.start_new("chain", "direct-1", "1")
    assert (await client.wait_for_completion("direct-1", timeout=TIMEOUT)).output == "32"
    assert sent == [EventType.ExecutionStarted], "the five results went to the orchestration in memory"
    await poll(
        lambda: _queue_is_empty(hub, hub.work_item_queue.name), "the recorded work items to be deleted"
    )


async def test_a_result_taken_in_memory_survives_a_failed_checkpoint(hub: TaskHub, engine: Engine) -> None:
    # The episode that records the first result fails before its history write: the work item that
    # stood for the result must come back, run again and be recorded exactly once.
    crash = _FailOnce(hub.tracking, "append_history", ConnectionError("storage went away"), on_call=2)
    client = TaskHubClient(hub, handoff=engine)
    await client.start_new("chain", "direct-2", "1")
    state = await client.wait_for_completion("direct-2", timeout=TIMEOUT)
    assert crash.calls > 2
    assert state.output == "32"
    _assert_exactly_once((await hub.tracking.load_history("direct-2")).events)


async def _queue_is_empty(hub: TaskHub, name: str) -> bool:
    async with hub.account.queue_service() as service:
        properties = await service.get_queue_client(name).get_queue_properties()
        return not properties.approximate_message_count


async def test_a_first_start_that_finds_history_after_all_is_rerun_from_storage(
    hub: TaskHub, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    # Rows of an execution the Instances row knows nothing about (written behind its back): the
    # worker's guess that a generation-0 Pending start has no history is wrong, and must cost nothing.
    await hub.tracking.append_history(
        "guess-1",
        "old",
        [ExecutionStartedEvent(name="chain", input="1"), TaskCompletedEvent(result="2")],
        0,
        None,
    )
    await hub.control_queue_for("guess-1").send(_start_message("guess-1", "e1", "1"), handoff=engine)
    await hub.tracking.insert_instance(
        InstanceState("guess-1", execution_id="e1", name="chain", runtime_status=OrchestrationStatus.Pending)
    )
    state = await TaskHubClient(hub).wait_for_completion("guess-1", timeout=TIMEOUT)
    assert state.output == "32"
    history = await hub.tracking.load_history("guess-1")
    assert history.execution_id == "e1"
    _assert_exactly_once(history.events)
    assert "history in memory was stale; reloading" in caplog.text


async def test_a_start_whose_instances_write_failed_is_not_left_pending(hub: TaskHub, engine: Engine) -> None:
    # The first episode writes history, then its Instances write fails: the row still says Pending
    # while the instance waits for an event. The start's redelivery must bring the row up to Running.
    failed = _FailOnce(hub.tracking, "merge_instance", ConnectionError("storage went away"))
    client = TaskHubClient(hub, handoff=engine)
    await client.start_new("approval", "pending-1", "300")
    await poll(lambda: _has_event(hub, "pending-1", EventType.TimerCreated), "the first episode's history")
    await poll(
        lambda: _status_is(client, "pending-1", OrchestrationStatus.Running), "the row repaired to Running"
    )
    assert failed.calls >= 2
    await client.raise_event("pending-1", "Approval", '"yes"')
    state = await client.wait_for_completion("pending-1", timeout=TIMEOUT)
    assert state.output == '"approved: yes"'
