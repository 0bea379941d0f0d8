"""Instance retention: ended instances are purged a while after they end.

Durable Functions on Azure Storage keeps history for ever unless someone purges it. With
``extensions.durableTask.instanceRetention`` in host.json, the engine does it: every
``purgeInterval`` it purges the Completed, Failed and Terminated instances whose CompletedTime is
older than that status's retention (history rows, large-message blobs, then the Instances row).

Several workers can share a hub; only the one holding the first control queue's lease purges, so
the work is done once and moves with the lease when that worker stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import timedelta

from durable_ext.client import TaskHubClient
from durable_ext.config import InstanceRetentionOptions
from durable_ext.history import OrchestrationStatus, utc_now
from durable_ext.logs import hub_log
from durable_ext.storage.outage import storage_health

logger = logging.getLogger(__name__)

LEADER_CHECK_SECONDS = 5.0
"""How often a worker that does not hold the first partition looks whether it has got it."""


class InstancePurger:
    """Runs the retention policy in the background while the engine runs."""

    def __init__(
        self,
        client: TaskHubClient,
        options: InstanceRetentionOptions,
        *,
        is_leader: Callable[[], bool],
    ) -> None:
        self._client = client
        self._options = options
        self._is_leader = is_leader
        self._hub_name = client.hub.names.hub
        self._log = hub_log(logger, self._hub_name)
        self._storage = client.hub.account.describe()
        self._task: asyncio.Task[None] | None = None
        self._retentions: list[tuple[OrchestrationStatus, timedelta]] = [
            (status, retention)
            for status, retention in (
                (OrchestrationStatus.Completed, options.completed),
                (OrchestrationStatus.Failed, options.failed),
                (OrchestrationStatus.Terminated, options.terminated),
            )
            if retention is not None
        ]

    def start(self) -> None:
        """Begin purging every interval (nothing happens when no retention is configured)."""
        if self._retentions and self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"retention-{self._hub_name}")

    async def stop(self) -> None:
        """Stop the background loop, waiting for a purge in progress to be cancelled."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def purge_once(self) -> int:
        """Apply the policy now, whatever the lease; returns how many instances were purged."""
        now = utc_now()
        purged = 0
        for status, retention in self._retentions:
            purged += await self._client.purge_ended_before(status, now - retention)
        return purged

    async def _run(self) -> None:
        interval = self._options.purge_interval.total_seconds()
        while True:
            if not self._is_leader():
                # Leases move at any time; looking again soon means a new leader purges soon.
                await asyncio.sleep(min(interval, LEADER_CHECK_SECONDS))
                continue
            try:
                await self.purge_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Storage hiccups must not end the loop: the next round tries again.
                if not storage_health.failed(self._storage, exc):
                    self._log.exception("purging ended instances failed; retrying later")
            else:
                storage_health.succeeded(self._storage)
            await asyncio.sleep(interval)
