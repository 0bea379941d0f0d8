"""A custom status too large for a table property goes to a blob, as a large Input or Output does."""

from __future__ import annotations

import json

from durable_ext.client import TaskHubClient
from durable_ext.history import OrchestrationStatus
from durable_ext.storage.keys import blob_prefix
from durable_ext.storage.taskhub import TaskHub
from durable_ext.storage.tracking import InstanceQuery, is_blob_url
from durable_ext.worker.engine import Engine
from tests.engine_support import poll

TIMEOUT = 60.0
SIZE = 40_000
"""Characters: 80 KB as UTF-16, above the 64 KiB limit of a table property."""


async def _status_is(client: TaskHubClient, instance_id: str, runtime: OrchestrationStatus) -> bool:
    state = await client.get_status(instance_id)
    return state is not None and state.runtime_status is runtime


async def test_a_large_custom_status_is_stored_read_listed_and_purged(hub: TaskHub, engine: Engine) -> None:
    client = TaskHubClient(hub, handoff=engine)
    await client.start_new("big_status", "big-status-1", json.dumps(SIZE))
    await poll(lambda: _status_is(client, "big-status-1", OrchestrationStatus.Running), "the instance to run")

    running = await client.get_status("big-status-1")
    assert running is not None and json.loads(running.custom_status or "null") == "w" * SIZE
    raw = await hub.tracking.get_instance("big-status-1", fetch_large_values=False)
    assert raw is not None and is_blob_url(raw.custom_status), "the column holds the blob's URL"
    page = await hub.tracking.query_instances(InstanceQuery(instance_id_prefix="big-status-"), top=10)
    assert [json.loads(row.custom_status or "null") for row in page.rows] == ["w" * SIZE]

    await client.raise_event("big-status-1", "Go", None)
    done = await client.wait_for_completion("big-status-1", timeout=TIMEOUT)
    assert done.runtime_status is OrchestrationStatus.Completed
    assert done.output == str(SIZE)
    final = await client.get_status("big-status-1")
    assert final is not None and json.loads(final.custom_status or "null") == {"done": "d" * SIZE}

    assert await client.purge_instance("big-status-1") == 1
    assert await hub.large_messages.list(f"{blob_prefix('big-status-1')}/") == []


async def test_rewriting_the_same_large_status_reuses_one_blob(hub: TaskHub, engine: Engine) -> None:
    """Every episode writes the custom status again; an unchanged one must not leave a blob per episode."""
    client = TaskHubClient(hub, handoff=engine)
    await client.start_new("big_status", "big-status-2", json.dumps(SIZE))
    await poll(lambda: _status_is(client, "big-status-2", OrchestrationStatus.Running), "the instance to run")
    before = await hub.tracking.get_instance("big-status-2", fetch_large_values=False)
    assert before is not None
    await hub.tracking.merge_instance(before, columns=["CustomStatus"])
    names = [blob.name for blob in await hub.large_messages.list(f"{blob_prefix('big-status-2')}/")]
    assert len([name for name in names if "CustomStatus" in name]) == 1, names
    await client.raise_event("big-status-2", "Go", None)
    await client.wait_for_completion("big-status-2", timeout=TIMEOUT)
