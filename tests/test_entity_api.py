"""The management API's entity routes end to end: real Azurite, a running engine, uvicorn, the df client.

The servers, the engine and the df client come from ``test_management_api``'s fixtures; the entity is the
engine app's ``counter`` (``add``, ``get``, ``delete``, ``fail_after_set``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import azure.durable_functions as df

from durable_ext.client import EntitySnapshot
from durable_ext.host.api import CONTINUATION_HEADER
from durable_ext.storage.taskhub import TaskHub
from durable_ext.storage.tracking import escape_partition_key
from durable_ext.wire import parse_datetime

# The fixtures are imported to be reused; pytest hands them to the tests by parameter name, which ruff
# takes for redefinitions of the imported names.
# ruff: noqa: F811
from tests.test_management_api import (
    TIMEOUT,
    Api,
    ServeApi,
    _queued_messages,
    _rows,
    api,  # noqa: F401
    serve_api,  # noqa: F401
)


async def _eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def _wait_for_state(api: Api, path: str, expected: object) -> None:
    """Poll ``GET entities/{path}`` until it answers 200 with ``expected``."""

    async def reached() -> bool:
        response = await api.http.get(api.url(f"entities/{path}"))
        return response.status_code == 200 and response.json() == expected

    await _eventually(reached, f"entity {path} to hold {expected!r}")


async def _wait_until_deleted(api: Api, entity_id: str) -> None:
    """Poll until the entity ran its delete: its row exists, the entity does not."""

    async def deleted() -> bool:
        snapshot: EntitySnapshot = await api.client.read_entity_state(entity_id)
        return not snapshot.exists and snapshot.last_modified is not None

    await _eventually(deleted, f"{entity_id} to be deleted")


async def _entity_rows(hub: TaskHub, instance_id: str) -> tuple[int, int]:
    """(Instances rows, History rows) of one instance."""
    pk = {"pk": escape_partition_key(instance_id)}
    tracking = hub.tracking
    instances = [e async for e in tracking._instances.query_entities("PartitionKey eq @pk", parameters=pk)]
    history = [e async for e in tracking._history.query_entities("PartitionKey eq @pk", parameters=pk)]
    return len(instances), len(history)


# ---- the df client ----------------------------------------------------------------------------


async def test_df_client_signals_reads_and_deletes_an_entity(api: Api) -> None:
    entity = df.EntityId("counter", "k")
    missing = await api.df.read_entity_state(entity)
    assert (missing.entity_exists, missing.entity_state) == (False, None)

    await api.df.signal_entity(entity, "add", 5)

    async def holds_five() -> bool:
        response = await api.df.read_entity_state(entity)
        return response.entity_exists and response.entity_state == 5

    await _eventually(holds_five, "the counter to hold 5")
    # The df client, the HTTP API and the storage-level client all report the same state.
    assert (await api.http.get(api.url("entities/counter/k"))).json() == 5
    snapshot = await api.client.read_entity_state("@counter@k")
    assert snapshot.exists and snapshot.state == "5"
    # No input at all (df sends no body), then the entity's own delete.
    await api.df.signal_entity(entity, "get")
    await api.df.signal_entity(entity, "delete")

    async def gone() -> bool:
        return not (await api.df.read_entity_state(entity)).entity_exists

    await _eventually(gone, "the counter to be deleted")


async def test_orchestrator_using_an_entity_completes_when_started_through_the_api(api: Api) -> None:
    instance = await api.df.start_new("use_counter", None, "k1")
    status = await api.wait_for_status(instance, "Completed")
    output = status["output"]
    assert (output["current"], output["after"]) == (5, 105)
    assert "operation failed after setting state" in output["failed"]
    state = await api.df.read_entity_state(df.EntityId("counter", "k1"))
    assert state.entity_exists and state.entity_state == 105


# ---- raw HTTP ---------------------------------------------------------------------------------


async def test_signal_get_and_delete_over_http(api: Api) -> None:
    url = api.url("entities/counter/raw")
    signalled = await api.http.post(f"{url}?op=add", json=3)
    assert (signalled.status_code, signalled.content) == (202, b"")
    await _wait_for_state(api, "counter/raw", 3)
    # Entity names are case-insensitive.
    assert (await api.http.post(f"{url}?op=add", json=4)).status_code == 202
    await _wait_for_state(api, "Counter/raw", 7)
    # A JSON string is stored as sent, and a body that is not JSON is a string input, as in DF: adding
    # "2" fails either way, the next add lands.
    text = await api.http.post(f"{url}?op=add", content=b"2", headers={"content-type": "text/plain"})
    assert text.status_code == 202
    assert (await api.http.post(f"{url}?op=add", json="2")).status_code == 202
    assert (await api.http.post(f"{url}?op=add", json=1)).status_code == 202
    await _wait_for_state(api, "counter/raw", 8)

    assert (await api.http.delete(url)).status_code == 202

    async def not_found() -> bool:
        return (await api.http.get(url)).status_code == 404

    await _eventually(not_found, "the deleted entity to answer 404")
    unknown = await api.http.get(api.url("entities/counter/never"))
    assert unknown.status_code == 404 and "@counter@never" in unknown.json()["error"]


async def test_bad_entity_requests_are_refused_and_write_nothing(serve_api: ServeApi) -> None:
    api = await serve_api(max_payload_bytes=1024)
    refused = {
        ("POST", "entities/a%40b/k?op=add"): (400, "'@'"),
        ("GET", "entities/a%40b/k"): (400, "'@'"),
        ("GET", "entities/a%40b"): (400, "'@'"),
        ("POST", "entities/counter/a%01b?op=add"): (400, "control character"),
        ("GET", f"entities/counter/{'k' * 300}"): (400, "256"),
        ("POST", "entities/counter/k"): (400, "query parameter op"),
        ("POST", "entities/counter/k?op="): (400, "query parameter op"),
        ("GET", "entities?top=0"): (400, "top"),
        ("GET", "entities?fetchState=maybe"): (400, "fetchState"),
        ("GET", "entities/counter?lastOperationTimeFrom=yesterday"): (400, "lastOperationTimeFrom"),
        ("POST", "entities/clean?minIdleSeconds=-1"): (400, "minIdleSeconds"),
        ("PUT", "entities/counter/k"): (404, "no management API route"),
        ("GET", "entities/counter/k/more"): (404, "no management API route"),
    }
    for (method, path), (status, message) in refused.items():
        response = await api.http.request(method, api.url(path))
        assert response.status_code == status and message in response.json()["error"], (path, response.text)

    oversized = await api.http.post(api.url("entities/counter/k?op=add"), json="x" * 2000)
    assert oversized.status_code == 413
    as_text = await api.http.post(
        api.url("entities/counter/k?op=add"), content=b"x" * 1500, headers={"content-type": "text/plain"}
    )
    assert as_text.status_code == 413
    forged = await api.http.get(api.url("entities"), headers={CONTINUATION_HEADER: "not-a-token"})
    assert forged.status_code == 400 and "continuation token" in forged.json()["error"]
    assert await _rows(api.hub) == (0, 0)
    assert await _queued_messages(api.hub) == 0


async def test_list_pages_filters_and_fetches_state(api: Api) -> None:
    before = datetime.now(UTC)
    for index in range(7):
        await api.client.signal_entity(f"@counter@page-{index}", "add", str(index + 1))
    await api.client.signal_entity("@counter@deleted", "add", "1")
    await api.client.signal_entity("@counter@deleted", "delete")
    await api.client.start_new("approval", "not-an-entity", "30")
    for index in range(7):
        await _wait_for_state(api, f"counter/page-{index}", index + 1)
    await _wait_until_deleted(api, "@counter@deleted")

    seen: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        headers = {CONTINUATION_HEADER: token} if token else {}
        response = await api.http.get(api.url("entities?top=3"), headers=headers)
        assert response.status_code == 200
        page = response.json()
        assert len(page) <= 3
        for item in page:
            assert set(item) == {"entityId", "lastOperationTime"}
            assert item["entityId"]["name"] == "counter"
            assert parse_datetime(item["lastOperationTime"]) >= before
        seen += [item["entityId"]["key"] for item in page]
        pages += 1
        token = response.headers.get(CONTINUATION_HEADER)
        if token is None:
            break
    assert sorted(seen) == [f"page-{i}" for i in range(7)] and pages >= 3

    expected = {f"page-{i}": i + 1 for i in range(7)}
    with_state = (await api.http.get(api.url("entities/counter?fetchState=true"))).json()
    assert {item["entityId"]["key"]: item["state"] for item in with_state} == expected
    for path in ("entities/", "entities/COUNTER"):
        assert len((await api.http.get(api.url(path))).json()) == 7, path
    assert (await api.http.get(api.url("entities/nothing"))).json() == []

    later = datetime.now(UTC) + timedelta(minutes=1)
    windows = {
        "lastOperationTimeFrom": (before.isoformat(), 7),
        "lastOperationTimeTo": (before.isoformat(), 0),
    }
    for name, (value, count) in windows.items():
        listed = await api.http.get(api.url("entities"), params={name: value})
        assert len(listed.json()) == count, name
    future = await api.http.get(api.url("entities"), params={"lastOperationTimeFrom": later.isoformat()})
    assert future.json() == []


async def test_clean_up_removes_empty_entities_and_keeps_live_ones(api: Api) -> None:
    await api.client.signal_entity("@counter@keep", "add", "1")
    await api.client.signal_entity("@counter@gone", "add", "2")
    await api.client.signal_entity("@counter@gone", "delete")
    await api.client.start_new("approval", "still-running", "30")
    await _wait_for_state(api, "counter/keep", 1)
    await _wait_until_deleted(api, "@counter@gone")
    assert await _entity_rows(api.hub, "@counter@gone") != (0, 0)

    # By default only entities idle for 30 minutes go.
    recent = await api.http.post(api.url("entities/clean"))
    assert (recent.status_code, recent.json()) == (200, {"numberOfEmptyEntitiesRemoved": 0})
    assert await _entity_rows(api.hub, "@counter@gone") != (0, 0)

    cleaned = await api.http.post(api.url("entities/clean?minIdleSeconds=0"))
    assert (cleaned.status_code, cleaned.json()) == (200, {"numberOfEmptyEntitiesRemoved": 1})
    assert await _entity_rows(api.hub, "@counter@gone") == (0, 0)
    assert await _entity_rows(api.hub, "still-running") != (0, 0)
    await _wait_for_state(api, "counter/keep", 1)
    again = await api.http.post(api.url("entities/clean?minIdleSeconds=0"))
    assert again.json() == {"numberOfEmptyEntitiesRemoved": 0}


async def test_entity_routes_require_the_system_key(serve_api: ServeApi) -> None:
    api = await serve_api(system_key="s3cret")
    for method, path in (
        ("GET", "entities"),
        ("GET", "entities/counter"),
        ("GET", "entities/counter/k"),
        ("POST", "entities/counter/k?op=add"),
        ("DELETE", "entities/counter/k"),
        ("POST", "entities/clean"),
        ("GET", "entities/counter/k?code=wrong"),
    ):
        assert (await api.http.request(method, api.url(path))).status_code == 401, (method, path)
    assert await _queued_messages(api.hub) == 0

    signalled = await api.http.post(api.url("entities/counter/k?op=add&code=s3cret"), json=2)
    assert signalled.status_code == 202
    await _wait_for_state(api, "counter/k?code=s3cret", 2)
    listed = await api.http.get(api.url("entities"), headers={"x-functions-key": "s3cret"})
    assert [item["entityId"]["key"] for item in listed.json()] == ["k"]
