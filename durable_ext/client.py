"""The storage-level client of a task hub: start, query, raise events, terminate, suspend, resume, entities.

Every front end (the df client through the management HTTP API, the CLI, tests) goes through
:class:`TaskHubClient`. It writes exactly what DurableTask.AzureStorage's client writes
(docs/storage-protocol.md §7.3, §7.6, §4.2): an ``ExecutionStarted`` or management message to the instance's
control queue, and for a start the ``Pending`` row of the Instances table. Every argument is checked
before anything is written; a rejected call leaves the task hub untouched.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core.exceptions import HttpResponseError

from durable_ext import tracing
from durable_ext.config import OverridableStates
from durable_ext.entities import (
    MAX_SIGNAL_DELAY,
    SchedulerState,
    entity_instance_id,
    parse_entity_instance_id,
    request_event,
)
from durable_ext.errors import (
    InstanceExistsError,
    InstanceGoneError,
    InstanceNotEndedError,
    InstanceNotFoundError,
    InvalidInstanceIdError,
    InvalidInstanceStateError,
    InvalidOperationError,
    PayloadTooLargeError,
    ValidationError,
)
from durable_ext.history import (
    EventRaisedEvent,
    ExecutionResumedEvent,
    ExecutionRewoundEvent,
    ExecutionStartedEvent,
    ExecutionSuspendedEvent,
    ExecutionTerminatedEvent,
    HistoryEvent,
    OrchestrationInstance,
    OrchestrationStatus,
    distinct_utc_now,
    utc_now,
)
from durable_ext.logs import hub_log
from durable_ext.messages import MAX_QUEUE_PAYLOAD_BYTES, MessageData, TaskMessage
from durable_ext.storage.instances import INSTANCE_ENDS
from durable_ext.storage.queues import MAX_VISIBILITY_DELAY, Handoff, MessageQueue, ReceivedMessage
from durable_ext.storage.taskhub import TaskHub
from durable_ext.storage.tracking import (
    MAX_PROPERTY_BYTES,
    InstanceQuery,
    InstanceState,
    utf16_size,
)
from durable_ext.wire import as_utc

logger = logging.getLogger(__name__)

MAX_INSTANCE_ID_LENGTH = 256
"""Longest instance ID Durable Functions accepts."""

DEFAULT_MAX_PAYLOAD_BYTES = 16 * 1024 * 1024
"""Default limit on the UTF-8 size of an input, event payload or reason.

