"""``python -m durable_ext doctor``: find (and repair) History/Instances inconsistencies in a task hub.

Azure Storage has no cross-table transactions, so a crash between two writes can leave a hub in a
state the engine only heals when the next message arrives, or never (issue 7, item 2):

* an Instances row still non-terminal while the History of the same execution is terminal;
* a Pending row whose start message never made it to the control queue (or was lost);
* messages in a control queue for an instance that has neither an Instances row nor history;
* poison messages the engine quarantined in ``{Hub}Poison`` (fixed by putting them back).

:func:`diagnose` reports them; :func:`repair` fixes the first two kinds. The Instances rows are
read with a server-side status filter and the History only of the instances those rows name.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from azure.storage.queue.aio import QueueClient

from durable_ext.client import client_message
from durable_ext.errors import MessageFormatError
from durable_ext.history import (
    ExecutionCompletedEvent,
    ExecutionStartedEvent,
    HistoryEvent,
    OrchestrationInstance,
    OrchestrationStatus,
    TaskScheduledEvent,
    utc_now,
)
from durable_ext.logs import hub_log
from durable_ext.messages import MessageData
from durable_ext.storage.quarantine import QuarantinedMessage
from durable_ext.storage.taskhub import TaskHub
from durable_ext.storage.tracking import MAX_QUERY_PAGE, InstanceQuery, InstanceState

logger = logging.getLogger(__name__)

DEFAULT_PENDING_GRACE = timedelta(minutes=10)
"""How long a Pending instance (or a message for an unknown one) may wait before it is suspicious."""
PEEK_LIMIT = 32
"""Most messages one peek returns (an Azure Queues limit): only the front of each queue is seen."""
NON_TERMINAL_STATUSES = frozenset(
    {
        OrchestrationStatus.Pending,
        OrchestrationStatus.Running,
        OrchestrationStatus.ContinuedAsNew,
        OrchestrationStatus.Suspended,
    }
)


class FindingKind(enum.Enum):
    """What is inconsistent."""

    TERMINAL_HISTORY_ROW_NOT_TERMINAL = "terminal-history-row-not-terminal"
    """History says the execution ended; its Instances row says it has not (fixable)."""
    PENDING_WITHOUT_START = "pending-without-start"
    """A Pending row past the grace period whose execution has no history (fixable: re-send the start)."""
    MESSAGE_FOR_UNKNOWN_INSTANCE = "message-for-unknown-instance"
    """A queued message for an instance with neither a row nor history (reported only)."""
    QUARANTINED_MESSAGE = "quarantined-message"
    """A poison message the engine took out of its queue (fixable: put it back)."""


@dataclass(frozen=True)
class Finding:
    """One inconsistency found by :func:`diagnose`."""

    kind: FindingKind
    instance_id: str
    detail: str
    fixable: bool
    execution_id: str | None = None
    """The execution the finding is about; :func:`repair` acts only while the row still names it."""
    message_id: str | None = None
    """The queue message a quarantined-message finding is about."""


@dataclass(frozen=True)
class _Peeked:
    """A visible control-queue message, decoded."""

    queue_name: str
    data: MessageData
    inserted_on: datetime | None


async def diagnose(
    hub: TaskHub, *, pending_grace: timedelta = DEFAULT_PENDING_GRACE, now: datetime | None = None
) -> list[Finding]:
    """Scan ``hub`` for inconsistent rows and stray messages; nothing is changed.

    Control queues are only peeked: messages that are invisible (being processed, backing off or
    scheduled for later) and those behind the first :data:`PEEK_LIMIT` of a queue are not seen.
    """
    moment = now if now is not None else utc_now()
    cutoff = moment - pending_grace
    peeked = await _peek_control_queues(hub)
    queued_starts = {
        (p.data.instance_id, p.data.task_message.orchestration_instance.execution_id)
        for p in peeked
        if p.data.task_message is not None and isinstance(p.data.event, ExecutionStartedEvent)
    }
    findings: list[Finding] = []
    known: set[str] = set()
    async for row in _non_terminal_rows(hub):
        known.add(row.instance_id)
        finding = await _check_row(hub, row, cutoff, queued_starts)
        if finding is not None:
            findings.append(finding)
    findings += await _stray_messages(hub, peeked, known, cutoff)
    findings += [_quarantined(q) async for q in hub.quarantine.list()]
    return findings


async def repair(hub: TaskHub, findings: Sequence[Finding]) -> list[Finding]:
    """Fix the fixable ``findings`` that still apply; returns those fixed.

    A row is rewritten from its terminal history exactly as the worker does it when a message reaches
    the instance; a lost start is sent again (the worker accepts it because the row names that
    execution, and drops it as a duplicate if the original turns up after all).
    """
    fixed: list[Finding] = []
    for finding in findings:
        if finding.kind is FindingKind.TERMINAL_HISTORY_ROW_NOT_TERMINAL:
            done = await _repair_row(hub, finding)
        elif finding.kind is FindingKind.PENDING_WITHOUT_START:
            done = await _resend_start(hub, finding)
        elif finding.kind is FindingKind.QUARANTINED_MESSAGE:
            done = await _requeue(hub, finding)
        else:
            done = False
        if done:
            fixed.append(finding)
    return fixed


def _quarantined(message: QuarantinedMessage) -> Finding:
    last_line = message.reason.strip().splitlines()[-1] if message.reason.strip() else "no reason recorded"
    return Finding(
        FindingKind.QUARANTINED_MESSAGE,
        message.instance_id,
        f"{message.event_type} message {message.message_id} from {message.queue_name}, dequeued "
        f"{message.dequeue_count} times, quarantined: {last_line}",
        fixable=True,
        execution_id=message.data.task_message.orchestration_instance.execution_id
        if message.data.task_message
        else None,
        message_id=message.message_id,
    )


async def _requeue(hub: TaskHub, finding: Finding) -> bool:
    """Put a quarantined message back: a work item into the work-item queue, anything else into the
    instance's control queue (a result the engine had taken in memory came from the work-item queue)."""
    async for message in hub.quarantine.list():
        if message.message_id != finding.message_id:
            continue
        to_activity = isinstance(message.data.event, TaskScheduledEvent)
        queue = hub.work_item_queue if to_activity else hub.control_queue_for(message.instance_id)
        await hub.quarantine.requeue(message, queue)
        await hub.instances.released_from_quarantine(message.instance_id)
        return True
    return False


