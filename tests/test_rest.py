"""The thin Queue REST client against real Azurite: the same wire format as the SDK, auth, errors, retries."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import ClientSession, web
from azure.core.exceptions import ClientAuthenticationError, ResourceNotFoundError
from azure.storage.queue import AccountSasPermissions, ResourceTypes, generate_account_sas
from azure.storage.queue.aio import QueueClient

from durable_ext.storage.account import StorageAccount
from durable_ext.storage.rest import HttpSession, QueueRestClient
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
