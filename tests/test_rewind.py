"""Rewind (issue 7): a failed instance runs its failed work again and keeps what completed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from durable_ext.app_loader import FunctionRegistry
from durable_ext.client import TaskHubClient, client_message
from durable_ext.errors import InstanceGoneError, InstanceNotFoundError, InvalidInstanceStateError
from durable_ext.history import (
    EventType,
    ExecutionCompletedEvent,
    ExecutionRewoundEvent,
    ExecutionStartedEvent,
    HistoryEvent,
    OrchestrationInstance,
    OrchestrationStatus,
    OrchestratorStartedEvent,
    SubOrchestrationInstanceCreatedEvent,
    SubOrchestrationInstanceFailedEvent,
    TaskCompletedEvent,
    TaskFailedEvent,
    TaskScheduledEvent,
    TimerCreatedEvent,
)
from durable_ext.storage.taskhub import TaskHub
from durable_ext.worker.engine import Engine
from durable_ext.worker.rewind import rewind_history, rewound_execution_id
from tests.engine_support import poll

TIMEOUT = 60.0


@pytest.fixture
def client(hub: TaskHub, engine: Engine) -> TaskHubClient:
    return TaskHubClient(hub)


@pytest.fixture
def app_state(registry: FunctionRegistry) -> dict[str, Any]:
    """The test app's module globals: OPEN_GATES and RUNS."""
    function = registry.get("rewindable")
    assert function is not None
    return function.callable.orchestrator_function.__globals__  # type: ignore[no-any-return]


async def _fails(client: TaskHubClient, name: str, instance_id: str) -> None:
    await client.start_new(name, instance_id, json.dumps(instance_id))
    state = await client.wait_for_completion(instance_id, timeout=TIMEOUT)
    assert state.runtime_status is OrchestrationStatus.Failed, state
    assert "closed" in (state.output or "")


async def _completes(client: TaskHubClient, instance_id: str) -> Any:
    async def done() -> bool:
        state = await client.get_status(instance_id)
        return state is not None and state.runtime_status is OrchestrationStatus.Completed

    await poll(done, f"{instance_id} to complete after its rewind", TIMEOUT)
    state = await client.get_status(instance_id)
    assert state is not None
    return json.loads(state.output or "null")


def _ids(events: list[HistoryEvent], event_type: EventType, attribute: str = "event_id") -> list[int]:
    return sorted(getattr(e, attribute) for e in events if e.event_type is event_type)


async def test_rewind_of_a_failed_activity_reruns_it_and_not_the_completed_ones(
    hub: TaskHub, client: TaskHubClient, app_state: dict[str, Any]
) -> None:
    instance = "rw-activity"
    await _fails(client, "rewindable", instance)
    failed = await hub.tracking.load_history(instance)
    runs = app_state["RUNS"]
    assert runs[f"{instance}-gate"] == 1 and runs[f"{instance}-first"] == 1

    app_state["OPEN_GATES"].add(f"{instance}-gate")
    await client.rewind(instance, "gate fixed")
    output = await _completes(client, instance)

    assert output == [
        f"{instance}-first",
        f"{instance}-a",
        f"{instance}-gate passed",
        f"{instance}-b",
        f"{instance}-last",
    ]
    assert runs[f"{instance}-gate"] == 2, "the failed activity ran again"
    assert runs[f"{instance}-first"] == 1 and runs[f"{instance}-last"] == 1
    # The fan-out's other branches: each ran at most twice (once if its result beat the failure).
    assert runs[f"{instance}-a"] in (1, 2) and runs[f"{instance}-b"] in (1, 2)
    load = await hub.tracking.load_history(instance)
    assert load.execution_id == rewound_execution_id(failed.execution_id or "")
    events = load.events
    rewinds = [e for e in events if isinstance(e, ExecutionRewoundEvent)]
    assert [r.reason for r in rewinds] == ["gate fixed"]
    assert _ids(events, EventType.TaskScheduled) == _ids(events, EventType.TaskCompleted, "task_scheduled_id")
    assert not any(e.event_type is EventType.TaskFailed for e in events)
    row = await hub.tracking.get_instance(instance)
    assert row is not None and row.runtime_status is OrchestrationStatus.Completed
    assert row.execution_id == load.execution_id


