"""The Instances row's transitions: every write to it, named, with its columns and its conditions.

The row is written by the client (a start, a rewind), the worker (each checkpoint, a termination
before the start, a repair, a quarantine) and ``doctor``. Each of those is one method of
:class:`InstanceRows`, so which columns a transition sets, and whether it is conditional on the row
it read, is decided here once. A :class:`RowUpdate` is a partial row: what a merge sets, leaving the
other columns as they are (the Azure Storage provider's InsertOrMerge).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from durable_ext.history import (
    ContinueAsNewEvent,
    ExecutionCompletedEvent,
    ExecutionResumedEvent,
    ExecutionRewoundEvent,
    ExecutionStartedEvent,
    ExecutionSuspendedEvent,
    ExecutionTerminatedEvent,
    HistoryEvent,
    OrchestrationStatus,
    utc_now,
)
from durable_ext.logs import hub_log
from durable_ext.storage.tracking import InstanceState, PurgeOutcome, TrackingStore

logger = logging.getLogger(__name__)

QUARANTINE_MARK = "durable_ext quarantined"
"""How the Output of an instance marked Failed by a quarantine begins."""


@dataclass(frozen=True)
class RowUpdate:
    """A partial Instances row: ``state``'s values for ``columns``; other columns keep theirs."""

    state: InstanceState
    columns: tuple[str, ...]

    def without(self, column: str) -> RowUpdate:
        """The same update leaving ``column`` as the row has it."""
        return RowUpdate(self.state, tuple(c for c in self.columns if c != column))


