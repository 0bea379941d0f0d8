"""The thin Queue and Table REST clients on real Azurite: the SDK's wire format, auth, errors, retries."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import ClientSession, web
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from azure.data.tables import AccountSasPermissions as TableAccountSasPermissions
from azure.data.tables import ResourceTypes as TableResourceTypes
from azure.data.tables import generate_account_sas as generate_table_account_sas
from azure.storage.queue import AccountSasPermissions, ResourceTypes, generate_account_sas
from azure.storage.queue.aio import QueueClient

from durable_ext.storage.account import StorageAccount
from durable_ext.storage.rest import EntityWrite, HttpSession, QueueRestClient, TableRestClient, WriteKind
from durable_ext.storage.taskhub import TaskHub

TRICKY = '{"text": "<a href=\'x\'>&amp; \\"quoted\\"</a> ]]> \u00e9\u4e2d\U0001f600"}'


@pytest.fixture
async def session(storage_account: StorageAccount) -> AsyncIterator[HttpSession]:
    http = HttpSession(storage_account)
    yield http
    await http.close()


def _sdk_queue(account: StorageAccount, name: str) -> QueueClient:
    assert account.account_key is not None
    return QueueClient(
        account_url=account.queue_endpoint,
        queue_name=name,
        credential={"account_name": account.account_name, "account_key": account.account_key},
    )


async def test_messages_put_here_are_read_by_the_sdk_and_back(
    hub: TaskHub, storage_account: StorageAccount, session: HttpSession
) -> None:
    name = hub.names.work_item_queue
    rest = QueueRestClient(storage_account, name, session)
    sent = await rest.put(TRICKY, 0)
    assert sent.message_id and sent.pop_receipt and sent.inserted_on is not None
    async with _sdk_queue(storage_account, name) as sdk:
        (seen,) = [m async for m in sdk.receive_messages(messages_per_page=1, visibility_timeout=1)]
        assert (seen.id, seen.content) == (sent.message_id, TRICKY)
        await sdk.delete_message(seen.id, seen.pop_receipt)
        await sdk.send_message(TRICKY, time_to_live=-1)
    (got,) = await rest.get(32, 30)
    assert got.content == TRICKY and got.dequeue_count == 1
    assert got.next_visible_on is not None and got.next_visible_on > datetime.now(UTC)
    await rest.delete(got.message_id, got.pop_receipt)
    assert await rest.get(32, 30) == []


async def test_a_held_message_is_invisible_until_its_visibility_is_updated(
    hub: TaskHub, storage_account: StorageAccount, session: HttpSession
) -> None:
    rest = QueueRestClient(storage_account, hub.names.control_queues[0], session)
    held = await rest.put('{"held": true}', 300)
    assert await rest.get(32, 30) == [], "put with a visibility timeout hides the message"
    assert await rest.approximate_count() == 1
    receipt = await rest.update_visibility(held.message_id, held.pop_receipt, 0)
    assert receipt and receipt != held.pop_receipt
    (visible,) = await rest.get(32, 30)
    assert visible.message_id == held.message_id


async def test_a_gone_message_is_not_found(
    hub: TaskHub, storage_account: StorageAccount, session: HttpSession
) -> None:
    rest = QueueRestClient(storage_account, hub.names.control_queues[1], session)
    sent = await rest.put("{}", 0)
    await rest.delete(sent.message_id, sent.pop_receipt)
    with pytest.raises(ResourceNotFoundError, match="cannot delete a message from queue"):
        await rest.delete(sent.message_id, sent.pop_receipt)
    with pytest.raises(ResourceNotFoundError):
        await rest.update_visibility(sent.message_id, sent.pop_receipt, 0)
    with pytest.raises(ResourceNotFoundError, match="no-such-queue"):
        await QueueRestClient(storage_account, "no-such-queue", session).put("{}", 0)


async def test_a_wrong_key_is_an_authentication_error_and_enqueues_nothing(
    hub: TaskHub, storage_account: StorageAccount
) -> None:
    wrong = dataclasses.replace(storage_account, account_key="d3Jvbmcga2V5IGZvciB0aGUgdGVzdA==")
    http = HttpSession(wrong)
    try:
        with pytest.raises(ClientAuthenticationError, match="HTTP 403"):
            await QueueRestClient(wrong, hub.names.work_item_queue, http).put("{}", 0)
    finally:
        await http.close()
    assert await hub.work_item_queue.approximate_count() == 0


async def test_a_sas_connection_works_without_the_key(hub: TaskHub, storage_account: StorageAccount) -> None:
    assert storage_account.account_key is not None
    sas = generate_account_sas(
        storage_account.account_name,
        storage_account.account_key,
        ResourceTypes(service=True, container=True, object=True),
        AccountSasPermissions(read=True, write=True, delete=True, add=True, update=True, process=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    by_sas = dataclasses.replace(storage_account, account_key=None, sas_token=sas)
    http = HttpSession(by_sas)
    try:
        rest = QueueRestClient(by_sas, hub.names.work_item_queue, http)
        await rest.put('{"sas": 1}', 0)
        (got,) = await rest.get(1, 30)
        assert got.content == '{"sas": 1}'
        await rest.delete(got.message_id, got.pop_receipt)
    finally:
        await http.close()


async def test_transient_503s_are_retried_and_the_request_lands_once(
    hub: TaskHub, storage_account: StorageAccount, unused_tcp_port: int
) -> None:
    # A proxy in front of the real Azurite answers the first two requests itself with 503.
    forwarded: list[str] = []
    refused: list[str] = []

    async def proxy(request: web.Request) -> web.Response:
        if len(refused) < 2:
            refused.append(request.method)
            return web.Response(status=503, text="<Error><Code>ServerBusy</Code></Error>")
        forwarded.append(request.method)
        target = storage_account.queue_endpoint.rsplit("/", 1)[0] + request.rel_url.path_qs
        async with ClientSession(skip_auto_headers=("Content-Type",)) as upstream:
            headers = {
                k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")
            }
            async with upstream.request(
                request.method, target, headers=headers, data=await request.read() or None
            ) as answer:
                kept = {
                    k: v for k, v in answer.headers.items() if k.lower().startswith(("x-ms-", "content-type"))
                }
                return web.Response(status=answer.status, body=await answer.read(), headers=kept)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()
    behind = dataclasses.replace(
        storage_account, queue_endpoint=f"http://127.0.0.1:{unused_tcp_port}/{storage_account.account_name}"
    )
    http = HttpSession(behind)
    try:
        await QueueRestClient(behind, hub.names.work_item_queue, http).put('{"once": 1}', 0)
    finally:
        await http.close()
        await runner.cleanup()
    assert refused == ["POST", "POST"] and forwarded == ["POST"]
    assert await hub.work_item_queue.approximate_count() == 1


@pytest.fixture
async def tables(storage_account: StorageAccount, session: HttpSession) -> AsyncIterator[tuple[Any, Any]]:
    """A fresh table as an SDK client (to check with) and as the REST client under test."""
    name = "Rest" + uuid.uuid4().hex[:10]
    async with storage_account.table_service() as service:
        sdk = await service.create_table(name)
        yield sdk, TableRestClient(storage_account, name, session)
        await service.delete_table(name)


ROW = {
    "Text": TRICKY,
    "Number": 42,
    "Flag": True,
    "When": datetime(2026, 3, 25, 8, 0, 0, 123456, tzinfo=UTC),
    "Empty": "",
}


async def test_a_transaction_writes_what_the_sdk_writes(tables: tuple[Any, Any]) -> None:
    sdk, rest = tables
    keys = ("it's ^0 \u00fc@x:y (1)", "0000000000000001")
    await sdk.upsert_entity({"PartitionKey": "sdk", "RowKey": keys[1], **ROW})
    etags = await rest.submit_transaction(
        [
            EntityWrite(WriteKind.UPSERT_REPLACE, {"PartitionKey": keys[0], "RowKey": keys[1], **ROW}),
            EntityWrite(WriteKind.INSERT, {"PartitionKey": keys[0], "RowKey": "sentinel", "N": 1}),
        ]
    )
    assert len(etags) == 2 and all(e.startswith('W/"datetime') for e in etags)
    ours = await sdk.get_entity(*keys)
    theirs = await sdk.get_entity("sdk", keys[1])
    assert {k: ours[k] for k in ROW} == {k: theirs[k] for k in ROW} == ROW
    sentinel = await sdk.get_entity(keys[0], "sentinel")
    assert sentinel.metadata["etag"] == etags[1]
    etag = await rest.merge({"PartitionKey": keys[0], "RowKey": "sentinel", "M": "x"}, etags[1])
    merged = await sdk.get_entity(keys[0], "sentinel")
    assert (merged["N"], merged["M"], merged.metadata["etag"]) == (1, "x", etag)


async def test_a_failed_write_fails_the_whole_transaction(tables: tuple[Any, Any]) -> None:
    sdk, rest = tables
    (etag,) = await rest.submit_transaction(
        [EntityWrite(WriteKind.INSERT, {"PartitionKey": "p", "RowKey": "s"})]
    )
    cases = [
        (EntityWrite(WriteKind.INSERT, {"PartitionKey": "p", "RowKey": "s"}), 409),
        (
            EntityWrite(WriteKind.MERGE, {"PartitionKey": "p", "RowKey": "s"}, "W/\"datetime'2000-01-01'\""),
            412,
        ),
        (EntityWrite(WriteKind.MERGE, {"PartitionKey": "p", "RowKey": "gone"}, etag), 404),
    ]
    for failing, status in cases:
        row = EntityWrite(WriteKind.UPSERT_REPLACE, {"PartitionKey": "p", "RowKey": f"row-{status}"})
        with pytest.raises(HttpResponseError) as raised:
            await rest.submit_transaction([row, failing])
        assert raised.value.status_code == status
        assert [e["RowKey"] async for e in sdk.query_entities("PartitionKey eq 'p'")] == ["s"], (
            "nothing written"
        )


async def test_single_merges_insert_or_check_the_etag(tables: tuple[Any, Any]) -> None:
    sdk, rest = tables
    first = await rest.merge({"PartitionKey": "i", "RowKey": "", "RuntimeStatus": "Pending", "Generation": 0})
    second = await rest.merge({"PartitionKey": "i", "RowKey": "", "RuntimeStatus": "Running"}, first)
    assert second != first
    with pytest.raises(HttpResponseError) as stale:
        await rest.merge({"PartitionKey": "i", "RowKey": "", "RuntimeStatus": "Failed"}, first)
    assert stale.value.status_code == 412
    with pytest.raises(ResourceNotFoundError):
        await rest.merge({"PartitionKey": "missing", "RowKey": ""}, first)
    row = await sdk.get_entity("i", "")
    assert (row["RuntimeStatus"], row["Generation"]) == ("Running", 0)


async def test_inserts_and_replaces_write_what_the_sdk_writes_and_refuse_a_race(
    tables: tuple[Any, Any],
) -> None:
    sdk, rest = tables
    keys = {"PartitionKey": "it's ^0 \u00fc", "RowKey": ""}
    etag = await rest.insert({**keys, **ROW})
    row = await sdk.get_entity(keys["PartitionKey"], "")
    assert {k: row[k] for k in ROW} == ROW and row.metadata["etag"] == etag
    with pytest.raises(HttpResponseError) as exists:
        await rest.insert({**keys, "Number": 1})
    assert exists.value.status_code == 409
    replaced = await rest.replace({**keys, "Number": 2}, etag)
    row = await sdk.get_entity(keys["PartitionKey"], "")
    assert dict(row) == {**keys, "Number": 2} and row.metadata["etag"] == replaced, "a replace drops the rest"
    with pytest.raises(HttpResponseError) as stale:
        await rest.replace({**keys, "Number": 3}, etag)
    assert stale.value.status_code == 412
    with pytest.raises(ResourceNotFoundError):
        await rest.replace({"PartitionKey": "missing", "RowKey": ""}, etag)
    assert (await sdk.get_entity(keys["PartitionKey"], ""))["Number"] == 2


async def test_point_reads_type_the_row_as_the_sdk_does(tables: tuple[Any, Any]) -> None:
    sdk, rest = tables
    await sdk.upsert_entity({"PartitionKey": "it's", "RowKey": "", **ROW})
    expected = await sdk.get_entity("it's", "")
    got = await rest.get("it's", "")
    assert got is not None and dict(got) == dict(expected)
    assert got.metadata["etag"] == expected.metadata["etag"]
    assert await rest.get("nobody", "") is None


async def test_queries_page_through_and_type_rows_as_the_sdk_does(tables: tuple[Any, Any]) -> None:
    sdk, rest = tables
    partition = "it's ^0 \u00fc"
    for n in range(7):
        await sdk.upsert_entity({"PartitionKey": partition, "RowKey": f"{n:02}", "N": n, **ROW})
    await sdk.upsert_entity({"PartitionKey": "other", "RowKey": "00", **ROW})
    query = "PartitionKey eq @pk and N ge @low"
    parameters = {"pk": partition, "low": 2}
    expected = [e async for e in sdk.query_entities(query, parameters=parameters)]
    got = [e async for e in rest.query(query, parameters, results_per_page=2)]  # three pages
    assert [dict(e) for e in got] == [dict(e) for e in expected] and len(got) == 5
    assert [e.metadata["etag"] for e in got] == [e.metadata["etag"] for e in expected]
    selected = [e async for e in rest.query(query, parameters, select=["RowKey", "When"])]
    assert [dict(e) for e in selected] == [{"RowKey": f"{n:02}", "When": ROW["When"]} for n in range(2, 7)]
    assert [e async for e in rest.query("PartitionKey eq @pk", {"pk": "nobody"})] == []


async def test_table_writes_and_reads_work_over_a_sas(
    tables: tuple[Any, Any], storage_account: StorageAccount
) -> None:
    sdk, _ = tables
    assert storage_account.account_key is not None
    sas = generate_table_account_sas(
        AzureNamedKeyCredential(storage_account.account_name, storage_account.account_key),
        resource_types=TableResourceTypes(service=True, container=True, object=True),
        permission=TableAccountSasPermissions(
            read=True, write=True, delete=True, list=True, add=True, update=True
        ),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    by_sas = dataclasses.replace(storage_account, account_key=None, sas_token=sas)
    http = HttpSession(by_sas)
    try:
        rest = TableRestClient(by_sas, sdk.table_name, http)
        (etag,) = await rest.submit_transaction(
            [EntityWrite(WriteKind.INSERT, {"PartitionKey": "s", "RowKey": "a"})]
        )
        await rest.merge({"PartitionKey": "s", "RowKey": "a", "X": 1}, etag)
        row = await rest.get("s", "a")
        assert row is not None and row["X"] == 1
        assert [r["X"] async for r in rest.query("PartitionKey eq @pk", {"pk": "s"})] == [1]
    finally:
        await http.close()