async def _non_terminal_rows(hub: TaskHub) -> AsyncIterator[InstanceState]:
    """Orchestration Instances rows with a non-terminal RuntimeStatus (filtered by the table service)."""
    query = InstanceQuery(statuses=NON_TERMINAL_STATUSES, exclude_entities=True)
    async for rows in hub.tracking.instance_pages(
        query, top=MAX_QUERY_PAGE, fetch_inputs=False, fetch_large_values=False
    ):
        for row in rows:
            yield row


async def _check_row(
    hub: TaskHub, row: InstanceState, cutoff: datetime, queued_starts: set[tuple[str, str | None]]
) -> Finding | None:
    """The finding for one non-terminal row, if its history contradicts it."""
    load = await hub.tracking.load_history(row.instance_id)
    status = row.runtime_status.name if row.runtime_status is not None else "?"
    if load.execution_id is not None and row.execution_id in (None, load.execution_id):
        completed = _terminal_event(load.events)
        if completed is None:
            return None
        return Finding(
            FindingKind.TERMINAL_HISTORY_ROW_NOT_TERMINAL,
            row.instance_id,
            f"Instances row says {status} but the history of execution {load.execution_id} ended "
            f"{completed.orchestration_status.name} at {completed.timestamp.isoformat()}",
            fixable=True,
            execution_id=load.execution_id,
        )
    waiting_since = _waiting_since(row)
    if (
        row.runtime_status is not OrchestrationStatus.Pending
        or waiting_since is None
        or waiting_since > cutoff
        or (row.instance_id, row.execution_id) in queued_starts
    ):
        return None
    return Finding(
        FindingKind.PENDING_WITHOUT_START,
        row.instance_id,
        f"Pending since {waiting_since.isoformat()} but execution {row.execution_id} has no history and "
        "no visible start message",
        fixable=row.execution_id is not None,
        execution_id=row.execution_id,
    )


