"""A purge never deletes an instance that a start accepted, and IDs like '.' and '..' work end to end."""

from __future__ import annotations

import asyncio
import json

import pytest

from durable_ext.client import TaskHubClient
from durable_ext.errors import InstanceExistsError
from durable_ext.history import OrchestrationStatus
from durable_ext.storage.keys import blob_prefix, escape_partition_key
from durable_ext.storage.taskhub import TaskHub
from durable_ext.worker.engine import Engine

TIMEOUT = 60.0


async def history_execution_ids(hub: TaskHub, instance_id: str) -> list[str]:
    pk = escape_partition_key(instance_id)
    rows = hub.tracking._history.query_entities("PartitionKey eq @pk", parameters={"pk": pk})
    return [row["ExecutionId"] async for row in rows]


async def blob_names(hub: TaskHub, prefix: str) -> list[str]:
    return [blob.name for blob in await hub.large_messages.list(prefix)]


async def test_a_start_after_the_purge_judged_the_row_wins(hub: TaskHub, engine: Engine) -> None:
    """The purge read a Completed row; a start replaced it; the purge must delete nothing of the new one."""
    client = TaskHubClient(hub, handoff=engine)
    await client.start_new("chain", "race-1", "1")
    assert (await client.wait_for_completion("race-1", timeout=TIMEOUT)).output == "32"
    judged = await hub.tracking.get_instance("race-1", fetch_large_values=False)
    assert judged is not None and judged.runtime_status is OrchestrationStatus.Completed

    await client.start_new("chain", "race-1", "2")
    second = await client.wait_for_completion("race-1", timeout=TIMEOUT)
    assert second.output == "64"

    assert await hub.tracking.purge_instance(judged) is None, "the row changed: the purge must give up"
    state = await client.get_status("race-1")
    assert state is not None and state.execution_id == second.execution_id
    assert state.runtime_status is OrchestrationStatus.Completed
    ids = await history_execution_ids(hub, "race-1")
    assert ids and set(ids) == {second.execution_id}, "the new execution's history is untouched"


async def test_a_start_racing_a_purge_is_never_lost(hub: TaskHub, engine: Engine) -> None:
    """Start and purge of one ended ID at the same moment: whenever the start is accepted, it completes."""
    client = TaskHubClient(hub, handoff=engine)
    for trial in range(8):
        instance_id = f"race-many-{trial}"
        await client.start_new("chain", instance_id, "1")
        await client.wait_for_completion(instance_id, timeout=TIMEOUT)
        started, purged = await asyncio.gather(
            client.start_new("chain", instance_id, "3"),
            client.purge_instance(instance_id),
            return_exceptions=True,
        )
        assert not isinstance(purged, BaseException), purged
        if isinstance(started, InstanceExistsError):
            continue
        assert started == instance_id, started
        state = await client.wait_for_completion(instance_id, timeout=TIMEOUT)
        assert (state.runtime_status, state.output) == (OrchestrationStatus.Completed, "96"), trial
        ids = await history_execution_ids(hub, instance_id)
        assert set(ids) == {state.execution_id}, "no orphan or foreign history rows"


async def test_an_interrupted_purge_can_run_again(hub: TaskHub, engine: Engine) -> None:
    client = TaskHubClient(hub, handoff=engine)
    await client.start_new("chain", "again-1", "1")
    await client.wait_for_completion("again-1", timeout=TIMEOUT)
    row = await hub.tracking.get_instance("again-1", fetch_large_values=False)
    assert row is not None
    await hub.tracking._purge_history(row)  # a purge that died before the row went
    assert await history_execution_ids(hub, "again-1") == []
    assert await client.purge_instance("again-1") == 1
    assert await client.get_status("again-1") is None


@pytest.mark.parametrize("instance_id", [".", "..", "a.", "..."])
async def test_dot_ids_run_with_large_payloads_and_purge(
    hub: TaskHub, engine: Engine, instance_id: str
) -> None:
    """Durable Functions accepts these IDs; their blobs must not be resolved away as path segments."""
    client = TaskHubClient(hub, handoff=engine)
    big = json.dumps("d" * 70_000)
    await client.start_new("timer", instance_id, big)
    state = await client.wait_for_completion(instance_id, timeout=TIMEOUT)
    assert state.runtime_status is OrchestrationStatus.Completed
    shown = await client.get_status(instance_id)
    assert shown is not None and shown.input == big
    prefix = blob_prefix(instance_id)
    assert not prefix.endswith("."), prefix
    assert await blob_names(hub, f"{prefix}/"), "the large input went to a blob under the safe prefix"
    assert await client.purge_instance(instance_id) == 1
    assert await blob_names(hub, f"{prefix}/") == [], "even blobs written just before the purge go"


def test_blob_prefixes_are_unique_and_safe() -> None:
    ids = [".", "..", "...", "a.", "a..", "a^4", "a^", "a", "a#", "a^2"]
    prefixes = [blob_prefix(i) for i in ids]
    assert len(set(prefixes)) == len(ids), prefixes
    for prefix in prefixes:
        assert not prefix.endswith(".") and prefix not in (".", "..")
    assert blob_prefix("order-42") == "order-42", "ordinary IDs keep DT.AS's blob names"
