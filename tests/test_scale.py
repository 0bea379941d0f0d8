"""Scale (issue 18 item 6): what keeps a worker sound when storage is slower than its intake."""

from __future__ import annotations

import uuid
from datetime import timedelta

import aiohttp
import pytest

from durable_ext.history import utc_now
from durable_ext.messages import MessageData
from durable_ext.storage.account import StorageAccount
from durable_ext.storage.connections import IDLE_CONNECTION_SECONDS
from durable_ext.storage.queues import ReceivedMessage
from durable_ext.storage.rest import HttpSession
from durable_ext.worker import holds as holds_module
from durable_ext.worker.holds import HeldMessages

HOLD = timedelta(seconds=30)
AZURITE_KEEP_ALIVE_SECONDS = 5.0
"""Node's and Azurite's default keepAliveTimeout."""
QUEUE = "hub-control-00"


class _Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def _message(message_id: str) -> ReceivedMessage:
    return ReceivedMessage(
        data=MessageData.wrapper(message_id),
        queue_name=QUEUE,
        message_id=message_id,
        pop_receipt="receipt",
        dequeue_count=1,
        inserted_on=utc_now(),
        next_visible_on=utc_now() + HOLD,
    )


def _never_renewed(message: ReceivedMessage) -> object:
    raise AssertionError("the renewal loop is not started in this test")


async def test_held_messages_lag_once_the_oldest_needs_renewing(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(holds_module, "time", clock)
    holds = HeldMessages(HOLD, _never_renewed, hub_name="hub", storage="test")  # type: ignore[arg-type]
    first, second = _message("first"), _message("second")
    assert not holds.lagging(), "nothing held"

    holds.hold_message(first)
    clock.now += 8
    holds.hold_message(second)
    holds.hold_message(_message("first"))  # a redelivered copy keeps the time it was first taken
    assert not holds.lagging(), "held for less than a third of the hold"

    clock.now += 3
    assert holds.lagging(), "the first has been held for 11 s, more than a third of 30 s"

    await holds.release(first)
    assert not holds.lagging(), "the oldest left is held for 3 s"
    clock.now += 8
    assert holds.lagging()
    holds.forget(QUEUE)
    assert not holds.lagging(), "nothing held once the queue is given up"


async def test_storage_clients_drop_idle_connections_before_azurite_does(
    storage_account: StorageAccount,
) -> None:
    # Azurite closes a connection idle for 5 s; a pool that reused it for longer races that close
    # and, after a burst, can lose every retry of a request to "connection reset by peer".
    assert IDLE_CONNECTION_SECONDS < AZURITE_KEEP_ALIVE_SECONDS
    transport = storage_account.sdk_transport()
    async with storage_account.table_service(transport=transport) as tables:
        name = "Idle" + uuid.uuid4().hex[:8]
        await tables.create_table(name)  # opens the pool
        await tables.delete_table(name)
        assert transport.session is not None
        connector = transport.session.connector
        assert isinstance(connector, aiohttp.TCPConnector)
        assert connector._keepalive_timeout == IDLE_CONNECTION_SECONDS
    session = HttpSession(storage_account)
    try:
        pooled = session._client().connector
        assert isinstance(pooled, aiohttp.TCPConnector)
        assert pooled._keepalive_timeout == IDLE_CONNECTION_SECONDS
    finally:
        await session.close()