async def test_rewind_of_a_failed_sub_orchestration_rewinds_the_child(
    hub: TaskHub, client: TaskHubClient, app_state: dict[str, Any]
) -> None:
    parent = "rw-parent"
    child = f"{parent}-child"
    await _fails(client, "rewindable_parent", parent)
    child_state = await client.get_status(child)
    assert child_state is not None and child_state.runtime_status is OrchestrationStatus.Failed

    app_state["OPEN_GATES"].add(f"{parent}-gate")
    await client.rewind(parent, "child fixed")
    output = await _completes(client, parent)

    assert output[0] == f"{parent}-parent"
    assert output[1][2] == f"{parent}-gate passed"
    runs = app_state["RUNS"]
    assert runs[f"{parent}-parent"] == 1 and runs[f"{parent}-first"] == 1 and runs[f"{parent}-gate"] == 2
    child_done = await client.get_status(child)
    assert child_done is not None and child_done.runtime_status is OrchestrationStatus.Completed
    parent_events = (await hub.tracking.load_history(parent)).events
    created = [e for e in parent_events if e.event_type is EventType.SubOrchestrationInstanceCreated]
    assert len(created) == 1, "the child was rewound, not started again"


async def test_rewind_refuses_instances_that_did_not_fail(
    hub: TaskHub, client: TaskHubClient, app_state: dict[str, Any]
) -> None:
    with pytest.raises(InstanceNotFoundError):
        await client.rewind("rw-nobody", "x")
    await client.start_new("chain", "rw-done", "1")
    await client.wait_for_completion("rw-done", timeout=TIMEOUT)
    before = await hub.tracking.load_history("rw-done")
    with pytest.raises(InstanceGoneError):
        await client.rewind("rw-done", "x")
    await client.start_new("approval", "rw-running", "30")
    await client.wait_for_completion("rw-done", timeout=TIMEOUT)

    async def running() -> bool:
        state = await client.get_status("rw-running")
        return state is not None and state.runtime_status is OrchestrationStatus.Running

    await poll(running, "rw-running to run")
    with pytest.raises(InvalidInstanceStateError) as refused:
        await client.rewind("rw-running", "x")
    assert not isinstance(refused.value, InstanceGoneError)
    after = await hub.tracking.load_history("rw-done")
    assert (after.execution_id, after.etag) == (before.execution_id, before.etag)
    row = await hub.tracking.get_instance("rw-done")
    assert row is not None and row.runtime_status is OrchestrationStatus.Completed


async def test_a_rewind_message_for_a_completed_instance_is_discarded(
    hub: TaskHub, client: TaskHubClient
) -> None:
    """A duplicate rewind (the first already ran) must not replace a healthy execution."""
    await client.start_new("chain", "rw-twice", "1")
    await client.wait_for_completion("rw-twice", timeout=TIMEOUT)
    before = await hub.tracking.load_history("rw-twice")
    rewind = client_message("rw-twice", None, ExecutionRewoundEvent(reason="again"))
    await hub.control_queue_for("rw-twice").send(rewind)
    queue = hub.control_queue_for("rw-twice")

    async def drained() -> bool:
        return (await queue.approximate_count()) == 0

    await poll(drained, "the rewind message to be consumed")
    after = await hub.tracking.load_history("rw-twice")
    assert (after.execution_id, after.etag) == (before.execution_id, before.etag)


def test_rewound_history_keeps_successes_and_names_failed_children() -> None:
    events: list[HistoryEvent] = [
        OrchestratorStartedEvent(),
        ExecutionStartedEvent(orchestration_instance=OrchestrationInstance("i", "old"), name="o"),
        TaskScheduledEvent(event_id=0, name="ok"),
        TaskScheduledEvent(event_id=1, name="bad"),
        TimerCreatedEvent(event_id=2),
        SubOrchestrationInstanceCreatedEvent(event_id=3, instance_id="kid"),
        TaskCompletedEvent(task_scheduled_id=0, result="1"),
        TaskFailedEvent(task_scheduled_id=1, reason="boom"),
        SubOrchestrationInstanceFailedEvent(task_scheduled_id=3, reason="kid failed"),
        ExecutionCompletedEvent(orchestration_status=OrchestrationStatus.Failed),
    ]
    rewound = rewind_history(events, "old", None)
    kinds = [(e.event_type.name, e.event_id) for e in rewound.events]
    assert kinds == [
        ("OrchestratorStarted", -1),
        ("ExecutionStarted", -1),
        ("TaskScheduled", 0),
        ("SubOrchestrationInstanceCreated", 3),
        ("TaskCompleted", -1),
    ]
    assert rewound.failed_children == ["kid"]
    started = rewound.events[1]
    assert isinstance(started, ExecutionStartedEvent) and started.orchestration_instance is not None
    assert started.orchestration_instance.execution_id == rewound.execution_id != "old"
    assert events[1].orchestration_instance.execution_id == "old"  # type: ignore[attr-defined]
