"""The engine: one worker process's share of a task hub.

It owns partitions through the Partitions-table leases, runs orchestration episodes for the control
queues it owns and activities from the shared work-item queue. Several engines (processes or hosts)
on one hub split the partitions between them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from datetime import datetime, timedelta
from types import TracebackType

from durable_ext.app_loader import FunctionRegistry
from durable_ext.client import TaskHubClient
from durable_ext.clock import SYSTEM_CLOCK, Clock
from durable_ext.config import DurableTaskOptions
from durable_ext.executor import OrchestrationExecutor
from durable_ext.logs import hub_log
from durable_ext.monitoring.metrics import EngineCollector, WorkerMetrics
from durable_ext.monitoring.queues import SAMPLE_INTERVAL, QueueMonitor
from durable_ext.storage.queues import ReceivedMessage
from durable_ext.storage.taskhub import TaskHub
from durable_ext.worker.activities import ActivityDispatcher
from durable_ext.worker.holds import message_hold
from durable_ext.worker.orchestrations import OrchestrationDispatcher
from durable_ext.worker.partitions import PartitionManagerOptions, TablePartitionManager
from durable_ext.worker.retention import InstancePurger

logger = logging.getLogger(__name__)


def default_worker_id() -> str:
    """A lease owner name unique to this process: host name, process ID and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Engine:
    """Runs the functions of ``registry`` on ``hub``; use as ``async with Engine(...) as engine``.

    The engine is also the :class:`~durable_ext.storage.queues.Handoff` of everything sent in this
    process: pass it as ``handoff`` to a :class:`TaskHubClient` so that starts and events reach the
    engine without a queue poll.
    """

    def __init__(
        self,
        hub: TaskHub,
        registry: FunctionRegistry,
        options: DurableTaskOptions,
        *,
        worker_id: str | None = None,
        partition_options: PartitionManagerOptions | None = None,
        clock: Clock = SYSTEM_CLOCK,
        sample_interval: timedelta = SAMPLE_INTERVAL,
        executor: OrchestrationExecutor | None = None,
    ) -> None:
        """``clock`` gives orchestration time: history timestamps and when timers are due (the wall
        clock unless a test host skips time); ``sample_interval``: how long a reading of the hub's
        queues serves ``/metrics`` and ``/scale`` before storage is read again; ``executor`` runs the
        orchestrators (default: the app's Python orchestrators in process, durable_ext/replay.py)."""
        self.hub = hub
        self.worker_id = worker_id or default_worker_id()
        self.clock = clock
        """Where the engine reads orchestration time."""
        provider = options.storage_provider
        self.max_polling_interval = provider.max_queue_polling_interval
        self.metrics = WorkerMetrics()
        """This engine's Prometheus metrics (``/metrics``), in a registry of its own."""
        self.queues = QueueMonitor(hub, interval=sample_interval)
        """The hub's backlog as storage reports it, sampled on demand (``/metrics``, ``/scale``)."""
        self.orchestrations = OrchestrationDispatcher(
            hub, registry, options, handoff=self, metrics=self.metrics, clock=clock, executor=executor
        )
        self.activities = ActivityDispatcher(
            hub,
            registry,
            max_concurrency=options.max_concurrent_activity_functions,
            visibility_timeout=message_hold(provider.work_item_queue_visibility_timeout),
            max_polling_interval=provider.max_queue_polling_interval,
            handoff=self,
            results=self.orchestrations,
            metrics=self.metrics,
        )
        self.partitions = TablePartitionManager(
            hub.partitions_table(),
            self.worker_id,
            self.orchestrations,
            partition_options or PartitionManagerOptions(),
            hub_name=hub.names.hub,
            storage=hub.account.describe(),
        )
        self.draining = False
        """Set by :meth:`drain`: the engine is shutting down."""
        self.metrics.registry.register(
            EngineCollector(
                hub.requests,
                self.orchestrations.cache,
                self.queues,
                leases=lambda: len(self.orchestrations.owned),
                runs=lambda: self.orchestrations.executor.runs,
            )
        )
        first_partition = hub.control_queues[0].name
        self.purger = InstancePurger(
            TaskHubClient(hub),
            options.instance_retention,
            is_leader=lambda: first_partition in self.orchestrations.owned,
        )

    # ---- the Handoff protocol: messages sent in this process to consumers in this process -------

    def claim(self, queue_name: str) -> timedelta | None:
        """Whether this engine takes a message for ``queue_name`` straight from its sender (and how
        long to keep it invisible in the queue meanwhile)."""
        if queue_name == self.hub.names.work_item_queue:
            return self.activities.claim()
        return self.orchestrations.claim(queue_name)

    def deliver(self, message: ReceivedMessage) -> None:
        """Hand a message enqueued under :meth:`claim` to its dispatcher."""
        if message.queue_name == self.hub.names.work_item_queue:
            self.activities.deliver(message)
        else:
            self.orchestrations.deliver(message)

    def release(self, queue_name: str) -> None:
        """A claimed message could not be enqueued."""
        if queue_name == self.hub.names.work_item_queue:
            self.activities.release()

    def enqueued(self, queue_name: str) -> None:
        """Someone in this process enqueued to ``queue_name``: skip the polling back-off."""
        if queue_name == self.hub.names.work_item_queue:
            self.activities.wake()
        else:
            self.orchestrations.wake(queue_name)

    def now(self) -> datetime:
        """The engine's orchestration time (its :attr:`clock`)."""
        return self.clock.now()

    def schedules(self, queue_name: str) -> bool:
        """Whether this engine takes a delayed message for ``queue_name`` in memory at its time."""
        return self.orchestrations.scheduling.schedules(queue_name)

    def scheduled(self, message: ReceivedMessage, due: datetime) -> None:
        """A delayed message was sent in this process: take it at ``due`` if its queue is ours."""
        self.orchestrations.scheduling.schedule(message, due)

    @property
    def idle(self) -> bool:
        """Whether nothing runs in this engine: no episode, no activity, no message held."""
        return self.orchestrations.idle and self.activities.idle

    async def start(self) -> None:
        """Start taking partitions and work."""
        self.activities.start()
        await self.partitions.start()
        self.purger.start()
        hub_log(logger, self.hub.names.hub).info("engine %s started", self.worker_id)

    async def stop(self, graceful: bool = True) -> None:
        """Release partitions (finishing in-flight episodes) and stop the activity dispatcher.

        Not ``graceful``: leave the partition leases to expire instead of handing them over (for when
        storage is unreachable and a hand-over could only time out).
        """
        await self.purger.stop()
        await self.partitions.stop(graceful=graceful)
        await self.orchestrations.stop()
        await self.activities.stop()
        hub_log(logger, self.hub.names.hub).info("engine %s stopped", self.worker_id)

    async def drain(self, grace_period: timedelta, *, release: bool = True) -> bool:
        """Shut down gracefully within ``grace_period``: take no more work items, let in-flight
        episodes and activities finish, and release the partition leases, so that other workers take
        the partitions at once rather than when the leases expire (not ``release``: leave the leases
        to expire, as :meth:`stop` does when not graceful).

        False when that did not finish in time: what is left keeps running, and the caller is expected
        to end the process; the leases not yet released expire, and unfinished work items and messages
        reappear in their queues after their visibility timeout.
        """
        self.draining = True
        log = hub_log(logger, self.hub.names.hub)
        log.info("engine %s draining (grace period %s)", self.worker_id, grace_period)
        await self.activities.stop_polling()
        stopping = asyncio.create_task(self.stop(graceful=release), name=f"drain-{self.worker_id}")
        done, _ = await asyncio.wait({stopping}, timeout=grace_period.total_seconds())
        if not done:
            log.error("engine %s did not drain within %s: giving up", self.worker_id, grace_period)
            return False
        stopping.result()
        return True

    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
