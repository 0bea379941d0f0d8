"""Scale (issue 18 item 6): what keeps the storage clients sound under bursts of thousands of requests."""

from __future__ import annotations

import uuid

import aiohttp

from durable_ext.storage.account import StorageAccount
from durable_ext.storage.connections import IDLE_CONNECTION_SECONDS
from durable_ext.storage.rest import HttpSession

AZURITE_KEEP_ALIVE_SECONDS = 5.0
"""Node's and Azurite's default keepAliveTimeout."""


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
