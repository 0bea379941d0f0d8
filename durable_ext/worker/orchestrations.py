"""The control-queue dispatcher: orchestration episodes and their checkpoints.

See docs/storage-protocol.md §3.8 (checkpoint) and §6 (partitions and polling).

For every owned control queue a loop dequeues batches, groups the messages per instance and runs one
episode per instance at a time: load history, decide what each message means, replay the orchestrator,
then checkpoint in DT.AS's order: (1) send outbound messages, (2) write history behind the sentinel
ETag, (3) merge the Instances row, (4) delete blobs of a replaced execution, (5) delete the consumed
messages. A crash between any two steps re-runs the episode from the messages, and the sentinel ETag
keeps a second commit of the same episode out of history.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
import traceback
import uuid
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from durable_ext.config import DurableTaskOptions
from durable_ext.entities import (
    EntityBatchResult,
    EntityRequest,
    SchedulerState,
    delivery_event,
    entity_status_json,
    event_sent_for_call,
    parse_entity_instance_id,
    request_from_event,
    response_event,
    run_entity_batch,
)
from durable_ext.errors import OwnershipLostError
from durable_ext.executor import (
    ActionKind,
    ExecutionRequest,
    NonDeterminismError,
    OrchestrationExecutor,
    OrchestratorRun,
    ScheduledAction,
    new_actions,
    order_new_events,
    scheduling_event,
)
from durable_ext.history import (
    ContinueAsNewEvent,
    EventRaisedEvent,
    EventSentEvent,
    ExecutionCompletedEvent,
    ExecutionRewoundEvent,
    ExecutionStartedEvent,
    ExecutionTerminatedEvent,
    FailureDetails,
    GenericEvent,
    HistoryEvent,
    OrchestrationInstance,
    OrchestrationStatus,
    OrchestratorCompletedEvent,
    OrchestratorStartedEvent,
    ParentInstance,
    SubOrchestrationInstanceCompletedEvent,
    SubOrchestrationInstanceFailedEvent,
    TaskScheduledEvent,
    TimerFiredEvent,
    utc_now,
)
from durable_ext.host.app_loader import FunctionKind, FunctionRegistry
from durable_ext.messages import MessageData, TaskMessage
from durable_ext.replay import DfOrchestrationExecutor
from durable_ext.storage.instances import QUARANTINE_MARK, RowUpdate, entity_update, update_from_history
from durable_ext.storage.outage import storage_health
from durable_ext.storage.quarantine import POISON_DEQUEUE_COUNT
from durable_ext.storage.queues import Handoff, MessageQueue, ReceivedMessage
from durable_ext.storage.taskhub import TaskHub
from durable_ext.storage.tracking import InstanceState
from durable_ext.worker.backoff import BackoffPolling
from durable_ext.worker.holds import HeldMessages, message_hold
from durable_ext.worker.rewind import rewind_history
from durable_ext.worker.triage import Decisions, History, triage

logger = logging.getLogger(__name__)

MAX_TIMER_HOP = timedelta(days=6)
"""Longest queue delay of a timer message; longer timers hop (Azure Queues cap delays at 7 days)."""
_RECENT_REQUESTS_KEY = "durableExtRecentRequests"
"""Member of the entity scheduler's ``sorter`` listing request IDs already applied (.NET ignores it)."""
_RECENT_REQUESTS_KEPT = 1000
"""Enough to cover the batches whose messages a crash can leave undeleted."""
SMALL_EPISODE_MESSAGES = 4
"""Episodes with at most this many messages make the instance's next episode wait for their deletes."""
DIRECT_RESULTS_BUFFER_FACTOR = 4
"""How many times controlQueueBufferThreshold messages may be buffered once results arrive in memory."""
SESSION_CACHE_INSTANCES = 1000
SESSION_CACHE_EVENTS = 100_000
"""Bounds of the histories kept in memory between episodes (a few tens of MB at most)."""
MAX_GENERATIONS_PER_WORK_ITEM = 20
"""Continue-as-new generations run back to back before the rest goes through the queue again."""


@dataclass
class _Execution:
    """The in-memory state of an instance's current execution."""

    instance_id: str
    execution_id: str | None
    events: list[HistoryEvent]
    etag: str | None
    blob_names: list[str] = field(default_factory=list)
    memo: object = field(default=None, compare=False, repr=False)
    """What the executor keeps between this execution's episodes (see ``OrchestrationExecutor``)."""

    @property
    def started(self) -> ExecutionStartedEvent | None:
        return next((e for e in self.events if isinstance(e, ExecutionStartedEvent)), None)

    @property
    def completed(self) -> ExecutionCompletedEvent | None:
        return next((e for e in self.events if isinstance(e, ExecutionCompletedEvent)), None)


@dataclass
class _Outbound:
    queue: MessageQueue
    message: MessageData
    delay: timedelta | None = None


@dataclass
class _EpisodeResult:
    """History events and Instances update of one replay."""

    new_events: list[HistoryEvent]
    update: RowUpdate
    unconsumed_events: list[int]
    """Indexes into the execution's events (past, then this episode's) of external events no task took."""

    @property
    def continued_as_new(self) -> bool:
        return any(isinstance(e, ContinueAsNewEvent) for e in self.new_events)


@dataclass
class _Checkpoint:
    """Everything one episode writes."""

    execution: _Execution
    new_events: list[HistoryEvent]
    first_sequence_number: int
    outbound: list[_Outbound]
    update: RowUpdate
    replaced_blobs: list[str]