async def _stray_messages(
    hub: TaskHub, peeked: Sequence[_Peeked], known: set[str], cutoff: datetime
) -> list[Finding]:
    """Findings for peeked messages older than ``cutoff`` whose instance has no row and no history."""
    findings: list[Finding] = []
    unknown: dict[str, bool] = {}
    for message in peeked:
        instance_id = message.data.instance_id
        if instance_id in known or message.inserted_on is None or message.inserted_on > cutoff:
            continue
        if instance_id not in unknown:
            unknown[instance_id] = await _is_unknown(hub, instance_id)
        if unknown[instance_id]:
            findings.append(
                Finding(
                    FindingKind.MESSAGE_FOR_UNKNOWN_INSTANCE,
                    instance_id,
                    f"{message.data.event.event_type.name} message in {message.queue_name} since "
                    f"{message.inserted_on.isoformat()}, but the instance has no Instances row and no "
                    f"history (only visible messages, at most {PEEK_LIMIT} per queue, were checked)",
                    fixable=False,
                )
            )
    return findings


async def _is_unknown(hub: TaskHub, instance_id: str) -> bool:
    if await hub.tracking.get_instance(instance_id, fetch_large_values=False) is not None:
        return False
    load = await hub.tracking.load_history(instance_id)
    return load.execution_id is None and not load.events


async def _peek_control_queues(hub: TaskHub) -> list[_Peeked]:
    """The visible messages at the front of every control queue, decoded (undecodable ones skipped)."""
    peeked: list[_Peeked] = []
    for name in hub.names.control_queues:
        client: QueueClient = hub.queue_client(name)
        for raw in await client.peek_messages(max_messages=PEEK_LIMIT):
            try:
                data = MessageData.decode(raw.content)
                if data.compressed_blob_name:
                    data = MessageData.decode(await hub.large_messages.download(data.compressed_blob_name))
            except MessageFormatError as exc:
                logger.warning("queue %s: undecodable message %s skipped: %s", name, raw.id, exc)
                continue
            if data.task_message is not None:
                peeked.append(_Peeked(name, data, raw.inserted_on))
    return peeked


async def _repair_row(hub: TaskHub, finding: Finding) -> bool:
    """Rewrite the row from the history, if that history is still the finding's and still terminal."""
    load = await hub.tracking.load_history(finding.instance_id, finding.execution_id)
    if load.execution_id != finding.execution_id or _terminal_event(load.events) is None:
        return False
    return await hub.instances.repaired(finding.instance_id, load.execution_id, load.events)


async def _resend_start(hub: TaskHub, finding: Finding) -> bool:
    """Send the start message of a Pending row again, if the row still waits for that execution."""
    row = await hub.tracking.get_instance(finding.instance_id)
    if (
        finding.execution_id is None
        or row is None
        or row.runtime_status is not OrchestrationStatus.Pending
        or row.execution_id != finding.execution_id
    ):
        return False
    load = await hub.tracking.load_history(finding.instance_id, finding.execution_id)
    if load.execution_id == finding.execution_id:
        return False  # the start arrived after all
    instance = OrchestrationInstance(row.instance_id, row.execution_id)
    started = ExecutionStartedEvent(
        timestamp=row.created_time or utc_now(),
        orchestration_instance=instance,
        name=row.name,
        version=row.version or "",
        input=row.input,
        tags=row.tags,
        scheduled_start_time=row.scheduled_start_time,
        generation=row.generation,
    )
    await hub.control_queue_for(row.instance_id).send(
        client_message(row.instance_id, instance.execution_id, started)
    )
    hub_log(logger, hub.names.hub).instance(row.instance_id).warning(
        "start message of Pending execution %s sent again", row.execution_id
    )
    return True


def _terminal_event(events: Sequence[HistoryEvent]) -> ExecutionCompletedEvent | None:
    """The event that ended the execution for good (not a continue-as-new), if any."""
    return next(
        (e for e in events if isinstance(e, ExecutionCompletedEvent) and e.orchestration_status.is_terminal),
        None,
    )


def _waiting_since(row: InstanceState) -> datetime | None:
    """When a Pending instance became due: its creation, or its scheduled start if that is later."""
    times = [t for t in (row.created_time, row.scheduled_start_time) if t is not None]
    return max(times) if times else None
