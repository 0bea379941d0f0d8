"""The task hub's resources: names, create, delete, inspect (docs/storage-protocol.md §1).

One :class:`TaskHub` owns the three service clients of the account and hands out the per-resource
pieces (tracking store, queues, large-message store) that the engine works with.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.data.tables.aio import TableClient, TableServiceClient
from azure.storage.blob.aio import BlobServiceClient
from azure.storage.queue.aio import QueueClient, QueueServiceClient

from durable_ext.config import validate_hub_name
from durable_ext.errors import ConfigError, StorageError, StorageUnreachableError, TaskHubNotFoundError
from durable_ext.logs import hub_log
from durable_ext.storage.account import StorageAccount
from durable_ext.storage.blobs import LargeMessageStore
from durable_ext.storage.identity import StorageTokenCredential, TokenUnavailableError
from durable_ext.storage.instances import InstanceRows
from durable_ext.storage.partitions import PartitionLease
from durable_ext.storage.quarantine import Quarantine
from durable_ext.storage.queues import MessageQueue, partition_index
from durable_ext.storage.requests import RequestTally
from durable_ext.storage.rest import HttpSession, QueueRestClient, TableRestClient
from durable_ext.storage.tracking import TrackingStore

logger = logging.getLogger(__name__)

T = TypeVar("T")

MIN_PARTITIONS = 1
MAX_PARTITIONS = 16
# The SDK default retries a refused connection for a long time; a dead endpoint should fail fast.
_RETRY_SETTINGS: dict[str, Any] = {"retry_total": 3, "retry_backoff_factor": 0.2, "retry_backoff_max": 2}


@dataclass(frozen=True)
class TaskHubNames:
    """Every resource name of hub ``hub``: tables keep its case, queues and containers are lower-case."""

    hub: str
    partition_count: int = 4

    @property
    def history_table(self) -> str:
        """``{Hub}History``."""
        return f"{self.hub}History"

    @property
    def instances_table(self) -> str:
        """``{Hub}Instances``."""
        return f"{self.hub}Instances"

    @property
    def poison_table(self) -> str:
        """``{Hub}Poison``: quarantined messages (created on first use)."""
        return f"{self.hub}Poison"

    @property
    def partitions_table(self) -> str:
        """``{Hub}Partitions`` (table partition manager)."""
        return f"{self.hub}Partitions"

    def control_queue(self, index: int) -> str:
        """``{hub}-control-NN``."""
        return f"{self.hub.lower()}-control-{index:02d}"

    @property
    def control_queues(self) -> list[str]:
        """All control queue names, in partition order."""
        return [self.control_queue(i) for i in range(self.partition_count)]

    @property
    def work_item_queue(self) -> str:
        """``{hub}-workitems``."""
        return f"{self.hub.lower()}-workitems"

    @property
    def large_messages_container(self) -> str:
        """``{hub}-largemessages``."""
        return f"{self.hub.lower()}-largemessages"

    @property
    def app_lease_container(self) -> str:
        """``{hub}-applease``."""
        return f"{self.hub.lower()}-applease"

    @property
    def app_lease_info_blob(self) -> str:
        """``{hub}-appleaseinfo``, inside the app-lease container."""
        return f"{self.hub.lower()}-appleaseinfo"

    @property
    def leases_container(self) -> str:
        """``{hub}-leases`` (blob partition managers only; deleted with the hub if present)."""
        return f"{self.hub.lower()}-leases"


@dataclass
class ResourceInfo:
    """Whether one hub resource exists, and how many messages it holds if it is a queue."""

    kind: str
    name: str
    exists: bool
    message_count: int | None = None


@dataclass
class TaskHubInfo:
    """What :meth:`TaskHub.info` found in the storage account."""

    hub: str
    account: str
    partition_count: int
    resources: list[ResourceInfo]
    partitions: list[PartitionLease]

    @property
    def exists(self) -> bool:
        """True when the hub's core resources (tables and queues) are all there."""
        return all(r.exists for r in self.resources if r.kind in ("table", "queue"))


