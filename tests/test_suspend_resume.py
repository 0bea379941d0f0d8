"""Issue 7's suspend/resume scenario: work that finishes while an instance is suspended is kept, not lost
and not delivered, and the instance goes on from where it paused once resumed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from durable_ext.app_loader import FunctionRegistry
from durable_ext.client import TaskHubClient
from durable_ext.history import EventType, OrchestrationStatus, TaskScheduledEvent
from durable_ext.storage.taskhub import TaskHub
from durable_ext.worker.engine import Engine
from tests.engine_support import poll

TIMEOUT = 60.0


@pytest.fixture
def app_state(registry: FunctionRegistry) -> dict[str, Any]:
    function = registry.get("five_steps")
    assert function is not None
    return function.callable.orchestrator_function.__globals__  # type: ignore[no-any-return]


async def test_suspend_mid_chain_keeps_an_event_and_an_activity_result_for_after_resume(
    hub: TaskHub, engine: Engine, app_state: dict[str, Any]
) -> None:
    client = TaskHubClient(hub, handoff=engine)
    instance = "susp-chain"

    async def history_types() -> list[EventType]:
        return [e.event_type for e in (await hub.tracking.load_history(instance)).events]

    async def third_step_scheduled() -> bool:
        events = (await hub.tracking.load_history(instance)).events
        return any(isinstance(e, TaskScheduledEvent) and e.name == "held" for e in events)

    await client.start_new("five_steps", instance, json.dumps(instance))
    await poll(third_step_scheduled, "the third step to be scheduled")
    await client.suspend(instance, "maintenance")

    async def suspended() -> bool:
        state = await client.get_status(instance)
        return state is not None and state.runtime_status is OrchestrationStatus.Suspended

    await poll(suspended, "the instance to be suspended")
    await client.raise_event(instance, "extra", '"raised while suspended"')
    app_state["OPEN_GATES"].add(f"{instance}-3")

    async def both_recorded() -> bool:
        types = await history_types()
        return EventType.EventRaised in types and types.count(EventType.TaskCompleted) == 3

    await poll(both_recorded, "the event and the third step's result in history")
    types = await history_types()
    assert types.count(EventType.TaskScheduled) == 3, "nothing may run on while suspended"
    state = await client.get_status(instance)
    assert state is not None and state.runtime_status is OrchestrationStatus.Suspended
    assert state.output == "maintenance"

    await client.resume(instance, "done")
    finished = await client.wait_for_completion(instance, timeout=TIMEOUT)
    assert finished.runtime_status is OrchestrationStatus.Completed
    assert json.loads(finished.output or "null") == [
        f"{instance}-1",
        f"{instance}-2",
        f"{instance}-3 released",
        "raised while suspended",
        f"{instance}-4",
        f"{instance}-5",
    ]
    runs = app_state["RUNS"]
    assert [runs[f"{instance}-{step}"] for step in range(1, 6)] == [1, 1, 1, 1, 1], "a step ran twice"
    events = (await hub.tracking.load_history(instance)).events
    scheduled = sorted(e.event_id for e in events if e.event_type is EventType.TaskScheduled)
    completed = sorted(e.task_scheduled_id for e in events if e.event_type is EventType.TaskCompleted)  # type: ignore[attr-defined]
    assert scheduled == completed and len(scheduled) == 5


async def test_terminate_a_suspended_instance(hub: TaskHub, engine: Engine) -> None:
    client = TaskHubClient(hub, handoff=engine)
    instance = await client.start_new("approval", "susp-term", "30")

    async def status_is(wanted: OrchestrationStatus) -> bool:
        state = await client.get_status(instance)
        return state is not None and state.runtime_status is wanted

    await poll(lambda: status_is(OrchestrationStatus.Running), "the instance to run")
    await client.suspend(instance, "hold")
    await poll(lambda: status_is(OrchestrationStatus.Suspended), "the instance to be suspended")
    await client.terminate(instance, "give up")
    state = await client.wait_for_completion(instance, timeout=TIMEOUT)
    assert (state.runtime_status, state.output) == (OrchestrationStatus.Terminated, "give up")
    types = [e.event_type for e in (await hub.tracking.load_history(instance)).events]
    assert types[-3:] == [
        EventType.ExecutionTerminated,
        EventType.ExecutionCompleted,
        EventType.OrchestratorCompleted,
    ]
