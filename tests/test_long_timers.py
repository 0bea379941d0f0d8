"""Timers longer than the storage provider's maximum delay (issue 17 item 11).

Durable Functions hands df the Azure Storage provider's limits (6 days, in 3-day steps), so df turns a
longer timer into a chain of ordinary timers in history; a timer df does not split (a retry's wait)
hops through the queue instead. The engine tests shorten both limits to seconds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from durable_ext.app_loader import FunctionRegistry
from durable_ext.client import TaskHubClient
from durable_ext.config import StorageProviderOptions
from durable_ext.executor import ActionKind
from durable_ext.history import (
    EventType,
    ExecutionCompletedEvent,
    ExecutionStartedEvent,
    HistoryEvent,
    OrchestrationInstance,
    OrchestrationStatus,
    OrchestratorCompletedEvent,
    OrchestratorStartedEvent,
    TimerCreatedEvent,
    TimerFiredEvent,
)
from durable_ext.replay import TimerSplit, run_orchestrator
from durable_ext.storage.taskhub import TaskHub
from durable_ext.worker.engine import Engine
from tests.engine_support import engine_for, poll

TIMEOUT = 60.0
SHORT = StorageProviderOptions(
    max_timer_delay=timedelta(seconds=2),
    long_timer_interval=timedelta(seconds=1),
    max_queue_polling_interval=timedelta(milliseconds=200),
    control_queue_visibility_timeout=timedelta(seconds=5),
)
"""The provider's 6 and 3 days as 2 and 1 seconds, with quick polling and short message holds."""


def _engine(hub: TaskHub, registry: FunctionRegistry, worker_id: str) -> Engine:
    return engine_for(hub, registry, worker_id, storage_provider=SHORT)


async def _history(hub: TaskHub, instance_id: str) -> list[HistoryEvent]:
    return (await hub.tracking.load_history(instance_id)).events


def _episode_starts(events: Sequence[HistoryEvent]) -> list[datetime]:
    """The OrchestratorStarted time of the episode each event belongs to, by position."""
    starts: list[datetime] = []
    current = events[0].timestamp
    for event in events:
        if isinstance(event, OrchestratorStartedEvent):
            current = event.timestamp
        starts.append(current)
    return starts


def _timers(events: Sequence[HistoryEvent]) -> tuple[list[tuple[datetime, TimerCreatedEvent]], set[int]]:
    """Each TimerCreated with the time of its episode, and the IDs of the timers that fired."""
    starts = _episode_starts(events)
    created = [(starts[i], e) for i, e in enumerate(events) if isinstance(e, TimerCreatedEvent)]
    fired = {e.timer_id for e in events if isinstance(e, TimerFiredEvent)}
    return created, fired


def test_df_splits_a_timer_longer_than_the_maximum_delay(registry: FunctionRegistry) -> None:
    function = registry.get("long_timer")
    assert function is not None
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    started = ExecutionStartedEvent(
        timestamp=t0,
        orchestration_instance=OrchestrationInstance("split-1", "e1"),
        name="long_timer",
        input=json.dumps(timedelta(days=10).total_seconds()),
    )
    split = TimerSplit(max_delay=timedelta(days=6), interval=timedelta(days=3))
    first = run_orchestrator(
        function.callable,
        "long_timer",
        "split-1",
        [OrchestratorStartedEvent(timestamp=t0), started],
        new_events_start=0,
        timer_split=split,
    )
    assert [(a.kind, a.fire_at) for a in first.allocations.values()] == [
        (ActionKind.TIMER, t0 + timedelta(days=3))
    ]
    # Three days on, the first step fired: df schedules the next one rather than finishing, which is
    # also how a history written by Durable Functions itself replays.
    t3 = t0 + timedelta(days=3)
    events: list[HistoryEvent] = [
        OrchestratorStartedEvent(timestamp=t0),
        started,
        TimerCreatedEvent(event_id=0, timestamp=t0, fire_at=t3),
        OrchestratorCompletedEvent(timestamp=t0),
        OrchestratorStartedEvent(timestamp=t3),
        TimerFiredEvent(timer_id=0, fire_at=t3, timestamp=t3),
    ]
    second = run_orchestrator(
        function.callable, "long_timer", "split-1", events, new_events_start=4, timer_split=split
    )
    assert not second.done
    assert second.allocations[1].kind is ActionKind.TIMER
    assert second.allocations[1].fire_at == t3 + timedelta(days=3)


