"""The table partition manager: which worker listens to which control queue (docs/storage-protocol.md §6.2).

Every worker runs one loop over the ``{Hub}Partitions`` table. Each pass reads all rows, claims free or
expired ones, renews its own, hands over rows another worker asked for (after draining them), steals
rows from workers that shut down, and finally asks over-loaded workers for rows until the partitions are
balanced. Rows are only ever changed with Replace + If-Match, so two workers never both win a row: the
loser gets HTTP 412 and re-reads the table on its next pass. The protocol and its row format are those of
DurableTask.AzureStorage 2.x, so this manager can share a task hub with .NET workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient

from durable_ext.storage.outage import storage_health
from durable_ext.storage.partitions import PartitionLease

logger = logging.getLogger(__name__)

# After this many failed passes in a row, wait a full acquire interval between retries (as DT.AS does)
# so that a storage outage does not turn into a hot loop of error logs.
MAX_CONSECUTIVE_FAILURES = 10


@dataclass(frozen=True)
class PartitionManagerOptions:
    """Timings of the partition manager; the defaults are those of DT.AS."""

    acquire_interval: timedelta = timedelta(seconds=10)
    """``LeaseAcquireInterval``: the pause between two passes in the steady state."""
    lease_interval: timedelta = timedelta(seconds=30)
    """``LeaseInterval``: a renewal sets ``ExpiresAt`` to now plus this."""
    claim_duration: timedelta = timedelta(minutes=1)
    """A fresh claim sets ``ExpiresAt`` to now plus this (hard-coded to one minute in DT.AS)."""
    fast_interval: timedelta = timedelta(seconds=1)
    """The pause between passes while draining a partition or waiting for one to be handed over."""
    drain_timeout: timedelta = timedelta(seconds=60)
    """How long a drain may wait for the listener to finish a queue before the row is released anyway."""
    operation_timeout: timedelta = timedelta(seconds=2)
    """``PartitionTableOperationTimeout``: the time limit of one read-modify-write pass."""
    shutdown_timeout: timedelta = timedelta(minutes=10)
    """How long a graceful :meth:`TablePartitionManager.stop` waits for every owned row to be released."""


class PartitionListener(Protocol):
    """What the manager drives: the control-queue consumer of this worker."""

    async def start_listening(self, partition_id: str) -> None:
        """Begin dequeuing control queue ``partition_id``; called only while this worker owns its row."""

    async def stop_listening(self, partition_id: str) -> None:
        """Stop dequeuing ``partition_id`` and return once its in-flight sessions have finished.

        The manager releases the row only after this returns; if it takes longer than the drain timeout
        it is cancelled and the row is released anyway.
        """


@dataclass
class _RowUpdate:
    """What one pass did to one row; a row with any change is written back."""

    claimed: bool = False
    renewed: bool = False
    drain_started: bool = False
    released: bool = False
    stolen: bool = False
    listen: bool = False
    """Whether this worker should be listening to the row's queue once the write succeeded."""

    @property
    def changed(self) -> bool:
        return self.claimed or self.renewed or self.drain_started or self.released or self.stolen


@dataclass
class _PassResult:
    """What a pass learned: how many rows count as ours, and whether a hand-over is under way."""

    owned: int = 0
    """Rows we hold (and are not handing over), plus rows another worker is handing over to us."""
    draining: bool = False
    waiting_for_release: bool = False
    others: dict[str, list[PartitionLease]] = field(default_factory=dict)
    """Rows of every other worker, a row being stolen counting for its next owner (for balancing)."""


def _is_precondition_failed(exc: BaseException) -> bool:
    return isinstance(exc, HttpResponseError) and exc.status_code == 412


