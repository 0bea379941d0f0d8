"""The dashboard's JSON API end to end: real Azurite, the real Starlette app driven with httpx.

Rows for list, filter and count tests are written through the tracking store (what a start writes,
with chosen statuses, names and times); actions, history and timelines run real orchestrations on an
engine.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from starlette.applications import Starlette

from durable_ext.client import TaskHubClient
from durable_ext.dashboard.api import DashboardOptions, dashboard_mount
from durable_ext.dashboard.hubs import DashboardHub, HubSet
from durable_ext.history import OrchestrationStatus
from durable_ext.storage.taskhub import TaskHub
from durable_ext.storage.tracking import InstanceState

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
