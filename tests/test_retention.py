"""Instance retention (issue 7's auto-purge): ended instances go once their retention has passed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from durable_ext.app_loader import FunctionRegistry
from durable_ext.client import TaskHubClient
from durable_ext.config import InstanceRetentionOptions, load_config
from durable_ext.errors import ConfigError
from durable_ext.history import OrchestrationStatus
from durable_ext.storage.taskhub import TaskHub
from durable_ext.worker.engine import Engine
from durable_ext.worker.retention import InstancePurger
from tests.engine_support import engine_for, poll

TIMEOUT = 60.0


@pytest.fixture
async def retaining_engine(hub: TaskHub, registry: FunctionRegistry) -> AsyncIterator[Engine]:
    """An engine that purges Completed and Terminated instances at once and keeps Failed ones."""
    retention = InstanceRetentionOptions(
        completed=timedelta(0), terminated=timedelta(0), purge_interval=timedelta(milliseconds=200)
    )
    async with engine_for(hub, registry, "worker-r", instance_retention=retention) as engine:
        yield engine


async def _history_rows(hub: TaskHub, instance_id: str) -> int:
    return len((await hub.tracking.load_history(instance_id)).events)


async def test_auto_purge_removes_ended_instances_past_their_retention(
    hub: TaskHub, retaining_engine: Engine
) -> None:
    client = TaskHubClient(hub)
    await client.start_new("chain", "ret-completed", "1")
    await client.start_new("raises", "ret-failed", None)
    await client.start_new("approval", "ret-terminated", "30")
    await client.start_new("approval", "ret-running", "30")
    # Not waiting for ret-completed: with a zero retention it may be purged before a poll sees it.
    await client.wait_for_completion("ret-failed", timeout=TIMEOUT)

    async def started() -> bool:
        state = await client.get_status("ret-terminated")
        return state is not None and state.runtime_status is OrchestrationStatus.Running

    await poll(started, "ret-terminated to start")
    await client.terminate("ret-terminated", "enough")

    async def purged() -> bool:
        gone = [await client.get_status(i) is None for i in ("ret-completed", "ret-terminated")]
        return all(gone)

    await poll(purged, "the Completed and Terminated instances to be purged", TIMEOUT)
    assert await _history_rows(hub, "ret-completed") == 0
    assert await _history_rows(hub, "ret-terminated") == 0
    failed = await client.get_status("ret-failed")
    running = await client.get_status("ret-running")
    assert failed is not None and failed.runtime_status is OrchestrationStatus.Failed
    assert running is not None and running.runtime_status is OrchestrationStatus.Running
    assert await _history_rows(hub, "ret-failed") > 0


async def test_instances_within_their_retention_are_kept(hub: TaskHub, engine: Engine) -> None:
    client = TaskHubClient(hub)
    await client.start_new("chain", "ret-young", "1")
    await client.wait_for_completion("ret-young", timeout=TIMEOUT)
    keeping = InstancePurger(
        client, InstanceRetentionOptions(completed=timedelta(hours=1)), is_leader=lambda: True
    )
    assert await keeping.purge_once() == 0
    assert await client.get_status("ret-young") is not None
    eager = InstancePurger(client, InstanceRetentionOptions(completed=timedelta(0)), is_leader=lambda: True)
    assert await eager.purge_once() == 1
    assert await client.get_status("ret-young") is None


def test_instance_retention_is_read_from_host_json_and_overrides(tmp_path: Path) -> None:
    host = {
        "version": "2.0",
        "extensions": {
            "durableTask": {
                "hubName": "RetentionHub",
                "instanceRetention": {"completed": "7.00:00:00", "purgeInterval": "00:10:00"},
            }
        },
    }
    (tmp_path / "host.json").write_text(json.dumps(host))
    env = {"AzureFunctionsJobHost__extensions__durableTask__instanceRetention__failed": "30.00:00:00"}
    retention = load_config(tmp_path, env).durable_task.instance_retention
    assert retention == InstanceRetentionOptions(
        completed=timedelta(days=7), failed=timedelta(days=30), purge_interval=timedelta(minutes=10)
    )
    assert retention.enabled
    assert not load_config(tmp_path, {}).durable_task.instance_retention.terminated

    host["extensions"]["durableTask"]["instanceRetention"] = {"completed": "a week"}  # type: ignore[index]
    (tmp_path / "host.json").write_text(json.dumps(host))
    with pytest.raises(ConfigError, match=r"instanceRetention\.completed"):
        load_config(tmp_path, {})


def test_no_retention_means_no_purging() -> None:
    assert not InstanceRetentionOptions().enabled