class TablePartitionManager:
    """One worker's partition manager loop over the ``{Hub}Partitions`` table (docs/storage-protocol.md §6.2).

    ``table`` is a client for ``{Hub}Partitions``; ``worker_id`` is the name written to ``CurrentOwner``
    and must be unique among the workers of the hub; ``listener`` is told when to start and stop
    dequeuing each control queue; ``storage`` names the account in outage reports (its ``describe()``).
    Use :meth:`start` and :meth:`stop`, or step :meth:`run_pass` by hand.
    """

    def __init__(
        self,
        table: TableClient,
        worker_id: str,
        listener: PartitionListener,
        options: PartitionManagerOptions | None = None,
        hub_name: str = "",
        *,
        storage: str,
    ) -> None:
        self.worker_id = worker_id
        self._storage = storage
        self._table = table
        self._listener = listener
        self._options = options or PartitionManagerOptions()
        self._hub = hub_name or table.table_name.removesuffix("Partitions")
        self._listening: set[str] = set()
        # One task per queue whose listener is being stopped (drain or lost lease). A queue is never in
        # both this and _listening, and it is not listened to again before its stop has finished.
        self._stopping: dict[str, asyncio.Task[None]] = {}
        self._held: frozenset[str] = frozenset()
        self._consecutive_failures = 0
        self._last_success: float | None = None
        self._next_pause = 0.0
        self._shutting_down = False
        self._shutdown_complete = False
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._pass_lock = asyncio.Lock()
        self._lifecycle = asyncio.Lock()

    @property
    def owned(self) -> frozenset[str]:
        """The control queues this worker is listening to."""
        return frozenset(self._listening)

    @property
    def options(self) -> PartitionManagerOptions:
        """The manager's timings."""
        return self._options

    @property
    def running(self) -> bool:
        """Whether the manager loop runs (started, not stopped, not ended by an error)."""
        return self._task is not None and not self._task.done()

    def since_last_success(self) -> timedelta | None:
        """How long ago a pass over the table last succeeded (renewing our leases); None: never."""
        if self._last_success is None:
            return None
        return timedelta(seconds=time.monotonic() - self._last_success)

    async def start(self) -> None:
        """Run the manager loop as a background task (does nothing if it is already running)."""
        async with self._lifecycle:
            if self._task is not None:
                return
            self._shutting_down = False
            self._shutdown_complete = False
            self._wake.clear()
            self._task = asyncio.create_task(self._run(), name=f"partition-manager-{self.worker_id}")

    async def stop(self, graceful: bool = True) -> None:
        """Stop the manager; calling it again (or before :meth:`start`) is harmless.

        ``graceful``: stop claiming and balancing, drain and release every owned row (``CurrentOwner``
        cleared, ``IsDraining`` false, ``NextOwner`` kept so a stealer claims it), then end the loop;
        gives up after the shutdown timeout and leaves the remaining leases to expire. Not graceful (a
        simulated crash): end the loop at once and leave the rows and the listener as they are.
        """
        async with self._lifecycle:
            task, self._task = self._task, None
            try:
                if graceful and (task is not None or self._held or self._listening):
                    self._shutting_down = True
                    self._shutdown_complete = False
                    self._wake.set()
                    if task is None:
                        # Rows claimed by passes stepped by hand are released by a loop run for that alone.
                        task = asyncio.create_task(self._run(), name=f"partition-manager-{self.worker_id}")
                    await self._wait_for_shutdown(task)
            finally:
                if task is not None:
                    task.cancel()
                    await asyncio.wait({task})
                await self._end_stops(cancel=not graceful)
                self._shutting_down = False

    async def _wait_for_shutdown(self, task: asyncio.Task[None]) -> None:
        timeout = self._options.shutdown_timeout
        done, _ = await asyncio.wait({task}, timeout=timeout.total_seconds())
        if not done:
            self._log(
                logging.ERROR,
                "could not release %s within %s; their leases will expire",
                ", ".join(sorted(self._held)),
                timeout,
            )

    async def _end_stops(self, cancel: bool) -> None:
        tasks = list(self._stopping.values())
        self._stopping.clear()
        if cancel:
            for task in tasks:
                task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def _run(self) -> None:
        self._log(logging.INFO, "partition manager started")
        try:
            while True:
                await self.run_pass()
                if self._shutdown_complete:
                    break
                await self._pause(self._next_pause)
        finally:
            self._log(logging.INFO, "partition manager stopped")

    async def _pause(self, seconds: float) -> None:
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), seconds)
        else:
            await asyncio.sleep(0)
        self._wake.clear()

    async def run_pass(self) -> None:
        """One read-modify-write pass over the table, bounded by the operation timeout.

        Never raises for storage trouble: a failure is logged and makes the next pause zero (retry at
        once) until ten passes in a row have failed. A 412 means another worker changed a row since
        this pass read it; the pass stops there and the next one starts from a fresh read.
        """
        async with self._pass_lock:
            shutting_down = self._shutting_down
            pause = self._options.acquire_interval
            try:
                async with asyncio.timeout(self._options.operation_timeout.total_seconds()):
                    result = await self._read_and_write(shutting_down)
            except TimeoutError:
                self._consecutive_failures += 1
                # During a known outage a slow pass is part of it, already logged once.
                if storage_health.reachable(self._storage):
                    self._log(
                        logging.WARNING,
                        "a pass over the partition table took longer than %s",
                        self._options.operation_timeout,
                    )
            except Exception as exc:
                self._consecutive_failures += 1
                if not _is_precondition_failed(exc) and not storage_health.failed(self._storage, exc):
                    self._log(logging.ERROR, "managing the partition leases failed: %s", exc, exc_info=True)
            else:
                storage_health.succeeded(self._storage)
                self._consecutive_failures = 0
                self._last_success = time.monotonic()
                self._shutdown_complete = shutting_down and result.owned == 0
                if result.draining or result.waiting_for_release:
                    pause = self._options.fast_interval
            if 0 < self._consecutive_failures < MAX_CONSECUTIVE_FAILURES:
                pause = timedelta(0)
            self._next_pause = pause.total_seconds()

    async def _read_and_write(self, shutting_down: bool) -> _PassResult:
        rows = [PartitionLease.from_entity(entity) async for entity in self._table.list_entities()]
        result = _PassResult()
        changed: list[tuple[PartitionLease, _RowUpdate]] = []
        for lease in rows:
            partition_id = lease.partition_id
            if partition_id in self._listening and lease.current_owner != self.worker_id:
                # We lost the row without noticing (e.g. it expired while we were stalled).
                self._log(
                    logging.WARNING,
                    "%s is held by %s: stop listening",
                    partition_id,
                    lease.current_owner or "nobody",
                )
                self._begin_stop(partition_id)
            update = self._shut_down_row(lease, result) if shutting_down else self._manage_row(lease, result)
            if update.changed:
                changed.append((lease, update))
        await self._write_rows([lease for lease, _ in changed])
        for lease, update in changed:
            self._log_update(lease, update)
            if update.listen:
                await self._ensure_listening(lease.partition_id)
        if not shutting_down:
            await self._balance(len(rows), result)
        self._held = frozenset(lease.partition_id for lease in rows if lease.current_owner == self.worker_id)
        return result

    def _manage_row(self, lease: PartitionLease, result: _PassResult) -> _RowUpdate:
        me = self.worker_id
        now = datetime.now(UTC)
        if lease.is_claimable_by(me, now):
            # Not renewed in the same pass: a fresh claim keeps its own, longer expiry.
            lease.claim(me, now, self._options.claim_duration)
            result.owned += 1
            return _RowUpdate(claimed=True, listen=True)
        if lease.current_owner != me:
            if lease.next_owner == me:
                result.owned += 1
                result.waiting_for_release = True
            elif lease.next_owner is not None:
                result.others.setdefault(lease.next_owner, []).append(lease)
            elif lease.is_draining:
                # Its owner is shutting down and nobody has asked for the row yet.
                lease.next_owner = me
                result.waiting_for_release = True
                return _RowUpdate(stolen=True)
            elif lease.current_owner is not None:
                result.others.setdefault(lease.current_owner, []).append(lease)
            return _RowUpdate()
        if lease.next_owner is None:
            lease.renew(now, self._options.lease_interval)
            result.owned += 1
            return _RowUpdate(renewed=True, listen=True)
        result.draining = True
        return self._drain(lease, now)

    def _shut_down_row(self, lease: PartitionLease, result: _PassResult) -> _RowUpdate:
        result.draining = True
        if lease.current_owner != self.worker_id:
            return _RowUpdate()
        update = self._drain(lease, datetime.now(UTC))
        if not update.released:
            result.owned += 1
        return update

    def _drain(self, lease: PartitionLease, now: datetime) -> _RowUpdate:
        """Hand one of our rows over: stop listening first, release the row once that has finished."""
        stopping = self._stopping.get(lease.partition_id)
        if stopping is not None and stopping.done():
            del self._stopping[lease.partition_id]
            lease.release()
            return _RowUpdate(released=True)
        if stopping is None:
            self._begin_stop(lease.partition_id)
        # Keep the row alive while the listener finishes its sessions.
        lease.is_draining = True
        lease.renew(now, self._options.lease_interval)
        return _RowUpdate(renewed=True, drain_started=stopping is None)

    async def _balance(self, row_count: int, result: _PassResult) -> None:
        """Ask workers holding more than their share for rows, until ours is ``rows // workers``."""
        if not result.others:
            return
        average = row_count // (len(result.others) + 1)
        if average < result.owned:
            return
        for owner, leases in result.others.items():
            wanted = average - result.owned
            if wanted < 0:
                break
            excess = len(leases) - average
            if excess <= 0:
                continue
            # Counts may differ by one at most: take one more from a worker two or more above average.
            if wanted == 0 and excess > 1:
                wanted = 1
            for lease in leases[: min(wanted, excess)]:
                result.owned += 1
                lease.next_owner = self.worker_id
                try:
                    await self._replace(lease)
                except Exception as exc:
                    if _is_precondition_failed(exc):
                        raise
                    # One failed steal should not stop the rest of the balancing.
                    self._log(logging.WARNING, "asking for %s failed: %s", lease.partition_id, exc)
                    continue
                result.waiting_for_release = True
                self._log(logging.INFO, "asked %s to hand over %s", owner, lease.partition_id)

    async def _write_rows(self, leases: list[PartitionLease]) -> None:
        """Write the rows a pass changed: one entity-group transaction for several (all rows share one
        PartitionKey), so renewing n leases costs one request rather than n.

        Every write keeps its If-Match, and the transaction is all or nothing: if any row changed
        since the pass read it, none is written and the 412 makes the next pass re-read the table, as
        a single failed replace does.
        """
        if len(leases) <= 1:
            for lease in leases:
                await self._replace(lease)
            return
        operations: list[tuple[str, dict[str, object], dict[str, object]]] = [
            (
                "update",
                lease.to_entity(),
                {
                    "mode": UpdateMode.REPLACE,
                    "etag": lease.etag,
                    "match_condition": MatchConditions.IfNotModified,
                },
            )
            for lease in leases
        ]
        try:
            results = await self._table.submit_transaction(operations)
        except HttpResponseError as exc:
            if _is_precondition_failed(exc):
                self._log(
                    logging.INFO,
                    "one of %s changed since it was read: re-reading the table",
                    ", ".join(lease.partition_id for lease in leases),
                )
            raise
        for lease, metadata in zip(leases, results, strict=True):
            lease.etag = metadata.get("etag")

    async def _replace(self, lease: PartitionLease) -> None:
        try:
            metadata = await self._table.update_entity(
                lease.to_entity(),
                mode=UpdateMode.REPLACE,
                etag=lease.etag,
                match_condition=MatchConditions.IfNotModified,
            )
        except HttpResponseError as exc:
            if _is_precondition_failed(exc):
                self._log(
                    logging.INFO,
                    "%s changed since it was read (ETag %s): re-reading the table",
                    lease.partition_id,
                    lease.etag,
                )
            raise
        lease.etag = metadata.get("etag")

    def _begin_stop(self, partition_id: str) -> None:
        self._listening.discard(partition_id)
        self._stopping[partition_id] = asyncio.create_task(
            self._stop_listening(partition_id), name=f"stop-listening-{partition_id}"
        )

    async def _stop_listening(self, partition_id: str) -> None:
        timeout = self._options.drain_timeout
        try:
            await asyncio.wait_for(self._listener.stop_listening(partition_id), timeout.total_seconds())
        except TimeoutError:
            self._log(
                logging.WARNING, "draining %s took longer than %s: giving it up anyway", partition_id, timeout
            )
        except Exception as exc:
            self._log(
                logging.ERROR, "stopping the listener of %s failed: %s", partition_id, exc, exc_info=True
            )
        else:
            self._log(logging.INFO, "drained %s", partition_id)

    async def _ensure_listening(self, partition_id: str) -> None:
        if partition_id in self._listening:
            return
        stopping = self._stopping.get(partition_id)
        if stopping is not None:
            if not stopping.done():
                # A later renewal starts the listener, once the old one has let go of the queue.
                return
            del self._stopping[partition_id]
        await self._listener.start_listening(partition_id)
        self._listening.add(partition_id)
        self._log(logging.INFO, "listening on %s", partition_id)

    def _log_update(self, lease: PartitionLease, update: _RowUpdate) -> None:
        partition_id = lease.partition_id
        if update.claimed:
            self._log(logging.INFO, "claimed %s", partition_id)
        elif update.stolen:
            self._log(logging.INFO, "%s is shutting down: asked for %s", lease.current_owner, partition_id)
        elif update.drain_started and lease.next_owner is None:
            self._log(logging.INFO, "shutting down: draining %s", partition_id)
        elif update.drain_started:
            self._log(logging.INFO, "%s asked for %s: draining it", lease.next_owner, partition_id)
        elif update.released:
            self._log(logging.INFO, "released %s to %s", partition_id, lease.next_owner or "anyone")
        else:
            self._log(logging.DEBUG, "renewed %s until %s", partition_id, lease.expires_at)

    def _log(self, level: int, message: str, *args: object, exc_info: bool = False) -> None:
        logger.log(level, "hub %s worker %s: " + message, self._hub, self.worker_id, *args, exc_info=exc_info)
