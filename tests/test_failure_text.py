"""Failures read as under the Functions host with the Durable Functions extension (issue 17 item 2).

The expected texts follow durable_ext/failures.py: the extension's TaskActivityShim and
OutOfProcOrchestrationShim messages, df 1.7's ``Exception(f"{Reason} \\n {Details}")`` for a failed
task, and SerializeExceptions mode (no FailureDetails in history).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import durable_ext
from durable_ext.client import OrchestrationState, TaskHubClient
from durable_ext.history import (
    EventRaisedEvent,
    ExecutionCompletedEvent,
    HistoryEvent,
    OrchestrationStatus,
    SubOrchestrationInstanceFailedEvent,
    TaskFailedEvent,
)
from durable_ext.storage.taskhub import TaskHub
from durable_ext.worker.engine import Engine

TIMEOUT = 60.0
DURABLE_EXT_DIR = str(Path(durable_ext.__file__).parent)
APP_FILE = "engine_app/function_app.py"


@pytest.fixture
def client(hub: TaskHub, engine: Engine) -> TaskHubClient:
    return TaskHubClient(hub, handoff=engine)


async def _run(client: TaskHubClient, name: str, instance_id: str) -> OrchestrationState:
    await client.start_new(name, instance_id, None)
    return await client.wait_for_completion(instance_id, timeout=TIMEOUT)


async def _history(hub: TaskHub, instance_id: str) -> list[HistoryEvent]:
    return (await hub.tracking.load_history(instance_id)).events


def _only_app_frames(stack: str) -> None:
    """The stack names the app's file and none of durable_ext's."""
    assert APP_FILE in stack, stack
    assert DURABLE_EXT_DIR not in stack, stack
    assert "azure/durable_functions" not in stack, stack


async def test_caught_activity_failure_reads_as_the_host_reports_it(
    hub: TaskHub, client: TaskHubClient
) -> None:
    state = await _run(client, "catches", "fail-caught")
    assert state.runtime_status is OrchestrationStatus.Completed
    caught = json.loads(state.output or "null")
    failed = next(e for e in await _history(hub, "fail-caught") if isinstance(e, TaskFailedEvent))
    # The host's RpcException keeps the space after "Exception:", hence two spaces after "failed:".
    assert failed.reason == "Activity function 'always_fails' failed:  ValueError: nope"
    assert failed.failure_details is None, "SerializeExceptions mode writes no FailureDetails"
    assert caught == f"caught: {failed.reason} \n {failed.details}", (
        "df's Exception(f'{Reason} \\n {Details}')"
    )
    details = json.loads(failed.details or "")
    assert details["$type"] == "System.Exception, System.Private.CoreLib"
    assert details["Message"] == " ValueError: nope"
    inner = details["InnerException"]
    assert inner["Message"].startswith("Result: Failure\nException: ValueError: nope\nStack: ")
    assert "in always_fails" in inner["RemoteStackTrace"]
    _only_app_frames(inner["RemoteStackTrace"])
    # The parsing users do under the real host (Azure/azure-functions-durable-extension#2990) works.
    message = json.loads(caught.split("\n")[1])["Message"].split(":", 1)[1].lstrip()
    assert message == "nope"


async def test_uncaught_activity_failure_is_the_instance_output(hub: TaskHub, client: TaskHubClient) -> None:
    state = await _run(client, "lets_activity_fail", "fail-uncaught")
    assert state.runtime_status is OrchestrationStatus.Failed
    events = await _history(hub, "fail-uncaught")
    failed = next(e for e in events if isinstance(e, TaskFailedEvent))
    completed = next(e for e in events if isinstance(e, ExecutionCompletedEvent))
    expected = f"Orchestrator function 'lets_activity_fail' failed: {failed.reason} \n {failed.details}"
    assert completed.result == expected
    assert completed.failure_details is None
    assert state.output == expected, "the Instances row's Output is the ExecutionCompleted Result"


async def test_orchestrator_exception_is_the_instance_output(hub: TaskHub, client: TaskHubClient) -> None:
    state = await _run(client, "raises", "fail-raises")
    assert state.runtime_status is OrchestrationStatus.Failed
    assert state.output == "Orchestrator function 'raises' failed: orchestrator gave up"
    row = await hub.tracking._instances.get_entity("fail-raises", "")
    assert row["Output"] == state.output


async def test_sub_orchestration_failure_reaches_the_parent_with_its_stack(
    hub: TaskHub, client: TaskHubClient
) -> None:
    state = await _run(client, "catches_child", "fail-parent")
    assert state.runtime_status is OrchestrationStatus.Completed
    child = await client.get_status("fail-parent-child")
    assert child is not None and child.runtime_status is OrchestrationStatus.Failed
    assert child.output == "Orchestrator function 'raises' failed: orchestrator gave up"
    events = await _history(hub, "fail-parent")
    failed = next(e for e in events if isinstance(e, SubOrchestrationInstanceFailedEvent))
    assert failed.reason == child.output
    assert failed.failure_details is None
    details = failed.details or ""
    assert details.startswith("Message: orchestrator gave up, StackTrace: ")
    assert "in raises" in details
    _only_app_frames(details)
    assert json.loads(state.output or "null") == f"{failed.reason} \n {details}"


async def test_entity_operation_failure_is_the_entitys_message(hub: TaskHub, client: TaskHubClient) -> None:
    await client.start_new("use_counter", "fail-entity", json.dumps("k-fail"))
    state = await client.wait_for_completion("fail-entity", timeout=TIMEOUT)
    assert state.runtime_status is OrchestrationStatus.Completed, state.output
    output: dict[str, Any] = json.loads(state.output or "null")
    assert output["failed"] == "operation failed after setting state"
    responses = [
        json.loads(e.input or "null")
        for e in await _history(hub, "fail-entity")
        if isinstance(e, EventRaisedEvent) and "exceptionType" in (e.input or "")
    ]
    # What the extension's TaskEntityShim sends for an out-of-process entity's failed operation.
    assert responses == [
        {"result": json.dumps("operation failed after setting state"), "exceptionType": "Error"}
    ]
