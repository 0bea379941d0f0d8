"""The dashboard's JSON API end to end: real Azurite, the real Starlette app driven with httpx.

Rows for list, filter and count tests are written through the tracking store (what a start writes,
with chosen statuses, names and times); actions, history and timelines run real orchestrations on an
engine.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from starlette.applications import Starlette

from durable_ext.client import TaskHubClient
from durable_ext.dashboard.api import DashboardOptions, dashboard_mount
from durable_ext.dashboard.command import storage_connection
from durable_ext.dashboard.hubs import DashboardHub, HubSet
from durable_ext.entities import entity_instance_id
from durable_ext.errors import ConfigError
from durable_ext.history import (
    ExecutionStartedEvent,
    OrchestrationStatus,
    OrchestratorCompletedEvent,
    OrchestratorStartedEvent,
    TaskScheduledEvent,
)
from durable_ext.host.azurite import Azurite
from durable_ext.storage.account import StorageAccount
from durable_ext.storage.taskhub import TaskHub
from durable_ext.storage.tracking import InstanceState
from durable_ext.worker.engine import Engine
from tests.host_support import free_port, host_env, read_until, running_host, sample_app_dir

TIMEOUT = 60.0
KEY = "dashboard-test-key-0123456789"
BASE = "http://dashboard.test/dashboard/api"


@dataclass
class Dash:
    """A served dashboard over one or more hubs, and an httpx client for it."""

    http: httpx.AsyncClient
    hubs: list[DashboardHub]

    @property
    def hub(self) -> DashboardHub:
        return self.hubs[0]

    def url(self, path: str, hub: DashboardHub | None = None) -> str:
        return f"{BASE}/hubs/{(hub or self.hub).id}/{path}"

    async def get(self, path: str, **params: Any) -> Any:
        response = await self.http.get(self.url(path), params=params)
        assert response.status_code == 200, response.text
        return response.json()

    async def post(self, path: str, body: Any = None) -> httpx.Response:
        return await self.http.post(self.url(path), json=body)

    async def detail(self, instance_id: str) -> dict[str, Any]:
        return dict(await self.get(f"instances/{quote(instance_id, safe='')}"))

    async def wait_for(self, instance_id: str, status: str) -> dict[str, Any]:
        deadline = time.monotonic() + TIMEOUT
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            response = await self.http.get(self.url(f"instances/{quote(instance_id, safe='')}"))
            if response.status_code == 200:
                body = response.json()
                if body["runtimeStatus"] == status:
                    return body
            await asyncio.sleep(0.05)
        raise AssertionError(f"{instance_id} never reached {status}; last {body}")


ServeDash = Callable[..., Awaitable[Dash]]


@pytest.fixture
async def serve_dash() -> AsyncIterator[ServeDash]:
    """Serve dashboards (any number) until the test ends."""
    stack = AsyncExitStack()

    async def serve(
        clients: list[TaskHubClient], *, system_key: str | None = None, read_only: bool = False
    ) -> Dash:
        hubs = [DashboardHub.of(client) for client in clients]
        options = DashboardOptions(HubSet(hubs), system_key=system_key, read_only=read_only)
        app = Starlette(routes=[dashboard_mount(options)])
        headers = {"x-functions-key": system_key} if system_key else {}
        http = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), headers=headers, timeout=TIMEOUT)
        )
        return Dash(http, hubs)

    async with stack:
        yield serve


@pytest.fixture
async def dash(hub: TaskHub, serve_dash: ServeDash) -> Dash:
    return await serve_dash([TaskHubClient(hub)])


T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def insert_rows(hub: TaskHub, rows: list[InstanceState]) -> None:
    """Write Instances rows as a start would, 20 at a time."""
    for first in range(0, len(rows), 20):
        batch = rows[first : first + 20]
        assert all(await asyncio.gather(*(hub.tracking.insert_instance(row) for row in batch)))


def row(
    instance_id: str,
    *,
    name: str = "chain",
    status: OrchestrationStatus = OrchestrationStatus.Completed,
    minute: int = 0,
    custom: str | None = None,
) -> InstanceState:
    created = T0 + timedelta(minutes=minute)
    return InstanceState(
        instance_id=instance_id,
        execution_id=uuid.uuid4().hex,
        name=name,
        input="1",
        output="2",
        custom_status=custom,
        runtime_status=status,
        created_time=created,
        last_updated_time=created + timedelta(seconds=5),
        completed_time=created + timedelta(seconds=5),
    )


# ---- hubs and the instance list --------------------------------------------------------------------


async def test_hubs_lists_each_hub_with_an_opaque_url_safe_id(dash: Dash) -> None:
    response = await dash.http.get(f"{BASE}/hubs")
    assert response.status_code == 200
    body = response.json()
    assert body["readOnly"] is False
    [listed] = body["hubs"]
    assert listed["hub"] == dash.hub.hub
    assert listed["id"] == dash.hub.id
    assert quote(listed["id"], safe="") == listed["id"]
    assert "devstoreaccount1" in listed["account"]


async def test_instances_page_through_the_table_with_continuation_tokens(dash: Dash, hub: TaskHub) -> None:
    await insert_rows(hub, [row(f"page-{index:03d}", minute=index) for index in range(25)])
    seen: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"top": 10}
        if token:
            params["continuation"] = token
        body = await dash.get("instances", **params)
        pages += 1
        assert len(body["instances"]) <= 10
        seen += [item["instanceId"] for item in body["instances"]]
        token = body["continuation"]
        if token is None:
            break
    assert pages == 3
    assert seen == [f"page-{index:03d}" for index in range(25)]
    first = (await dash.get("instances", top=1))["instances"][0]
    assert first == {
        "instanceId": "page-000",
        "name": "chain",
        "runtimeStatus": "Completed",
        "createdTime": "2026-01-01T00:00:00Z",
        "lastUpdatedTime": "2026-01-01T00:00:05Z",
        "customStatus": None,
    }


async def test_instance_filters_each_narrow_the_list(dash: Dash, hub: TaskHub) -> None:
    await insert_rows(
        hub,
        [
            row(
                "a-1", name="Chain", status=OrchestrationStatus.Running, minute=1, custom='{"step": "upload"}'
            ),
            row("a-2", name="chain", status=OrchestrationStatus.Failed, minute=2, custom='"waiting"'),
            row("b-1", name="fan_out", status=OrchestrationStatus.Pending, minute=3),
            row("b-2", name="fan_out", status=OrchestrationStatus.Completed, minute=4, custom='"UPLOADED"'),
        ],
    )

    async def ids(**params: Any) -> list[str]:
        body = await dash.get("instances", **params)
        return [item["instanceId"] for item in body["instances"]]

    assert await ids(status="Running,Pending") == ["a-1", "b-1"]
    assert await ids(status="failed") == ["a-2"]
    assert await ids(name="CHAIN") == ["a-1", "a-2"]
    assert await ids(prefix="b-") == ["b-1", "b-2"]
    assert await ids(**{"from": "2026-01-01T00:02:00Z", "to": "2026-01-01T00:03:00Z"}) == ["a-2", "b-1"]
    assert await ids(customStatus="upload") == ["a-1", "b-2"]
    assert await ids(customStatus="upload", name="fan_out") == ["b-2"]
    assert await ids(sort="createdTime", order="desc") == ["b-2", "b-1", "a-2", "a-1"]
    assert await ids(sort="name", order="asc", prefix="a") == ["a-1", "a-2"]
    body = await dash.get("instances", prefix="a-1")
    assert body["instances"][0]["customStatus"] == {"step": "upload"}


async def test_a_filter_applied_to_rows_read_pages_with_tokens_too(dash: Dash, hub: TaskHub) -> None:
    rows = [row(f"n-{index:02d}", name="chain" if index % 2 else "other") for index in range(12)]
    await insert_rows(hub, rows)
    seen: list[str] = []
    token: str | None = None
    while True:
        params: dict[str, Any] = {"top": 4, "name": "Chain"}
        if token:
            params["continuation"] = token
        body = await dash.get("instances", **params)
        seen += [item["instanceId"] for item in body["instances"]]
        token = body["continuation"]
        if token is None:
            break
    assert seen == [f"n-{index:02d}" for index in range(1, 12, 2)]


async def test_counts_by_status_with_the_same_filters(dash: Dash, hub: TaskHub) -> None:
    await insert_rows(
        hub,
        [
            row("c-1", status=OrchestrationStatus.Running),
            row("c-2", status=OrchestrationStatus.Running, name="other"),
            row("c-3", status=OrchestrationStatus.Failed),
            row("d-1", status=OrchestrationStatus.Completed),
        ],
    )
    body = await dash.get("counts")
    assert body["total"] == 4
    assert body["counts"]["Running"] == 2
    assert body["counts"]["Failed"] == 1
    assert body["counts"]["Completed"] == 1
    assert body["counts"]["Suspended"] == 0
    narrowed = await dash.get("counts", prefix="c-", name="CHAIN")
    assert narrowed["total"] == 2
    assert narrowed["counts"]["Running"] == 1
    assert (await dash.get("counts", status="Failed,Completed"))["total"] == 2


# ---- one instance ---------------------------------------------------------------------------------


async def test_large_payloads_are_left_out_of_the_detail_and_fetched_on_their_own(
    dash: Dash, hub: TaskHub
) -> None:
    big = json.dumps("x" * 70_000)
    state = row("big-1", custom=json.dumps({"note": "y" * 70_000}))
    state.input = big
    await insert_rows(hub, [state])
    body = await dash.detail("big-1")
    assert body["input"] is None
    assert body["customStatus"] is None
    assert body["output"] == 2
    assert sorted(body["truncated"]) == ["customStatus", "input"]
    assert body["completedTime"] == "2026-01-01T00:00:05Z"
    assert body["durationMs"] == 5000
    assert body["failure"] is None
    assert body["parent"] is None
    assert await dash.get("instances/big-1/payload/input") == "x" * 70_000
    assert await dash.get("instances/big-1/payload/customStatus") == {"note": "y" * 70_000}
    assert await dash.get("instances/big-1/payload/output") == 2
    listed = (await dash.get("instances", prefix="big-1"))["instances"][0]
    assert listed["customStatus"] is None
    assert listed["truncated"] == ["customStatus"]
    assert (await dash.http.get(dash.url("instances/big-1/payload/history"))).status_code == 404


async def test_history_timeline_children_and_parent_of_a_sub_orchestration(
    dash: Dash, engine: Engine
) -> None:
    parent = await dash.hub.client.start_new("parent", "tl-parent", None)
    done = await dash.wait_for(parent, "Completed")
    assert done["output"] == 33
    assert done["durationMs"] is not None and done["durationMs"] >= 0
    children = (await dash.get(f"instances/{parent}/children"))["children"]
    assert len(children) == 1
    child = children[0]
    assert child["name"] == "chain"
    assert child["runtimeStatus"] == "Completed"
    assert (await dash.detail(child["instanceId"]))["parent"] == {"instanceId": parent}

    history = await dash.get(f"instances/{parent}/history")
    kinds = [event["eventType"] for event in history["events"]]
    assert kinds[0] == "OrchestratorStarted"
    assert "SubOrchestrationInstanceCreated" in kinds
    assert history["continuation"] is None
    created = next(e for e in history["events"] if e["eventType"] == "SubOrchestrationInstanceCreated")
    assert created["instanceId"] == child["instanceId"]
    assert created["name"] == "chain"
    completed = next(e for e in history["events"] if e["eventType"] == "SubOrchestrationInstanceCompleted")
    assert completed["scheduledId"] == created["eventId"]
    assert completed["result"] == 32

    paged: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        params: dict[str, Any] = {"top": 3}
        if token:
            params["continuation"] = token
        page = await dash.get(f"instances/{parent}/history", **params)
        assert len(page["events"]) <= 3
        paged += page["events"]
        token = page["continuation"]
        if token is None:
            break
    assert paged == history["events"]

    items = (await dash.get(f"instances/{parent}/timeline"))["items"]
    assert items[0]["kind"] == "orchestration"
    assert items[0]["name"] == "parent"
    assert items[0]["status"] == "Completed"
    assert items[0]["end"] is not None
    [sub] = [item for item in items if item["kind"] == "suborchestration"]
    assert sub["instanceId"] == child["instanceId"]
    assert sub["status"] == "Completed"
    assert sub["start"] <= sub["end"]
    child_items = (await dash.get(f"instances/{child['instanceId']}/timeline"))["items"]
    activities = [item for item in child_items if item["kind"] == "activity"]
    assert [item["name"] for item in activities] == ["double"] * 5
    assert all(item["status"] == "Completed" and item["end"] for item in activities)


async def test_timeline_of_timers_and_external_events(dash: Dash, engine: Engine) -> None:
    fired = await dash.hub.client.start_new("timer", "tl-timer", None)
    waiting = await dash.hub.client.start_new("approval", "tl-approval", "600")
    await dash.wait_for(fired, "Completed")
    await dash.wait_for(waiting, "Running")
    items = (await dash.get(f"instances/{waiting}/timeline"))["items"]
    [pending] = [item for item in items if item["kind"] == "timer"]
    assert pending["status"] == "Pending"
    assert pending["end"] is None
    response = await dash.post(
        f"instances/{waiting}/raiseEvent", {"eventName": "Approval", "eventData": "yes"}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"instanceId": waiting, "ok": True}
    done = await dash.wait_for(waiting, "Completed")
    assert done["output"] == "approved: yes"
    assert done["customStatus"] == "done"
    items = (await dash.get(f"instances/{waiting}/timeline"))["items"]
    [event] = [item for item in items if item["kind"] == "event"]
    assert event["name"] == "Approval"
    assert event["start"] == event["end"]
    [canceled] = [item for item in items if item["kind"] == "timer"]
    assert canceled["canceled"] is True
    assert canceled["end"] == items[0]["end"]
    timer_items = (await dash.get(f"instances/{fired}/timeline"))["items"]
    [timer] = [item for item in timer_items if item["kind"] == "timer"]
    assert timer["status"] == "Completed"
    assert "canceled" not in timer
    assert timer["end"] == timer["fireAt"]
    history = (await dash.get(f"instances/{fired}/history"))["events"]
    created = next(e for e in history if e["eventType"] == "TimerCreated")
    fired_event = next(e for e in history if e["eventType"] == "TimerFired")
    assert fired_event["scheduledId"] == created["eventId"]
    assert fired_event["fireAt"] == created["fireAt"]


async def test_history_leaves_out_rows_an_older_longer_execution_left(dash: Dash, hub: TaskHub) -> None:
    old = [
        OrchestratorStartedEvent(),
        ExecutionStartedEvent(name="chain", input="0"),
        *(TaskScheduledEvent(event_id=index, name="double", input="1") for index in range(4)),
        OrchestratorCompletedEvent(),
    ]
    new = [
        OrchestratorStartedEvent(),
        ExecutionStartedEvent(name="chain", input="1"),
        OrchestratorCompletedEvent(),
    ]
    etag = await hub.tracking.append_history("cont-1", "old-execution", old, 0, None)
    await hub.tracking.append_history("cont-1", "new-execution", new, 0, etag)
    state = row("cont-1", status=OrchestrationStatus.Running)
    state.execution_id = "new-execution"
    await insert_rows(hub, [state])
    events: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        params: dict[str, Any] = {"top": 2}
        if token:
            params["continuation"] = token
        page = await dash.get("instances/cont-1/history", **params)
        events += page["events"]
        token = page["continuation"]
        if token is None:
            break
    assert [event["eventType"] for event in events] == [
        "OrchestratorStarted",
        "ExecutionStarted",
        "OrchestratorCompleted",
    ]
    assert events[1]["input"] == 1
    assert [item["kind"] for item in (await dash.get("instances/cont-1/timeline"))["items"]] == [
        "orchestration"
    ]


# ---- actions -----------------------------------------------------------------------------------------


async def test_suspend_resume_and_terminate_with_their_refusals(dash: Dash, engine: Engine) -> None:
    instance = await dash.hub.client.start_new("approval", "act-1", "600")
    await dash.wait_for(instance, "Running")
    response = await dash.post(f"instances/{instance}/suspend", {"reason": "pause"})
    assert response.json() == {"instanceId": instance, "ok": True}
    await dash.wait_for(instance, "Suspended")
    again = await dash.post(f"instances/{instance}/suspend")
    assert again.status_code == 500  # DF's answer to suspending a suspended instance
    assert "error" in again.json()
    assert (await dash.post(f"instances/{instance}/resume", {"reason": "go on"})).status_code == 200
    await dash.wait_for(instance, "Running")
    assert (await dash.post(f"instances/{instance}/terminate", {"reason": "enough"})).status_code == 200
    body = await dash.wait_for(instance, "Terminated")
    assert body["output"] == "enough"
    gone = await dash.post(f"instances/{instance}/terminate")
    assert gone.status_code == 410
    events = [e["eventType"] for e in (await dash.get(f"instances/{instance}/history", top=1000))["events"]]
    assert {"ExecutionSuspended", "ExecutionResumed", "ExecutionTerminated"} <= set(events)
    items = (await dash.get(f"instances/{instance}/timeline"))["items"]
    assert items[0]["status"] == "Failed" and items[0]["terminated"] is True


async def test_restart_rewind_and_purge(dash: Dash, engine: Engine) -> None:
    failed = await dash.hub.client.start_new("raises", "act-failed", None)
    body = await dash.wait_for(failed, "Failed")
    assert "orchestrator gave up" in body["failure"]["message"]
    rewound = await dash.post(f"instances/{failed}/rewind", {"reason": "try again"})
    assert rewound.status_code == 200, rewound.text
    await dash.wait_for(failed, "Failed")

    completed = await dash.hub.client.start_new("chain", "act-done", "1")
    await dash.wait_for(completed, "Completed")
    assert (await dash.post(f"instances/{completed}/rewind")).status_code == 410
    restarted = await dash.post(f"instances/{completed}/restart")
    new_id = restarted.json()["result"]["instanceId"]
    assert new_id != completed
    assert (await dash.wait_for(new_id, "Completed"))["output"] == 32
    same = await dash.post(f"instances/{completed}/restart", {"newInstanceId": False})
    assert same.json()["result"] == {"instanceId": completed}
    await dash.wait_for(completed, "Completed")

    running = await dash.hub.client.start_new("approval", "act-running", "600")
    assert (await dash.post(f"instances/{running}/purge")).status_code == 412
    purged = await dash.post(f"instances/{completed}/purge")
    assert purged.json() == {"instanceId": completed, "ok": True, "result": {"instancesDeleted": 1}}
    assert (await dash.http.get(dash.url(f"instances/{completed}"))).status_code == 404
    assert (await dash.post(f"instances/{completed}/purge")).status_code == 404


async def test_bulk_terminate_by_filter_and_by_ids_reports_each_outcome(dash: Dash) -> None:
    client = dash.hub.client
    for index in range(12):
        await client.start_new("approval", f"bulk-{index:02d}", "600")
    await client.start_new("approval", "keep-1", "600")
    response = await dash.post("bulk/terminate", {"filter": {"prefix": "bulk-"}, "limit": 10, "reason": "x"})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [result["instanceId"] for result in results] == [f"bulk-{index:02d}" for index in range(10)]
    assert all(
        result == {"instanceId": result["instanceId"], "ok": True, "status": 200} for result in results
    )
    by_ids = await dash.post("bulk/terminate", {"instanceIds": ["bulk-10", "bulk-11", "nope"]})
    outcomes = by_ids.json()["results"]
    assert [result["ok"] for result in outcomes] == [True, True, False]
    assert outcomes[2]["status"] == 404
    assert "nope" in outcomes[2]["error"]
    terminated = await dash.get("counts", prefix="bulk-", status="Pending,Running")
    assert terminated["total"] == 12  # the terminate messages wait for a worker
    assert (await dash.get("counts", prefix="keep-"))["total"] == 1


# ---- entities -------------------------------------------------------------------------------------


async def test_entities_list_signal_and_delete(dash: Dash, engine: Engine) -> None:
    signalled = await dash.post("entities/Counter/k1/signal", {"operation": "add", "input": 5})
    assert signalled.status_code == 200, signalled.text
    entity_id = entity_instance_id("counter", "k1")
    assert signalled.json() == {"instanceId": entity_id, "ok": True}
    await dash.post("entities/counter/k2/signal", {"operation": "add", "input": 1})

    async def listed() -> list[dict[str, Any]]:
        return list((await dash.get("entities"))["entities"])

    deadline = time.monotonic() + TIMEOUT
    while [entity.get("state") for entity in await listed()] != [5, 1]:
        assert time.monotonic() < deadline, await listed()
        await asyncio.sleep(0.05)
    first = (await listed())[0]
    assert first["name"] == "counter"
    assert first["key"] == "k1"
    assert first["instanceId"] == entity_id
    assert first["lockedBy"] is None
    assert first["queuedOperations"] == 0
    assert first["lastOperationTime"] is not None
    assert [e["key"] for e in (await dash.get("entities", prefix="COUNTER@k2"))["entities"]] == ["k2"]
    page = await dash.get("entities", top=1)
    assert len(page["entities"]) == 1 and page["continuation"] is not None
    rest = await dash.get("entities", top=1, continuation=page["continuation"])
    assert [e["key"] for e in rest["entities"]] == ["k2"]

    deleted = await dash.http.delete(dash.url("entities/counter/k1"))
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"instanceId": entity_id, "ok": True}
    assert [e["key"] for e in await listed()] == ["k2"]
    assert (await dash.http.delete(dash.url("entities/counter/k1"))).status_code == 404
    bad = await dash.post("entities/counter/k2/signal", {"input": 1})
    assert bad.status_code == 400


async def test_the_page_and_its_assets_are_served_without_a_key(hub: TaskHub, tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<!doctype html><title>dashboard</title>")
    (tmp_path / "app.js").write_text("console.log('hi')")
    options = DashboardOptions(
        HubSet([DashboardHub.of(TaskHubClient(hub))]), system_key=KEY, static_dir=tmp_path
    )
    app = Starlette(routes=[dashboard_mount(options)])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://dash") as http:
        page = await http.get("/dashboard/")
        assert page.status_code == 200
        assert "<title>dashboard</title>" in page.text
        asset = await http.get("/dashboard/static/app.js")
        assert asset.status_code == 200
        assert asset.text == "console.log('hi')"
        assert (await http.get("/dashboard/static/missing.js")).status_code == 404
        assert (await http.get("/dashboard/api/hubs")).status_code == 401
        (tmp_path / "index.html").unlink()
        assert (await http.get("/dashboard/")).status_code == 404


# ---- several hubs, read-only, keys ------------------------------------------------------------------


async def test_two_hubs_each_show_their_own_instances(
    hub: TaskHub, storage_account: StorageAccount, serve_dash: ServeDash
) -> None:
    async with TaskHub(storage_account, "T" + uuid.uuid4().hex[:12], partition_count=1) as other:
        await other.create()
        try:
            dash = await serve_dash([TaskHubClient(hub), TaskHubClient(other)])
            await insert_rows(hub, [row("in-first")])
            await insert_rows(other, [row("in-second")])
            listed = (await dash.http.get(f"{BASE}/hubs")).json()["hubs"]
            assert [entry["hub"] for entry in listed] == [hub.names.hub, other.names.hub]
            assert listed[0]["id"] != listed[1]["id"]
            second = dash.hubs[1]
            first_rows = (await dash.get("instances"))["instances"]
            second_rows = (await dash.http.get(dash.url("instances", second))).json()["instances"]
            assert [item["instanceId"] for item in first_rows] == ["in-first"]
            assert [item["instanceId"] for item in second_rows] == ["in-second"]
            assert (await dash.http.get(dash.url("instances/in-first", second))).status_code == 404
            unknown = await dash.http.get(f"{BASE}/hubs/nohub-AAAA/instances")
            assert unknown.status_code == 404
            assert "error" in unknown.json()
        finally:
            await other.delete()


async def test_read_only_refuses_every_action_and_still_reads(hub: TaskHub, serve_dash: ServeDash) -> None:
    dash = await serve_dash([TaskHubClient(hub)], read_only=True)
    await insert_rows(hub, [row("ro-1", status=OrchestrationStatus.Running)])
    assert (await dash.http.get(f"{BASE}/hubs")).json()["readOnly"] is True
    refused = [
        await dash.post("instances/ro-1/terminate", {"reason": "no"}),
        await dash.post("instances/ro-1/suspend"),
        await dash.post("instances/ro-1/purge"),
        await dash.post("instances/ro-1/raiseEvent", {"eventName": "x"}),
        await dash.post("bulk/terminate", {"instanceIds": ["ro-1"]}),
        await dash.post("entities/counter/k/signal", {"operation": "add"}),
        await dash.http.delete(dash.url("entities/counter/k")),
    ]
    for response in refused:
        assert response.status_code == 403
        assert response.json()["error"] == "the dashboard is read-only"
    assert (await dash.detail("ro-1"))["runtimeStatus"] == "Running"
    assert (await dash.get("instances"))["instances"][0]["instanceId"] == "ro-1"


async def test_the_system_key_is_required_when_set(hub: TaskHub, serve_dash: ServeDash) -> None:
    dash = await serve_dash([TaskHubClient(hub)], system_key=KEY)
    assert (await dash.http.get(f"{BASE}/hubs")).status_code == 200
    async with httpx.AsyncClient(transport=dash.http._transport) as anonymous:
        for headers in ({}, {"x-functions-key": "wrong"}):
            for url in (f"{BASE}/hubs", dash.url("instances"), dash.url("counts")):
                response = await anonymous.get(url, headers=headers)
                assert response.status_code == 401
                assert "error" in response.json()
            posted = await anonymous.post(dash.url("instances/x/terminate"), headers=headers)
            assert posted.status_code == 401
        both = await anonymous.get(
            dash.url("instances"), params={"code": "wrong"}, headers={"x-functions-key": KEY}
        )
        assert both.status_code == 401


# ---- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "instances?status=Bogus",
        "instances?from=yesterday",
        "instances?to=2026-13-01",
        "instances?continuation=not-a-token",
        "instances?top=0",
        "instances?top=1001",
        "instances?sort=size",
        "instances?order=up",
        "counts?status=Nope",
        "instances/a%23b",
        "instances/%40counter%40k",
        "instances/x/history?top=0",
        "instances/x/history?continuation=bad",
        "entities?top=5000",
        "entities?continuation=zzz",
    ],
)
async def test_bad_query_input_is_400(dash: Dash, hub: TaskHub, path: str) -> None:
    await insert_rows(hub, [row("x")])
    response = await dash.http.get(f"{BASE}/hubs/{dash.hub.id}/{path}")
    assert response.status_code == 400, response.text
    assert response.json()["error"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("instances/x/terminate", b"{not json"),
        ("instances/x/terminate", b"[1]"),
        ("instances/x/terminate", b'{"reason": 5}'),
        ("instances/x/raiseEvent", b'{"eventData": 1}'),
        ("instances/x/restart", b'{"newInstanceId": "yes"}'),
        ("instances/a%23b/terminate", b""),
        ("bulk/terminate", b"{}"),
        ("bulk/terminate", b'{"instanceIds": []}'),
        ("bulk/terminate", b'{"instanceIds": ["a#b"]}'),
        ("bulk/terminate", b'{"filter": {"status": "Bogus"}}'),
        ("bulk/terminate", b'{"filter": {}, "limit": 0}'),
        ("bulk/terminate", b'{"filter": {}, "limit": 1001}'),
        ("entities/counter/k/signal", b'{"operation": ""}'),
    ],
)
async def test_bad_bodies_are_400_and_change_nothing(
    dash: Dash, hub: TaskHub, path: str, body: bytes
) -> None:
    await insert_rows(hub, [row("x", status=OrchestrationStatus.Running)])
    response = await dash.http.post(
        f"{BASE}/hubs/{dash.hub.id}/{path}", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]
    assert (await dash.detail("x"))["runtimeStatus"] == "Running"
    assert (await hub.info()).resources  # the hub is intact


async def test_unknown_routes_actions_and_instances_are_404(dash: Dash) -> None:
    for response in (
        await dash.http.get(dash.url("instances/missing")),
        await dash.post("instances/missing/terminate"),
        await dash.post("instances/missing/explode"),
        await dash.post("bulk/explode", {"instanceIds": ["a"]}),
        await dash.http.get(f"{BASE}/nothing/here"),
    ):
        assert response.status_code == 404
        assert response.json()["error"]


# ---- served by start and by the dashboard command -------------------------------------------------


async def test_start_serves_the_dashboard_behind_the_system_key(
    tmp_path: Path, azurite_connection_string: str
) -> None:
    hub_name = "Dash" + uuid.uuid4().hex[:8]
    app = sample_app_dir(tmp_path, hub_name)
    settings = {"DURABLE_EXT_SYSTEM_KEY": KEY, "DURABLE_EXT_DASHBOARD_READONLY": "1"}
    (app / "local.settings.json").write_text(json.dumps({"Values": settings}))
    with running_host(app, azurite_connection_string, tmp_path / "host.log") as host:
        assert f"Dashboard: http://localhost:{host.base_url.rsplit(':', 1)[1]}/dashboard/" in host.output()
        async with httpx.AsyncClient(base_url=host.base_url, timeout=TIMEOUT) as http:
            assert (await http.get("/dashboard/api/hubs")).status_code == 401
            body = (await http.get("/dashboard/api/hubs", headers={"x-functions-key": KEY})).json()
            assert body["readOnly"] is True
            assert [entry["hub"] for entry in body["hubs"]] == [hub_name]


def test_the_dashboard_command_serves_named_and_found_hubs(
    tmp_path: Path, azurite_connection_string: str
) -> None:
    names = ["Cmd" + uuid.uuid4().hex[:8], "Cmd" + uuid.uuid4().hex[:8]]
    account = StorageAccount.from_connection_string(azurite_connection_string)

    async def create() -> None:
        for name, partitions in zip(names, (2, 3), strict=True):
            async with TaskHub(account, name, partitions) as created:
                await created.create()
                await created.tracking.insert_instance(row(f"{name}-one"))

    asyncio.run(create())
    port = free_port()
    env = {**host_env(azurite_connection_string), "MY_STORAGE": azurite_connection_string}
    command = [
        sys.executable,
        "-m",
        "durable_ext",
        "dashboard",
        "--connection",
        "MY_STORAGE",
        "--port",
        str(port),
    ]
    for extra in ([f"--hub={names[0]}", "--hub=Missing0hub"], []):
        process = subprocess.Popen(
            [*command, *extra],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            output = read_until(process, "Dashboard ready")
            listed = httpx.get(f"http://127.0.0.1:{port}/dashboard/api/hubs", timeout=TIMEOUT).json()["hubs"]
            shown = [entry["hub"] for entry in listed]
            if extra:
                assert shown == [names[0]]
                assert "Missing0hub does not exist" in output
                rows = httpx.get(
                    f"http://127.0.0.1:{port}/dashboard/api/hubs/{listed[0]['id']}/instances", timeout=TIMEOUT
                ).json()["instances"]
                assert [item["instanceId"] for item in rows] == [f"{names[0]}-one"]
            else:
                assert set(names) <= set(shown)
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0


def test_the_dashboard_command_refuses_a_missing_connection_setting(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "durable_ext", "dashboard", "--connection", "NOT_SET_ANYWHERE", "--hub", "X"],
        check=False,
        cwd=tmp_path,
        env={**host_env("UseDevelopmentStorage=true"), "NOT_SET_ANYWHERE": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "NOT_SET_ANYWHERE" in result.stderr


async def test_unreachable_storage_is_503_with_retry_after(serve_dash: ServeDash) -> None:
    with Azurite() as storage:
        account = StorageAccount.from_connection_string(storage.connection_string)
        async with TaskHub(account, "Down" + uuid.uuid4().hex[:8], partition_count=1) as down:
            await down.create()
            await insert_rows(down, [row("down-1", status=OrchestrationStatus.Running)])
            dash = await serve_dash([TaskHubClient(down)])
            assert (await dash.get("instances"))["instances"][0]["instanceId"] == "down-1"
            storage.stop()
            for response in (
                await dash.http.get(dash.url("instances")),
                await dash.http.get(dash.url("counts")),
                await dash.http.get(dash.url("instances/down-1")),
                await dash.http.get(dash.url("instances/down-1/history")),
                await dash.post("instances/down-1/terminate"),
                await dash.http.get(dash.url("entities")),
            ):
                assert response.status_code == 503, (response.request.url, response.text)
                assert response.headers["Retry-After"] == "5"
                assert response.json()["error"].startswith("storage is unreachable: ")
            bulk = await dash.post("bulk/terminate", {"instanceIds": ["down-1"]})
            assert bulk.json()["results"] == [
                {"instanceId": "down-1", "ok": False, "status": 503, "error": "storage is unreachable"}
            ]


def test_the_dashboard_command_takes_identity_connections_as_start_does() -> None:
    settings = {
        "Orders__accountName": "ordersacct",
        "Orders__credential": "managedidentity",
        "Orders__clientId": "00000000-0000-0000-0000-000000000001",
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    }
    account = StorageAccount.from_connection(storage_connection("Orders", settings))
    assert account.account_name == "ordersacct"
    assert account.queue_endpoint == "https://ordersacct.queue.core.windows.net"
    assert account.identity is not None
    # As start resolves AzureWebJobsStorage: the AzureWebJobs prefix is tried first.
    assert storage_connection("Storage", settings).connection_string == "UseDevelopmentStorage=true"
    assert storage_connection("Acct=1;AccountKey=x", settings).connection_string == "Acct=1;AccountKey=x"
    with pytest.raises(ConfigError, match="--connection Missing: App setting 'Missing'"):
        storage_connection("Missing", settings)