class InstanceEnds:
    """In-process notices that an engine wrote an instance's row in a terminal status.

    A client in the engine's process waits on them (``TaskHubClient.wait_for_completion``) instead of
    finding the end only at its next status poll. It still reads the row from storage, and still
    polls for ends written elsewhere (another process, a repair, ``doctor``). Watches are keyed by
    task hub and instance; a notice from a same-named hub of another account only costs one read.
    """

    def __init__(self) -> None:
        self._waiters: dict[tuple[str, str], set[asyncio.Future[None]]] = {}

    def ended(self, hub_name: str, instance_id: str) -> None:
        """The instance's row was just written with a terminal status."""
        for waiter in self._waiters.get((hub_name, instance_id), ()):
            loop = waiter.get_loop()
            if loop is _running_loop():
                _settle(waiter)
            else:
                loop.call_soon_threadsafe(_settle, waiter)

    @contextlib.contextmanager
    def watching(self, hub_name: str, instance_id: str) -> Iterator[asyncio.Future[None]]:
        """A future done at the next end of the instance notified within the ``with`` block."""
        key = (hub_name, instance_id)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault(key, set())
        waiters.add(waiter)
        try:
            yield waiter
        finally:
            waiters.discard(waiter)
            if not waiters:
                del self._waiters[key]


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _settle(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


INSTANCE_ENDS = InstanceEnds()
"""This process's notices of instance ends (engines notify, clients watch)."""


def update_from_history(
    instance_id: str,
    execution_id: str | None,
    events: Sequence[HistoryEvent],
    hub_name: str,
    now: datetime,
    *,
    custom_status: str | None = None,
) -> RowUpdate:
    """The row that ``events`` of one execution imply.

    ``events`` are the execution's events (all of them, or just an episode's new ones: only the
    columns those events say something about are set). LastUpdatedTime is the last event's
    timestamp; CompletedTime of a finished execution is ``now``.
    """
    state = InstanceState(
        instance_id=instance_id,
        execution_id=execution_id,
        custom_status=custom_status,
        last_updated_time=events[-1].timestamp,
        task_hub_name=hub_name,
    )
    columns = ["CustomStatus", "ExecutionId", "LastUpdatedTime", "TaskHubName"]
    for event in events:
        columns += _apply(state, event, now)
    return RowUpdate(state, tuple(columns))


def _apply(state: InstanceState, event: HistoryEvent, now: datetime) -> list[str]:
    """Set what ``event`` says about the row; returns the columns it set."""
    if isinstance(event, ExecutionStartedEvent):
        state.name, state.version, state.input = event.name, event.version or "", event.input
        state.created_time, state.generation, state.tags = event.timestamp, event.generation, event.tags
        state.runtime_status = OrchestrationStatus.Running
        state.scheduled_start_time = event.scheduled_start_time
        columns = ["Name", "Version", "Input", "CreatedTime", "Generation", "Tags", "RuntimeStatus"]
        return [*columns, "ScheduledStartTime"] if event.scheduled_start_time is not None else columns
    if isinstance(event, ExecutionCompletedEvent):
        state.runtime_status = event.orchestration_status
        state.output = str(event.failure_details) if event.failure_details else event.result
        if isinstance(event, ContinueAsNewEvent):
            return ["RuntimeStatus", "Output"]
        state.completed_time = now
        return ["RuntimeStatus", "Output", "CompletedTime"]
    if isinstance(event, (ExecutionSuspendedEvent, ExecutionResumedEvent)):
        suspended = isinstance(event, ExecutionSuspendedEvent)
        state.runtime_status = OrchestrationStatus.Suspended if suspended else OrchestrationStatus.Running
        state.output = event.reason
        return ["RuntimeStatus", "Output"]
    if isinstance(event, ExecutionRewoundEvent):
        state.runtime_status = OrchestrationStatus.Running
        return ["RuntimeStatus"]
    return []


def entity_update(
    instance_id: str,
    execution_id: str,
    *,
    scheduler_state: str,
    entity_status: str,
    created: datetime,
    now: datetime,
    hub_name: str,
) -> RowUpdate:
    """The row of an entity, as Durable Functions writes it: the scheduler state as Input, the
    ``EntityStatus`` JSON as CustomStatus, always Running."""
    state = InstanceState(
        instance_id=instance_id,
        execution_id=execution_id,
        name=instance_id,
        version="",
        input=scheduler_state,
        runtime_status=OrchestrationStatus.Running,
        custom_status=entity_status,
        created_time=created,
        last_updated_time=now,
        task_hub_name=hub_name,
    )
    columns = ("ExecutionId", "Name", "Version", "Input", "RuntimeStatus", "CustomStatus")
    return RowUpdate(state, (*columns, "LastUpdatedTime", "TaskHubName", "CreatedTime"))


class InstanceRows:
    """Every write to the Instances table, one method per transition."""

    def __init__(self, tracking: TrackingStore) -> None:
        self._tracking = tracking

    async def created(self, row: InstanceState, replacing: InstanceState | None) -> bool:
        """A client's start: insert the Pending row, or replace the ended one it read (by its ETag).

        False when another writer got there first: the storage decides a race between two starts.
        """
        if replacing is None or replacing.etag is None:
            return await self._tracking.insert_instance(row)
        return await self._tracking.replace_instance(row, replacing.etag)

    async def checkpointed(self, update: RowUpdate) -> None:
        """An episode's status, after its history write (the checkpoint's unconditional merge: the
        sentinel ETag already decided who owns the instance)."""
        await self._tracking.merge_instance(update.state, columns=update.columns)

    async def rewind_requested(self, row: InstanceState) -> bool:
        """Pending while a rewind waits for the worker; only if the Failed row read is unchanged."""
        pending = InstanceState(
            row.instance_id, runtime_status=OrchestrationStatus.Pending, last_updated_time=utc_now()
        )
        return await self._tracking.merge_instance(
            pending, ["RuntimeStatus", "LastUpdatedTime"], etag=row.etag
        )

    async def terminated_before_start(self, instance_id: str, event: ExecutionTerminatedEvent) -> bool:
        """Terminated without a history: only a row still Pending, and only as it was read, so a
        start that turned it Running meanwhile is not overwritten."""
        row = await self._tracking.get_instance(instance_id, fetch_large_values=False)
        if row is None or row.runtime_status is not OrchestrationStatus.Pending or row.etag is None:
            return False
        state = InstanceState(
            instance_id,
            runtime_status=OrchestrationStatus.Terminated,
            output=event.input,
            last_updated_time=event.timestamp,
            completed_time=utc_now(),
        )
        columns = ["RuntimeStatus", "Output", "LastUpdatedTime", "CompletedTime"]
        return await self._tracking.merge_instance(state, columns, etag=row.etag)

    async def repaired(
        self, instance_id: str, execution_id: str | None, events: Sequence[HistoryEvent]
    ) -> bool:
        """Rewrite the row from the history whose status it disagrees with; True if so.

        See docs/storage-protocol.md §7.1.

        A crash (or a storage error) between the history write and the Instances write leaves the
        row behind: Running for a history that completed, or Pending for one that started. Only the
        history is authoritative. A row naming another execution (a new start in progress) is left
        alone, as is a row that already has the history's status.
        """
        completed = next((e for e in events if isinstance(e, ExecutionCompletedEvent)), None)
        now = completed.timestamp if completed is not None else events[-1].timestamp
        update = update_from_history(instance_id, execution_id, events, self._tracking.hub_name, now)
        row = await self._tracking.get_instance(instance_id, fetch_large_values=False)
        if row is not None and row.execution_id not in (None, execution_id):
            return False
        if row is not None and row.runtime_status is update.state.runtime_status:
            return False
        # The history does not keep the custom status: leave whatever the row has.
        await self.checkpointed(update.without("CustomStatus"))
        hub_log(logger, self._tracking.hub_name).instance(instance_id).warning(
            "Instances row said %s; repaired to %s from history",
            _status_name(row),
            _status_name(update.state),
        )
        return True

    async def quarantined(self, instance_id: str, reason: str) -> None:
        """Failed with ``reason`` (beginning with :data:`QUARANTINE_MARK`): messages of the instance
        were taken out of circulation. The next successful episode writes the status back."""
        failed = InstanceState(
            instance_id,
            runtime_status=OrchestrationStatus.Failed,
            output=json.dumps(reason),
            last_updated_time=utc_now(),
        )
        await self._tracking.merge_instance(failed, columns=["RuntimeStatus", "Output", "LastUpdatedTime"])

    async def released_from_quarantine(self, instance_id: str) -> None:
        """Undo :meth:`quarantined` once the messages are back: the history says where it stands."""
        row = await self._tracking.get_instance(instance_id, fetch_large_values=False)
        if row is None or row.runtime_status is not OrchestrationStatus.Failed:
            return
        if not (row.output or "").lstrip('"').startswith(QUARANTINE_MARK):
            return
        load = await self._tracking.load_history(instance_id)
        if any(isinstance(e, ExecutionCompletedEvent) for e in load.events):
            await self.repaired(instance_id, load.execution_id, load.events)
            return
        started = any(isinstance(e, ExecutionStartedEvent) for e in load.events)
        state = InstanceState(
            instance_id,
            runtime_status=OrchestrationStatus.Running if started else OrchestrationStatus.Pending,
            output="null",
            last_updated_time=utc_now(),
        )
        await self._tracking.merge_instance(
            state, columns=["RuntimeStatus", "Output", "LastUpdatedTime"], etag=row.etag
        )

    async def purged(self, row: InstanceState) -> PurgeOutcome | None:
        """Delete what ``row`` describes; None if it changed since it was read (a start won)."""
        return await self._tracking.purge_instance(row)


def _status_name(row: InstanceState | None) -> str:
    if row is None:
        return "nothing"
    return row.runtime_status.name if row.runtime_status is not None else "unknown"
