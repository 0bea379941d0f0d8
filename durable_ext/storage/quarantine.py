"""Poison messages: the ``{Hub}Poison`` table that takes them out of circulation.

A message whose episode or activity keeps failing to complete would otherwise come back for ever (DT.AS
retries such messages indefinitely, growing the queue backlog). Once a message has been dequeued more
than :data:`POISON_DEQUEUE_COUNT` times and fails again, the engine stores it here and deletes it
from its queue; ``python -m durable_ext doctor`` lists the quarantined messages and ``--fix`` puts
them back into the queue they came from. The table is created on first use and named as the poison
table of DT.AS's poison-message work (``<TaskHubName>Poison``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableServiceClient

from durable_ext.history import utc_now
from durable_ext.messages import MessageData
from durable_ext.storage.blobs import LargeMessageStore
from durable_ext.storage.keys import blob_prefix, escape_partition_key
from durable_ext.storage.queues import MessageQueue, ReceivedMessage
from durable_ext.storage.tracking import MAX_PROPERTY_BYTES, utf16_size

logger = logging.getLogger(__name__)

POISON_DEQUEUE_COUNT = 5
"""A message dequeued more often than this that fails once more is quarantined (DT.AS's default)."""


@dataclass(frozen=True)
class QuarantinedMessage:
    """One row of the poison table: the message, where it came from and why it was taken out."""

    instance_id: str
    message_id: str
    queue_name: str
    event_type: str
    dequeue_count: int
    reason: str
    quarantined_at: datetime | None
    data: MessageData


class Quarantine:
    """The task hub's poison table; every write is an idempotent upsert keyed by the queue message."""

    def __init__(self, tables: TableServiceClient, table_name: str, large: LargeMessageStore) -> None:
        self.table_name = table_name
        self._tables = tables
        self._table = tables.get_table_client(table_name)
        self._large = large
        self._created = False

    async def add(self, message: ReceivedMessage, reason: str) -> None:
        """Store ``message``; the caller deletes it from its queue afterwards.

        The row comes first: a crash before the queue delete brings the message back, and
        quarantining it again rewrites the same row.
        """
        await self._ensure_table()
        body = message.data.encode()
        entity: dict[str, Any] = {
            "PartitionKey": escape_partition_key(message.data.instance_id),
            "RowKey": message.message_id,
            "InstanceId": message.data.instance_id,
            "Queue": message.queue_name,
            "EventType": message.data.event.event_type.name,
            "DequeueCount": message.dequeue_count,
            "Reason": reason[:_REASON_CHARS],
            "QuarantinedAt": utc_now(),
            "Message": body,
        }
        if utf16_size(body) > MAX_PROPERTY_BYTES:
            blob_name = f"{blob_prefix(message.data.instance_id)}/poison-{message.message_id}.json.gz"
            await self._large.upload(blob_name, body)
            entity["Message"] = ""
            entity["MessageBlobName"] = blob_name
        await self._table.upsert_entity(entity, mode=UpdateMode.REPLACE)

    async def list(self) -> AsyncIterator[QuarantinedMessage]:
        """Every quarantined message (none when the table was never created)."""
        try:
            async for entity in self._table.list_entities():
                yield await self._read(entity)
        except ResourceNotFoundError:
            return

    async def requeue(self, quarantined: QuarantinedMessage, queue: MessageQueue) -> None:
        """Put a quarantined message back into ``queue`` and forget it (send first: nothing is lost)."""
        await queue.send(quarantined.data)
        pk = escape_partition_key(quarantined.instance_id)
        await self._table.delete_entity(pk, quarantined.message_id)
        logger.info(
            "instance %s: quarantined message %s put back into %s",
            quarantined.instance_id,
            quarantined.message_id,
            queue.name,
        )

    async def _read(self, entity: Any) -> QuarantinedMessage:
        blob_name = entity.get("MessageBlobName")
        body = await self._large.download(blob_name) if blob_name else entity["Message"]
        return QuarantinedMessage(
            instance_id=entity["InstanceId"],
            message_id=entity["RowKey"],
            queue_name=entity["Queue"],
            event_type=entity.get("EventType", ""),
            dequeue_count=int(entity.get("DequeueCount") or 0),
            reason=entity.get("Reason", ""),
            quarantined_at=entity.get("QuarantinedAt"),
            data=MessageData.decode(body),
        )

    async def _ensure_table(self) -> None:
        if self._created:
            return
        with contextlib.suppress(ResourceExistsError):
            await self._tables.create_table(self.table_name)
        self._created = True


_REASON_CHARS = 8_000
"""Reasons carry stack traces; the rest of a long one is in the log."""
