"""Control queues and the work-item queue: routing, sending, receiving.

See docs/storage-protocol.md §4 (messages), §5 (routing) and §7.5 (retries).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from durable_ext.errors import MessageFormatError
from durable_ext.history import utc_now
from durable_ext.messages import MAX_QUEUE_PAYLOAD_BYTES, MessageData
from durable_ext.storage.blobs import LargeMessageStore
from durable_ext.storage.rest import QueueRestClient

if TYPE_CHECKING:
    from durable_ext.storage.tracking import InstanceState

logger = logging.getLogger(__name__)

_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193
MAX_ABANDON_DELAY = timedelta(seconds=600)
MAX_VISIBILITY_DELAY = timedelta(days=7)
"""Azure Queues refuse longer delays; timers beyond 6 days are split into hops by the engine."""
SCHEDULED_MARGIN = timedelta(seconds=1)
"""Extra invisibility of a delayed message its sender takes in memory at the due time: the sender
hides the message for a hold when it takes it, and this margin keeps it invisible until then even
when the sender's event loop runs late, so that no poll takes a second copy first. Only a worker that
dies or gives up the partition leaves the message to the queue, and then it shows this much later."""


def fnv1a32(text: str) -> int:
    """32-bit FNV-1a over the UTF-8 bytes of ``text`` (``Fnv1aHashHelper.ComputeHash``)."""
    value = _FNV_OFFSET
    for byte in text.encode("utf-8"):
        value = ((value ^ byte) * _FNV_PRIME) & 0xFFFFFFFF
    return value


def partition_index(instance_id: str, partition_count: int) -> int:
    """The control queue index of an instance: FNV-1a of the raw instance ID, modulo the count."""
    return fnv1a32(instance_id) % partition_count


def abandon_delay(dequeue_count: int) -> timedelta:
    """Visibility back-off for a message that could not be processed: 2^n seconds, at most 600."""
    if dequeue_count > 30:
        return MAX_ABANDON_DELAY
    return min(timedelta(seconds=2**dequeue_count), MAX_ABANDON_DELAY)


def superseded(exc: HttpResponseError) -> bool:
    """Whether ``exc`` says a message was dequeued again since the pop receipt that was sent
    (Azure Queues' 400 ``PopReceiptMismatch``)."""
    return exc.status_code == 400 and getattr(exc, "error_code", None) == "PopReceiptMismatch"


@dataclass
class ReceivedMessage:
    """A dequeued message with the receipt needed to delete or abandon it."""

    data: MessageData
    queue_name: str
    message_id: str
    pop_receipt: str
    dequeue_count: int
    inserted_on: datetime | None
    next_visible_on: datetime | None
    due: datetime | None = None
    """For a delayed message this process just sent: the instant it is due (its visibility in the
    queue is that rounded up to whole seconds, plus SCHEDULED_MARGIN when its sender takes it)."""
    held: bool = False
    """Just enqueued invisible under a :class:`Handoff`'s claim, for the sender to hand over."""
    start_row: InstanceState | None = None
    """For a client's start handed over in this process: the Pending Instances row the client has just
    written for it (and won), which the first episode takes instead of reading the row back."""


class Handoff(Protocol):
    """A consumer in this process that can take a message straight from its sender.

    The message is still enqueued durably first, but invisible for the claimed time, so no poller
    (here or in another worker) sees it while the local consumer holds it; if this process dies, the
    message reappears when the claim runs out, like any message a worker dequeued and never deleted.
    """

    def claim(self, queue_name: str) -> timedelta | None:
        """Reserve room to take a message for ``queue_name`` now: the invisibility to enqueue it with,
        or None when the message should go through the queue as usual."""
        ...

    def deliver(self, message: ReceivedMessage) -> None:
        """Take a message enqueued under a claim."""
        ...

    def release(self, queue_name: str) -> None:
        """Give back a claim whose message could not be enqueued."""
        ...

    def enqueued(self, queue_name: str) -> None:
        """A visible message was just enqueued to ``queue_name``: poll it now rather than later."""
        ...

    def now(self) -> datetime:
        """The consumer's current time, that due times of delayed messages count from."""
        ...

    def schedules(self, queue_name: str) -> bool:
        """Whether a delayed message for ``queue_name`` would be taken in memory at its due time."""
        ...

    def scheduled(self, message: ReceivedMessage, due: datetime) -> None:
        """A delayed message was just enqueued: take it at ``due`` if its queue is still owned then.

        The message stays in its queue, invisible until after ``due`` (see :data:`SCHEDULED_MARGIN`),
        for whoever owns the queue then.
        """
        ...


class MessageQueue:
    """One Azure queue carrying ``MessageData`` bodies (a control queue or the work-item queue)."""

    def __init__(self, client: QueueRestClient, large_messages: LargeMessageStore) -> None:
        self._client = client
        self._large = large_messages
        self.name: str = client.queue_name

    async def send(
        self, message: MessageData, delay: timedelta | None = None, *, handoff: Handoff | None = None
    ) -> None:
        """Enqueue ``message`` durably, offloading it to a gzip blob when over 45 KiB of UTF-8.

        Messages never expire (TTL -1), as in DT.AS. With a ``handoff``, an undelayed message goes
        straight to the local consumer when it claims it (see :class:`Handoff`), or else wakes its
        poller; a delayed one is scheduled with the consumer for its due time.
        """
        received = await self.put(message, delay, handoff)
        if handoff is not None:
            self.hand_over(handoff, received)

    async def put(
        self, message: MessageData, delay: timedelta | None = None, handoff: Handoff | None = None
    ) -> ReceivedMessage:
        """Enqueue like :meth:`send`, but leave the hand-over to the caller (:meth:`hand_over`).

        Returns the message as enqueued, with the receipt that deletes it: ``held`` when it was
        enqueued under the ``handoff``'s claim, with its ``due`` time when it is delayed.
        """
        if handoff is not None and delay is not None and delay > timedelta(0):
            # Due counts from before the request, as the sender meant it; the queue's visibility
            # counts from the service's receipt, so the message never shows before it is due.
            due = handoff.now() + delay
            if handoff.schedules(self.name):
                delay = min(delay + SCHEDULED_MARGIN, MAX_VISIBILITY_DELAY)
            received = await self._put(message, delay)
            received.due = due
            return received
        hold = None if handoff is None or delay else handoff.claim(self.name)
        if handoff is None or hold is None:
            return await self._put(message, delay)
        try:
            received = await self._put(message, hold)
        except BaseException:
            handoff.release(self.name)
            raise
        received.held = True
        return received

    def hand_over(self, handoff: Handoff, received: ReceivedMessage) -> None:
        """Finish a :meth:`put`: give the held message to the consumer, schedule a delayed one with
        it, or wake its poller."""
        if received.due is not None:
            handoff.scheduled(received, received.due)
        elif received.held:
            handoff.deliver(received)
        else:
            handoff.enqueued(self.name)

    async def _put(self, message: MessageData, delay: timedelta | None) -> ReceivedMessage:
        body = message.encode()
        if len(body.encode("utf-8")) > MAX_QUEUE_PAYLOAD_BYTES:
            blob_name = message.large_message_blob_name()
            await self._large.upload(blob_name, body)
            body = MessageData.wrapper(blob_name).encode()
        visibility = 0
        if delay is not None and delay > timedelta(0):
            if delay > MAX_VISIBILITY_DELAY:
                raise ValueError(f"queue visibility delay {delay} exceeds Azure's 7-day limit")
            visibility = max(1, int(delay.total_seconds() + 0.999))
        sent = await self._client.put(body, visibility)
        return ReceivedMessage(
            data=message,
            queue_name=self.name,
            message_id=sent.message_id,
            pop_receipt=sent.pop_receipt,
            dequeue_count=1,
            inserted_on=sent.inserted_on,
            next_visible_on=sent.next_visible_on,
        )

    async def receive(self, max_messages: int, visibility_timeout: timedelta) -> list[ReceivedMessage]:
        """Dequeue up to ``max_messages`` (1-32) in one request and decode them.

        A body that cannot be decoded is abandoned with back-off and logged, not returned: DT.AS has
        no dead-letter queue and retries such messages forever.
        """
        result: list[ReceivedMessage] = []
        for raw in await self._client.get(max_messages, int(visibility_timeout.total_seconds())):
            try:
                data = MessageData.decode(raw.content)
                if data.compressed_blob_name:
                    data = MessageData.decode(await self._large.download(data.compressed_blob_name))
            except MessageFormatError as exc:
                logger.warning(
                    "queue %s: undecodable message %s (dequeue count %d) abandoned: %s",
                    self.name,
                    raw.message_id,
                    raw.dequeue_count,
                    exc,
                )
                await self._update_visibility(
                    raw.message_id, raw.pop_receipt, abandon_delay(raw.dequeue_count or 1)
                )
                continue
            result.append(
                ReceivedMessage(
                    data=data,
                    queue_name=self.name,
                    message_id=raw.message_id,
                    pop_receipt=raw.pop_receipt,
                    dequeue_count=raw.dequeue_count or 1,
                    inserted_on=raw.inserted_on,
                    next_visible_on=raw.next_visible_on,
                )
            )
        return result

    async def delete(self, message: ReceivedMessage) -> None:
        """Delete a processed message; one already gone, or dequeued again since, is logged, not raised."""
        try:
            await self._client.delete(message.message_id, message.pop_receipt)
        except ResourceNotFoundError:
            logger.info("queue %s: message %s was already gone", self.name, message.message_id)
        except HttpResponseError as exc:
            if not superseded(exc):
                raise
            self._log_superseded(message.message_id)

    def _log_superseded(self, message_id: str) -> None:
        # Its hold ran out (storage slower than a renewal) and a poll took it again: the newer copy
        # stands for it and meets the history that already records it, which drops it.
        logger.info(
            "queue %s: message %s was dequeued again; its newer copy stands for it", self.name, message_id
        )

    async def abandon(self, message: ReceivedMessage, delay: timedelta | None = None) -> None:
        """Make a message visible again after a back-off (default: by its dequeue count)."""
        wait = delay if delay is not None else abandon_delay(message.dequeue_count)
        receipt = await self._update_visibility(message.message_id, message.pop_receipt, wait)
        if receipt:
            message.pop_receipt = receipt
            message.next_visible_on = utc_now() + timedelta(seconds=int(wait.total_seconds()))

    async def renew(self, message: ReceivedMessage, hold: timedelta) -> bool:
        """Keep a held message invisible for ``hold`` from now; False if it is gone or was dequeued
        again since (its pop receipt is stale)."""
        receipt = await self._update_visibility(message.message_id, message.pop_receipt, hold)
        if not receipt:
            return False
        message.pop_receipt = receipt
        message.next_visible_on = utc_now() + hold
        return True

    async def _update_visibility(self, message_id: str, pop_receipt: str, delay: timedelta) -> str | None:
        try:
            receipt = await self._client.update_visibility(
                message_id, pop_receipt, int(delay.total_seconds())
            )
        except ResourceNotFoundError:
            logger.info("queue %s: message %s was already gone", self.name, message_id)
            return None
        except HttpResponseError as exc:
            if not superseded(exc):
                raise
            self._log_superseded(message_id)
            return None
        return receipt or None

    async def has_visible(self) -> bool:
        """Whether a message is visible in the queue now (one a poll would get)."""
        return await self._client.peek() is not None

    async def approximate_count(self) -> int:
        """The service's approximate number of messages in the queue."""
        return await self._client.approximate_count()

    async def oldest_inserted_on(self) -> datetime | None:
        """When the first visible message was enqueued (a peek, which takes nothing); None: none is
        visible (delayed messages, timers among them, and messages a worker holds are not)."""
        first = await self._client.peek()
        return None if first is None else first.inserted_on
