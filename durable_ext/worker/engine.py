"""The engine: one worker process's share of a task hub.

It owns partitions through the Partitions-table leases, runs orchestration episodes for the control
queues it owns and activities from the shared work-item queue. Several engines (processes or hosts)
on one hub split the partitions between them.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from types import TracebackType

from durable_ext.client import TaskHubClient
from durable_ext.config import DurableTaskOptions
from durable_ext.host.app_loader import FunctionRegistry
from durable_ext.storage.taskhub import TaskHub
from durable_ext.worker.activities import ActivityDispatcher
from durable_ext.worker.orchestrations import OrchestrationDispatcher
from durable_ext.worker.partitions import PartitionManagerOptions, TablePartitionManager
from durable_ext.worker.retention import InstancePurger

logger = logging.getLogger(__name__)


def default_worker_id() -> str:
    """A lease owner name unique to this process: host name, process ID and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Engine:
    """Runs the functions of ``registry`` on ``hub``; use as ``async with Engine(...) as engine``."""

    def __init__(
        self,
        hub: TaskHub,
        registry: FunctionRegistry,
        options: DurableTaskOptions,
        *,
        worker_id: str | None = None,
        partition_options: PartitionManagerOptions | None = None,
    ) -> None:
        self.hub = hub
        self.worker_id = worker_id or default_worker_id()
        provider = options.storage_provider
        self.orchestrations = OrchestrationDispatcher(
            hub, registry, options, on_work_item=self._wake_activities
        )
        self.activities = ActivityDispatcher(
            hub,
            registry,
            max_concurrency=options.max_concurrent_activity_functions,
            visibility_timeout=provider.work_item_queue_visibility_timeout,
            max_polling_interval=provider.max_queue_polling_interval,
            on_control_message=self.orchestrations.wake,
        )
        self.partitions = TablePartitionManager(
            hub.partitions_table(),
            self.worker_id,
            self.orchestrations,
            partition_options or PartitionManagerOptions(),
            hub_name=hub.names.hub,
        )
        first_partition = hub.control_queues[0].name
        self.purger = InstancePurger(
            TaskHubClient(hub),
            options.instance_retention,
            is_leader=lambda: first_partition in self.orchestrations.owned,
        )

    def _wake_activities(self) -> None:
        self.activities.wake()

    def notify_enqueued(self, queue_name: str) -> None:
        """Someone in this process enqueued to ``queue_name``: skip the polling back-off."""
        if queue_name == self.hub.names.work_item_queue:
            self.activities.wake()
        else:
            self.orchestrations.wake(queue_name)

    async def start(self) -> None:
        """Start taking partitions and work."""
        self.activities.start()
        await self.partitions.start()
        self.purger.start()
        logger.info("hub %s: engine %s started", self.hub.names.hub, self.worker_id)

    async def stop(self) -> None:
        """Release partitions (finishing in-flight episodes) and stop the activity dispatcher."""
        await self.purger.stop()
        await self.partitions.stop(graceful=True)
        await self.orchestrations.stop()
        await self.activities.stop()
        logger.info("hub %s: engine %s stopped", self.hub.names.hub, self.worker_id)

    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