Anything above 45 KiB already travels as a gzip blob (the queue layer offloads it), so the limit is not
about storage but about memory: every replay holds the payload, and a worker should not be handed
hundreds of megabytes by one HTTP request. 16 MiB is far above what orchestrations normally carry.
"""

_FORBIDDEN_ID_CHARS = frozenset("/\\#?")

_DEDUPE_STATUSES: dict[OverridableStates, frozenset[OrchestrationStatus]] = {
    OverridableStates.NON_RUNNING_STATES: frozenset(
        {
            OrchestrationStatus.Running,
            OrchestrationStatus.ContinuedAsNew,
            OrchestrationStatus.Pending,
            OrchestrationStatus.Suspended,
        }
    ),
    OverridableStates.ANY_STATE: frozenset(),
}
"""Statuses of an existing instance that make a start with its ID fail (DF ``OverridableStates``)."""

# Durable Functions' IsOrchestrationRunning / IsOrchestrationSuspendable / IsOrchestrationSuspended.
_RUNNING_STATUSES = frozenset(
    {
        OrchestrationStatus.Running,
        OrchestrationStatus.Suspended,
        OrchestrationStatus.Pending,
        OrchestrationStatus.ContinuedAsNew,
    }
)
_SUSPENDABLE_STATUSES = frozenset(
    {OrchestrationStatus.Running, OrchestrationStatus.Pending, OrchestrationStatus.ContinuedAsNew}
)
_RESUMABLE_STATUSES = frozenset({OrchestrationStatus.Suspended})
_REWINDABLE_STATUSES = frozenset({OrchestrationStatus.Failed})
_ENDED_STATUSES = frozenset(status for status in OrchestrationStatus if status.is_terminal)
MIN_POLL_INTERVAL = 0.01
"""Shortest pause between two status reads of :meth:`TaskHubClient.wait_for_completion`."""

DEFAULT_QUERY_PAGE_SIZE = 100
"""Instances per page of :meth:`TaskHubClient.query_instances` (DF's default ``top``)."""
MAX_QUERY_PAGE_BYTES = 8 * 1024 * 1024
"""Most payload bytes (inputs, outputs, custom statuses) one page of instances or entities holds,
beyond its first instance; a page of 100 instances with 16 MiB inputs would otherwise fill gigabytes."""
ENTITY_CLEAN_MIN_IDLE = timedelta(minutes=30)
"""How long an empty entity must have been idle before :meth:`TaskHubClient.clean_entity_storage`
removes it; DF's default ``EntityMessageReorderWindowInMinutes``."""
_PURGES_IN_FLIGHT = 10
_ENTITY_ID_PREFIX = "@"


def validate_instance_id(instance_id: str, *, allow_entity: bool = False) -> str:
    """Return ``instance_id`` if Durable Functions would accept it, else raise InvalidInstanceIdError.

    Rules: not empty, at most 256 characters, none of ``/ \\ # ?``, no control characters
    (U+0000-U+001F, U+007F-U+009F), and no leading ``@`` unless ``allow_entity`` (entity IDs are
    ``@name@key``).
    """
    shown = _shown(instance_id)
    if not instance_id:
        raise InvalidInstanceIdError("instance ID must not be empty")
    if len(instance_id) > MAX_INSTANCE_ID_LENGTH:
        raise InvalidInstanceIdError(
            f"instance ID {shown} is {len(instance_id)} characters long; "
            f"at most {MAX_INSTANCE_ID_LENGTH} are allowed"
        )
    for ch in instance_id:
        if ch in _FORBIDDEN_ID_CHARS:
            raise InvalidInstanceIdError(
                f"instance ID {shown} contains {ch!r}; '/', '\\', '#' and '?' are not allowed"
            )
        code = ord(ch)
        if code <= 0x1F or 0x7F <= code <= 0x9F:
            raise InvalidInstanceIdError(
                f"instance ID {shown} contains the control character U+{code:04X}; "
                "control characters are not allowed"
            )
    if instance_id.startswith("@") and not allow_entity:
        raise InvalidInstanceIdError(
            f"orchestration instance ID {shown} starts with '@', which is reserved for entity IDs"
        )
    return instance_id


def _shown(text: str) -> str:
    """``text`` for an error message: quoted, and cut short, as callers may send thousands of characters."""
    return repr(text if len(text) <= 80 else text[:80] + "...")


def _check_instance_id_prefix(prefix: str) -> None:
    """A prefix longer than any instance ID matches nothing, and would only make the query too long."""
    if len(prefix) > MAX_INSTANCE_ID_LENGTH:
        raise ValidationError(
            f"instance ID prefix {_shown(prefix)} is {len(prefix)} characters long; "
            f"instance IDs have at most {MAX_INSTANCE_ID_LENGTH}"
        )


@dataclass(frozen=True)
class OrchestrationState:
    """What a status query returns: one instance as its Instances row describes it.

    ``input`` and ``output`` are the full JSON texts even when storage keeps them in blobs.
    ``runtime_status`` is None when the row holds a status this version does not know.
    """

    instance_id: str
    name: str | None
    runtime_status: OrchestrationStatus | None
    input: str | None
    output: str | None
    custom_status: str | None
    created_time: datetime | None
    last_updated_time: datetime | None
    completed_time: datetime | None
    execution_id: str | None
    generation: int
    version: str | None = None
    """The instance's orchestration version (versioning.py); "" or None when it has none."""

    @classmethod
    def from_instance(cls, row: InstanceState) -> OrchestrationState:
        """Build the status from a row read by the tracking store."""
        return cls(
            instance_id=row.instance_id,
            name=row.name,
            runtime_status=row.runtime_status,
            input=row.input,
            output=row.output,
            custom_status=row.custom_status,
            created_time=row.created_time,
            last_updated_time=row.last_updated_time,
            completed_time=row.completed_time,
            execution_id=row.execution_id,
            generation=row.generation,
            version=row.version,
        )


@dataclass(frozen=True)
class InstanceQueryResult:
    """A page of :meth:`TaskHubClient.query_instances` and the token for the next (None after the last)."""

    instances: list[OrchestrationState]
    continuation_token: str | None


@dataclass(frozen=True)
class EntityQueryResult:
    """A page of :meth:`TaskHubClient.query_entities` and the token for the next (None after the last)."""

    entities: list[EntitySnapshot]
    continuation_token: str | None


class TaskHubClient:
    """Starts and manages orchestration instances of one task hub, at the storage level.

    ``overridable_states`` is DF's ``overridableExistingInstanceStates``: with the default
    NonRunningStates a start fails while an instance with that ID is Pending, Running, ContinuedAsNew
    or Suspended; with AnyState it always replaces it. ``max_payload_bytes`` bounds the UTF-8 size of
    inputs, event data and reasons.
    """

    def __init__(
        self,
        hub: TaskHub,
        *,
        overridable_states: OverridableStates = OverridableStates.NON_RUNNING_STATES,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        handoff: Handoff | None = None,
        default_version: str = "",
    ) -> None:
        """``handoff`` (an engine in this process) takes the messages this client sends straight
        from it, after they are enqueued, instead of waiting for its next poll. ``default_version``
        is host.json's ``defaultVersion``: the version of instances started without one. Scheduled
        starts and delayed signals count from the ``handoff``'s clock (the orchestrations' time, which
        a test host may skip ahead), else from the wall clock."""
        if max_payload_bytes <= 0:
            raise ValueError(f"max_payload_bytes must be positive, got {max_payload_bytes}")
        self.hub = hub
        self.default_version = default_version
        self.overridable_states = overridable_states
        self.max_payload_bytes = max_payload_bytes
        self._dedupe_statuses = _DEDUPE_STATUSES[overridable_states]
        self._handoff = handoff
        self._now: Callable[[], datetime] = handoff.now if handoff is not None else utc_now
        self._log = hub_log(logger, hub.names.hub)

    @property
    def _hub_name(self) -> str:
        return self.hub.names.hub

    async def _send(self, instance_id: str, message: MessageData, delay: timedelta | None = None) -> None:
        await self.hub.control_queue_for(instance_id).send(message, delay, handoff=self._handoff)

    async def start_new(
        self,
        name: str,
        instance_id: str | None = None,
        input: str | None = None,
        *,
        scheduled_start_time: datetime | None = None,
        tags: dict[str, str] | None = None,
        version: str | None = None,
    ) -> str:
        """Schedule a new orchestration and return its instance ID (a new 32-hex ID if none is given).

        ``version`` is the instance's orchestration version (default: the client's
        ``default_version``), which ``context.version`` reads and worker versioning checks (versioning.py).
        ``input`` is JSON text, stored as given. A ``scheduled_start_time`` in the future delays the
        start message until then (at most 7 days ahead; naive datetimes are UTC). Raises
        InstanceExistsError when an instance with this ID exists in a status that may not be replaced,
        or when a concurrent start of the same ID won the race for the Instances row.
        """
        if not name:
            raise ValidationError("orchestrator name must not be empty")
        instance_id = validate_instance_id(uuid.uuid4().hex if instance_id is None else instance_id)
        self._check_payload("input", input)
        if tags is not None and utf16_size(json.dumps(tags, separators=(",", ":"))) > MAX_PROPERTY_BYTES:
            # The Instances row cannot offload Tags to a blob, so they must fit one table property.
            raise PayloadTooLargeError(
                f"tags of instance {instance_id!r} are larger than the {MAX_PROPERTY_BYTES // 2} "
                "characters a table property holds"
            )
        scheduled = as_utc(scheduled_start_time)
        if scheduled is not None and scheduled - self._now() > MAX_VISIBILITY_DELAY:
            raise ValidationError(
                f"scheduled start time {scheduled.isoformat()} is more than {MAX_VISIBILITY_DELAY.days} "
                "days away; Azure Queues cannot delay a message that long"
            )

        started = ExecutionStartedEvent(
            orchestration_instance=OrchestrationInstance(instance_id, uuid.uuid4().hex),
            name=name,
            version=self.default_version if version is None else version,
            input=input,
            tags=tags,
            scheduled_start_time=scheduled,
        )
        with tracing.create_orchestration(started):
            delay = scheduled - self._now() if scheduled is not None else None
            queue = self.hub.control_queue_for(instance_id)
            existing, started, sent = await self._enqueue_start(instance_id, queue, started, delay)
            execution_id = _execution_id(started)
            generation = started.generation
            message = sent.data

            row_input = input
            if len(message.encode().encode("utf-8")) > MAX_QUEUE_PAYLOAD_BYTES:
                # The queue layer put the message in a blob; like DT.AS the row points at that blob, and
                # readers take the input out of the ExecutionStarted message stored there.
                row_input = self.hub.large_messages.url(message.large_message_blob_name())
            row = InstanceState(
                instance_id=instance_id,
                execution_id=execution_id,
                name=name,
                version=started.version,
                input=row_input,
                runtime_status=OrchestrationStatus.Pending,
                created_time=started.timestamp,
                last_updated_time=utc_now(),
                scheduled_start_time=scheduled,
                generation=generation,
                tags=tags,
                task_hub_name=self._hub_name,
            )
            try:
                await self._write_pending_row(row, existing)
                if sent.held and sent.due is None:
                    # The row this start won, handed over with the message: the engine's first episode
                    # needs it and is spared reading it back (a delayed start reads it when due).
                    sent.start_row = row
            finally:
                # Hand over only now, whether this start won or lost: the worker's de-dupe reads this
                # row to tell a start that won from one that lost a race, and would otherwise find no
                # row yet and back off.
                if self._handoff is not None:
                    queue.hand_over(self._handoff, sent)
        self._log.instance(instance_id).info(
            "scheduled %s (execution %s, generation %d)", name, execution_id, generation
        )
        return instance_id

    async def _enqueue_start(
        self, instance_id: str, queue: MessageQueue, started: ExecutionStartedEvent, delay: timedelta | None
    ) -> tuple[InstanceState | None, ExecutionStartedEvent, ReceivedMessage]:
        """De-dupe against the instance's row and enqueue its start message: the row as read, the
        start as sent, and the message as enqueued. Raises InstanceExistsError when the row refuses.

        The message goes first, as in DT.AS: a crash before the row leaves a message that the
        worker's de-dupe drops, whereas a row without a message would stay Pending forever. An
        undelayed start that fits a queue message is enqueued while the row is read, guessing that the
        ID is new (generation 0, the common case), when an engine of this process may take it over: its
        message is then invisible until handed over, so no worker polls it before its row exists and
        puts it back for a while. When the ID has a row after all, that message is taken back and the
        start sent again for the next generation under a new execution ID, so that a copy the
        take-back missed names an execution that no row names: the worker drops it.
        """
        read = self.hub.tracking.get_instance(instance_id, fetch_large_values=False)
        guess = client_message(instance_id, _execution_id(started), started)
        if (
            self._handoff is not None
            and delay is None
            and len(guess.encode().encode("utf-8")) <= MAX_QUEUE_PAYLOAD_BYTES
        ):
            existing, sent = await asyncio.gather(read, queue.put(guess, None, self._handoff))
            if existing is None:
                return None, started, sent
            await self._take_back(queue, sent)
        else:
            existing = await read
        if existing is not None and existing.runtime_status in self._dedupe_statuses:
            self._log.instance(instance_id).info(
                "start refused, instance is %s", existing.runtime_status.name
            )
            raise _exists_error(existing.runtime_status)
        if existing is not None:
            started = replace(
                started,
                orchestration_instance=OrchestrationInstance(instance_id, uuid.uuid4().hex),
                generation=existing.generation + 1,
            )
        message = client_message(instance_id, _execution_id(started), started)
        return existing, started, await queue.put(message, delay, self._handoff)

    async def _take_back(self, queue: MessageQueue, sent: ReceivedMessage) -> None:
        """Delete a start message enqueued for a generation that turned out wrong."""
        if sent.held and self._handoff is not None:
            self._handoff.release(queue.name)
        try:
            await queue.delete(sent)
        except HttpResponseError as exc:
            self._log.instance(sent.data.instance_id).info(
                "start message for a wrong generation left to the worker's de-dupe: %s", exc
            )

    async def _write_pending_row(self, row: InstanceState, existing: InstanceState | None) -> None:
        """Insert or conditionally replace the Pending row; raise InstanceExistsError if another start won.

        Unlike DT.AS, which ignores a lost write, the storage decides a race between two starts of
        one ID: the conditional write succeeds for exactly one of them.
        """
        tracking = self.hub.tracking
        if await self.hub.instances.created(row, existing):
            return
        current = await tracking.get_instance(row.instance_id, fetch_large_values=False)
        if current is None:
            # The row was purged between our read and our write: the ID is free again.
            won = await self.hub.instances.created(row, None)
            if won:
                return
            current = await tracking.get_instance(row.instance_id, fetch_large_values=False)
        if current is not None and current.execution_id == row.execution_id:
            # A retried request whose first attempt had already written our row.
            return
        status = current.runtime_status if current is not None else None
        self._log.instance(row.instance_id).warning(
            "a concurrent start won the Instances row (execution %s); start of execution %s refused",
            current.execution_id if current is not None else None,
            row.execution_id,
        )
        # Our ExecutionStarted message is already queued. The worker's ExecutionStarted de-dupe drops
        # it because the row names another execution of the same generation.
        raise _exists_error(status)

    async def get_status(self, instance_id: str) -> OrchestrationState | None:
        """The instance's current state, or None if there is no such instance (entity IDs allowed)."""
        validate_instance_id(instance_id, allow_entity=True)
        row = await self.hub.tracking.get_instance(instance_id)
        return OrchestrationState.from_instance(row) if row is not None else None

    async def raise_event(self, instance_id: str, event_name: str, data: str | None = None) -> None:
        """Send the external event ``event_name`` with JSON ``data`` to a non-terminal instance.

        Raises InstanceNotFoundError for an unknown ID and InvalidInstanceStateError when the instance
        is no longer running (DF answers 410 Gone).
        """
        if not event_name:
            raise ValidationError("event name must not be empty")
        self._check_payload("event data", data)
        await self._send_management(
            instance_id,
            EventRaisedEvent(name=event_name, input=data, timestamp=distinct_utc_now()),
            _RUNNING_STATUSES,
            f"raise event {event_name!r} for",
        )

    async def terminate(self, instance_id: str, reason: str | None = None) -> None:
        """Terminate a non-terminal instance; ``reason`` becomes its output."""
        self._check_payload("reason", reason)
        await self._send_management(
            instance_id,
            ExecutionTerminatedEvent(input=reason, timestamp=distinct_utc_now()),
            _RUNNING_STATUSES,
            "terminate",
        )

    async def suspend(self, instance_id: str, reason: str | None = None) -> None:
        """Suspend a Pending, Running or ContinuedAsNew instance.

        Raises InstanceNotFoundError, InstanceGoneError for an ended instance and, as DF does,
        InvalidOperationError for a suspended one.
        """
        self._check_payload("reason", reason)
        await self._send_management(
            instance_id,
            ExecutionSuspendedEvent(reason=reason, timestamp=distinct_utc_now()),
            _SUSPENDABLE_STATUSES,
            "suspend",
            invalid_operation=True,
        )

    async def resume(self, instance_id: str, reason: str | None = None) -> None:
        """Resume a Suspended instance.

        Raises InstanceNotFoundError, InstanceGoneError for an ended instance and, as DF does,
        InvalidOperationError for one that is not suspended.
        """
        self._check_payload("reason", reason)
        await self._send_management(
            instance_id,
            ExecutionResumedEvent(reason=reason, timestamp=distinct_utc_now()),
            _RESUMABLE_STATUSES,
            "resume",
            invalid_operation=True,
        )

    async def rewind(self, instance_id: str, reason: str | None = None) -> None:
        """Rewind a Failed orchestration: its failed activities and sub-orchestrations run again.

        The worker replaces the failed execution with one that keeps the completed work (see
        ``durable_ext.worker.rewind``). Until it does, the Instances row says Pending, so a poller
        does not take the old Failed for the outcome. Raises InstanceNotFoundError, InstanceGoneError
        for a Completed, Terminated or Canceled instance and InvalidInstanceStateError for one that
        has not ended.
        """
        self._check_payload("reason", reason)
        row = await self._send_management(
            instance_id, ExecutionRewoundEvent(reason=reason), _REWINDABLE_STATUSES, "rewind"
        )
        # Conditional on the Failed row just read: the worker may already have run the rewind.
        await self.hub.instances.rewind_requested(row)

    async def _send_management(
        self,
        instance_id: str,
        event: HistoryEvent,
        allowed: frozenset[OrchestrationStatus],
        action: str,
        *,
        invalid_operation: bool = False,
    ) -> InstanceState:
        """Enqueue ``event`` if the instance exists in an ``allowed`` status; returns the row read.

        A running instance in another status is refused with InvalidOperationError if
        ``invalid_operation`` (as DF refuses it), else InvalidInstanceStateError; an ended one with
        InstanceGoneError.
        """
        validate_instance_id(instance_id)
        row = await self.hub.tracking.get_instance(instance_id, fetch_large_values=False)
        if row is None:
            raise InstanceNotFoundError(f"no instance with ID {instance_id!r} exists in hub {self._hub_name}")
        if row.runtime_status not in allowed:
            raise self._refusal(row, action, invalid_operation=invalid_operation)
        # ExecutionId None addresses the current execution, whichever it is when the message arrives.
        await self._send(instance_id, client_message(instance_id, None, event))
        self._log.instance(instance_id).info("sent %s (%s)", event.event_type.name, action)
        return row

    def _refusal(
        self, row: InstanceState, action: str, *, invalid_operation: bool
    ) -> InvalidInstanceStateError:
        """The error for ``action`` on an instance whose status does not allow it, logged."""
        status = row.runtime_status.name if row.runtime_status is not None else "unknown"
        log = self._log.instance(row.instance_id)
        if invalid_operation and row.runtime_status not in _ENDED_STATUSES:
            # DF's warning and exception texts, word for word: callers match on them.
            log.warning("Cannot %s orchestration instance in the %s state.", action, status)
            return InvalidOperationError(
                f"Cannot {action} the orchestration instance {row.instance_id} because instance is in the "
                f"{status} state."
            )
        log.info("cannot %s the instance in the %s state", action, status)
        error = InstanceGoneError if row.runtime_status in _ENDED_STATUSES else InvalidInstanceStateError
        return error(f"cannot {action} instance {row.instance_id!r} because it is in the {status} state")

    async def wait_for_completion(
        self, instance_id: str, timeout: float, poll_interval: float = 0.05
    ) -> OrchestrationState:
        """Poll the status until the instance is Completed, Failed, Terminated or Canceled.

        ContinuedAsNew is not an end: the next generation runs under the same ID. Raises TimeoutError,
        naming the last status seen, when ``timeout`` seconds pass first. Polls at most every
        :data:`MIN_POLL_INTERVAL` seconds whatever ``poll_interval`` asks: each poll is a storage read.
        An end that an engine of this process writes is read at once, without waiting for the next poll.
        """
        validate_instance_id(instance_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            # Watched from before the read, so that an end written by an engine of this process while
            # the read is under way ends the pause that follows at once.
            with INSTANCE_ENDS.watching(self._hub_name, instance_id) as ended:
                state = await self.get_status(instance_id)
                if (
                    state is not None
                    and state.runtime_status is not None
                    and state.runtime_status.is_terminal
                ):
                    return state
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise TimeoutError(self._not_completed(instance_id, timeout, state))
                pause = min(max(poll_interval, MIN_POLL_INTERVAL), remaining)
                await asyncio.wait([ended], timeout=pause)

    def _not_completed(self, instance_id: str, timeout: float, state: OrchestrationState | None) -> str:
        """Why :meth:`wait_for_completion` gave up, naming the last status seen."""
        if state is None:
            seen = "the instance does not exist"
        elif state.runtime_status is None:
            seen = "its status is unknown"
        else:
            seen = f"it is {state.runtime_status.name}"
        return f"hub {self._hub_name} instance {instance_id!r} did not complete within {timeout:g} s; {seen}"

    async def query_instances(
        self,
        query: InstanceQuery | None = None,
        *,
        page_size: int = DEFAULT_QUERY_PAGE_SIZE,
        continuation_token: str | None = None,
        show_input: bool = True,
    ) -> InstanceQueryResult:
        """One page of the instances matching ``query`` (all orchestrations when None).

        Filtering happens in the table service. Pass the returned ``continuation_token`` back to get
        the next page; it is None after the last one. Inputs are left out unless ``show_input``.
        A page ends early rather than hold more than :data:`MAX_QUERY_PAGE_BYTES` of payloads.
        Raises ValidationError for a token that this method did not return and for an instance ID
        prefix longer than an instance ID may be.
        """
        if query is not None and query.instance_id_prefix:
            _check_instance_id_prefix(query.instance_id_prefix)
        page = await self.hub.tracking.query_instances(
            query or InstanceQuery(),
            top=page_size,
            continuation_token=continuation_token,
            fetch_inputs=show_input,
            max_bytes=MAX_QUERY_PAGE_BYTES,
        )
        return InstanceQueryResult(
            [OrchestrationState.from_instance(row) for row in page.rows], page.continuation_token
        )

    async def purge_instance(self, instance_id: str) -> int:
        """Delete an ended instance's history, blobs and Instances row; returns 1, or 0 if there is none.

        Raises InstanceNotEndedError while an orchestration has not ended: its worker would go on
        writing history for an instance that no longer exists. Entities (``@name@key``) are always
        "Running" and may be purged as they are.
        """
        validate_instance_id(instance_id, allow_entity=True)
        row = await self.hub.tracking.get_instance(instance_id, fetch_large_values=False)
        if row is None:
            return 0
        if not instance_id.startswith("@") and row.runtime_status not in _ENDED_STATUSES:
            status = row.runtime_status.name if row.runtime_status is not None else "unknown"
            raise InstanceNotEndedError(
                f"only instances that have ended can be purged; instance {instance_id!r} is {status}"
            )
        return 1 if await self._purge(row) else 0

    async def purge_instances(
        self,
        created_from: datetime,
        created_to: datetime | None = None,
        statuses: Collection[OrchestrationStatus] | None = None,
    ) -> int:
        """Purge every ended orchestration created in ``[created_from, created_to]``; returns how many.

        ``statuses`` narrows the set (default: Completed, Failed, Terminated, Canceled). Unlike DT.AS,
        which silently drops the filter when it names no ended status and then purges running
        instances too, naming a status that has not ended is a ValidationError.
        """
        wanted = frozenset(statuses) if statuses else _ENDED_STATUSES
        running = wanted - _ENDED_STATUSES
        if running:
            names = ", ".join(sorted(status.name for status in running))
            raise ValidationError(f"only instances that have ended can be purged, not {names} ones")
        query = InstanceQuery(created_from=created_from, created_to=created_to or utc_now(), statuses=wanted)
        deleted = await self._purge_matching(query)
        self._log.info("purged %d instances created %s to %s", deleted, query.created_from, query.created_to)
        return deleted

    async def purge_ended_before(self, status: OrchestrationStatus, completed_before: datetime) -> int:
        """Purge every orchestration that ended with ``status`` before ``completed_before``; returns how many.

        This is what the instance retention policy runs (``durable_ext.worker.retention``).
        """
        if status not in _ENDED_STATUSES:
            raise ValidationError(f"only instances that have ended can be purged, not {status.name} ones")
        deleted = await self._purge_matching(
            InstanceQuery(statuses=frozenset({status}), completed_to=completed_before)
        )
        if deleted:
            self._log.info(
                "purged %d %s instances that ended before %s", deleted, status.name, completed_before
            )
        return deleted

    async def _purge_matching(self, query: InstanceQuery) -> int:
        deleted = 0
        async for rows in self._all_rows(query):
            deleted += await _purge_all(rows, self._purge)
        return deleted

    def _all_rows(self, query: InstanceQuery) -> AsyncIterator[list[InstanceState]]:
        """Every Instances row matching ``query``, a page at a time, without inputs or blob contents.

        The caller may delete a page's rows before it asks for the next: the token points past them.
        """
        return self.hub.tracking.instance_pages(
            query, top=DEFAULT_QUERY_PAGE_SIZE, fetch_inputs=False, fetch_large_values=False
        )

    async def _purge(self, row: InstanceState) -> bool:
        """Purge the instance ``row`` describes; False if a start replaced the row meanwhile (it wins)."""
        outcome = await self.hub.instances.purged(row)
        if outcome is None:
            self._log.instance(row.instance_id).info(
                "not purged, it changed since it was judged (a concurrent start wins)"
            )
            return False
        self._log.instance(row.instance_id).info(
            "purged (%d history rows, %d blobs)", outcome.history_rows, outcome.blobs
        )
        return True

    async def restart(self, instance_id: str, *, new_instance_id: bool = True) -> str:
        """Start the instance's orchestrator again with its original input; returns the new instance ID.

        With ``new_instance_id=False`` the instance is started again under its own ID, which fails with
        InstanceExistsError while it has not ended (per ``overridable_states``).
        """
        validate_instance_id(instance_id)
        row = await self.hub.tracking.get_instance(instance_id)
        if row is None:
            raise InstanceNotFoundError(f"no instance with ID {instance_id!r} exists in hub {self._hub_name}")
        if not row.name:
            raise InvalidInstanceStateError(f"instance {instance_id!r} has no orchestrator name to restart")
        started = await self.start_new(row.name, None if new_instance_id else instance_id, row.input)
        self._log.instance(instance_id).info("restarted as %s", started)
        return started

    async def signal_entity(
        self,
        entity_id: str,
        operation: str,
        input: str | None = None,
        *,
        scheduled_time: datetime | None = None,
    ) -> None:
        """Send a one-way operation to the entity ``@name@key`` (created on first use).

        ``input`` is JSON text. A scheduled signal is delivered no earlier than ``scheduled_time``.
        """
        _validate_entity_id(entity_id)
        if not operation:
            raise ValidationError("an entity operation needs a non-empty name")
        self._check_payload("entity operation input", input)
        delay = None
        if scheduled_time is not None:
            # The entity re-queues a signal that arrives early; the queue caps one delay at 6 days.
            delay = min(as_utc(scheduled_time) - self._now(), MAX_SIGNAL_DELAY)  # type: ignore[operator]
        entity_name, _ = parse_entity_instance_id(entity_id)
        with tracing.signal_entity(entity_id, entity_name, operation) as trace:
            event = request_event(
                entity_id,
                operation,
                input,
                request_id=str(uuid.uuid4()),
                is_signal=True,
                parent_instance_id=None,
                parent_execution_id=None,
                scheduled_time=scheduled_time,
                trace=trace,
            )
            await self._send(entity_id, client_message(entity_id, None, event), delay)
        self._log.instance(entity_id).info("signalled %s", operation)

    async def read_entity_state(self, entity_id: str) -> EntitySnapshot:
        """The entity's current state as its last checkpoint stored it."""
        _validate_entity_id(entity_id)
        row = await self.hub.tracking.get_instance(entity_id)
        if row is None:
            return EntitySnapshot(entity_id, exists=False, state=None, last_modified=None)
        scheduler = SchedulerState.from_json_text(row.input)
        return EntitySnapshot(
            entity_id,
            exists=scheduler.entity_exists,
            state=scheduler.state if scheduler.entity_exists else None,
            last_modified=row.last_updated_time,
        )

    async def query_entities(
        self,
        entity_name: str | None = None,
        *,
        last_operation_from: datetime | None = None,
        last_operation_to: datetime | None = None,
        fetch_state: bool = False,
        page_size: int = DEFAULT_QUERY_PAGE_SIZE,
        continuation_token: str | None = None,
    ) -> EntityQueryResult:
        """One page of the entities that exist, all of them or those named ``entity_name`` (any case).

        ``last_operation_from``/``_to`` bound the time of the last operation (inclusive; naive datetimes
        are UTC). States are read only with ``fetch_state``. As in DF, deleted entities and the time
        filter are applied to the rows a page read, so a page holds at most ``page_size`` entities and
        may hold fewer, yet never none while a continuation token follows. Pass the returned token back
        for the next page.
        """
        query = InstanceQuery(instance_id_prefix=_entity_id_prefix(entity_name), exclude_entities=False)
        low, high = as_utc(last_operation_from), as_utc(last_operation_to)
        token = continuation_token
        while True:
            page = await self.query_instances(
                query, page_size=page_size, continuation_token=token, show_input=fetch_state
            )
            entities = [
                EntitySnapshot(
                    row.instance_id,
                    exists=True,
                    state=SchedulerState.from_json_text(row.input).state if fetch_state else None,
                    last_modified=row.last_updated_time,
                )
                for row in page.instances
                if _entity_exists(row.custom_status) and _within(row.last_updated_time, low, high)
            ]
            token = page.continuation_token
            # A page of nothing but deleted entities would make callers ask again for no result.
            if entities or token is None:
                return EntityQueryResult(entities, token)

    async def clean_entity_storage(self, *, min_idle: timedelta = ENTITY_CLEAN_MIN_IDLE) -> int:
        """Purge every empty entity (no state, no queued operation, no lock); returns how many went.

        As DF's ``CleanEntityStorageAsync`` it judges an entity by its ``EntityStatus`` (the CustomStatus
        column), so no state is read. Only entities idle for at least ``min_idle`` go: an entity keeps
        the IDs of the requests it ran to drop redelivered messages, and a message redelivered after
        the purge would run again on a fresh entity; as in DF, an operation that arrives while its
        entity is being purged may go with it. Entities whose status cannot be read are kept.
        """
        if min_idle < timedelta(0):
            raise ValidationError(f"min_idle must not be negative, got {min_idle}")
        now = utc_now()
        if min_idle >= now - datetime.min.replace(tzinfo=UTC):
            return 0  # longer than the calendar goes back: nothing can have been idle that long
        idle_since = now - min_idle
        query = InstanceQuery(instance_id_prefix=_ENTITY_ID_PREFIX, exclude_entities=False)
        removed = 0
        async for rows in self._all_rows(query):
            empty = [
                row
                for row in rows
                if _entity_is_empty(row.custom_status)
                and row.last_updated_time is not None
                and row.last_updated_time <= idle_since
            ]
            # Not purge_instance: the rows were just read, and its ID check would stop the whole
            # clean-up at a key the engine stores but the instance-ID rules refuse (such as '#').
            removed += await _purge_all(empty, self._purge)
        self._log.info("removed %d empty entities idle since %s", removed, idle_since)
        return removed

    def _check_payload(self, what: str, payload: str | None) -> None:
        if payload is None:
            return
        size = len(payload.encode("utf-8"))
        if size > self.max_payload_bytes:
            raise PayloadTooLargeError(
                f"{what} is {size} bytes of UTF-8; at most {self.max_payload_bytes} are allowed"
            )


@dataclass(frozen=True)
class EntitySnapshot:
    """An entity's stored state: ``state`` is JSON text, None when the entity does not exist.

    Entities listed by :meth:`TaskHubClient.query_entities` without ``fetch_state`` have no state either.
    """

    entity_id: str
    exists: bool
    state: str | None
    last_modified: datetime | None


async def _purge_all(rows: list[InstanceState], purge: Callable[[InstanceState], Awaitable[bool]]) -> int:
    """Purge every row, :data:`_PURGES_IN_FLIGHT` at a time; returns how many were purged."""
    purged = 0
    for first in range(0, len(rows), _PURGES_IN_FLIGHT):
        batch = rows[first : first + _PURGES_IN_FLIGHT]
        purged += sum(await asyncio.gather(*(purge(row) for row in batch)))
    return purged


def _validate_entity_id(entity_id: str) -> None:
    """``@name@key`` that is also a valid instance ID (length, no ``/ \\ # ?``, no control characters)."""
    parse_entity_instance_id(entity_id)
    validate_instance_id(entity_id, allow_entity=True)


def _entity_id_prefix(entity_name: str | None) -> str:
    """What the instance IDs of entities named ``entity_name`` (of every entity for None) start with."""
    if entity_name is None:
        return _ENTITY_ID_PREFIX
    # entity_instance_id checks the name and lower-cases it as IDs do; the placeholder key is cut off.
    prefix = entity_instance_id(entity_name, "_")[:-1]
    if len(prefix) >= MAX_INSTANCE_ID_LENGTH:
        raise ValidationError(
            f"entity name {_shown(entity_name)} is {len(entity_name)} characters long; "
            f"an entity ID '@name@key' has at most {MAX_INSTANCE_ID_LENGTH}"
        )
    return prefix


def _entity_status(custom_status: str | None) -> dict[str, Any] | None:
    """An entity row's ``EntityStatus`` (entityExists, queueSize, lockedBy); None if unreadable."""
    try:
        status = json.loads(custom_status) if custom_status else None
    except json.JSONDecodeError:
        return None
    return status if isinstance(status, dict) else None


def _entity_exists(custom_status: str | None) -> bool:
    status = _entity_status(custom_status)
    return status is not None and status.get("entityExists") is True


def _entity_is_empty(custom_status: str | None) -> bool:
    status = _entity_status(custom_status)
    return (
        status is not None
        and status.get("entityExists") is not True
        and not status.get("queueSize")
        and status.get("lockedBy") is None
    )


def _within(moment: datetime | None, low: datetime | None, high: datetime | None) -> bool:
    if low is None and high is None:
        return True
    return moment is not None and (low is None or moment >= low) and (high is None or moment <= high)


def _execution_id(started: ExecutionStartedEvent) -> str:
    instance = started.orchestration_instance
    assert instance is not None and instance.execution_id is not None, "a start names its execution"
    return instance.execution_id


def client_message(instance_id: str, execution_id: str | None, event: HistoryEvent) -> MessageData:
    """A message as a DT.AS client sends it: Sender with empty IDs, no episode, no execution context."""
    return MessageData(
        task_message=TaskMessage(
            event=event, orchestration_instance=OrchestrationInstance(instance_id, execution_id)
        ),
        sender=OrchestrationInstance("", ""),
    )


def _exists_error(status: OrchestrationStatus | None) -> InstanceExistsError:
    name = status.name if status is not None else "unknown"
    # DT.AS' OrchestrationAlreadyExistsException text, which DF passes on to callers.
    return InstanceExistsError(f"An Orchestration instance with the status {name} already exists.", status)