class SessionCache:
    """Executions kept in memory between episodes, bounded in instances, events and idle time.

    Every episode would otherwise re-read the instance's whole history. A stale entry is harmless:
    its sentinel ETag no longer matches, the commit fails with :class:`OwnershipLostError`, and the
    episode is re-run from storage.
    """

    def __init__(self, max_entries: int, max_events: int, idle_timeout: timedelta) -> None:
        self._entries: OrderedDict[str, tuple[float, _Execution]] = OrderedDict()
        self._max = max(1, max_entries)
        self._max_events = max_events
        self._events = 0
        self._idle = idle_timeout.total_seconds()

    def take(self, instance_id: str) -> _Execution | None:
        """Remove and return the instance's execution if it has not been idle too long."""
        entry = self._entries.pop(instance_id, None)
        if entry is None:
            return None
        self._events -= len(entry[1].events)
        return entry[1] if time.monotonic() - entry[0] <= self._idle else None

    def put(self, execution: _Execution) -> None:
        """Keep ``execution``, evicting the least recently used entries beyond the bounds."""
        self.drop(execution.instance_id)
        self._entries[execution.instance_id] = (time.monotonic(), execution)
        self._events += len(execution.events)
        while len(self._entries) > self._max or (self._events > self._max_events and len(self._entries) > 1):
            _, (_, evicted) = self._entries.popitem(last=False)
            self._events -= len(evicted.events)

    def drop(self, instance_id: str) -> None:
        """Forget an instance (its partition moved, or its episode failed)."""
        entry = self._entries.pop(instance_id, None)
        if entry is not None:
            self._events -= len(entry[1].events)

    def __len__(self) -> int:
        return len(self._entries)


