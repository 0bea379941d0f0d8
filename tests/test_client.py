"""TaskHubClient against real Azurite: what a start and each management call leave in storage."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from durable_ext.client import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    OrchestrationState,
    TaskHubClient,
    validate_instance_id,
)
from durable_ext.config import OverridableStates
from durable_ext.errors import (
    InstanceExistsError,
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
    ExecutionStartedEvent,
    ExecutionSuspendedEvent,
    ExecutionTerminatedEvent,
    OrchestrationInstance,
    OrchestrationStatus,
)
from durable_ext.storage.queues import ReceivedMessage
from durable_ext.storage.taskhub import TaskHub
from durable_ext.storage.tracking import InstanceState, escape_partition_key

VISIBILITY = timedelta(minutes=5)
ROW_COLUMNS = {
    "PartitionKey",
    "RowKey",
    "ExecutionId",
    "Name",
    "Version",
    "Input",
    "CustomStatus",
    "RuntimeStatus",
    "CreatedTime",
    "LastUpdatedTime",
    "Generation",
    "Tags",
    "TaskHubName",
}


# ---- helpers ----------------------------------------------------------------------------------


async def receive_all(hub: TaskHub) -> list[ReceivedMessage]:
    """Every visible message of every control queue (hidden for 5 minutes afterwards)."""
    found: list[ReceivedMessage] = []
    for queue in hub.control_queues:
        found.extend(await queue.receive(32, VISIBILITY))
    return found


async def raw_row(hub: TaskHub, instance_id: str) -> dict[str, Any]:
    """The Instances entity exactly as stored."""
    entity = await hub.tracking._instances.get_entity(escape_partition_key(instance_id), "")
    return dict(entity) | {"etag": entity.metadata["etag"]}


async def row_count(hub: TaskHub) -> int:
    return len([e async for e in hub.tracking._instances.list_entities()])


async def set_status(
    hub: TaskHub, instance_id: str, status: OrchestrationStatus, output: str | None = None
) -> None:
    """Pretend a worker moved the instance on (a checkpoint-style merge)."""
    completed = datetime.now(UTC) if status.is_terminal else None
    state = InstanceState(instance_id, runtime_status=status, output=output, completed_time=completed)
    columns = ["RuntimeStatus"] + ["Output"] * (output is not None) + ["CompletedTime"] * status.is_terminal
    await hub.tracking.merge_instance(state, columns)


# ---- validation (no storage) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("instance_id", "rule"),
    [
        ("", "must not be empty"),
        ("a" * 257, "257 characters long"),
        ("a/b", "'/'"),
        ("a\\b", "'\\\\\\\\'"),
        ("a#b", "'#'"),
        ("a?b", "'\\?'"),
        ("a\x00b", "U\\+0000"),
        ("a\x1fb", "U\\+001F"),
        ("a\x7fb", "U\\+007F"),
        ("a\x9fb", "U\\+009F"),
        ("@counter@key", "reserved for entity IDs"),
    ],
)
def test_invalid_instance_ids(instance_id: str, rule: str) -> None:
    with pytest.raises(InvalidInstanceIdError, match=rule):
        validate_instance_id(instance_id)


def test_valid_instance_ids() -> None:
    for instance_id in ("a" * 256, "order-42", "ünïcödé ok", "a@b", "x^y"):
        assert validate_instance_id(instance_id) == instance_id
    assert validate_instance_id("@counter@key", allow_entity=True) == "@counter@key"


async def test_rejected_starts_write_nothing(hub: TaskHub) -> None:
    client = TaskHubClient(hub, max_payload_bytes=1000)
    bad_ids = ["", "a" * 257, "a/b", "a\\b", "a#b", "a?b", "a\x00b", "a\x7fb", "a\x9fb", "@e@k"]
    for instance_id in bad_ids:
        with pytest.raises(InvalidInstanceIdError):
            await client.start_new("Orch", instance_id)
    with pytest.raises(ValidationError, match="name"):
        await client.start_new("", "ok")
    with pytest.raises(PayloadTooLargeError, match="1001 bytes"):
        await client.start_new("Orch", "ok", json.dumps("x" * 999))
    with pytest.raises(PayloadTooLargeError, match="tags"):
        await client.start_new("Orch", "ok", tags={"k": "v" * 40_000})
    with pytest.raises(ValidationError, match="7 days"):
        await client.start_new("Orch", "ok", scheduled_start_time=datetime.now(UTC) + timedelta(days=8))
    assert await receive_all(hub) == []
    assert await row_count(hub) == 0
    assert TaskHubClient(hub).max_payload_bytes == DEFAULT_MAX_PAYLOAD_BYTES == 16 * 1024 * 1024


# ---- start ------------------------------------------------------------------------------------


async def test_start_writes_message_then_pending_row(hub: TaskHub) -> None:
    client = TaskHubClient(hub)
    before = datetime.now(UTC)
    instance_id = await client.start_new("Orch", "order-1", '{"n":1}', tags={"team": "a"})
    assert instance_id == "order-1"

    messages = await hub.control_queue_for(instance_id).receive(32, VISIBILITY)
    assert len(messages) == 1
    assert await receive_all(hub) == []  # no other queue got anything
    data = messages[0].data
    assert data.sender == OrchestrationInstance("", "")
    assert data.episode is None
    assert data.compressed_blob_name is None
    assert data.task_message is not None
    assert data.task_message.tags is None
    event = data.event
    assert isinstance(event, ExecutionStartedEvent)
    execution_id = event.orchestration_instance.execution_id if event.orchestration_instance else None
    assert execution_id is not None and re.fullmatch(r"[0-9a-f]{32}", execution_id)
    assert data.task_message.orchestration_instance == OrchestrationInstance(instance_id, execution_id)
    assert event.orchestration_instance == OrchestrationInstance(instance_id, execution_id)
    assert (event.name, event.version, event.input) == ("Orch", "", '{"n":1}')
    assert (event.generation, event.tags, event.scheduled_start_time) == (0, {"team": "a"}, None)
    assert (event.event_id, event.is_played, event.parent_instance) == (-1, False, None)
    assert before <= event.timestamp <= datetime.now(UTC)

    row = await raw_row(hub, instance_id)
    assert set(row) - {"etag", "Timestamp"} == ROW_COLUMNS
    assert row["PartitionKey"] == instance_id and row["RowKey"] == ""
    assert row["RuntimeStatus"] == "Pending"
    assert row["CustomStatus"] == "null"
    assert row["ExecutionId"] == execution_id
    assert (row["Name"], row["Version"], row["Input"]) == ("Orch", "", '{"n":1}')
    assert type(row["Generation"]) is int and row["Generation"] == 0
    assert json.loads(row["Tags"]) == {"team": "a"}
    assert row["TaskHubName"] == hub.names.hub
    assert row["CreatedTime"] == event.timestamp
    assert event.timestamp <= row["LastUpdatedTime"] <= datetime.now(UTC)

    status = await client.get_status(instance_id)
    assert status == OrchestrationState(
        instance_id=instance_id,
        name="Orch",
        runtime_status=OrchestrationStatus.Pending,
        input='{"n":1}',
        output=None,
        custom_status=None,
        created_time=event.timestamp,
        last_updated_time=row["LastUpdatedTime"],
        completed_time=None,
        execution_id=execution_id,
        generation=0,
        version="",
    )
    assert await client.get_status("missing") is None


async def test_start_without_tags_writes_literal_null(hub: TaskHub) -> None:
    instance_id = await TaskHubClient(hub).start_new("Orch")
    row = await raw_row(hub, instance_id)
    assert row["Tags"] == "null"
    assert "Input" not in row  # None columns are omitted, as Azure Tables has no null


async def test_generated_ids_are_unique_hex(hub: TaskHub) -> None:
    client = TaskHubClient(hub)
    ids = [await client.start_new("Orch") for _ in range(5)]
    assert len(set(ids)) == 5
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert len(await receive_all(hub)) == 5


async def test_scheduled_start_delays_the_message(hub: TaskHub) -> None:
    when = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    instance_id = await TaskHubClient(hub).start_new("Orch", "later", "1", scheduled_start_time=when)
    queue = hub.control_queue_for(instance_id)
    assert await queue.receive(32, VISIBILITY) == []
    assert await queue.approximate_count() == 1
    row = await raw_row(hub, instance_id)
    assert row["ScheduledStartTime"] == when
    assert set(row) - {"etag", "Timestamp"} == ROW_COLUMNS | {"ScheduledStartTime"}


@pytest.mark.parametrize(
    "status",
    [
        OrchestrationStatus.Pending,
        OrchestrationStatus.Running,
        OrchestrationStatus.ContinuedAsNew,
        OrchestrationStatus.Suspended,
    ],
)
async def test_duplicate_start_is_refused(hub: TaskHub, status: OrchestrationStatus) -> None:
    client = TaskHubClient(hub)
    await client.start_new("Orch", "dup")
    if status is not OrchestrationStatus.Pending:
        await set_status(hub, "dup", status)
    before = await raw_row(hub, "dup")
    with pytest.raises(InstanceExistsError) as caught:
        await client.start_new("Orch", "dup", '"again"')
    assert str(caught.value) == f"An Orchestration instance with the status {status.name} already exists."
    assert caught.value.status is status
    assert (await raw_row(hub, "dup"))["etag"] == before["etag"]
    assert len(await receive_all(hub)) == 1


async def test_restart_after_completion_is_a_new_generation(hub: TaskHub) -> None:
    client = TaskHubClient(hub)
    await client.start_new("Orch", "again", '"one"')
    first = await raw_row(hub, "again")
    await set_status(hub, "again", OrchestrationStatus.Completed, output='"done"')
    await client.start_new("Orch", "again", '"two"')
    row = await raw_row(hub, "again")
    assert row["Generation"] == 1
    assert row["ExecutionId"] != first["ExecutionId"]
    assert (row["RuntimeStatus"], row["Input"]) == ("Pending", '"two"')
    assert "Output" not in row and "CompletedTime" not in row  # Replace wiped the old execution
    events = [m.data.event for m in await receive_all(hub)]
    assert [e.generation for e in events if isinstance(e, ExecutionStartedEvent)] == [0, 1]


async def test_any_state_replaces_a_pending_instance(hub: TaskHub) -> None:
    client = TaskHubClient(hub, overridable_states=OverridableStates.ANY_STATE)
    await client.start_new("Orch", "any")
    await client.start_new("Orch", "any")
    row = await raw_row(hub, "any")
    assert (row["Generation"], row["RuntimeStatus"]) == (1, "Pending")
    assert len(await receive_all(hub)) == 2


@pytest.mark.parametrize("existing", [False, True], ids=["insert", "replace"])
async def test_concurrent_starts_are_decided_by_storage(
    hub: TaskHub, monkeypatch: pytest.MonkeyPatch, existing: bool
) -> None:
    client = TaskHubClient(hub)
    if existing:
        await client.start_new("Orch", "race")
        await set_status(hub, "race", OrchestrationStatus.Completed)
        await receive_all(hub)
    # Both starts must read the row before either writes it, or the second would simply see Pending.
    barrier = asyncio.Barrier(2)
    calls = 0
    original: Callable[..., Awaitable[InstanceState | None]] = hub.tracking.get_instance

    async def read_together(instance_id: str, **kwargs: Any) -> InstanceState | None:
        nonlocal calls
        calls += 1
        result = await original(instance_id, **kwargs)
        if calls <= 2:
            await barrier.wait()
        return result

    monkeypatch.setattr(hub.tracking, "get_instance", read_together)
    results = await asyncio.gather(
        client.start_new("Orch", "race", '"a"'),
        client.start_new("Orch", "race", '"b"'),
        return_exceptions=True,
    )
    assert sorted(type(r).__name__ for r in results) == ["InstanceExistsError", "str"]
    winner = '"a"' if results[0] == "race" else '"b"'
    row = await raw_row(hub, "race")
    started = {
        m.data.event.input: m.data.event
        for m in await receive_all(hub)
        if isinstance(m.data.event, ExecutionStartedEvent)
    }
    assert set(started) == {'"a"', '"b"'}  # the loser's message is left for the worker's de-dupe
    winning = started[winner].orchestration_instance
    assert winning is not None
    assert row["ExecutionId"] == winning.execution_id
    assert row["Input"] == winner
    assert row["Generation"] == (1 if existing else 0)


async def test_large_input_travels_in_a_blob(hub: TaskHub) -> None:
    client = TaskHubClient(hub)
    big = json.dumps("x" * 100_000)
    instance_id = await client.start_new("Orch", "big", big)
    async with hub.account.queue_service() as service:
        raw = await service.get_queue_client(hub.control_queue_for(instance_id).name).peek_messages(32)
    assert len(raw) == 1 and '"CompressedBlobName":"big/message-' in raw[0].content
    row = await raw_row(hub, instance_id)
    assert row["Input"].startswith(hub.large_messages.url("big/message-"))
    assert row["Input"].endswith("-ExecutionStarted.json.gz")
    (message,) = await receive_all(hub)
    assert message.data.event.input == big  # type: ignore[attr-defined]
    status = await client.get_status(instance_id)
    assert status is not None and status.input == big


async def test_oversized_payloads_are_refused(hub: TaskHub) -> None:
    client = TaskHubClient(hub, max_payload_bytes=100)
    await client.start_new("Orch", "small")
    await receive_all(hub)
    with pytest.raises(PayloadTooLargeError):
        await client.raise_event("small", "Go", json.dumps("é" * 50))  # 102 bytes of UTF-8
    with pytest.raises(PayloadTooLargeError):
        await client.terminate("small", "r" * 101)
    assert await receive_all(hub) == []


# ---- management messages ----------------------------------------------------------------------


async def test_management_calls_enqueue_events_for_the_current_execution(hub: TaskHub) -> None:
    client = TaskHubClient(hub)
    instance_id = await client.start_new("Orch", "mgmt")
    await receive_all(hub)

    await client.raise_event(instance_id, "Approval", '{"ok":true}')
    await client.suspend(instance_id, "pause")
    await set_status(hub, instance_id, OrchestrationStatus.Suspended)
    await client.resume(instance_id, "go on")
    await client.terminate(instance_id, "stop")

    messages = await hub.control_queue_for(instance_id).receive(32, VISIBILITY)
    events = sorted((m.data.event for m in messages), key=lambda e: e.timestamp)
    assert [type(e) for e in events] == [
        EventRaisedEvent,
        ExecutionSuspendedEvent,
        ExecutionResumedEvent,
        ExecutionTerminatedEvent,
    ]
    raised, suspended, resumed, terminated = events
    assert isinstance(raised, EventRaisedEvent) and (raised.name, raised.input) == ("Approval", '{"ok":true}')
    assert isinstance(suspended, ExecutionSuspendedEvent) and suspended.reason == "pause"
    assert isinstance(resumed, ExecutionResumedEvent) and resumed.reason == "go on"
    assert isinstance(terminated, ExecutionTerminatedEvent) and terminated.input == "stop"
    for message in messages:
        assert message.data.task_message is not None
        assert message.data.task_message.orchestration_instance == OrchestrationInstance(instance_id, None)
        assert message.data.sender == OrchestrationInstance("", "")
        assert message.data.event.event_id == -1


async def test_management_calls_check_the_instance(hub: TaskHub, caplog: pytest.LogCaptureFixture) -> None:
    client = TaskHubClient(hub)
    with pytest.raises(InstanceNotFoundError, match="nobody"):
        await client.raise_event("nobody", "Go")
    with pytest.raises(InstanceNotFoundError):
        await client.terminate("nobody")
    with pytest.raises(InvalidInstanceIdError):
        await client.raise_event("a/b", "Go")

    await client.start_new("Orch", "inst")
    await receive_all(hub)
    with pytest.raises(ValidationError, match="event name"):
        await client.raise_event("inst", "")
    # DF's InvalidOperationException texts: only a Suspended instance can be resumed, and it cannot be
    # suspended again.
    not_suspended = "Cannot resume the orchestration instance inst because instance is in the Pending state."
    with pytest.raises(InvalidOperationError, match=f"^{re.escape(not_suspended)}$"):
        await client.resume("inst")
    await set_status(hub, "inst", OrchestrationStatus.Suspended)
    suspended = "Cannot suspend the orchestration instance inst because instance is in the Suspended state."
    with pytest.raises(InvalidOperationError, match=f"^{re.escape(suspended)}$"):
        await client.suspend("inst")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"hub {hub.names.hub} instance inst: Cannot resume orchestration instance in the Pending state.",
        f"hub {hub.names.hub} instance inst: Cannot suspend orchestration instance in the Suspended state.",
    ]

    await set_status(hub, "inst", OrchestrationStatus.Completed)
    for call in (
        client.raise_event("inst", "Go"),
        client.terminate("inst"),
        client.suspend("inst"),
        client.resume("inst"),
    ):
        with pytest.raises(InvalidInstanceStateError, match="Completed"):
            await call
    assert await receive_all(hub) == []


# ---- waiting ----------------------------------------------------------------------------------


async def test_wait_for_completion(hub: TaskHub) -> None:
    client = TaskHubClient(hub)
    await client.start_new("Orch", "w")
    with pytest.raises(TimeoutError, match=r"'w' did not complete within 0.1 s; it is Pending"):
        await client.wait_for_completion("w", timeout=0.1)
    await set_status(hub, "w", OrchestrationStatus.ContinuedAsNew)
    with pytest.raises(TimeoutError, match="it is ContinuedAsNew"):
        await client.wait_for_completion("w", timeout=0.1)
    with pytest.raises(TimeoutError, match="does not exist"):
        await client.wait_for_completion("nobody", timeout=0.05)

    async def finish_soon() -> None:
        await asyncio.sleep(0.1)
        await set_status(hub, "w", OrchestrationStatus.Completed, output='"result"')

    finisher = asyncio.create_task(finish_soon())
    state = await client.wait_for_completion("w", timeout=5)
    await finisher
    assert (state.runtime_status, state.output) == (OrchestrationStatus.Completed, '"result"')


class _Taker:
    """A Handoff that claims every undelayed message (a minute's invisibility) and records the hand-overs."""

    def __init__(self) -> None:
        self.delivered: list[ReceivedMessage] = []
        self.released = 0

    def claim(self, queue_name: str) -> timedelta | None:
        return timedelta(minutes=1)

    def deliver(self, message: ReceivedMessage) -> None:
        self.delivered.append(message)

    def release(self, queue_name: str) -> None:
        self.released += 1

    def enqueued(self, queue_name: str) -> None:
        raise AssertionError("every undelayed message is claimed")

    def now(self) -> datetime:
        return datetime.now(UTC)

    def schedules(self, queue_name: str) -> bool:
        return False

    def scheduled(self, message: ReceivedMessage, due: datetime) -> None:
        raise AssertionError("no delayed message here")


async def test_a_start_that_guessed_a_new_id_takes_its_message_back_when_the_id_has_a_row(
    hub: TaskHub,
) -> None:
    taker = _Taker()
    client = TaskHubClient(hub, handoff=taker)
    await client.start_new("Orch", "guess", '"one"')
    first = await raw_row(hub, "guess")
    await set_status(hub, "guess", OrchestrationStatus.Completed)
    await client.start_new("Orch", "guess", '"two"')
    row = await raw_row(hub, "guess")
    assert (row["Generation"], row["Input"]) == (1, '"two"')
    starts = [m.data.event for m in taker.delivered]
    assert [e.generation for e in starts if isinstance(e, ExecutionStartedEvent)] == [0, 1]
    second = starts[1]
    assert isinstance(second, ExecutionStartedEvent) and second.orchestration_instance is not None
    assert second.orchestration_instance.execution_id == row["ExecutionId"] != first["ExecutionId"]
    assert taker.delivered[1].start_row is not None and taker.delivered[1].start_row.generation == 1
    await set_status(hub, "guess", OrchestrationStatus.Running)
    with pytest.raises(InstanceExistsError):
        await client.start_new("Orch", "guess", '"three"')
    assert taker.released == 2, "each wrong guess gave its claim back"
    queue = hub.control_queue_for("guess")
    assert await queue.approximate_count() == 2, "only the two starts handed over are left in the queue"