class TaskHub:
    """A task hub in one storage account: its resources and the clients that reach them.

    Use as ``async with TaskHub(account, "MyHub") as hub: ...``; the clients close on exit.
    """

    def __init__(self, account: StorageAccount, hub_name: str, partition_count: int = 4) -> None:
        if not MIN_PARTITIONS <= partition_count <= MAX_PARTITIONS:
            raise ConfigError(
                f"partitionCount must be between {MIN_PARTITIONS} and {MAX_PARTITIONS}, got {partition_count}"
            )
        self.requests = RequestTally()
        """Every request this hub's clients sent, by kind and answer status."""
        account = account.observed_by(self.requests)
        self.account = account
        self.names = TaskHubNames(validate_hub_name(hub_name), partition_count)
        # One credential for all the hub's clients: an identity's fetches one token for them all.
        self._credential = account.credential()
        self._tables: TableServiceClient = account.table_service(self._credential, **_RETRY_SETTINGS)
        self._queues: QueueServiceClient = account.queue_service(self._credential, **_RETRY_SETTINGS)
        self._blobs: BlobServiceClient = account.blob_service(self._credential, **_RETRY_SETTINGS)
        self.large_messages = LargeMessageStore(account, self._blobs, self.names.large_messages_container)
        self._http = HttpSession(account, account.http_trace_configs(), credential=self._credential)
        self.tracking = TrackingStore(
            self.names.hub,
            self._tables.get_table_client(self.names.history_table),
            self._tables.get_table_client(self.names.instances_table),
            self.large_messages,
            history_rest=TableRestClient(account, self.names.history_table, self._http),
            instance_rows=TableRestClient(account, self.names.instances_table, self._http),
        )
        self.instances = InstanceRows(self.tracking)
        """Every write to the Instances table, as named transitions."""
        self.quarantine = Quarantine(self._tables, self.names.poison_table, self.large_messages)
        self.control_queues = [
            MessageQueue(QueueRestClient(account, name, self._http), self.large_messages)
            for name in self.names.control_queues
        ]
        self.work_item_queue = MessageQueue(
            QueueRestClient(account, self.names.work_item_queue, self._http), self.large_messages
        )

    async def __aenter__(self) -> TaskHub:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the service clients (and an identity's credential)."""
        await asyncio.gather(
            self._tables.close(), self._queues.close(), self._blobs.close(), self._http.close()
        )
        if isinstance(self._credential, StorageTokenCredential):
            await self._credential.close()

    def partitions_table(self) -> TableClient:
        """A client for ``{Hub}Partitions`` (the partition leases); closed with the hub."""
        return self._tables.get_table_client(self.names.partitions_table)

    async def leases(self) -> list[PartitionLease]:
        """The rows of ``{Hub}Partitions`` (the partition leases), sorted by partition."""
        table = self.partitions_table()
        leases = [PartitionLease.from_entity(entity) async for entity in table.list_entities()]
        return sorted(leases, key=lambda lease: lease.partition_id)

    def queue_client(self, name: str) -> QueueClient:
        """An SDK client for one of the hub's queues (for what the REST client does not do, such as
        peeking); closed with the hub."""
        return self._queues.get_queue_client(name)

    def control_queue_for(self, instance_id: str) -> MessageQueue:
        """The control queue that owns ``instance_id`` (FNV-1a of the raw ID)."""
        return self.control_queues[partition_index(instance_id, self.names.partition_count)]

    async def _call(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        try:
            await self._http.authenticate()
            return await operation()
        except ServiceRequestError as exc:
            raise StorageUnreachableError(
                f"cannot reach Azure Storage at {self.account.describe()} while trying to {what}: "
                "is Azurite running?"
            ) from exc
        except TokenUnavailableError as exc:
            raise StorageError(
                f"cannot get a token for Azure Storage while trying to {what}: {exc.message}"
            ) from exc
        except HttpResponseError as exc:
            if exc.status_code not in (401, 403):
                raise
            raise self._refused(what, exc) from exc

    def _refused(self, what: str, exc: HttpResponseError) -> StorageError:
        if self.account.identity is not None:
            check = (
                "check that the identity has the Storage Blob, Queue and Table Data Contributor roles "
                "on the account"
            )
        else:
            check = "check the account key or SAS token in the connection string"
        return StorageError(
            f"Azure Storage at {self.account.describe()} refused the credentials while trying to {what} "
            f"(HTTP {exc.status_code}): {check}"
        )

    async def create(self) -> None:
        """Create every resource of the hub; existing ones are kept (idempotent).

        Order as DT.AS: app-lease container and info blob, the Partitions table, then tables, queues
        and the partition rows in parallel. The large-message container is created on first use.
        """
        await self._call("create the task hub", self._create)
        hub_log(logger, self.names.hub).info("created (%d partitions)", self.names.partition_count)

    async def _create(self) -> None:
        names = self.names
        container = self._blobs.get_container_client(names.app_lease_container)
        await _ignore_exists(container.create_container())
        await _ignore_exists(container.get_blob_client(names.app_lease_info_blob).upload_blob(b"{}"))
        await _ignore_exists(self._tables.create_table(names.partitions_table))
        partitions = self._tables.get_table_client(names.partitions_table)
        steps = [
            _ignore_exists(self._tables.create_table(names.history_table)),
            _ignore_exists(self._tables.create_table(names.instances_table)),
            _ignore_exists(self._queues.create_queue(names.work_item_queue)),
        ]
        for queue in names.control_queues:
            steps.append(_create_queue_and_lease(self._queues, partitions, queue))
        await asyncio.gather(*steps)

    async def delete(self) -> None:
        """Delete every resource of the hub (missing ones are skipped)."""
        await self._call("delete the task hub", self._delete)
        hub_log(logger, self.names.hub).info("deleted")

    async def _delete(self) -> None:
        names = self.names
        # Surplus control queues from a larger partition count would survive a narrow delete.
        existing = [name async for name in self._list_queue_names()]
        queues = [q for q in existing if _is_control_queue(names, q)] + [names.work_item_queue]
        steps = [_ignore_missing(self._queues.delete_queue(q)) for q in queues]
        steps += [
            _ignore_missing(self._tables.delete_table(t))
            for t in (names.history_table, names.instances_table, names.partitions_table, names.poison_table)
        ]
        steps += [
            _ignore_missing(self._blobs.delete_container(c))
            for c in (names.leases_container, names.app_lease_container, names.large_messages_container)
        ]
        await asyncio.gather(*steps)

    async def _list_queue_names(self) -> AsyncIterator[str]:
        async for queue in self._queues.list_queues(name_starts_with=f"{self.names.hub.lower()}-control-"):
            yield queue.name

    async def stored_partition_count(self) -> int:
        """How many partitions the hub was created with: its control queues (0 if it has none).

        A client that did not create the hub must route messages as its workers do.
        """

        async def count() -> int:
            return sum([1 async for name in self._list_queue_names() if _is_control_queue(self.names, name)])

        return await self._call("count the task hub's control queues", count)

    async def info(self) -> TaskHubInfo:
        """Inspect the hub: which resources exist, queue depths, partition leases."""
        return await self._call("inspect the task hub", self._info)

    async def _info(self) -> TaskHubInfo:
        names = self.names
        table_names = {t.name async for t in self._tables.list_tables()}
        container_names = {
            c.name async for c in self._blobs.list_containers(name_starts_with=names.hub.lower())
        }
        resources = [
            ResourceInfo("table", t, t in table_names)
            for t in (names.history_table, names.instances_table, names.partitions_table)
        ]
        queue_names = [*names.control_queues, names.work_item_queue]
        counts = await asyncio.gather(*(self._queue_count(q) for q in queue_names))
        resources += [
            ResourceInfo("queue", q, c is not None, c) for q, c in zip(queue_names, counts, strict=True)
        ]
        resources += [
            ResourceInfo("container", c, c in container_names)
            for c in (names.app_lease_container, names.large_messages_container)
        ]
        if names.leases_container in container_names:
            resources.append(ResourceInfo("container", names.leases_container, True))
        partitions: list[PartitionLease] = []
        if names.partitions_table in table_names:
            table = self._tables.get_table_client(names.partitions_table)
            partitions = [PartitionLease.from_entity(e) async for e in table.list_entities()]
            partitions.sort(key=lambda p: p.partition_id)
        return TaskHubInfo(names.hub, self.account.describe(), names.partition_count, resources, partitions)

    async def _queue_count(self, name: str) -> int | None:
        try:
            props = await self._queues.get_queue_client(name).get_queue_properties()
        except ResourceNotFoundError:
            return None
        return int(props.approximate_message_count or 0)

    async def require_exists(self) -> None:
        """Raise TaskHubNotFoundError naming what is missing, if the hub is incomplete."""
        info = await self.info()
        missing = [r.name for r in info.resources if r.kind in ("table", "queue") and not r.exists]
        if missing:
            raise TaskHubNotFoundError(
                f"task hub {self.names.hub!r} is missing {', '.join(missing)}; "
                "run `python -m durable_ext hub create`"
            )


async def _create_queue_and_lease(queues: QueueServiceClient, partitions: TableClient, queue: str) -> None:
    await _ignore_exists(queues.create_queue(queue))
    await _ignore_exists(partitions.create_entity(PartitionLease(queue).to_entity()))


def _is_control_queue(names: TaskHubNames, queue: str) -> bool:
    prefix = f"{names.hub.lower()}-control-"
    suffix = queue[len(prefix) :]
    return queue.startswith(prefix) and len(suffix) == 2 and suffix.isdigit()


async def _ignore_exists(operation: Awaitable[object]) -> None:
    try:
        await operation
    except ResourceExistsError:
        pass
    except HttpResponseError as exc:
        # Queues answer 409 QueueAlreadyExists only when metadata differs; tables 409 TableAlreadyExists.
        if exc.status_code != 409:
            raise


async def _ignore_missing(operation: Awaitable[object]) -> None:
    with contextlib.suppress(ResourceNotFoundError):
        await operation