class OrchestrationDispatcher:
    """Runs orchestration episodes for the control queues this worker owns.

    Implements the partition manager's listener protocol (``start_listening`` / ``stop_listening``).
    """

    def __init__(
        self,
        hub: TaskHub,
        registry: FunctionRegistry,
        options: DurableTaskOptions,
        *,
        handoff: Handoff,
        executor: OrchestrationExecutor | None = None,
    ) -> None:
        """``handoff`` routes outbound messages to consumers in this process (the engine);
        ``executor`` runs orchestrators (default: the app's Python orchestrators, in process)."""
        self._hub = hub
        self._registry = registry
        self._executor = executor or DfOrchestrationExecutor(registry)
        self._options = options
        self._provider = options.storage_provider
        self._handoff = handoff
        self._hub_name = hub.names.hub
        self._storage = hub.account.describe()
        self._queues = {q.name: q for q in hub.control_queues}
        self._loops: dict[str, asyncio.Task[None]] = {}
        self._backoffs: dict[str, BackoffPolling] = {}
        self._sessions: dict[str, asyncio.Task[None]] = {}
        self._pending: dict[str, list[ReceivedMessage]] = {}
        self._session_queue: dict[str, str] = {}
        self._slots = asyncio.Semaphore(options.max_concurrent_orchestrator_functions)
        # Replays run on their own thread: a long history keeps the CPU busy for tens of milliseconds,
        # and the event loop must go on moving messages meanwhile. One thread, so that replays do not
        # also compete with each other for the interpreter.
        self._replays = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"replay-{hub.names.hub}")
        self._background: set[asyncio.Task[Any]] = set()
        self._status_writes: dict[str, asyncio.Task[bool]] = {}
        self._finishing: dict[str, asyncio.Task[Any]] = {}
        """Each instance's last checkpoint steps 3-5 in flight; its next episode starts after them."""
        """Each instance's latest Instances write in flight; the next one waits for it."""
        """Deletes of consumed messages and similar clean-up that need not hold up the next episode."""
        self._buffered = 0
        self._room = asyncio.Event()
        """Set while the buffer is below controlQueueBufferThreshold; throttled pollers wait for it."""
        self._room.set()
        self._holds = HeldMessages(
            message_hold(self._provider.control_queue_visibility_timeout),
            self._queue_of,
            hub_name=hub.names.hub,
            storage=hub.account.describe(),
        )
        self._cache = SessionCache(
            max_entries=SESSION_CACHE_INSTANCES,
            max_events=SESSION_CACHE_EVENTS,
            idle_timeout=timedelta(seconds=options.extended_session_idle_timeout_in_seconds),
        )

    @property
    def owned(self) -> frozenset[str]:
        """Control queues being polled."""
        return frozenset(self._loops)

    def wake(self, queue_name: str) -> None:
        """This process just enqueued to ``queue_name``: poll it now if we own it."""
        backoff = self._backoffs.get(queue_name)
        if backoff is not None:
            backoff.wake()

    def claim(self, queue_name: str) -> timedelta | None:
        """The visibility to enqueue a message to ``queue_name`` with, if this worker takes it itself.

        Only for an owned control queue whose buffer has room, as if the message had been dequeued.
        """
        if not self._has_room(queue_name, self._provider.control_queue_buffer_threshold):
            return None
        return self._holds.hold

    def _has_room(self, queue_name: str, limit: int) -> bool:
        """Whether this worker owns ``queue_name`` and holds fewer than ``limit`` messages."""
        return queue_name in self._loops and self._buffered < limit

    def deliver(self, message: ReceivedMessage) -> None:
        """Take a message enqueued under :meth:`claim`, as if a poll had returned it."""
        if message.queue_name in self._loops:
            self._dispatch(message.queue_name, [message])
            return
        # The partition moved away meanwhile: make the message visible to its new owner now.
        queue = self._queues[message.queue_name]
        self._in_background(message.data.instance_id, queue.abandon(message, delay=timedelta(0)))

    def take_result(self, queue_name: str, work_item: ReceivedMessage, result: MessageData) -> bool:
        """Take an activity's result straight from the activity dispatcher of this process.

        Instead of a control-queue message (a send now, a delete later) the result travels in memory,
        and the work item itself stands for it: the episode that records the result in history deletes
        the work item, and until then it stays invisible in its queue. If this worker dies first, the
        work item reappears and the activity runs again, as activities are at-least-once anyway.
        False when this worker does not own the orchestration's control queue (or its buffer is full):
        then the result goes through the queue.
        """
        # Results are made at the pace activities finish, so they may fill the buffer beyond what a
        # poll would prefetch; past this bound they wait in the queue instead of in memory.
        limit = DIRECT_RESULTS_BUFFER_FACTOR * self._provider.control_queue_buffer_threshold
        if not self._has_room(queue_name, limit):
            return False
        direct = dataclasses.replace(work_item, data=result, dequeue_count=1, inserted_on=utc_now())
        self._dispatch(queue_name, [direct])
        return True

    def _in_background(self, instance_id: str, work: Coroutine[Any, Any, Any]) -> asyncio.Task[None]:
        task = asyncio.create_task(self._log_failure(instance_id, work))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _log_failure(self, instance_id: str, work: Coroutine[Any, Any, Any]) -> None:
        try:
            await work
        except Exception as exc:
            # A message left undeleted comes back after its visibility timeout and is discarded then.
            if not storage_health.failed(self._storage, exc):
                logger.warning(
                    "hub %s instance %s: queue clean-up failed", self._hub_name, instance_id, exc_info=True
                )

    async def _drain_background(self) -> None:
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    async def start_listening(self, partition_id: str) -> None:
        """Begin dequeuing a control queue."""
        if partition_id in self._loops or partition_id not in self._queues:
            return
        self._backoffs[partition_id] = BackoffPolling(self._provider.max_queue_polling_interval)
        self._holds.start()
        self._loops[partition_id] = asyncio.create_task(
            self._poll(self._queues[partition_id]), name=f"control-{partition_id}"
        )
        logger.info("hub %s: listening on %s", self._hub_name, partition_id)

    async def stop_listening(self, partition_id: str) -> None:
        """Stop dequeuing a control queue and wait for its in-flight episodes."""
        loop = self._loops.pop(partition_id, None)
        self._backoffs.pop(partition_id, None)
        if loop is not None:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        running = [t for i, t in self._sessions.items() if self._session_queue.get(i) == partition_id]
        if running:
            await asyncio.gather(*running, return_exceptions=True)
        await self._drain_background()
        for instance_id in [i for i, q in self._session_queue.items() if q == partition_id]:
            self._cache.drop(instance_id)
        self._holds.forget(partition_id)
        logger.info("hub %s: stopped listening on %s", self._hub_name, partition_id)

    async def stop(self) -> None:
        """Stop every loop and wait for in-flight episodes."""
        for partition_id in list(self._loops):
            await self.stop_listening(partition_id)
        await self._drain_background()
        await self._holds.stop()
        self._replays.shutdown(wait=False)

    # ---- polling ----------------------------------------------------------------------------

    async def _poll(self, queue: MessageQueue) -> None:
        backoff = self._backoffs[queue.name]
        while True:
            if self._buffered >= self._provider.control_queue_buffer_threshold:
                # Not a back-off: the queue is not empty, this worker is full. Poll again as soon as
                # episodes have made room.
                self._room.clear()
                await self._room.wait()
                continue
            try:
                messages = await queue.receive(self._provider.control_queue_batch_size, self._holds.hold)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not storage_health.failed(self._storage, exc):
                    logger.exception("hub %s: polling %s failed", self._hub_name, queue.name)
                await backoff.wait()
                continue
            if not messages:
                await backoff.wait()
                continue
            backoff.reset()
            self._dispatch(queue.name, messages)

    def _dispatch(self, queue_name: str, messages: Sequence[ReceivedMessage]) -> None:
        ordered = sorted(messages, key=lambda m: (m.inserted_on or utc_now(), m.data.sequence_number))
        for message in ordered:
            self._holds.hold_message(message)
            instance_id = message.data.instance_id
            pending = self._pending.setdefault(instance_id, [])
            # A redelivered copy (new pop receipt) replaces the one we hold.
            kept = [m for m in pending if m.message_id != message.message_id]
            self._buffered += 1 - (len(pending) - len(kept))
            pending[:] = [*kept, message]
            self._session_queue[instance_id] = queue_name
            if instance_id not in self._sessions:
                task = asyncio.create_task(self._run_session(instance_id), name=f"session-{instance_id}")
                self._sessions[instance_id] = task

    async def _run_session(self, instance_id: str) -> None:
        try:
            while self._pending.get(instance_id):
                finishing = self._finishing.pop(instance_id, None)
                if finishing is not None:
                    # Messages that arrive meanwhile join the next episode instead of each making one.
                    await asyncio.wait([finishing])
                batch = self._pending.pop(instance_id)
                async with self._slots:
                    later = await self._episode(instance_id, batch)
                self._buffered -= len(batch) - len(later)
                if self._buffered < self._provider.control_queue_buffer_threshold:
                    self._room.set()
                if later:
                    self._pending.setdefault(instance_id, [])[:0] = later
        finally:
            self._sessions.pop(instance_id, None)

    # ---- one episode --------------------------------------------------------------------------

    async def _episode(self, instance_id: str, messages: list[ReceivedMessage]) -> list[ReceivedMessage]:
        """Process one batch for one instance; returns messages kept for the next episode."""
        try:
            row = None if instance_id.startswith("@") else await self._start_row(instance_id, messages)
            known = self._cache.take(instance_id) or _first_execution(instance_id, messages, row)
            if known is not None:
                try:
                    return await self._attempt(known, messages, row)
                except OwnershipLostError:
                    # The history changed behind the cache (a purge, another worker) or was not empty
                    # after all: once more from storage.
                    logger.info(
                        "hub %s instance %s: history in memory was stale; reloading",
                        self._hub_name,
                        instance_id,
                    )
            return await self._attempt(await self._load(instance_id), messages, row)
        except OwnershipLostError:
            await asyncio.gather(*(self._abandon(m) for m in messages), return_exceptions=True)
            return []
        except Exception as exc:
            poison: list[ReceivedMessage] = []
            if not storage_health.failed(self._storage, exc):
                logger.exception(
                    "hub %s instance %s: episode failed; messages abandoned", self._hub_name, instance_id
                )
                poison = [m for m in messages if m.dequeue_count > POISON_DEQUEUE_COUNT]
            if poison:
                await self._quarantine(instance_id, poison, exc)
            rest = [m for m in messages if m not in poison]
            await asyncio.gather(*(self._abandon(m) for m in rest), return_exceptions=True)
            return []

    async def _quarantine(self, instance_id: str, poison: list[ReceivedMessage], exc: Exception) -> None:
        """Take messages that keep failing their episode out of the queue; the row says why.

        Only a genuine failure (not a storage outage) of a message already dequeued more than
        POISON_DEQUEUE_COUNT times gets here. The Instances row turns Failed with the reason, and
        turns back as soon as a later episode of the instance succeeds (e.g. after ``doctor --fix``
        put the message back).
        """
        reason = (
            f"{QUARANTINE_MARK} {len(poison)} message(s) of this instance in table "
            f"{self._hub.quarantine.table_name} after they failed {POISON_DEQUEUE_COUNT}+ times "
            f"(last error: {type(exc).__name__}: {exc}); see `python -m durable_ext doctor`"
        )
        try:
            for message in poison:
                await self._hub.quarantine.add(message, "".join(traceback.format_exception(exc)))
                await self._delete(message)
            await self._hub.instances.quarantined(instance_id, reason)
        except Exception:
            logger.warning(
                "hub %s instance %s: quarantine failed", self._hub_name, instance_id, exc_info=True
            )
            return
        logger.error("hub %s instance %s: %s", self._hub_name, instance_id, reason)

    def _queue_of(self, message: ReceivedMessage) -> MessageQueue:
        """The queue holding ``message``: a control queue, or the work-item queue for a direct result."""
        return self._queues.get(message.queue_name) or self._hub.work_item_queue

    async def _abandon(self, message: ReceivedMessage) -> None:
        await self._holds.release(message)
        await self._queue_of(message).abandon(message)

    async def _delete(self, message: ReceivedMessage) -> None:
        await self._holds.release(message)
        await self._queue_of(message).delete(message)

    async def _attempt(
        self, execution: _Execution, messages: list[ReceivedMessage], row: InstanceState | None
    ) -> list[ReceivedMessage]:
        instance_id = execution.instance_id
        if instance_id.startswith("@"):
            decisions, checkpoint = self._plan_entity(execution, messages)
        else:
            history = History(instance_id, execution.execution_id, execution.events)
            decisions = triage(
                history,
                messages,
                row,
                now=utc_now(),
                replay_terminal=self._provider.allow_replaying_terminal_instances,
                hub_name=self._hub_name,
            )
            checkpoint = (
                await asyncio.get_running_loop().run_in_executor(
                    self._replays, self._plan, execution, decisions
                )
                if decisions.consume
                else None
            )
        status_write: asyncio.Task[bool] | None = None
        if checkpoint is not None:
            status_write = await self._commit(checkpoint)
            self._cache.put(checkpoint.execution)
        elif decisions.terminated_before_start is not None:
            await self._terminate_pending(instance_id, decisions.terminated_before_start)
        elif decisions.repair:
            await self._hub.instances.repaired(instance_id, execution.execution_id, execution.events)
        await self._rehop(instance_id, decisions.rehop)
        # Only after the Instances write (docs/storage-protocol.md §3.8 step 5), but the next
        # episode need not wait for it.
        done = [*decisions.consume, *decisions.discard, *decisions.rehop]
        if done or decisions.abandon:
            finish = self._in_background(instance_id, self._finish(status_write, done, decisions.abandon))
            # The next episode waits for the deletes of a small episode, so that messages arriving one
            # by one pile up into fewer episodes; a large one's deletes take longer than that saves.
            small = len(done) + len(decisions.abandon) <= SMALL_EPISODE_MESSAGES
            waited = finish if small or status_write is None else status_write
            self._finishing[instance_id] = waited
        return decisions.later

    async def _terminate_pending(self, instance_id: str, event: ExecutionTerminatedEvent) -> None:
        """Mark a never-started instance Terminated; its start message, if it comes, will not run."""
        if await self._hub.instances.terminated_before_start(instance_id, event):
            logger.info("hub %s instance %s: terminated before it started", self._hub_name, instance_id)

    async def _load(self, instance_id: str) -> _Execution:
        load = await self._hub.tracking.load_history(instance_id)
        return _Execution(instance_id, load.execution_id, load.events, load.etag, load.blob_names)

    async def _start_row(self, instance_id: str, messages: list[ReceivedMessage]) -> InstanceState | None:
        """The Instances row, when the batch holds a client's start that must be checked against it."""
        if any(
            isinstance(m.data.event, ExecutionStartedEvent) and m.data.event.parent_instance is None
            for m in messages
        ):
            return await self._hub.tracking.get_instance(instance_id, fetch_large_values=False)
        return None

    def _plan(self, execution: _Execution, decisions: Decisions) -> _Checkpoint:
        now = utc_now()
        incoming = [m.data.event for m in decisions.consume]
        start = next((e for e in incoming if isinstance(e, ExecutionStartedEvent)), None)
        others = [e for e in incoming if not isinstance(e, ExecutionStartedEvent)]
        replaced_blobs: list[str] = []
        outbound: list[_Outbound] = []
        carried: list[HistoryEvent] = []
        """Events of the execution that the episode rewrites from row 0 (a rewind's kept history)."""
        if decisions.rewind is not None:
            assert execution.execution_id is not None
            rewound = rewind_history(
                execution.events, execution.execution_id, decisions.rewind.parent_execution_id
            )
            replaced_blobs = list(execution.blob_names)
            current = _Execution(execution.instance_id, rewound.execution_id, rewound.events, execution.etag)
            carried = rewound.events
            fresh = [OrchestratorStartedEvent(timestamp=now), *others]
            first_sequence = 0
            outbound += [
                self._rewind_child(child, rewound.execution_id, decisions.rewind)
                for child in rewound.failed_children
            ]
            logger.info(
                "hub %s instance %s: rewinding execution %s as %s (%d failed sub-orchestrations)",
                self._hub_name,
                execution.instance_id,
                execution.execution_id,
                rewound.execution_id,
                len(rewound.failed_children),
            )
        elif start is not None:
            assert start.orchestration_instance is not None
            if execution.events:
                replaced_blobs = list(execution.blob_names)
            current = _Execution(
                execution.instance_id, start.orchestration_instance.execution_id, [], execution.etag
            )
            fresh = [OrchestratorStartedEvent(timestamp=now), start, *others]
            first_sequence = 0
        else:
            current = execution
            fresh = [OrchestratorStartedEvent(timestamp=now), *others]
            first_sequence = len(execution.events)
        result = self._run_episode(current, fresh, outbound, now)
        generations = 0
        while result.continued_as_new:
            generations += 1
            replaced_blobs += current.blob_names
            current, fresh = self._next_generation(current, result, now)
            first_sequence = 0
            carried = []
            if generations >= MAX_GENERATIONS_PER_WORK_ITEM:
                # Persist the new generation's start and let a message run it, so one instance that
                # continues as new without ever waiting cannot hold this worker forever.
                new_events = [*fresh, OrchestratorCompletedEvent(timestamp=now)]
                outbound.append(self._wake_up(current))
                result = _EpisodeResult(new_events, self._status(current, new_events, None, now), [])
                break
            result = self._run_episode(current, fresh, outbound, now)
        return _Checkpoint(
            current,
            [*carried, *result.new_events],
            first_sequence,
            outbound,
            result.update,
            replaced_blobs,
        )

    def _next_generation(
        self, execution: _Execution, result: _EpisodeResult, now: datetime
    ) -> tuple[_Execution, list[HistoryEvent]]:
        episode = result.new_events
        finished = [*execution.events, *episode]
        started = next(e for e in finished if isinstance(e, ExecutionStartedEvent))
        ended = next(e for e in episode if isinstance(e, ContinueAsNewEvent))
        new_id = uuid.uuid4().hex
        restarted = ExecutionStartedEvent(
            timestamp=now,
            orchestration_instance=OrchestrationInstance(execution.instance_id, new_id),
            parent_instance=started.parent_instance,
            name=started.name,
            version=started.version,
            input=ended.result,
            tags=started.tags,
            generation=started.generation,
        )
        carried = [
            EventRaisedEvent(name=e.name, input=e.input, timestamp=e.timestamp)
            for e in (finished[i] for i in result.unconsumed_events)
            if isinstance(e, EventRaisedEvent)
        ]
        nxt = _Execution(execution.instance_id, new_id, [], execution.etag)
        return nxt, [OrchestratorStartedEvent(timestamp=now), restarted, *carried]

    def _rewind_child(self, child_id: str, execution_id: str, rewind: ExecutionRewoundEvent) -> _Outbound:
        """Rewind a failed sub-orchestration and have it report to the parent's new execution."""
        event = ExecutionRewoundEvent(
            reason=rewind.reason, parent_execution_id=execution_id, instance_id=child_id
        )
        message = MessageData(TaskMessage(event, OrchestrationInstance(child_id, None)))
        return _Outbound(self._hub.control_queue_for(child_id), message)

    def _wake_up(self, execution: _Execution) -> _Outbound:
        """A message that makes the instance run its newest generation in a later work item."""
        message = MessageData(
            TaskMessage(
                GenericEvent(data="continue"),
                OrchestrationInstance(execution.instance_id, execution.execution_id),
            )
        )
        return _Outbound(self._hub.control_queue_for(execution.instance_id), message)

    def _run_episode(
        self, execution: _Execution, fresh: list[HistoryEvent], outbound: list[_Outbound], now: datetime
    ) -> _EpisodeResult:
        """Replay with the new events; returns the episode's history events and the Instances update."""
        past = execution.events
        started = next(e for e in [*past, *fresh] if isinstance(e, ExecutionStartedEvent))
        name = started.name or ""
        if execution.completed is not None:
            # allowReplayingTerminalInstances: record what arrived and rewrite the Instances row
            # from the whole history; the orchestrator has nothing left to run.
            recorded = [*fresh, OrchestratorCompletedEvent(timestamp=now)]
            update = self._status(execution, [*past, *recorded], None, now)
            return _EpisodeResult(recorded, update.without("CustomStatus"), [])
        run: OrchestratorRun | None = None
        failure: FailureDetails | None = None
        terminated = next((e for e in fresh if isinstance(e, ExecutionTerminatedEvent)), None)
        if terminated is not None:
            completion: HistoryEvent | None = ExecutionCompletedEvent(
                timestamp=now, orchestration_status=OrchestrationStatus.Terminated, result=terminated.input
            )
            episode = [*fresh]
            scheduled: list[ScheduledAction] = []
        else:
            episode, run, failure = self._replay(execution, name, started, fresh)
            scheduled = [] if failure is not None or run is None else new_actions([*past, *episode], run)
            # df leaves a sub-orchestration's ID to the host when the caller gave none.
            scheduled = [
                dataclasses.replace(a, instance_id=f"{execution.instance_id}:{a.event_id}")
                if a.kind is ActionKind.SUB_ORCHESTRATION and not a.instance_id
                else a
                for a in scheduled
            ]
            http = next((a for a in scheduled if a.kind is ActionKind.CALL_HTTP), None)
            if http is not None:
                failure = FailureDetails(
                    error_type="NotSupportedError",
                    error_message=f"Orchestrator function '{name}' failed: "
                    "call_http is not supported by durable_ext",
                )
                scheduled = []
            completion = self._completion(run, failure, next_id=_next_event_id(run), now=now)
        recorded = [self._scheduling_event(execution, a, now) for a in scheduled]
        new_events = [*episode, *recorded]
        if completion is not None:
            new_events.append(completion)
        new_events.append(OrchestratorCompletedEvent(timestamp=now))
        sender = OrchestrationInstance(execution.instance_id, execution.execution_id)
        episode_number = sum(isinstance(e, OrchestratorStartedEvent) for e in [*past, *new_events])
        outbound.extend(
            self._messages(sender, name, list(zip(scheduled, recorded, strict=True)), episode_number, now)
        )
        if completion is not None and not isinstance(completion, ContinueAsNewEvent):
            outbound.extend(self._to_parent(started, completion))
        update = self._status(execution, new_events, run, now)
        return _EpisodeResult(new_events, update, run.unconsumed_events if run is not None else [])

    def _scheduling_event(
        self, execution: _Execution, action: ScheduledAction, now: datetime
    ) -> HistoryEvent:
        if action.kind in (ActionKind.CALL_ENTITY, ActionKind.SIGNAL_ENTITY):
            assert execution.execution_id is not None
            return event_sent_for_call(
                action, instance_id=execution.instance_id, execution_id=execution.execution_id, timestamp=now
            )
        return scheduling_event(action, now, self._options.store_inputs_in_orchestration_history)

    def _replay(
        self, execution: _Execution, name: str, started: ExecutionStartedEvent, fresh: list[HistoryEvent]
    ) -> tuple[list[HistoryEvent], OrchestratorRun | None, FailureDetails | None]:
        if not self._executor.has_orchestrator(name):
            return (
                fresh,
                None,
                FailureDetails(
                    error_type="FunctionNotFound",
                    error_message=f"The orchestrator function '{name}' doesn't exist.",
                ),
            )
        if execution.memo is None:
            execution.memo = self._executor.new_memo()
        past = execution.events
        parent = (
            started.parent_instance.orchestration_instance.instance_id
            if started.parent_instance and started.parent_instance.orchestration_instance
            else None
        )
        request = ExecutionRequest(name, execution.instance_id, [*past, *fresh], len(past), parent)
        try:
            run = self._executor.execute(request, execution.memo)
            ordered = [fresh[0], *order_new_events(fresh[1:], run.allocations)]
            if ordered != fresh:
                # A second run over the reordered events, which numbers retry steps as history will.
                reordered = dataclasses.replace(request, events=[*past, *ordered])
                run = self._executor.execute(reordered, execution.memo)
            return ordered, run, run.failure
        except NonDeterminismError as exc:
            logger.error("hub %s instance %s: %s", self._hub_name, execution.instance_id, exc)
            return (
                fresh,
                None,
                FailureDetails(error_type="NonDeterministicOrchestrationError", error_message=str(exc)),
            )

    def _completion(
        self, run: OrchestratorRun | None, failure: FailureDetails | None, *, next_id: int, now: datetime
    ) -> HistoryEvent | None:
        if failure is not None:
            return ExecutionCompletedEvent(
                event_id=next_id,
                timestamp=now,
                orchestration_status=OrchestrationStatus.Failed,
                result=failure.error_message,
                failure_details=failure,
            )
        if run is None or not run.done:
            return None
        if run.continue_as_new:
            return ContinueAsNewEvent(event_id=next_id, timestamp=now, result=run.continue_as_new_input)
        return ExecutionCompletedEvent(
            event_id=next_id,
            timestamp=now,
            orchestration_status=OrchestrationStatus.Completed,
            result=run.output,
        )

    def _messages(
        self,
        sender: OrchestrationInstance,
        name: str,
        scheduled: list[tuple[ScheduledAction, HistoryEvent]],
        episode: int,
        now: datetime,
    ) -> list[_Outbound]:
        out: list[_Outbound] = []
        for action, recorded in scheduled:
            if isinstance(recorded, EventSentEvent) and recorded.instance_id is not None:
                # Entity requests address the entity's current execution, whichever it is.
                target = OrchestrationInstance(recorded.instance_id, None)
                delivered = MessageData(
                    TaskMessage(delivery_event(recorded), target), episode=episode, sender=sender
                )
                out.append(_Outbound(self._hub.control_queue_for(recorded.instance_id), delivered))
                continue
            if action.kind is ActionKind.ACTIVITY:
                event: HistoryEvent = TaskScheduledEvent(
                    event_id=action.event_id, timestamp=now, name=action.name, version="", input=action.input
                )
                out.append(
                    _Outbound(
                        self._hub.work_item_queue,
                        MessageData(TaskMessage(event, sender), episode=episode, sender=sender),
                    )
                )
            elif action.kind is ActionKind.TIMER:
                assert action.fire_at is not None
                fired = TimerFiredEvent(timer_id=action.event_id, fire_at=action.fire_at, timestamp=now)
                delay = min(action.fire_at - now, MAX_TIMER_HOP)
                queue = self._hub.control_queue_for(sender.instance_id)
                out.append(
                    _Outbound(
                        queue, MessageData(TaskMessage(fired, sender), episode=episode, sender=sender), delay
                    )
                )
            elif action.kind is ActionKind.SUB_ORCHESTRATION:
                assert action.instance_id is not None
                child_id = action.instance_id
                child = OrchestrationInstance(child_id, uuid.uuid4().hex)
                start = ExecutionStartedEvent(
                    timestamp=now,
                    orchestration_instance=child,
                    parent_instance=ParentInstance(
                        name=name, orchestration_instance=sender, task_schedule_id=action.event_id, version=""
                    ),
                    name=action.name,
                    version="",
                    input=action.input,
                )
                queue = self._hub.control_queue_for(child_id)
                out.append(
                    _Outbound(queue, MessageData(TaskMessage(start, child), episode=episode, sender=sender))
                )
        return out

    def _to_parent(self, started: ExecutionStartedEvent, completion: HistoryEvent) -> list[_Outbound]:
        parent = started.parent_instance
        if (
            parent is None
            or parent.orchestration_instance is None
            or not isinstance(completion, ExecutionCompletedEvent)
        ):
            return []
        result: HistoryEvent
        if completion.orchestration_status is OrchestrationStatus.Completed:
            result = SubOrchestrationInstanceCompletedEvent(
                task_scheduled_id=parent.task_schedule_id, result=completion.result
            )
        else:
            failure = completion.failure_details
            result = SubOrchestrationInstanceFailedEvent(
                task_scheduled_id=parent.task_schedule_id,
                reason=failure.error_message if failure else completion.result,
                details=failure.stack_trace if failure else None,
                failure_details=failure,
            )
        target = parent.orchestration_instance
        child = started.orchestration_instance
        return [
            _Outbound(
                self._hub.control_queue_for(target.instance_id),
                MessageData(TaskMessage(result, target), sender=child),
            )
        ]

    def _status(
        self,
        execution: _Execution,
        new_events: list[HistoryEvent],
        run: OrchestratorRun | None,
        now: datetime,
    ) -> RowUpdate:
        return update_from_history(
            execution.instance_id,
            execution.execution_id,
            new_events,
            self._hub_name,
            now,
            custom_status=run.custom_status if run is not None else None,
        )

    def _plan_entity(
        self, execution: _Execution, messages: list[ReceivedMessage]
    ) -> tuple[Decisions, _Checkpoint | None]:
        """One batch of entity operations: run them, answer callers, store the new state.

        The state lives in the Input of a fresh three-row execution written over the old one, as the
        Durable Functions entity scheduler does it (docs/storage-protocol.md §2.7).
        """
        now = utc_now()
        decisions = Decisions()
        started = execution.started
        state = SchedulerState.from_json_text(started.input if started is not None else None)
        recent: list[str] = list(state.sorter.get(_RECENT_REQUESTS_KEY, []))
        requests: list[EntityRequest] = []
        for message in messages:
            event = message.data.event
            request = request_from_event(event) if isinstance(event, EventRaisedEvent) else None
            if request is None:
                decisions.discard.append(message)  # "continue" wake-ups and stray messages
            elif request.id in recent or any(r.id == request.id for r in requests):
                decisions.discard.append(message)  # applied before a crash kept its message alive
            elif request.scheduled_time is not None and request.scheduled_time > now:
                decisions.rehop.append(message)
            else:
                requests.append(request)
                decisions.consume.append(message)
        if not requests and not state.queue:
            if decisions.discard and started is not None and execution.execution_id is not None:
                # Redelivered operations that were applied before a crash: their history write
                # happened, the Instances write may not have. Rewrite the row from history (behind
                # the sentinel ETag, so only while this worker still owns the entity).
                update = self._entity_status(execution, execution.execution_id, state, now)
                return decisions, _Checkpoint(execution, [], len(execution.events), [], update, [])
            return decisions, None
        name, _ = parse_entity_instance_id(execution.instance_id)
        function = self._registry.get(name, FunctionKind.ENTITY)
        result = run_entity_batch(
            function.callable if function is not None else _missing_entity(name),
            execution.instance_id,
            state,
            requests,
            self._options.max_entity_operation_batch_size,
        )
        done = [outcome.request.id for outcome in result.outcomes]
        result.state.sorter[_RECENT_REQUESTS_KEY] = [*recent, *done][-_RECENT_REQUESTS_KEPT:]
        sender = OrchestrationInstance(execution.instance_id, execution.execution_id)
        outbound = self._entity_messages(sender, result, now)
        new_execution = uuid.uuid4().hex
        restarted = ExecutionStartedEvent(
            timestamp=now,
            orchestration_instance=OrchestrationInstance(execution.instance_id, new_execution),
            name=execution.instance_id,
            version="",
            input=result.state.to_json_text(),
        )
        events = [
            OrchestratorStartedEvent(timestamp=now),
            restarted,
            OrchestratorCompletedEvent(timestamp=now),
        ]
        update = self._entity_status(execution, new_execution, result.state, now)
        current = _Execution(execution.instance_id, new_execution, [], execution.etag)
        return decisions, _Checkpoint(current, events, 0, outbound, update, list(execution.blob_names))

    def _entity_status(
        self, execution: _Execution, execution_id: str, state: SchedulerState, now: datetime
    ) -> RowUpdate:
        started = execution.started
        return entity_update(
            execution.instance_id,
            execution_id,
            scheduler_state=state.to_json_text(),
            entity_status=entity_status_json(state),
            created=started.timestamp if started is not None else now,
            now=now,
            hub_name=self._hub_name,
        )

    def _entity_messages(
        self, sender: OrchestrationInstance, result: EntityBatchResult, now: datetime
    ) -> list[_Outbound]:
        out: list[_Outbound] = []
        for outcome in result.outcomes:
            request = outcome.request
            if request.is_signal or not request.parent_instance_id:
                continue
            caller = OrchestrationInstance(request.parent_instance_id, request.parent_execution_id)
            answer = MessageData(TaskMessage(response_event(request, outcome), caller), sender=sender)
            out.append(_Outbound(self._hub.control_queue_for(caller.instance_id), answer))
        for signal in result.signals:
            request = signal.to_request(uuid.uuid4().hex, sender.instance_id)
            target = OrchestrationInstance(signal.target_instance_id, None)
            message = MessageData(TaskMessage(request.to_event(), target), sender=sender)
            out.append(_Outbound(self._hub.control_queue_for(signal.target_instance_id), message))
        if result.state.queue:
            # More operations wait than one batch takes: wake this entity again for the rest.
            wake = EventRaisedEvent(name="continue", timestamp=now)
            message = MessageData(
                TaskMessage(wake, OrchestrationInstance(sender.instance_id, None)), sender=sender
            )
            out.append(_Outbound(self._hub.control_queue_for(sender.instance_id), message))
        return out

    async def _rehop(self, instance_id: str, messages: list[ReceivedMessage]) -> None:
        queue = self._hub.control_queue_for(instance_id)
        now = utc_now()
        for message in messages:
            await queue.send(message.data, delay=min(_due(message.data.event) - now, MAX_TIMER_HOP))

    async def _commit(self, checkpoint: _Checkpoint) -> asyncio.Task[bool]:
        """Steps 1 and 2 of the checkpoint; returns the task doing steps 3 and 4."""
        execution = checkpoint.execution
        instance_id = execution.instance_id
        await asyncio.gather(
            *(o.queue.send(o.message, o.delay, handoff=self._handoff) for o in checkpoint.outbound)
        )
        assert execution.execution_id is not None
        execution.etag = await self._hub.tracking.append_history(
            instance_id,
            execution.execution_id,
            checkpoint.new_events,
            checkpoint.first_sequence_number,
            execution.etag,
        )
        execution.events = [*execution.events[: checkpoint.first_sequence_number], *checkpoint.new_events]
        logger.debug(
            "hub %s instance %s: checkpointed %d events, %d messages out",
            self._hub_name,
            instance_id,
            len(checkpoint.new_events),
            len(checkpoint.outbound),
        )
        # Steps 3 to 5 run behind the episode (here and in _finish), so its concurrency slot is free
        # for other instances; the instance's next episode waits for them (_run_session).
        write = asyncio.create_task(
            self._write_status(instance_id, self._status_writes.get(instance_id), checkpoint)
        )
        self._status_writes[instance_id] = write
        self._background.add(write)
        write.add_done_callback(functools.partial(self._status_written, instance_id))
        return write

    async def _finish(
        self, write: asyncio.Task[bool] | None, done: list[ReceivedMessage], abandon: list[ReceivedMessage]
    ) -> None:
        """Step 5 once the Instances write succeeded. If it failed, the episode's messages come back
        instead: their redelivery finds them in history and, where it can, repairs the row."""
        if write is not None and not await write:
            done, abandon = [], [*done, *abandon]
        await asyncio.gather(*(self._delete(m) for m in done), *(self._abandon(m) for m in abandon))

    def _status_written(self, instance_id: str, write: asyncio.Task[bool]) -> None:
        self._background.discard(write)
        if self._status_writes.get(instance_id) is write:
            del self._status_writes[instance_id]

    async def _write_status(
        self, instance_id: str, previous: asyncio.Task[bool] | None, checkpoint: _Checkpoint
    ) -> bool:
        """Merge the Instances row and delete replaced blobs after the previous episode's did; False
        if that failed, in which case the row lags its history until a later episode rewrites it."""
        if previous is not None:
            await previous
        try:
            await self._hub.instances.checkpointed(checkpoint.update)
            if checkpoint.replaced_blobs:
                await asyncio.gather(*(self._hub.large_messages.delete(b) for b in checkpoint.replaced_blobs))
        except Exception as exc:
            if not storage_health.failed(self._storage, exc):
                logger.warning(
                    "hub %s instance %s: Instances write failed; the episode's messages come back",
                    self._hub_name,
                    instance_id,
                    exc_info=True,
                )
            return False
        return True


