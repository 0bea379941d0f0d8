"""The control-queue dispatcher: polling, sessions, and the order of an instance's episodes.

For every owned control queue a loop dequeues batches (docs/storage-protocol.md §6), groups the
messages per instance and runs one episode per instance at a time: triage (``triage.py``), the
episode's plan (``episode.py``, ``entity_episode.py``), then the checkpoint (``checkpoint.py``).
Messages held meanwhile stay invisible through ``holds.py``; histories stay in memory between
episodes in ``session.SessionCache``; delayed messages this process sends to owned queues are taken
at their due time through ``scheduled.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

from durable_ext import tracing
from durable_ext.app_loader import FunctionRegistry
from durable_ext.clock import SYSTEM_CLOCK, Clock
from durable_ext.config import DurableTaskOptions
from durable_ext.errors import OwnershipLostError
from durable_ext.executor import (
    OrchestrationExecutor,
)
from durable_ext.history import (
    ExecutionStartedEvent,
    ExecutionTerminatedEvent,
    utc_now,
)
from durable_ext.logs import hub_log
from durable_ext.messages import MessageData
from durable_ext.monitoring.metrics import WorkerMetrics
from durable_ext.replay import DfOrchestrationExecutor
from durable_ext.storage.outage import storage_health
from durable_ext.storage.quarantine import POISON_DEQUEUE_COUNT
from durable_ext.storage.queues import Handoff, MessageQueue, ReceivedMessage
from durable_ext.storage.taskhub import TaskHub
from durable_ext.storage.tracking import InstanceState
from durable_ext.worker.backoff import BackoffPolling
from durable_ext.worker.checkpoint import Checkpointer
from durable_ext.worker.entity_episode import EntityPlanner
from durable_ext.worker.episode import EpisodePlanner
from durable_ext.worker.holds import HeldMessages, message_hold
from durable_ext.worker.poison import quarantine_episode_messages
from durable_ext.worker.scheduled import ScheduledHandoff
from durable_ext.worker.session import Checkpoint, Execution, Session, SessionCache, first_execution
from durable_ext.worker.triage import NO_HISTORY_DEQUEUE_LIMIT, Decisions, triage

logger = logging.getLogger(__name__)

DIRECT_RESULTS_BUFFER_FACTOR = 4
"""How many times controlQueueBufferThreshold messages may be buffered once results arrive in memory."""
INLINE_REPLAY_EVENTS = 100
"""Episodes that run at most this many events (all of them for a replay, the new ones for a warm
continuation) run on the event loop, not the replay thread."""
SESSION_CACHE_INSTANCES = 1000
SESSION_CACHE_EVENTS = 100_000
"""Bounds of the histories kept in memory between episodes (a few tens of MB at most)."""


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
        metrics: WorkerMetrics,
        executor: OrchestrationExecutor | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        """``handoff`` routes outbound messages to consumers in this process (the engine);
        ``metrics`` counts the episodes; ``executor`` runs orchestrators (default: the app's Python
        orchestrators, in process); ``clock`` is the orchestrations' time (history timestamps, when
        timers are due)."""
        self._hub = hub
        self._metrics = metrics
        self._clock = clock
        self._registry = registry
        provider = options.storage_provider
        self.executor = executor or DfOrchestrationExecutor.for_options(registry, options)
        """What runs the orchestrators."""
        self._episodes = EpisodePlanner(hub, self.executor, options, clock)
        self._entities = EntityPlanner(hub, registry, options, clock)
        self._checkpoints = Checkpointer(
            hub,
            handoff,
            delete=self._delete,
            abandon=self._abandon,
            max_timer_delay=provider.max_timer_delay,
            clock=clock,
        )
        self._options = options
        self._provider = options.storage_provider
        self._handoff = handoff
        self._hub_name = hub.names.hub
        self._log = hub_log(logger, self._hub_name)
        self._storage = hub.account.describe()
        self._queues = {q.name: q for q in hub.control_queues}
        self._loops: dict[str, asyncio.Task[None]] = {}
        self._backoffs: dict[str, BackoffPolling] = {}
        self._sessions: dict[str, Session] = {}
        """Instances with messages held or an episode running; a session ends when both are done."""
        self._slots = asyncio.Semaphore(options.max_concurrent_orchestrator_functions)
        # Replays run on their own thread: a long history keeps the CPU busy for tens of milliseconds,
        # and the event loop must go on moving messages meanwhile. One thread, so that replays do not
        # also compete with each other for the interpreter.
        self._replays = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"replay-{hub.names.hub}")
        self._background: set[asyncio.Task[Any]] = set()
        """Deletes of consumed messages and similar clean-up that need not hold up the next episode."""
        self._returning: dict[str, datetime] = {}
        """Messages this worker abandoned, by message ID: when each is due back in its queue."""
        self._buffered = 0
        self._room = asyncio.Event()
        """Set while the buffer is below controlQueueBufferThreshold; throttled pollers wait for it."""
        self._room.set()
        self._holds = HeldMessages(
            message_hold(self._provider.control_queue_visibility_timeout),
            self._queue_of,
            hub_name=hub.names.hub,
            storage=hub.account.describe(),
            longest=self._provider.control_queue_visibility_timeout,
        )
        self.scheduling = ScheduledHandoff(self._backoffs.get, self._take_due, clock)
        """Delayed messages this process sent to owned queues, taken in memory at their due time."""
        self.cache = SessionCache(
            max_entries=SESSION_CACHE_INSTANCES,
            max_events=SESSION_CACHE_EVENTS,
            idle_timeout=timedelta(seconds=options.extended_session_idle_timeout_in_seconds),
        )

    @property
    def owned(self) -> frozenset[str]:
        """Control queues being polled."""
        return frozenset(self._loops)

    @property
    def idle(self) -> bool:
        """Whether no message is held, no episode runs and no clean-up after one is in flight."""
        return (
            not self._sessions and not self._buffered and not self._background and not self._still_returning()
        )

    def _still_returning(self) -> bool:
        """Whether a message this worker abandoned is still invisible, due back in its queue: until it
        is, neither a session nor a queue shows the work it stands for."""
        now = utc_now()
        for message_id, due in list(self._returning.items()):
            if due <= now:
                del self._returning[message_id]
        return bool(self._returning)

    @property
    def stalled(self) -> frozenset[str]:
        """Owned control queues whose polling loop has ended (it should run until told to stop)."""
        return frozenset(name for name, loop in self._loops.items() if loop.done())

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

    def adopt_work_item(self, work_item: ReceivedMessage) -> bool:
        """A work item whose result :meth:`take_result` holds came back to the activity poller (its
        hold was not renewed in time): keep holding it under the new pop receipt."""
        return self._holds.adopt(work_item)

    def _take_due(self, message: ReceivedMessage) -> bool:
        """A scheduled message's time has come (it stays invisible in its queue for one or two seconds
        more, ``SCHEDULED_MARGIN``): take it as if a poll had returned it; False when there is no room."""
        if not self._has_room(message.queue_name, self._provider.control_queue_buffer_threshold):
            return False
        self._dispatch(message.queue_name, [message])
        # It turns visible within two seconds: unless its episode is done by then, hide it for a hold
        # just before, so that no poller (this one or a next owner's) takes a second copy.
        self._holds.renew_before_visible(message)
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
                self._log.instance(instance_id).warning("queue clean-up failed", exc_info=True)

    async def _drain_background(self) -> None:
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self._checkpoints.drain()

    async def start_listening(self, partition_id: str) -> None:
        """Begin dequeuing a control queue."""
        if partition_id in self._loops or partition_id not in self._queues:
            return
        self._backoffs[partition_id] = BackoffPolling(self._provider.max_queue_polling_interval)
        self._holds.start()
        self._loops[partition_id] = asyncio.create_task(
            self._poll(self._queues[partition_id]), name=f"control-{partition_id}"
        )
        self._log.debug("listening on %s", partition_id)

    async def stop_listening(self, partition_id: str) -> None:
        """Stop dequeuing a control queue and wait for its in-flight episodes."""
        loop = self._loops.pop(partition_id, None)
        # Scheduled wakes and in-memory deliveries end with the ownership; the messages themselves
        # become visible in the queue at their time, for the next owner.
        self._backoffs.pop(partition_id, None)
        self.scheduling.drop(partition_id)
        if loop is not None:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        running = [s.task for s in self._sessions.values() if s.queue_name == partition_id and s.task]
        if running:
            await asyncio.gather(*running, return_exceptions=True)
        await self._drain_background()
        self.cache.drop_where(
            lambda instance_id: self._hub.control_queue_for(instance_id).name == partition_id
        )
        self._holds.forget(partition_id)
        self._log.debug("stopped listening on %s", partition_id)

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
                    self._log.exception("polling %s failed", queue.name)
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
            session = self._sessions.get(instance_id)
            if session is None:
                session = self._sessions[instance_id] = Session(instance_id, queue_name)
                session.task = asyncio.create_task(self._run_session(session), name=f"session-{instance_id}")
            self._buffered += session.add(message)

    async def _run_session(self, session: Session) -> None:
        try:
            while True:
                if session.finishing is not None:
                    # Messages that arrive meanwhile join the next episode instead of each making one.
                    await asyncio.wait([session.finishing])
                    session.finishing = None
                if not session.pending:
                    break
                batch, session.pending = session.pending, []
                async with self._slots:
                    later = await self._episode(session, batch)
                self._buffered -= len(batch) - len(later)
                if self._buffered < self._provider.control_queue_buffer_threshold:
                    self._room.set()
                session.pending[:0] = later
        finally:
            del self._sessions[session.instance_id]

    # ---- one episode --------------------------------------------------------------------------

    async def _episode(self, session: Session, messages: list[ReceivedMessage]) -> list[ReceivedMessage]:
        """Process one batch for one instance; returns messages kept for the next episode."""
        started = time.perf_counter()
        later, outcome = await self._try_episode(session, messages)
        self._metrics.episode(session.instance_id, outcome, time.perf_counter() - started)
        return later

    async def _try_episode(
        self, session: Session, messages: list[ReceivedMessage]
    ) -> tuple[list[ReceivedMessage], str]:
        """:meth:`_episode`, and its outcome: ``succeeded``, ``conflict`` or ``failed``."""
        instance_id = session.instance_id
        try:
            row = None if instance_id.startswith("@") else await self._start_row(instance_id, messages)
            known = self.cache.take(instance_id) or first_execution(instance_id, messages, row)
            if known is not None:
                try:
                    return await self._attempt(session, known, messages, row), "succeeded"
                except OwnershipLostError:
                    # The history changed behind the cache (a purge, another worker) or was not empty
                    # after all: once more from storage.
                    self._log.instance(instance_id).info("history in memory was stale; reloading")
            return await self._attempt(session, await self._load(instance_id), messages, row), "succeeded"
        except OwnershipLostError:
            await asyncio.gather(*(self._abandon(m) for m in messages), return_exceptions=True)
            return [], "conflict"
        except Exception as exc:
            poison: list[ReceivedMessage] = []
            if not storage_health.failed(self._storage, exc):
                self._log.instance(instance_id).exception("episode failed; messages abandoned")
                poison = [m for m in messages if m.dequeue_count > POISON_DEQUEUE_COUNT]
            if poison:
                await quarantine_episode_messages(self._hub, instance_id, poison, exc, self._delete)
            rest = [m for m in messages if m not in poison]
            await asyncio.gather(*(self._abandon(m) for m in rest), return_exceptions=True)
            return [], "failed"

    def _queue_of(self, message: ReceivedMessage) -> MessageQueue:
        """The queue holding ``message``: a control queue, or the work-item queue for a direct result."""
        return self._queues.get(message.queue_name) or self._hub.work_item_queue

    async def _abandon(self, message: ReceivedMessage) -> None:
        await self._holds.release(message)
        await self._queue_of(message).abandon(message)
        if message.next_visible_on is not None:
            self._returning[message.message_id] = message.next_visible_on
        backoff = self._backoffs.get(message.queue_name)
        if backoff is not None:
            backoff.wake_when_visible(message)  # back after its back-off, not a polling interval

    async def _delete(self, message: ReceivedMessage) -> None:
        await self._holds.release(message)
        await self._queue_of(message).delete(message)

    async def _attempt(
        self,
        session: Session,
        execution: Execution,
        messages: list[ReceivedMessage],
        row: InstanceState | None,
    ) -> list[ReceivedMessage]:
        instance_id = execution.instance_id
        if instance_id.startswith("@"):
            decisions, checkpoint = self._entities.plan(execution, messages)
        else:
            decisions = triage(
                execution,
                messages,
                row,
                now=self._clock.now(),
                replay_terminal=self._provider.allow_replaying_terminal_instances,
                hub_name=self._hub_name,
                versioning=self._options.versioning,
            )
            checkpoint = await self._plan(execution, decisions) if decisions.consume else None
        status_write: asyncio.Task[bool] | None = None
        if checkpoint is not None:
            status_write = await self._checkpoints.commit(checkpoint)
            tracing.emit(checkpoint.spans)
            self.cache.put(checkpoint.execution)
        elif decisions.terminated_before_start is not None:
            await self._terminate_pending(instance_id, decisions.terminated_before_start)
        elif decisions.repair:
            await self._hub.instances.repaired(instance_id, execution.execution_id, execution.events)
        await self._checkpoints.rehop(instance_id, decisions.rehop)
        # Only after the Instances write (docs/storage-protocol.md §3.8 step 5), but the next
        # episode need not wait for it.
        done = [*decisions.consume, *decisions.discard, *decisions.rehop]
        if done or decisions.abandon:
            self._in_background(instance_id, self._checkpoints.finish(status_write, done, decisions.abandon))
        if status_write is not None:
            # Nor for the Instances write: the instance's writes are chained in episode order, and a
            # row left behind by a crash is repaired from history when the messages come back
            # (triage.py). The episode after the next waits for it, so writes do not pile up.
            session.finishing, session.status_write = session.status_write, status_write
        return decisions.later

    async def _plan(self, execution: Execution, decisions: Decisions) -> Checkpoint:
        """Replay and plan the episode: on the replay thread when it runs many events, else right here,
        as handing a short replay to the thread and back costs more than the replay (each hop waits
        for the interpreter lock, up to its 5 ms switch interval when the other thread is busy)."""
        cost = self.executor.events_to_run(execution.memo, len(execution.events), len(decisions.consume))
        if cost <= INLINE_REPLAY_EVENTS:
            return self._episodes.plan(execution, decisions)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._replays, self._episodes.plan, execution, decisions)

    async def _terminate_pending(self, instance_id: str, event: ExecutionTerminatedEvent) -> None:
        """Mark a never-started instance Terminated; its start message, if it comes, will not run."""
        if await self._hub.instances.terminated_before_start(instance_id, event):
            self._log.instance(instance_id).info("terminated before it started")

    async def _load(self, instance_id: str) -> Execution:
        load = await self._hub.tracking.load_history(instance_id)
        return Execution(instance_id, load.execution_id, load.events, load.etag, load.blob_names)

    async def _start_row(self, instance_id: str, messages: list[ReceivedMessage]) -> InstanceState | None:
        """The Instances row, when the batch holds a client's start that must be checked against it, or
        a message that triage would drop if the instance had no history and no accepted start."""
        needing = [
            m
            for m in messages
            if (isinstance(m.data.event, ExecutionStartedEvent) and m.data.event.parent_instance is None)
            or m.dequeue_count > NO_HISTORY_DEQUEUE_LIMIT
        ]
        if not needing:
            return None
        if len(needing) == 1 and needing[0].start_row is not None:
            # A start handed over by a client of this process with the row it has just written. Later
            # changes to that row come from this instance's episodes, which run one at a time, or from
            # a start that replaces it (overridable states "any"): that start's own episode follows
            # this one and restarts the instance, as if it had come a moment later.
            return needing[0].start_row
        return await self._hub.tracking.get_instance(instance_id, fetch_large_values=False)
