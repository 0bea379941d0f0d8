"""The task hub storage layer against real Azurite: names, create/delete, rows, queues, large payloads."""

from __future__ import annotations

import base64
import dataclasses
import gzip
import json
import socket
import time
from datetime import timedelta

import pytest
from azure.storage.queue.aio import QueueClient

from durable_ext.errors import ConfigError, OwnershipLostError, StorageError, StorageUnreachableError
from durable_ext.history import (
    EventRaisedEvent,
    ExecutionStartedEvent,
    HistoryEvent,
    OrchestrationInstance,
    OrchestrationStatus,
    OrchestratorStartedEvent,
    TaskCompletedEvent,
    TaskScheduledEvent,
)
from durable_ext.messages import MAX_QUEUE_PAYLOAD_BYTES, MessageData, TaskMessage
from durable_ext.storage.account import StorageAccount, use_environment_settings
from durable_ext.storage.queues import abandon_delay, fnv1a32, partition_index
from durable_ext.storage.taskhub import TaskHub, TaskHubNames
from durable_ext.storage.tracking import (
    MAX_PROPERTY_BYTES,
    SENTINEL_ROW_KEY,
    InstanceState,
    escape_partition_key,
    history_row_key,
    unescape_partition_key,
)
from tests.engine_support import received_again
from tests.sample_events import T0, sample_events

VISIBILITY = timedelta(minutes=5)


# ---- pure pieces ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected", "mod4", "mod16"),
    [
        ("", 0x811C9DC5, 1, None),
        ("a", 0xE40C292C, 0, None),
        ("foobar", 0xBF9CF968, 0, None),
        ("myinstance", 0xC06A6290, 0, None),
        ("@counter@key1", 0x9A41B811, 1, 1),
    ],
)
def test_fnv1a_vectors(text: str, expected: int, mod4: int, mod16: int | None) -> None:
    assert fnv1a32(text) == expected
    assert partition_index(text, 4) == mod4
    if mod16 is not None:
        assert partition_index(text, 16) == mod16


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("plain-id", "plain-id"),
        ("a/b\\c#d?e", "a^0b^1c^2d^3e"),
        ("x^y", "x^^y"),
        ("tab\there", "tab^Éhere"),
        ("\x00\x1f\x7f\x9f", "^À^ß^Ŀ^ş"),
        ("@counter@Key^1", "@counter@Key^^1"),
    ],
)
def test_partition_key_sanitation(raw: str, escaped: str) -> None:
    assert escape_partition_key(raw) == escaped
    assert unescape_partition_key(escaped) == raw


def test_history_row_keys() -> None:
    assert history_row_key(0) == "0000000000000000"
    assert history_row_key(10) == "000000000000000A"
    assert history_row_key(255) == "00000000000000FF"
    assert history_row_key(99) < SENTINEL_ROW_KEY


def test_abandon_backoff() -> None:
    assert [abandon_delay(n).total_seconds() for n in (1, 2, 5, 9, 10, 31)] == [2, 4, 32, 512, 600, 600]


def test_resource_names_keep_case_for_tables_only() -> None:
    names = TaskHubNames("MyHub", 4)
    assert (names.history_table, names.instances_table, names.partitions_table) == (
        "MyHubHistory",
        "MyHubInstances",
        "MyHubPartitions",
    )
    assert names.control_queues == [
        "myhub-control-00",
        "myhub-control-01",
        "myhub-control-02",
        "myhub-control-03",
    ]
    assert (names.work_item_queue, names.large_messages_container, names.app_lease_container) == (
        "myhub-workitems",
        "myhub-largemessages",
        "myhub-applease",
    )
    assert names.app_lease_info_blob == "myhub-appleaseinfo"
    assert TaskHubNames("MyHub", 16).control_queues[-1] == "myhub-control-15"