def _first_execution(
    instance_id: str, messages: Sequence[ReceivedMessage], row: InstanceState | None
) -> _Execution | None:
    """An empty history, when the batch starts the instance's very first execution.

    That is a client's start whose Instances row is still Pending at generation 0 and names it: the
    ID was never run before (a purge deletes the row last), so there is no history to read. Should
    there be one after all, the sentinel insert conflicts and the episode is re-run from storage.
    """
    if row is None or row.generation != 0 or row.runtime_status is not OrchestrationStatus.Pending:
        return None
    if any(m.dequeue_count > 1 for m in messages):
        return None  # delivered before: an earlier attempt may have written history and then died
    for message in messages:
        event = message.data.event
        if (
            isinstance(event, ExecutionStartedEvent)
            and event.parent_instance is None
            and event.orchestration_instance is not None
            and event.orchestration_instance.execution_id == row.execution_id
        ):
            return _Execution(instance_id, None, [], None)
    return None


def _missing_entity(name: str) -> Callable[[str], str]:
    """Stands in for an entity function the app does not have: every operation fails with this."""

    def missing(_batch: str) -> str:
        raise LookupError(f"The entity function '{name}' doesn't exist.")

    return missing


def _due(event: HistoryEvent) -> datetime:
    """When an early timer or delayed entity signal is due."""
    if isinstance(event, TimerFiredEvent) and event.fire_at is not None:
        return event.fire_at
    request = request_from_event(event) if isinstance(event, EventRaisedEvent) else None
    if request is not None and request.scheduled_time is not None:
        return request.scheduled_time
    raise ValueError(f"{event.event_type.name} has no due time")


def _next_event_id(run: OrchestratorRun | None) -> int:
    return max(run.allocations, default=-1) + 1 if run is not None else 0
