"""The HTTP connection pools of the storage clients: idle connections are dropped before a server drops them.

Azurite (Node's HTTP server) closes a connection that has been idle for 5 s, while aiohttp reuses one for
up to 15 s by default. A request sent on a connection just as the server closes it fails with
"connection reset by peer"; after a burst, a pool holds many connections that went idle together, so
a next burst about 5 s later can draw several of them in a row, and exhaust the retries of one
request. Dropping idle connections after :data:`IDLE_CONNECTION_SECONDS` on the client's side avoids the
race altogether; Azure Storage keeps idle connections far longer, so there it only means reconnecting
after a pause.
"""

from __future__ import annotations

import aiohttp
from azure.core.pipeline.transport import AioHttpTransport

IDLE_CONNECTION_SECONDS = 3.0
"""How long an idle pooled connection may be reused: below Azurite's 5 s keep-alive timeout."""


def storage_connector() -> aiohttp.TCPConnector:
    """A connection pool for storage requests (call it with the event loop running)."""
    return aiohttp.TCPConnector(keepalive_timeout=IDLE_CONNECTION_SECONDS)


class PooledTransport(AioHttpTransport):  # type: ignore[misc]
    """The SDKs' aiohttp transport, with its session opened on :func:`storage_connector`."""

    session: aiohttp.ClientSession | None
    _session_owner: bool
    _has_been_opened: bool
    _use_env_settings: bool

    async def open(self) -> None:
        """Open the session as the plain transport does, on a pool that drops idle connections early."""
        if self.session is None and self._session_owner and not self._has_been_opened:
            self.session = aiohttp.ClientSession(
                trust_env=self._use_env_settings,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                connector=storage_connector(),
            )
        await super().open()
