"""The invariants a run must end with, read from storage (and the management API for entity states).

Each check returns findings, one readable line each; an empty list means the invariant holds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from durable_ext.history import (
    EventRaisedEvent,
    EventType,
    HistoryEvent,
    OrchestrationStatus,
    SubOrchestrationInstanceCompletedEvent,
    SubOrchestrationInstanceFailedEvent,
    TaskCompletedEvent,
    TaskFailedEvent,
    TimerFiredEvent,
)
from durable_ext.storage.partitions import PartitionLease
from durable_ext.storage.taskhub import TaskHub
from durable_ext.storage.tracking import InstanceQuery, InstanceState

logger = logging.getLogger(__name__)

POLL_INTERVAL = 1.0
PAGE_SIZE = 1000
SCHEDULING_EVENTS = frozenset(
    {EventType.TaskScheduled, EventType.TimerCreated, EventType.SubOrchestrationInstanceCreated}
)
"""Events the orchestrator writes with its own sequence number as EventId: each ID at most once."""
EPISODE_EVENTS = frozenset({EventType.OrchestratorStarted, EventType.OrchestratorCompleted})
RESULT_EVENTS: dict[type[HistoryEvent], str] = {
    TaskCompletedEvent: "activity result",
    TaskFailedEvent: "activity result",
    SubOrchestrationInstanceCompletedEvent: "sub-orchestration result",
    SubOrchestrationInstanceFailedEvent: "sub-orchestration result",
}
"""Events answering a scheduling event (through TaskScheduledId): at most one answer each."""


@dataclass(frozen=True)
class InstanceOutcome:
    """How one expected orchestration ended: lost (no row), stuck (not ended) or wrong (bad end)."""

    lost: list[str]
    stuck: list[str]
    wrong: list[str]


async def poll_until(
    probe: Callable[[], Awaitable[list[str]]], timeout: float, interval: float = POLL_INTERVAL
) -> list[str]:
    """Run ``probe`` until it finds nothing or ``timeout`` passes; its last findings."""
    deadline = time.monotonic() + timeout
    while True:
        findings = await probe()
        if not findings or time.monotonic() > deadline:
            return findings
        await asyncio.sleep(interval)


async def instance_rows(hub: TaskHub, prefix: str) -> dict[str, InstanceState]:
    """Every Instances row whose ID starts with ``prefix``."""
    rows: dict[str, InstanceState] = {}
    token: str | None = None
    query = InstanceQuery(instance_id_prefix=prefix)
    while True:
        page = await hub.tracking.query_instances(query, top=PAGE_SIZE, continuation_token=token)
        rows.update((row.instance_id, row) for row in page.rows)
        token = page.continuation_token
        if token is None:
            return rows


async def wait_for_instances(hub: TaskHub, expected: Iterable[str], prefix: str, timeout: float) -> list[str]:
    """Poll until every expected instance has ended; the IDs still not ended at the deadline."""
    wanted = set(expected)

    async def unfinished() -> list[str]:
        rows = await instance_rows(hub, prefix)
        return sorted(i for i in wanted if i not in rows or not _ended(rows[i]))

    return await poll_until(unfinished, timeout)


def _ended(row: InstanceState) -> bool:
    return row.runtime_status is not None and row.runtime_status.is_terminal


def judge_instances(rows: dict[str, InstanceState], expected: dict[str, Any]) -> InstanceOutcome:
    """Compare each expected instance's row with its expected output."""
    lost: list[str] = []
    stuck: list[str] = []
    wrong: list[str] = []
    for instance_id, output in sorted(expected.items()):
        row = rows.get(instance_id)
        if row is None:
            lost.append(f"{instance_id}: no Instances row")
        elif not _ended(row):
            status = row.runtime_status.name if row.runtime_status else "unknown"
            stuck.append(f"{instance_id}: {status}")
        elif row.runtime_status is not OrchestrationStatus.Completed or _output(row) != output:
            status = row.runtime_status.name if row.runtime_status else "unknown"
            wrong.append(f"{instance_id}: {status} with output {row.output!r}, expected {json.dumps(output)}")
    return InstanceOutcome(lost, stuck, wrong)


def _output(row: InstanceState) -> Any:
    return json.loads(row.output) if row.output is not None else None


def duplicate_events(events: list[HistoryEvent], raised: dict[str, int]) -> list[str]:
    """Events in one execution's history that appear more often than the engine may write them.

    ``raised`` caps each external event name at the number of times the driver may have raised it;
    every other event (entity responses included, named by request ID) may appear once. Episode
    markers (OrchestratorStarted/Completed) repeat by design and are not counted.
    """
    counts = Counter(identity for event in events if (identity := _identity(event)) is not None)
    limits = {f"event {name}": times for name, times in raised.items()}
    return [f"{what} x{count}" for what, count in sorted(counts.items()) if count > limits.get(what, 1)]


def _identity(event: HistoryEvent) -> str | None:
    """What makes an event unique in a history; None for events that may repeat."""
    if event.event_type in EPISODE_EVENTS:
        return None
    if event.event_type in SCHEDULING_EVENTS:
        return f"scheduled #{event.event_id}"
    kind = RESULT_EVENTS.get(type(event))
    if kind is not None:
        return f"{kind} for #{getattr(event, 'task_scheduled_id', -1)}"
    if isinstance(event, TimerFiredEvent):
        return f"timer fired for #{event.timer_id}"
    if isinstance(event, EventRaisedEvent):
        return f"event {event.name}"
    if event.event_type is EventType.EventSent:
        return f"sent #{event.event_id}"
    return event.event_type.name


def entity_mismatches(states: dict[str, Any], expected: dict[str, int]) -> list[str]:
    """Counters whose state is not exactly the expected value."""
    return [
        f"counter {key}: {states.get(key)!r}, expected {value}"
        for key, value in sorted(expected.items())
        if states.get(key) != value
    ]


async def queue_leftovers(hub: TaskHub) -> list[str]:
    """Queues of the hub that still hold messages (visible or not)."""
    queues = [*hub.control_queues, hub.work_item_queue]
    names = [*hub.names.control_queues, hub.names.work_item_queue]
    counts = await asyncio.gather(*(queue.approximate_count() for queue in queues))
    return [f"{name}: {count} message(s)" for name, count in zip(names, counts, strict=True) if count]


def owner_pid(owner: str | None) -> int | None:
    """The process ID in a lease owner name (``host:pid:suffix``, see ``default_worker_id``)."""
    if not owner:
        return None
    parts = owner.rsplit(":", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def ownership_problems(leases: list[PartitionLease], live_pids: set[int], partition_count: int) -> list[str]:
    """Partitions not held, right now, by exactly one live worker under an unexpired lease."""
    now = datetime.now(UTC)
    problems = []
    if len(leases) != partition_count:
        problems.append(f"{len(leases)} partition rows, expected {partition_count}")
    for lease in leases:
        pid = owner_pid(lease.current_owner)
        if pid is None or pid not in live_pids:
            problems.append(f"{lease.partition_id}: owner {lease.current_owner!r} is not a live worker")
        elif lease.is_expired(now):
            problems.append(f"{lease.partition_id}: {lease.current_owner} let it expire {lease.expires_at}")
        elif lease.next_owner or lease.is_draining:
            problems.append(f"{lease.partition_id}: being handed to {lease.next_owner!r}")
    return problems