def test_connection_strings() -> None:
    dev = StorageAccount.from_connection_string("UseDevelopmentStorage=true")
    assert dev.development_storage
    assert dev.queue_endpoint == "http://127.0.0.1:10001/devstoreaccount1"
    key = StorageAccount.from_connection_string(
        "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;EndpointSuffix=core.windows.net"
    )
    assert (key.blob_endpoint, key.table_endpoint, key.account_key) == (
        "https://acct.blob.core.windows.net",
        "https://acct.table.core.windows.net",
        "a2V5",
    )
    sas = StorageAccount.from_connection_string(
        "BlobEndpoint=https://acct.blob.core.windows.net/;QueueEndpoint=https://acct.queue.core.windows.net;"
        "TableEndpoint=https://acct.table.core.windows.net;SharedAccessSignature=?sv=2022&sig=abc"
    )
    assert (sas.account_name, sas.sas_token, sas.account_key) == ("acct", "sv=2022&sig=abc", None)
    assert not key.development_storage and not sas.development_storage
    assert sas.blob_endpoint == "https://acct.blob.core.windows.net"
    assert "sig=" not in sas.describe() and "a2V5" not in key.describe()
    assert key.blob_url("h-largemessages", "a b/c#d.json.gz") == (
        "https://acct.blob.core.windows.net/h-largemessages/a%20b/c%23d.json.gz"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("AccountName=x", "neither AccountKey nor SharedAccessSignature"),
        ("AccountKey=abc", "no AccountName"),
        ("AccountName=x;garbage;AccountKey=k", "malformed part"),
    ],
)
def test_bad_connection_strings(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        StorageAccount.from_connection_string(text)


def test_invalid_hub_name_and_partition_count_write_nothing(storage_account: StorageAccount) -> None:
    with pytest.raises(ConfigError, match="hub"):
        TaskHub(storage_account, "my-hub")
    with pytest.raises(ConfigError, match="partitionCount"):
        TaskHub(storage_account, "MyHub", partition_count=17)


# ---- task hub create / delete -----------------------------------------------------------------


async def _account_resources(hub: TaskHub, prefix: str) -> set[str]:
    """Every table, queue and container of the account whose name starts with ``prefix`` (any case)."""
    found: set[str] = set()
    async with storage_service_clients(hub.account) as (tables, queues, blobs):
        found |= {f"table:{t.name}" async for t in tables.list_tables() if t.name.lower().startswith(prefix)}
        found |= {f"queue:{q.name}" async for q in queues.list_queues(name_starts_with=prefix)}
        found |= {f"container:{c.name}" async for c in blobs.list_containers(name_starts_with=prefix)}
    return found


class storage_service_clients:  # noqa: N801 - used like a function
    """Async context manager yielding fresh table, queue and blob service clients."""

    def __init__(self, account: StorageAccount) -> None:
        self.clients = (account.table_service(), account.queue_service(), account.blob_service())

    async def __aenter__(self):  # type: ignore[no-untyped-def]
        return self.clients

    async def __aexit__(self, *exc: object) -> None:
        for client in self.clients:
            await client.close()


@pytest.mark.parametrize("partitions", [4, 16])
async def test_create_makes_exactly_the_documented_resources(
    storage_account: StorageAccount, partitions: int
) -> None:
    async with TaskHub(storage_account, "MyHub", partition_count=partitions) as hub:
        await hub.delete()
        assert await _account_resources(hub, "myhub") == set()
        await hub.create()
        await hub.create()  # idempotent
        expected = {
            "table:MyHubHistory",
            "table:MyHubInstances",
            "table:MyHubPartitions",
            "queue:myhub-workitems",
            "container:myhub-applease",
            *(f"queue:myhub-control-{i:02d}" for i in range(partitions)),
        }
        assert await _account_resources(hub, "myhub") == expected
        info = await hub.info()
        assert info.exists
        assert [p.partition_id for p in info.partitions] == [
            f"myhub-control-{i:02d}" for i in range(partitions)
        ]
        assert all(p.current_owner is None and not p.is_draining for p in info.partitions)
        async with storage_service_clients(hub.account) as (_, _, blobs):
            lease_info = blobs.get_blob_client("myhub-applease", "myhub-appleaseinfo")
            assert await (await lease_info.download_blob()).readall() == b"{}"
        await hub.delete()
        assert await _account_resources(hub, "myhub") == set()
        assert not (await hub.info()).exists


async def test_delete_also_removes_large_messages_and_surplus_control_queues(
    storage_account: StorageAccount,
) -> None:
    async with TaskHub(storage_account, "SurplusHub", partition_count=6) as wide:
        await wide.create()
    async with TaskHub(storage_account, "SurplusHub", partition_count=2) as hub:
        await hub.large_messages.upload("x/blob.json.gz", "data")
        assert "container:surplushub-largemessages" in await _account_resources(hub, "surplushub")
        await hub.delete()
        assert await _account_resources(hub, "surplushub") == set()


async def test_unreachable_storage_fails_fast_and_clearly() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    account = StorageAccount.from_connection_string(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
        f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;QueueEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
        f"TableEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    )
    started = time.monotonic()
    async with TaskHub(account, "NoHub") as hub:
        with pytest.raises(
            StorageUnreachableError, match=r"cannot reach Azure Storage at .*is Azurite running\?"
        ):
            await hub.info()
    assert time.monotonic() - started < 30


async def test_wrong_account_key_is_a_clear_error(storage_account: StorageAccount) -> None:
    wrong = dataclasses.replace(storage_account, account_key=base64.b64encode(b"not the key").decode())
    async with TaskHub(wrong, "AuthHub") as hub:
        with pytest.raises(StorageError, match=r"refused the credentials .*HTTP 403"):
            await hub.info()
        with pytest.raises(StorageError, match="refused the credentials"):
            await hub.create()
    async with TaskHub(storage_account, "AuthHub") as hub:
        assert not (await hub.info()).exists, "a refused create must write nothing"


# ---- history rows -----------------------------------------------------------------------------


async def test_every_event_type_round_trips_through_history_rows(hub: TaskHub) -> None:
    events = list(sample_events().values())
    etag = await hub.tracking.append_history("order/42?#", "exec-1", events, 0, None)
    loaded = await hub.tracking.load_history("order/42?#")
    assert loaded.events == events
    assert (loaded.execution_id, loaded.etag) == ("exec-1", etag)
    assert loaded.checkpoint_completed is not None
    raw = [e async for e in hub.tracking._history.query_entities("PartitionKey eq 'order^042^3^2'")]
    assert sorted(r["RowKey"] for r in raw) == [history_row_key(i) for i in range(len(events))] + ["sentinel"]
    sentinel = next(r for r in raw if r["RowKey"] == "sentinel")
    assert (sentinel["ExecutionId"], sentinel["IsCheckpointComplete"]) == ("exec-1", True)
    assert all(r["ExecutionId"] == "exec-1" for r in raw)


def _episode(count: int) -> list[HistoryEvent]:
    return [OrchestratorStartedEvent()] + [TaskScheduledEvent(event_id=i, name="act") for i in range(count)]


async def test_history_batches_beyond_99_rows_and_appends(hub: TaskHub) -> None:
    etag = await hub.tracking.append_history("big", "e1", _episode(250), 0, None)
    more = [TaskCompletedEvent(task_scheduled_id=i, result=str(i)) for i in range(5)]
    etag2 = await hub.tracking.append_history("big", "e1", more, 251, etag)
    assert etag2 != etag
    loaded = await hub.tracking.load_history("big")
    assert len(loaded.events) == 256
    assert loaded.events[-1] == more[-1]
    assert loaded.etag == etag2


async def test_sentinel_etag_chain_rejects_a_second_writer(hub: TaskHub) -> None:
    etag = await hub.tracking.append_history("contested", "e1", _episode(1), 0, None)
    # A worker that believes the instance is new (no ETag) must not overwrite it.
    with pytest.raises(OwnershipLostError):
        await hub.tracking.append_history("contested", "e1", _episode(3), 0, None)
    # Two workers holding the same ETag: the first commit wins, the second conflicts.
    winner = [TaskCompletedEvent(task_scheduled_id=0, result='"first"')]
    loser = [TaskCompletedEvent(task_scheduled_id=0, result='"second"')]
    await hub.tracking.append_history("contested", "e1", winner, 2, etag)
    with pytest.raises(OwnershipLostError):
        await hub.tracking.append_history("contested", "e1", loser, 2, etag)
    loaded = await hub.tracking.load_history("contested")
    assert loaded.events[2:] == winner


async def test_load_stops_at_rows_of_an_older_execution(hub: TaskHub) -> None:
    etag = await hub.tracking.append_history("can", "old", _episode(5), 0, None)
    etag = await hub.tracking.append_history("can", "new", _episode(1), 0, etag)
    loaded = await hub.tracking.load_history("can")
    assert loaded.execution_id == "new"
    assert len(loaded.events) == 2
    other = await hub.tracking.load_history("can", expected_execution_id="old")
    assert other.events == [] and other.etag == loaded.etag
    assert (await hub.tracking.load_history("never-existed")).etag is None


async def test_the_outline_of_a_history_is_every_event_without_its_payloads(hub: TaskHub) -> None:
    events = list(sample_events().values())
    big = EventRaisedEvent(name="big", input=json.dumps("x" * MAX_PROPERTY_BYTES))  # offloaded to a blob
    etag = await hub.tracking.append_history("outlined", "old", _episode(len(events) + 5), 0, None)
    await hub.tracking.append_history("outlined", "e1", [*events, big], 0, etag)
    outline = await hub.tracking.load_history_outline("outlined")
    assert [_outlined(e) for e in outline] == [_outlined(e) for e in [*events, big]], "up to the old rows"
    assert all(getattr(e, "input", None) is None and getattr(e, "result", None) is None for e in outline)
    assert all(getattr(e, "details", None) is None for e in outline)
    assert (await hub.tracking.load_history_outline("never-existed")) == []


def _outlined(event: HistoryEvent) -> tuple[object, ...]:
    """What the outline of a history keeps of an event."""
    members = ("event_id", "timestamp", "name", "fire_at", "instance_id", "task_scheduled_id", "timer_id")
    status = getattr(event, "orchestration_status", None)
    return (event.event_type, status, *(getattr(event, m, None) for m in members))


@pytest.mark.parametrize(
    ("chars", "offloaded"), [(MAX_PROPERTY_BYTES // 2, False), (MAX_PROPERTY_BYTES // 2 + 1, True)]
)
async def test_large_history_property_offload_threshold(hub: TaskHub, chars: int, offloaded: bool) -> None:
    payload = (
        "ü" * chars
    )  # UTF-16 counts 2 bytes per char, UTF-8 would count 2 as well: 30,721 chars > 61,440 B
    event = EventRaisedEvent(name="big", input=payload)
    await hub.tracking.append_history("large", "e1", [OrchestratorStartedEvent(), event], 0, None)
    row = await hub.tracking._history.get_entity("large", history_row_key(1))
    assert ("InputBlobName" in row) is offloaded
    if offloaded:
        assert row["Input"] == ""
        name = row["InputBlobName"]
        assert name.startswith("large/history-0000000000000001-EventRaised-") and name.endswith(
            "-Input.json.gz"
        )
    loaded = await hub.tracking.load_history("large")
    assert loaded.events[1] == event
    assert bool(loaded.blob_names) is offloaded


async def test_large_properties_are_gzip_utf8_and_byte_identical(hub: TaskHub) -> None:
    payload = json.dumps({"data": "x" * 70_000, "emoji": "🙂 東京"}, ensure_ascii=False)
    failure_text = "trace line\n" * 7000
    events: list[HistoryEvent] = [
        ExecutionStartedEvent(
            name="n", version="", input=payload, orchestration_instance=OrchestrationInstance("L", "e")
        ),
        TaskCompletedEvent(task_scheduled_id=0, result=payload),
        EventRaisedEvent(name="e", input=failure_text),
    ]
    await hub.tracking.append_history("L", "e", events, 0, None)
    loaded = await hub.tracking.load_history("L")
    assert loaded.events == events
    assert len(loaded.blob_names) == 3
    async with storage_service_clients(hub.account) as (_, _, blobs):
        container = blobs.get_container_client(hub.names.large_messages_container)
        blob = await (await container.download_blob(loaded.blob_names[0])).readall()
        assert gzip.decompress(blob).decode("utf-8") == payload


# ---- Instances rows ---------------------------------------------------------------------------


async def test_instance_rows_insert_replace_merge(hub: TaskHub) -> None:
    state = InstanceState(
        instance_id="inst/1",
        execution_id="e1",
        name="hello",
        version="",
        input='"in"',
        runtime_status=OrchestrationStatus.Pending,
        created_time=sample_events()[next(iter(sample_events()))].timestamp,
        task_hub_name=hub.names.hub,
    )
    assert await hub.tracking.insert_instance(state)
    assert not await hub.tracking.insert_instance(state), "a second insert of the same ID must lose"
    raw = await hub.tracking._instances.get_entity("inst^01", "")
    assert (raw["CustomStatus"], raw["Tags"], raw["RuntimeStatus"]) == ("null", "null", "Pending")
    assert "Output" not in raw and "CompletedTime" not in raw
    read = await hub.tracking.get_instance("inst/1")
    assert read is not None and read.etag
    assert (read.instance_id, read.runtime_status, read.custom_status, read.tags) == (
        "inst/1",
        OrchestrationStatus.Pending,
        None,
        None,
    )
    read.generation = 1
    assert await hub.tracking.replace_instance(read, read.etag)
    assert not await hub.tracking.replace_instance(read, read.etag), "a stale ETag must lose"
    update = InstanceState("inst/1", runtime_status=OrchestrationStatus.Running, custom_status='{"step":1}')
    await hub.tracking.merge_instance(update, columns=["RuntimeStatus", "CustomStatus"])
    merged = await hub.tracking.get_instance("inst/1")
    assert merged is not None
    assert (merged.runtime_status, merged.custom_status, merged.name, merged.generation) == (
        OrchestrationStatus.Running,
        '{"step":1}',
        "hello",
        1,
    )
    latest = await hub.tracking.get_instance("inst/1")
    assert latest is not None
    assert await hub.tracking.purge_instance(latest) is not None
    assert await hub.tracking.get_instance("inst/1") is None


async def test_large_instance_input_is_a_blob_url_and_reads_back(hub: TaskHub) -> None:
    payload = '"' + "y" * 40_000 + '"'
    await hub.tracking.insert_instance(InstanceState("big-in", execution_id="e", input=payload))
    raw = await hub.tracking._instances.get_entity("big-in", "")
    assert raw["Input"].startswith(
        hub.account.blob_endpoint + "/" + hub.names.large_messages_container + "/big-in/"
    )
    state = await hub.tracking.get_instance("big-in")
    assert state is not None and state.input == payload
    lazy = await hub.tracking.get_instance("big-in", fetch_large_values=False)
    assert lazy is not None and lazy.input == raw["Input"]


# ---- queues -----------------------------------------------------------------------------------


def _message(instance_id: str, payload: str = '"x"') -> MessageData:
    # Fixed SequenceNumber and Timestamp keep the encoded size exact: the process-wide counter grows
    # digits, and timestamps drop trailing zeros of their fraction.
    return MessageData(
        TaskMessage(
            ExecutionStartedEvent(name="hello", version="", input=payload, timestamp=T0),
            OrchestrationInstance(instance_id, "e"),
        ),
        sequence_number=7,
    )


async def test_messages_route_to_the_fnv_partition_and_round_trip(hub: TaskHub) -> None:
    for instance_id in ("a", "foobar", "@counter@key1", "order-42"):
        queue = hub.control_queue_for(instance_id)
        assert queue.name == f"{hub.names.hub.lower()}-control-{partition_index(instance_id, 4):02d}"
        sent = _message(instance_id)
        await queue.send(sent)
        [received] = await queue.receive(32, VISIBILITY)
        assert received.data == sent
        assert received.dequeue_count == 1
        await queue.delete(received)
        assert await queue.approximate_count() == 0


async def test_a_copy_dequeued_again_since_is_superseded_not_an_error(hub: TaskHub) -> None:
    """A holder whose hold ran out before its renewal: a poll took the message again. The stale copy's
    delete, renewal and abandon change nothing and raise nothing; the newer copy still works."""
    queue = hub.control_queue_for("again")
    await queue.send(_message("again"))
    [stale] = await queue.receive(1, timedelta(seconds=1))
    newer = await received_again(queue)
    assert newer.message_id == stale.message_id and newer.pop_receipt != stale.pop_receipt
    await queue.delete(stale)
    assert not await queue.renew(stale, VISIBILITY)
    await queue.abandon(stale, delay=timedelta(0))
    assert await queue.approximate_count() == 1 and not await queue.has_visible(), "newer still hidden"
    assert await queue.renew(newer, VISIBILITY)
    await queue.delete(newer)
    assert await queue.approximate_count() == 0


async def test_every_event_type_round_trips_through_a_queue(hub: TaskHub) -> None:
    queue = hub.work_item_queue
    events = sample_events()
    for event in events.values():
        await queue.send(MessageData(TaskMessage(event, OrchestrationInstance("q", "e")), episode=1))
    received = []
    while len(received) < len(events):
        batch = await queue.receive(32, VISIBILITY)
        assert batch, "messages went missing"
        received += batch
    by_type = {m.data.event.event_type: m.data.event for m in received}
    assert by_type == events


async def test_queue_body_is_raw_json_with_type_first(hub: TaskHub) -> None:
    queue = hub.control_queue_for("raw")
    await queue.send(_message("raw"))
    async with QueueClient.from_connection_string(_conn(hub), queue.name) as client:
        [peeked] = await client.peek_messages()
    assert peeked.content.startswith('{"$type":"DurableTask.AzureStorage.MessageData"')


def _conn(hub: TaskHub) -> str:
    account = hub.account
    return (
        f"DefaultEndpointsProtocol=http;AccountName={account.account_name};AccountKey={account.account_key};"
        f"QueueEndpoint={account.queue_endpoint};BlobEndpoint={account.blob_endpoint};"
        f"TableEndpoint={account.table_endpoint};"
    )


async def test_base64_bodies_from_older_writers_are_read(hub: TaskHub) -> None:
    queue = hub.control_queue_for("legacy")
    sent = _message("legacy")
    async with QueueClient.from_connection_string(_conn(hub), queue.name) as client:
        await client.send_message(base64.b64encode(sent.encode().encode()).decode())
    [received] = await queue.receive(1, VISIBILITY)
    assert received.data == sent


async def test_large_messages_go_to_a_blob_behind_a_wrapper(hub: TaskHub) -> None:
    payload = json.dumps("z" * (MAX_QUEUE_PAYLOAD_BYTES + 10))
    sent = _message("big-msg", payload)
    queue = hub.control_queue_for("big-msg")
    await queue.send(sent)
    async with QueueClient.from_connection_string(_conn(hub), queue.name) as client:
        [peeked] = await client.peek_messages()
    wrapper = json.loads(peeked.content)
    assert wrapper["TaskMessage"] is None
    # A start's blob carries its execution ID (here "e") where other messages carry their ActivityId.
    assert wrapper["CompressedBlobName"] == "big-msg/message-e-ExecutionStarted.json.gz"
    [received] = await queue.receive(1, VISIBILITY)
    assert received.data == sent
    assert received.data.event.input == payload  # type: ignore[attr-defined]


async def test_small_message_just_under_the_limit_stays_inline(hub: TaskHub) -> None:
    base = len(_message("edge", '""').encode().encode("utf-8"))
    sent = _message("edge", '"' + "a" * (MAX_QUEUE_PAYLOAD_BYTES - base) + '"')
    assert len(sent.encode().encode("utf-8")) == MAX_QUEUE_PAYLOAD_BYTES
    queue = hub.control_queue_for("edge")
    await queue.send(sent)
    async with QueueClient.from_connection_string(_conn(hub), queue.name) as client:
        [peeked] = await client.peek_messages()
    assert json.loads(peeked.content)["CompressedBlobName"] is None


async def test_undecodable_messages_are_abandoned_not_returned(hub: TaskHub) -> None:
    queue = hub.control_queue_for("junk")
    async with QueueClient.from_connection_string(_conn(hub), queue.name) as client:
        await client.send_message("this is not a durable task message")
    await queue.send(_message("junk"))
    received = await queue.receive(32, VISIBILITY)
    assert [m.data.instance_id for m in received] == ["junk"]
    async with QueueClient.from_connection_string(_conn(hub), queue.name) as client:
        assert await client.peek_messages() == []  # the junk one is invisible for its back-off


async def test_abandon_and_delayed_send(hub: TaskHub) -> None:
    queue = hub.control_queue_for("later")
    await queue.send(_message("later"), delay=timedelta(seconds=30))
    assert await queue.receive(32, VISIBILITY) == []
    await queue.send(_message("now"))
    [now] = await queue.receive(32, VISIBILITY)
    await queue.abandon(now, delay=timedelta(0))
    [again] = await queue.receive(32, VISIBILITY)
    assert again.message_id == now.message_id and again.dequeue_count == 2
    with pytest.raises(ValueError, match="7-day"):
        await queue.send(_message("never"), delay=timedelta(days=8))


def test_http_clients_read_proxy_settings_only_when_some_are_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "WS_PROXY", "WSS_PROXY", "NETRC"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    assert not use_environment_settings()
    account = StorageAccount.from_connection_string("UseDevelopmentStorage=true")
    assert account.sdk_transport()._use_env_settings is False
    monkeypatch.setenv("https_proxy", "http://proxy.invalid:3128")
    assert use_environment_settings()
    assert account.sdk_transport()._use_env_settings is True
