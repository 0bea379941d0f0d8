"""Tests of ``durable_ext.doctor`` and ``python -m durable_ext doctor`` against the session's Azurite."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from durable_ext.cli import main
from durable_ext.doctor import FindingKind, diagnose, repair
from durable_ext.history import (
    EventRaisedEvent,
    ExecutionCompletedEvent,
    ExecutionStartedEvent,
    OrchestrationInstance,
    OrchestrationStatus,
    OrchestratorCompletedEvent,
    OrchestratorStartedEvent,
    utc_now,
)
from durable_ext.messages import MessageData, TaskMessage
from durable_ext.storage.account import StorageAccount
from durable_ext.storage.taskhub import TaskHub
from durable_ext.storage.tracking import InstanceState

CONNECTION_SETTING = "AzureWebJobsStorage"


async def inject_completed_but_running(hub: TaskHub, instance_id: str) -> str:
    """History of a Completed execution with output ``"done"``, and an Instances row still Running."""
    execution_id = uuid.uuid4().hex
    instance = OrchestrationInstance(instance_id, execution_id)
    events = [
        OrchestratorStartedEvent(),
        ExecutionStartedEvent(orchestration_instance=instance, name="Chain", version="", input='"in"'),
        ExecutionCompletedEvent(orchestration_status=OrchestrationStatus.Completed, result='"done"'),
        OrchestratorCompletedEvent(),
    ]
    await hub.tracking.append_history(instance_id, execution_id, events, 0, None)
    row = InstanceState(
        instance_id,
        execution_id=execution_id,
        name="Chain",
        input='"in"',
        runtime_status=OrchestrationStatus.Running,
        created_time=utc_now(),
        task_hub_name=hub.names.hub,
    )
    assert await hub.tracking.insert_instance(row)
    return execution_id


async def inject_pending_without_start(hub: TaskHub, instance_id: str) -> str:
    """A Pending row created a minute ago whose start message never reached the queue."""
    execution_id = uuid.uuid4().hex
    row = InstanceState(
        instance_id,
        execution_id=execution_id,
        name="Chain",
        version="",
        input='"payload"',
        runtime_status=OrchestrationStatus.Pending,
        created_time=utc_now() - timedelta(minutes=1),
        generation=2,
        task_hub_name=hub.names.hub,
    )
    assert await hub.tracking.insert_instance(row)
    return execution_id


async def test_completed_history_with_running_row_is_repaired(hub: TaskHub) -> None:
    execution_id = await inject_completed_but_running(hub, "split-1")

    findings = await diagnose(hub)

    assert [(f.kind, f.instance_id, f.execution_id, f.fixable) for f in findings] == [
        (FindingKind.TERMINAL_HISTORY_ROW_NOT_TERMINAL, "split-1", execution_id, True)
    ]
    assert await repair(hub, findings) == findings
    row = await hub.tracking.get_instance("split-1")
    assert row is not None
    assert row.runtime_status is OrchestrationStatus.Completed
    assert row.output == '"done"'
    assert row.completed_time is not None
    assert await diagnose(hub) == []
    assert await repair(hub, findings) == []  # nothing left to do the second time


async def test_pending_row_without_start_gets_its_start_message_again(hub: TaskHub) -> None:
    execution_id = await inject_pending_without_start(hub, "lost-start")

    assert await diagnose(hub) == []  # still within the default grace period
    findings = await diagnose(hub, pending_grace=timedelta(0))

    assert [(f.kind, f.instance_id, f.execution_id) for f in findings] == [
        (FindingKind.PENDING_WITHOUT_START, "lost-start", execution_id)
    ]
    assert await repair(hub, findings) == findings
    received = await hub.control_queue_for("lost-start").receive(32, timedelta(seconds=30))
    assert len(received) == 1
    data = received[0].data
    started = data.event
    assert isinstance(started, ExecutionStartedEvent)
    assert data.task_message is not None
    assert data.task_message.orchestration_instance == OrchestrationInstance("lost-start", execution_id)
    assert (started.name, started.input, started.generation) == ("Chain", '"payload"', 2)


async def test_visible_start_message_is_not_a_lost_start(hub: TaskHub) -> None:
    execution_id = await inject_pending_without_start(hub, "queued-start")
    instance = OrchestrationInstance("queued-start", execution_id)
    start = ExecutionStartedEvent(orchestration_instance=instance, name="Chain", version="")
    await hub.control_queue_for("queued-start").send(MessageData(TaskMessage(start, instance)))

    assert await diagnose(hub, pending_grace=timedelta(0)) == []


async def test_message_for_unknown_instance_is_reported_not_fixed(hub: TaskHub) -> None:
    ghost = OrchestrationInstance("ghost", None)
    await hub.control_queue_for("ghost").send(MessageData(TaskMessage(EventRaisedEvent(name="knock"), ghost)))

    assert await diagnose(hub, pending_grace=timedelta(0), now=utc_now() - timedelta(minutes=1)) == []
    findings = await diagnose(hub, pending_grace=timedelta(0), now=utc_now() + timedelta(seconds=5))

    assert [(f.kind, f.instance_id, f.fixable) for f in findings] == [
        (FindingKind.MESSAGE_FOR_UNKNOWN_INSTANCE, "ghost", False)
    ]
    assert "EventRaised" in findings[0].detail
    assert "visible" in findings[0].detail
    assert await repair(hub, findings) == []


async def test_clean_hub_has_no_findings(hub: TaskHub) -> None:
    await inject_completed_but_running(hub, "fine")
    await hub.tracking.merge_instance(
        InstanceState("fine", runtime_status=OrchestrationStatus.Completed), columns=["RuntimeStatus"]
    )

    assert await diagnose(hub, pending_grace=timedelta(0)) == []


def test_cli_doctor_fix_exit_codes(
    tmp_path: Path,
    storage_account: StorageAccount,
    azurite_connection_string: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    hub_name = "Doc" + uuid.uuid4().hex[:10]
    host = {"version": "2.0", "extensions": {"durableTask": {"hubName": hub_name}}}
    (tmp_path / "host.json").write_text(json.dumps(host))
    monkeypatch.setenv(CONNECTION_SETTING, azurite_connection_string)
    app = ["--app-dir", str(tmp_path), "--grace", "0"]

    async def with_hub(create: bool) -> None:
        async with TaskHub(storage_account, hub_name) as hub:
            if create:
                await hub.create()
                await inject_completed_but_running(hub, "cli-split")
                await inject_pending_without_start(hub, "cli-pending")
            else:
                await hub.delete()

    asyncio.run(with_hub(create=True))
    try:
        assert main(["doctor", *app]) == 1
        out = capsys.readouterr().out
        assert "terminal-history-row-not-terminal cli-split [fixable]" in out
        assert "pending-without-start cli-pending [fixable]" in out
        assert "2 finding(s), 2 fixable; run `python -m durable_ext doctor --fix`" in out

        assert main(["doctor", *app, "--fix"]) == 0
        assert "2 finding(s), 2 fixable, 2 fixed." in capsys.readouterr().out

        # The re-sent start is a visible message now: the Pending row no longer counts as lost.
        assert main(["doctor", *app, "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == {"hub": hub_name, "findings": []}
    finally:
        asyncio.run(with_hub(create=False))


def test_cli_doctor_on_missing_hub_fails(
    tmp_path: Path,
    azurite_connection_string: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    host = {"version": "2.0", "extensions": {"durableTask": {"hubName": "Nohub" + uuid.uuid4().hex[:8]}}}
    (tmp_path / "host.json").write_text(json.dumps(host))
    monkeypatch.setenv(CONNECTION_SETTING, azurite_connection_string)

    assert main(["doctor", "--app-dir", str(tmp_path)]) == 1
    assert "is missing" in capsys.readouterr().err
