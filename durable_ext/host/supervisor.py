"""Keeping the Azurite that ``start`` launched alive.

Azurite is a child of the host; when it dies (killed, crashed, out of memory) every storage request
fails until someone notices. :func:`supervise` notices within a fraction of a second and starts it again
on the same ports and data directory, so instances carry on where they were. An Azurite that keeps
dying would only turn the host into a restart loop, so after a few restarts in a short window it gives
up with an :class:`~durable_ext.errors.AzuriteError` that ends the host; so does the death of an
in-memory Azurite, whose task hub went with it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from durable_ext.errors import AzuriteError
from durable_ext.host.azurite import Azurite

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RestartPolicy:
    """How often Azurite may be restarted before the host gives up."""

    limit: int = 3
    """Restarts allowed within ``window`` seconds; one more exit in that window ends the host."""
    window: float = 60.0
    check_interval: float = 0.25
    """Seconds between two looks at the process: the longest an exit goes unnoticed."""


async def supervise(
    azurite: Azurite,
    output: Callable[[str], None],
    on_restart: Callable[[], Awaitable[None]],
    policy: RestartPolicy | None = None,
) -> None:
    """Restart ``azurite`` whenever it exits, then await ``on_restart``; runs until cancelled.

    ``output`` receives one line per restart; ``on_restart`` re-creates what a killed Azurite had not
    saved yet (it saves every few seconds). Raises AzuriteError when the restart limit is exceeded, a
    restart fails, or Azurite kept its data in memory (a new one would hold none of the task hub); the
    message includes Azurite's last output.
    """
    policy = policy or RestartPolicy()
    restarts: deque[float] = deque()
    while True:
        await asyncio.sleep(policy.check_interval)
        if azurite.running:
            continue
        now = time.monotonic()
        while restarts and now - restarts[0] > policy.window:
            restarts.popleft()
        exited = f"Azurite exited unexpectedly (code {azurite.returncode})"
        if azurite.location is None:
            raise AzuriteError(
                f"{exited}; its data was in memory and is lost, so the host stops (without "
                "--azurite-in-memory it would be restarted on its data). Its last output:\n"
                f"{azurite.log_tail()}"
            )
        if len(restarts) >= policy.limit:
            raise AzuriteError(
                f"{exited} again after {policy.limit} restarts within {policy.window:g}s; stopping the "
                f"host. Its last output:\n{azurite.log_tail()}"
            )
        restarts.append(now)
        output(f"{exited}; restarting it on the same ports and data ({azurite.location})...")
        # start() blocks until the services answer; the event loop keeps serving meanwhile (with 503s).
        await asyncio.to_thread(azurite.start)
        await on_restart()
        output("Azurite is running again.")
