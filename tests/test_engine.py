"""The orchestration engine end to end on real Azurite: client → control queue → replay → checkpoint."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from typing import Any

import pytest

from durable_ext.app_loader import FunctionRegistry
from durable_ext.client import OrchestrationState, TaskHubClient
from durable_ext.config import DurableTaskOptions
from durable_ext.history import EventType, HistoryEvent, OrchestrationStatus, OrchestratorStartedEvent
from durable_ext.storage.account import StorageAccount
from durable_ext.storage.instances import InstanceEnds
from durable_ext.storage.taskhub import TaskHub
from durable_ext.worker.engine import Engine
from durable_ext.worker.session import Execution, SessionCache
from tests.engine_support import FAST_LEASES, poll

TIMEOUT = 60.0


@pytest.fixture
def client(hub: TaskHub, engine: Engine) -> TaskHubClient:
    return TaskHubClient(hub)


async def _history(hub: TaskHub, instance_id: str) -> list[HistoryEvent]:
    return (await hub.tracking.load_history(instance_id)).events


def _types(events: list[HistoryEvent]) -> list[str]:
    return [e.event_type.name for e in events]


def _assert_well_formed(events: list[HistoryEvent]) -> None:
    """Episodes are bracketed, and every scheduled task has exactly one result."""
    types = _types(events)
    assert types[0] == "OrchestratorStarted" and types[1] == "ExecutionStarted"
    assert types.count("OrchestratorStarted") == types.count("OrchestratorCompleted")
    scheduled = [e.event_id for e in events if e.event_type is EventType.TaskScheduled]
    results = [
        e.task_scheduled_id for e in events if e.event_type in (EventType.TaskCompleted, EventType.TaskFailed)
    ]
    assert sorted(scheduled) == sorted(results), "one TaskCompleted/TaskFailed per TaskScheduled"
    assert len(set(scheduled)) == len(scheduled)


async def _run(
    client: TaskHubClient, name: str, payload: Any, instance_id: str | None = None
) -> OrchestrationState:
    started = await client.start_new(name, instance_id, json.dumps(payload))
    return await client.wait_for_completion(started, timeout=TIMEOUT)


async def test_function_chaining(hub: TaskHub, client: TaskHubClient) -> None:
    state = await _run(client, "chain", 1, "chain-1")
    assert state.runtime_status is OrchestrationStatus.Completed
    assert json.loads(state.output or "null") == 32
    events = await _history(hub, "chain-1")
    _assert_well_formed(events)
    assert _types(events).count("TaskScheduled") == 5
    assert _types(events)[-2:] == ["ExecutionCompleted", "OrchestratorCompleted"]
    row = await hub.tracking.get_instance("chain-1")
    assert row is not None
    assert (row.name, row.runtime_status, row.output, row.input) == (
        "chain",
        OrchestrationStatus.Completed,
        "32",
        "1",
    )
    assert row.completed_time is not None and row.created_time is not None
    assert row.execution_id == (await hub.tracking.load_history("chain-1")).execution_id


async def test_fan_out_fan_in_100(hub: TaskHub, client: TaskHubClient) -> None:
    state = await _run(client, "fan_out", 100, "fan-100")
    assert state.runtime_status is OrchestrationStatus.Completed
    assert json.loads(state.output or "null") == sum(2 * i for i in range(100))
    events = await _history(hub, "fan-100")
    _assert_well_formed(events)
    assert _types(events).count("TaskCompleted") == 100


async def test_durable_timer(hub: TaskHub, client: TaskHubClient) -> None:
    state = await _run(client, "timer", None, "timer-1")
    assert json.loads(state.output or "null") == "fired"
    events = await _history(hub, "timer-1")
    _assert_well_formed(events)
    created = [e for e in events if e.event_type is EventType.TimerCreated]
    fired = [e for e in events if e.event_type is EventType.TimerFired]
    assert len(created) == len(fired) == 1
    assert fired[0].timer_id == created[0].event_id


async def test_external_event_beats_the_timer(hub: TaskHub, client: TaskHubClient) -> None:
    instance = await client.start_new("approval", "approval-yes", json.dumps(30))
    await _wait_for_status(client, instance, "waiting")
    await client.raise_event(instance, "Approval", json.dumps("by alice"))
    state = await client.wait_for_completion(instance, timeout=TIMEOUT)
    assert json.loads(state.output or "null") == "approved: by alice"
    assert json.loads(state.custom_status or "null") == "done"
    events = await _history(hub, instance)
    assert "EventRaised" in _types(events) and "TimerFired" not in _types(events)


async def test_timer_beats_the_external_event(hub: TaskHub, client: TaskHubClient) -> None:
    state = await _run(client, "approval", 1, "approval-late")
    assert json.loads(state.output or "null") == "timed out"
    assert "TimerFired" in _types(await _history(hub, "approval-late"))


async def test_sub_orchestration(hub: TaskHub, client: TaskHubClient) -> None:
    state = await _run(client, "parent", None, "parent-1")
    assert json.loads(state.output or "null") == 33
    events = await _history(hub, "parent-1")
    _assert_well_formed(events)
    created = next(e for e in events if e.event_type is EventType.SubOrchestrationInstanceCreated)
    done = next(e for e in events if e.event_type is EventType.SubOrchestrationInstanceCompleted)
    assert done.task_scheduled_id == created.event_id
    child_id = created.instance_id
    child = await hub.tracking.get_instance(child_id)
    assert child is not None and child.runtime_status is OrchestrationStatus.Completed
    child_started = (await _history(hub, child_id))[1]
    assert child_started.parent_instance.orchestration_instance.instance_id == "parent-1"


async def test_continue_as_new_ten_generations(hub: TaskHub, client: TaskHubClient) -> None:
    state = await _run(client, "counter_loop", 1, "loop-1")
    assert state.runtime_status is OrchestrationStatus.Completed
    assert json.loads(state.output or "null") == 20
    events = await _history(hub, "loop-1")
    _assert_well_formed(events)
    assert json.loads(events[1].input) == 10, "history holds only the last generation"
    row = await hub.tracking.get_instance("loop-1")
    assert row is not None and row.input == "10"


async def test_activity_retry_succeeds_on_third_attempt(hub: TaskHub, client: TaskHubClient) -> None:
    state = await _run(client, "retry", None, "retry-1")
    assert state.runtime_status is OrchestrationStatus.Completed
    assert json.loads(state.output or "null") == "ok after 3"
    events = await _history(hub, "retry-1")
    _assert_well_formed(events)
    types = _types(events)
    assert types.count("TaskFailed") == 2 and types.count("TaskCompleted") == 1
    assert types.count("TimerCreated") == types.count("TimerFired") == 2


async def test_orchestrator_catches_an_activity_failure(hub: TaskHub, client: TaskHubClient) -> None:
    state = await _run(client, "catches", None, "catch-1")
    assert state.runtime_status is OrchestrationStatus.Completed
    assert json.loads(state.output or "null").startswith("caught: Activity function 'always_fails' failed: ")
    events = await _history(hub, "catch-1")
    _assert_well_formed(events)
    failed = next(e for e in events if e.event_type is EventType.TaskFailed)
    assert failed.reason == "Activity function 'always_fails' failed:  ValueError: nope"


async def test_orchestrator_that_raises_fails_the_instance(hub: TaskHub, client: TaskHubClient) -> None:
    state = await _run(client, "raises", None, "raise-1")
    assert state.runtime_status is OrchestrationStatus.Failed
    assert "orchestrator gave up" in (state.output or "")
    events = await _history(hub, "raise-1")
    _assert_well_formed(events)
    completed = next(e for e in events if e.event_type is EventType.ExecutionCompleted)
    assert completed.orchestration_status is OrchestrationStatus.Failed
    assert completed.result == "Orchestrator function 'raises' failed: orchestrator gave up"


async def test_unknown_orchestrator_fails_clearly(client: TaskHubClient) -> None:
    state = await _run(client, "no_such_orchestrator", None, "unknown-1")
    assert state.runtime_status is OrchestrationStatus.Failed
    assert "no_such_orchestrator" in (state.output or "")


async def test_custom_status_is_on_the_instances_row(hub: TaskHub, client: TaskHubClient) -> None:
    instance = await client.start_new("approval", "status-1", json.dumps(30))
    await _wait_for_status(client, instance, "waiting")
    raw = await hub.tracking._instances.get_entity("status-1", "")
    assert raw["CustomStatus"] == '"waiting"'
    assert raw["RuntimeStatus"] == "Running"
    await client.raise_event(instance, "Approval", json.dumps("ok"))
    await client.wait_for_completion(instance, timeout=TIMEOUT)


async def _wait_for_status(client: TaskHubClient, instance_id: str, custom_status: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        state = await client.get_status(instance_id)
        if state is not None and state.custom_status and json.loads(state.custom_status) == custom_status:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{instance_id} never reported custom status {custom_status!r}")


async def test_continue_as_new_carries_unconsumed_events_over(
    hub: TaskHub, registry: FunctionRegistry
) -> None:
    client = TaskHubClient(hub)
    # All three messages wait in one batch before any worker runs: generation 0 consumes "A" and
    # continues as new in the same work item, so "B" must be carried into generation 1.
    await client.start_new("carry", "carry-1", "0")
    await client.raise_event("carry-1", "A", '"first"')
    await client.raise_event("carry-1", "B", '"second"')
    options = DurableTaskOptions(hub_name=hub.names.hub)
    async with Engine(hub, registry, options, partition_options=FAST_LEASES):
        state = await client.wait_for_completion("carry-1", timeout=TIMEOUT)
    assert state.runtime_status is OrchestrationStatus.Completed
    assert json.loads(state.output or "null") == "second"
    events = await _history(hub, "carry-1")
    assert json.loads(events[1].input) == 1  # type: ignore[attr-defined]
    assert [e.name for e in events if e.event_type is EventType.EventRaised] == ["B"]  # type: ignore[attr-defined]


async def test_non_deterministic_code_fails_the_instance_naming_the_mismatch(
    hub: TaskHub, client: TaskHubClient, registry: FunctionRegistry, engine: Engine
) -> None:
    function = registry.get("drifting")
    assert function is not None
    switch = function.callable.orchestrator_function.__globals__["NEXT_ACTIVITY"]
    instance = await client.start_new("drifting", "drift-1", None)
    try:
        await _wait_for_event(hub, instance, EventType.TaskCompleted)
        switch["name"] = "flaky"
        # New code comes with a new process, which has nothing in memory: the orchestrator replays.
        cache = engine.orchestrations.cache

        async def cached() -> bool:
            return instance in cache

        await poll(cached, "the episode to keep the instance in memory")
        cache.drop(instance)
        await client.raise_event(instance, "go", None)
        state = await client.wait_for_completion(instance, timeout=TIMEOUT)
    finally:
        switch["name"] = "double"
    assert state.runtime_status is OrchestrationStatus.Failed
    assert "Non-deterministic" in (state.output or "")
    assert "'double'" in (state.output or "") and "'flaky'" in (state.output or "")


def test_session_cache_is_bounded_and_forgets_idle_entries() -> None:
    cache = SessionCache(max_entries=2, max_events=100, idle_timeout=timedelta(seconds=30))
    for name in ("a", "b", "c"):
        cache.put(Execution(name, "e", [], None))
    assert len(cache) == 2
    assert cache.take("a") is None, "the least recently used entry was evicted"
    assert cache.take("c") is not None
    assert cache.take("c") is None, "take removes the entry"
    idle = SessionCache(max_entries=5, max_events=100, idle_timeout=timedelta(seconds=-1))
    idle.put(Execution("x", "e", [], None))
    assert idle.take("x") is None, "an entry idle past the timeout is not used"


def test_session_cache_is_bounded_in_events() -> None:
    cache = SessionCache(max_entries=10, max_events=5, idle_timeout=timedelta(seconds=30))
    started = OrchestratorStartedEvent()
    cache.put(Execution("a", "e", [started] * 3, None))
    cache.put(Execution("b", "e", [started] * 3, None))
    assert len(cache) == 1 and cache.take("a") is None, "the oldest entry made room for the newest"
    cache.put(Execution("b", "e", [started] * 4, None))
    assert len(cache) == 1, "putting an instance again replaces its entry and its count"
    cache.put(Execution("big", "e", [started] * 9, None))
    assert cache.take("big") is not None, "one entry larger than the bound is still kept alone"
    assert len(cache) == 0


async def _wait_for_event(hub: TaskHub, instance_id: str, event_type: EventType) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if event_type in [e.event_type for e in await _history(hub, instance_id)]:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{instance_id} never recorded {event_type.name}")


async def test_a_client_of_the_engines_process_sees_the_end_without_waiting_for_its_next_poll(
    client: TaskHubClient,
) -> None:
    started = await client.start_new("chain", "ends-notice", json.dumps(1))
    # A poll interval far beyond the deadline: only the engine's notice of the end can finish the wait.
    waiting = client.wait_for_completion(started, timeout=600, poll_interval=600)
    state = await asyncio.wait_for(waiting, timeout=TIMEOUT)
    assert state.runtime_status is OrchestrationStatus.Completed


async def test_instance_ends_wake_only_the_watchers_of_that_hub_and_instance() -> None:
    ends = InstanceEnds()
    with ends.watching("hub", "a") as a, ends.watching("hub", "b") as b, ends.watching("other", "a") as c:
        ends.ended("hub", "a")
        assert a.done() and not b.done() and not c.done()
    ends.ended("hub", "b")
    assert not b.done(), "a watch ends with its block"
    assert not ends._waiters, "nothing is kept once no one watches"


async def test_a_start_handed_over_with_its_row_is_not_read_back_by_the_engine(
    hub: TaskHub, engine: Engine, storage_account: StorageAccount
) -> None:
    async def owns_all() -> bool:
        return len(engine.orchestrations.owned) == hub.names.partition_count

    await poll(owns_all, "the engine to own every partition")
    # The client's own hub object: its requests are not in the engine hub's tally.
    async with TaskHub(storage_account, hub.names.hub, partition_count=4) as client_hub:
        client = TaskHubClient(client_hub, handoff=engine)
        before = _row_reads(hub)
        state = await _run(client, "chain", 1, "handed-row")
    assert state.runtime_status is OrchestrationStatus.Completed
    assert _row_reads(hub) == before, "the engine took the row the client wrote with its start"


def _row_reads(hub: TaskHub) -> int:
    return sum(n for (kind, _), n in hub.requests.snapshot().items() if kind == "table GET Instances(key)")
