"""The checkpoint: what an episode planned, written in DT.AS's order (docs/storage-protocol.md §3.8).

(1) send the outbound messages, (2) append the history behind the sentinel ETag, (3) merge the
Instances row, (4) delete the blobs of a replaced execution, (5) delete the consumed messages. Steps
1 and 2 run inside the episode; 3 and 4 run behind it, one instance's writes chained in order; 5
waits for them, and when the Instances write failed the messages come back instead, so their
redelivery repairs the row. A crash between any two steps re-runs the episode from its messages, and
the sentinel ETag keeps a second commit of the same episode out of history.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from durable_ext.clock import SYSTEM_CLOCK, Clock
from durable_ext.entities import request_from_event
from durable_ext.history import EventRaisedEvent, HistoryEvent, TimerFiredEvent
from durable_ext.logs import hub_log
from durable_ext.storage.instances import INSTANCE_ENDS
from durable_ext.storage.outage import storage_health
from durable_ext.storage.queues import Handoff, ReceivedMessage
from durable_ext.storage.taskhub import TaskHub
from durable_ext.worker.session import Checkpoint

logger = logging.getLogger(__name__)

MessageAction = Callable[[ReceivedMessage], Awaitable[None]]


class Checkpointer:
    """Writes checkpoints for one dispatcher; ``delete`` and ``abandon`` settle its messages."""

    def __init__(
        self,
        hub: TaskHub,
        handoff: Handoff,
        *,
        delete: MessageAction,
        abandon: MessageAction,
        max_timer_delay: timedelta,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        """``max_timer_delay`` is the longest a message may wait in the queue before it is due;
        ``clock`` is the engine's, that due times are in."""
        self._hub = hub
        self._clock = clock
        self._max_delay = max_timer_delay
        self._handoff = handoff
        self._delete = delete
        self._abandon = abandon
        self._hub_name = hub.names.hub
        self._log = hub_log(logger, self._hub_name)
        self._storage = hub.account.describe()
        self._status_writes: dict[str, asyncio.Task[bool]] = {}
        """Each instance's latest Instances write: the next one waits for it."""

    async def commit(self, checkpoint: Checkpoint) -> asyncio.Task[bool]:
        """Steps 1 and 2; returns the task doing steps 3 and 4 (True once they succeeded)."""
        execution = checkpoint.execution
        instance_id = execution.instance_id
        outbound = checkpoint.outbound
        sent = await asyncio.gather(*(o.queue.put(o.message, o.delay, self._handoff) for o in outbound))
        assert execution.execution_id is not None
        history = asyncio.ensure_future(
            self._hub.tracking.append_history(
                instance_id,
                execution.execution_id,
                checkpoint.new_events,
                checkpoint.first_sequence_number,
                execution.etag,
            )
        )
        try:
            # One turn of the loop sends the history request before the messages are handed over:
            # an activity they start runs on a thread that would otherwise hold the interpreter lock
            # while the request waits (0.7-0.9 ms of each sequential step, benchmarks.trace).
            await asyncio.sleep(0)
        except BaseException:
            history.cancel()
            raise
        finally:
            for out, received in zip(outbound, sent, strict=True):
                out.queue.hand_over(self._handoff, received)
        execution.etag = await history
        execution.events = [*execution.events[: checkpoint.first_sequence_number], *checkpoint.new_events]
        self._log.instance(instance_id).debug(
            "checkpointed %d events, %d messages out", len(checkpoint.new_events), len(checkpoint.outbound)
        )
        # Steps 3 to 5 run behind the episode, so its concurrency slot is free for other instances;
        # the instance's next episode waits for them (the dispatcher's session loop).
        write = asyncio.create_task(
            self._write_status(instance_id, self._status_writes.get(instance_id), checkpoint)
        )
        self._status_writes[instance_id] = write
        write.add_done_callback(functools.partial(self._status_written, instance_id))
        return write

    async def finish(
        self, write: asyncio.Task[bool] | None, done: list[ReceivedMessage], abandon: list[ReceivedMessage]
    ) -> None:
        """Step 5 once the Instances write succeeded. If it failed, the episode's messages come back
        instead: their redelivery finds them in history and, where it can, repairs the row."""
        if write is not None and not await write:
            done, abandon = [], [*done, *abandon]
        await asyncio.gather(*(self._delete(m) for m in done), *(self._abandon(m) for m in abandon))

    async def rehop(self, instance_id: str, messages: list[ReceivedMessage]) -> None:
        """Send early timers and delayed signals round the queue again, towards their due time."""
        queue = self._hub.control_queue_for(instance_id)
        now = self._clock.now()
        for message in messages:
            delay = min(_due(message.data.event) - now, self._max_delay)
            await queue.send(message.data, delay, handoff=self._handoff)

    async def drain(self) -> None:
        """Wait for every Instances write in flight."""
        while self._status_writes:
            await asyncio.gather(*self._status_writes.values(), return_exceptions=True)

    def _status_written(self, instance_id: str, write: asyncio.Task[bool]) -> None:
        if self._status_writes.get(instance_id) is write:
            del self._status_writes[instance_id]

    async def _write_status(
        self, instance_id: str, previous: asyncio.Task[bool] | None, checkpoint: Checkpoint
    ) -> bool:
        """Merge the Instances row and delete replaced blobs after the previous episode's did; False
        if that failed, in which case the row lags its history until a later episode rewrites it."""
        if previous is not None:
            await previous
        try:
            await self._hub.instances.checkpointed(checkpoint.update)
            status = checkpoint.update.state.runtime_status
            if status is not None and status.is_terminal and "RuntimeStatus" in checkpoint.update.columns:
                INSTANCE_ENDS.ended(self._hub_name, instance_id)
            if checkpoint.replaced_blobs:
                await asyncio.gather(*(self._hub.large_messages.delete(b) for b in checkpoint.replaced_blobs))
        except Exception as exc:
            if not storage_health.failed(self._storage, exc):
                self._log.instance(instance_id).warning(
                    "Instances write failed; the episode's messages come back", exc_info=True
                )
            return False
        return True


def _due(event: HistoryEvent) -> datetime:
    """When an early timer or delayed entity signal is due."""
    if isinstance(event, TimerFiredEvent) and event.fire_at is not None:
        return event.fire_at
    request = request_from_event(event) if isinstance(event, EventRaisedEvent) else None
    if request is not None and request.scheduled_time is not None:
        return request.scheduled_time
    raise ValueError(f"{event.event_type.name} has no due time")