async def test_a_long_timer_survives_a_worker_restart(hub: TaskHub, registry: FunctionRegistry) -> None:
    client = TaskHubClient(hub)
    instance = await client.start_new("long_timer", "long-1", json.dumps(5))
    first = _engine(hub, registry, "worker-a")
    await first.start()
    try:
        await poll(
            lambda: _has(hub, instance, EventType.TimerFired), "the first step of the timer to fire", TIMEOUT
        )
    finally:
        await first.stop(graceful=False)  # as if the process died: its leases must expire
    async with _engine(hub, registry, "worker-b"):
        state = await client.wait_for_completion(instance, timeout=TIMEOUT)
    assert state.runtime_status is OrchestrationStatus.Completed
    assert json.loads(state.output or "null") == "fired"
    events = await _history(hub, instance)
    created, fired = _timers(events)
    deadline = events[0].timestamp + timedelta(seconds=5)  # from the first episode's time
    assert len(created) >= 3, "a 5 s timer in steps of at most 2 s"
    assert all(timer.fire_at - at <= SHORT.max_timer_delay for at, timer in created)
    assert created[-1][1].fire_at == deadline
    assert fired == {timer.event_id for _, timer in created}, "every step fired, once"
    completed = next(e for e in events if isinstance(e, ExecutionCompletedEvent))
    assert _episode_starts(events)[events.index(completed)] >= deadline


async def test_cancelled_long_timer_ends_the_instance(hub: TaskHub, registry: FunctionRegistry) -> None:
    async with _engine(hub, registry, "worker-a") as engine:
        client = TaskHubClient(hub, handoff=engine)
        instance = await client.start_new("long_timer_or_event", "cancel-1", json.dumps(3600))
        await poll(lambda: _has(hub, instance, EventType.TimerCreated), "the timer to be scheduled", TIMEOUT)
        await client.raise_event(instance, "Go", json.dumps("now"))
        state = await client.wait_for_completion(instance, timeout=TIMEOUT)
        assert state.runtime_status is OrchestrationStatus.Completed
        assert json.loads(state.output or "null") == "event: now"
        expected = await _history(hub, instance)
        types = [e.event_type for e in expected]
        assert types.count(EventType.TimerCreated) == 1 + types.count(EventType.TimerFired)
        assert types[-2:] == [EventType.ExecutionCompleted, EventType.OrchestratorCompleted]
        # The step that was waiting comes back after at most 1 s and is dropped: nothing is appended.
        await poll(lambda: _queue_empty(hub, instance), "the timer message to be consumed", TIMEOUT)
    assert await _history(hub, instance) == expected
    row = await client.get_status(instance)
    assert row is not None and row.runtime_status is OrchestrationStatus.Completed


async def test_a_retry_wait_longer_than_the_maximum_delay_hops(
    hub: TaskHub, registry: FunctionRegistry
) -> None:
    client = TaskHubClient(hub)
    instance = await client.start_new("slow_retry", "hop-1", json.dumps(3000))
    first = _engine(hub, registry, "worker-a")
    await first.start()
    try:
        await poll(lambda: _has(hub, instance, EventType.TimerCreated), "the first retry wait", TIMEOUT)
    finally:
        await first.stop(graceful=False)
    async with _engine(hub, registry, "worker-b"):
        state = await client.wait_for_completion(instance, timeout=TIMEOUT)
    assert state.runtime_status is OrchestrationStatus.Completed
    assert json.loads(state.output or "null") == "ok after 3"
    events = await _history(hub, instance)
    created, fired = _timers(events)
    assert len(created) == 2 and fired == {timer.event_id for _, timer in created}
    assert all(timer.fire_at - at > SHORT.max_timer_delay for at, timer in created), "each wait had to hop"
    starts = _episode_starts(events)
    fired_at = [(starts[i], e.fire_at) for i, e in enumerate(events) if isinstance(e, TimerFiredEvent)]
    assert all(at >= due for at, due in fired_at if due is not None), "no wait ended early"


async def _has(hub: TaskHub, instance_id: str, event_type: EventType) -> bool:
    return any(e.event_type is event_type for e in await _history(hub, instance_id))


async def _queue_empty(hub: TaskHub, instance_id: str) -> bool:
    return await hub.control_queue_for(instance_id).approximate_count() == 0
