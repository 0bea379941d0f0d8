"""The DurableTask event and message model: queue JSON and table column forms (no storage)."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime

import pytest

from durable_ext.errors import MessageFormatError
from durable_ext.history import (
    EVENT_CLASSES,
    EventType,
    ExecutionStartedEvent,
    OrchestrationInstance,
    OrchestrationStatus,
    TaskScheduledEvent,
    event_from_columns,
    event_from_json,
    event_to_columns,
    event_to_json,
)
from durable_ext.messages import MessageData, TaskMessage
from durable_ext.wire import format_datetime, parse_datetime
from tests.sample_events import INSTANCE, sample_events

EVENTS = sample_events()


def test_every_event_class_has_a_sample_and_only_execution_failed_lacks_a_class() -> None:
    assert set(EventType) - set(EVENT_CLASSES) == {EventType.ExecutionFailed}


@pytest.mark.parametrize("event_type", sorted(EVENTS), ids=lambda t: t.name)
def test_queue_json_round_trip(event_type: EventType) -> None:
    event = EVENTS[event_type]
    data = event_to_json(event)
    assert next(iter(data)) == "$type"
    assert data["$type"].startswith("DurableTask.Core.History.")
    assert data["EventType"] == int(event_type)
    # EventId, IsPlayed and Timestamp (base members) come after the class's own members.
    assert list(data)[-3:] == ["EventId", "IsPlayed", "Timestamp"]
    assert event_from_json(json.loads(json.dumps(data))) == event


@pytest.mark.parametrize("event_type", sorted(EVENTS), ids=lambda t: t.name)
def test_table_columns_round_trip(event_type: EventType) -> None:
    event = EVENTS[event_type]
    columns = event_to_columns(event)
    assert columns["EventType"] == event_type.name
    assert "_Timestamp" in columns and "Timestamp" not in columns
    for value in columns.values():
        assert not (isinstance(value, str) and '"$type"' in value), "table JSON must not carry $type"
    assert event_from_columns(columns) == event


def test_nested_objects_in_columns_are_json_text_with_null_literal() -> None:
    columns = event_to_columns(ExecutionStartedEvent(name="x", version="", input=None))
    assert columns["ParentInstance"] == "null"
    assert columns["ParentTraceContext"] == "null"
    assert columns["Tags"] == "null"
    assert "Input" not in columns  # None scalars are omitted, like the Azure SDKs do
    started = event_to_columns(EVENTS[EventType.ExecutionStarted])
    assert json.loads(started["OrchestrationInstance"]) == {
        "InstanceId": "order-42",
        "ExecutionId": INSTANCE.execution_id,
    }
    assert isinstance(started["Generation"], int)
    completed = event_to_columns(EVENTS[EventType.ExecutionCompleted])
    assert completed["OrchestrationStatus"] == "Failed"
    assert json.loads(completed["FailureDetails"])["InnerFailure"]["ErrorType"] == "KeyError"


def test_status_names_and_numbers_match_dotnet() -> None:
    assert [s.name for s in OrchestrationStatus] == [
        "Running",
        "Completed",
        "ContinuedAsNew",
        "Failed",
        "Canceled",
        "Terminated",
        "Pending",
        "Suspended",
    ]
    assert [s for s in OrchestrationStatus if s.is_terminal] == [
        OrchestrationStatus.Completed,
        OrchestrationStatus.Failed,
        OrchestrationStatus.Canceled,
        OrchestrationStatus.Terminated,
    ]


def test_datetime_format_matches_newtonsoft() -> None:
    assert (
        format_datetime(datetime(2023, 3, 24, 20, 53, 5, 909351, tzinfo=UTC)) == "2023-03-24T20:53:05.909351Z"
    )
    assert format_datetime(datetime(2023, 3, 24, 20, 53, 5, 500000, tzinfo=UTC)) == "2023-03-24T20:53:05.5Z"
    assert format_datetime(datetime(2023, 3, 24, 20, 53, 5, tzinfo=UTC)) == "2023-03-24T20:53:05Z"
    # .NET writes 7 fractional digits (100 ns ticks); Python keeps microseconds.
    assert parse_datetime("2023-03-24T20:53:05.9093518Z") == datetime(
        2023, 3, 24, 20, 53, 5, 909351, tzinfo=UTC
    )
    assert parse_datetime("2023-03-24T20:53:05+02:00") == datetime(2023, 3, 24, 18, 53, 5, tzinfo=UTC)
    with pytest.raises(MessageFormatError):
        parse_datetime("yesterday")


def test_reads_the_dotnet_example_message() -> None:
    """A trimmed message from DT.AS's unit tests decodes (docs/storage-protocol.md §4.1)."""
    body = (
        '{"$type":"DurableTask.AzureStorage.MessageData","ActivityId":"5406d369-4369-4673-afae-6671a2fa1e57",'
        '"TaskMessage":{"$type":"DurableTask.Core.TaskMessage","Event":{"$type":'
        '"DurableTask.Core.History.ExecutionStartedEvent","OrchestrationInstance":{"$type":'
        '"DurableTask.Core.OrchestrationInstance","InstanceId":"2.2-34a2","ExecutionId":"aae324dc"},'
        '"EventType":0,"ParentInstance":null,"Name":"OrchestrationName","Version":"2.0","Input":"input",'
        '"Tags":{"$type":"System.Collections.Generic.Dictionary`2[[System.String, mscorlib],'
        '[System.String, mscorlib]]","tag1":"tagValue"},"Correlation":null,"ScheduledStartTime":null,'
        '"Generation":0,"EventId":-1,"IsPlayed":false,"Timestamp":"2023-03-24T20:53:05.9093518Z"},'
        '"SequenceNumber":0,"OrchestrationInstance":{"$type":"DurableTask.Core.OrchestrationInstance",'
        '"InstanceId":"2.2-34a2","ExecutionId":"aae324dc"}},"CompressedBlobName":null,"SequenceNumber":40,'
        '"Sender":{"InstanceId":"","ExecutionId":""},"SerializableTraceContext":null}'
    )
    message = MessageData.decode(body)
    event = message.event
    assert isinstance(event, ExecutionStartedEvent)
    assert (event.name, event.version, event.input, event.tags) == (
        "OrchestrationName",
        "2.0",
        "input",
        {"tag1": "tagValue"},
    )
    assert message.instance_id == "2.2-34a2"
    assert message.sequence_number == 40
    assert message.activity_id == uuid.UUID("5406d369-4369-4673-afae-6671a2fa1e57")
    assert message.sender == OrchestrationInstance("", "")


def _message() -> MessageData:
    return MessageData(
        TaskMessage(
            TaskScheduledEvent(event_id=0, name="act", input='"x"'), OrchestrationInstance("i-1", "e-1")
        ),
        episode=2,
        sender=OrchestrationInstance("i-1", "e-1"),
    )


def test_message_envelope_shape() -> None:
    message = _message()
    data = json.loads(message.encode())
    assert next(iter(data)) == "$type"
    assert data["$type"] == "DurableTask.AzureStorage.MessageData"
    assert next(iter(data["TaskMessage"])) == "$type"
    assert next(iter(data["TaskMessage"]["Event"])) == "$type"
    assert next(iter(data["TaskMessage"]["OrchestrationInstance"])) == "$type"
    assert "$type" not in data["Sender"]
    assert data["Episode"] == 2
    assert "Episode" not in json.loads(MessageData(message.task_message).encode())
    assert MessageData.decode(message.encode()) == message


def test_message_reads_base64_bodies() -> None:
    message = _message()
    encoded = base64.b64encode(message.encode().encode("utf-8")).decode("ascii")
    assert MessageData.decode(encoded) == message


@pytest.mark.parametrize(
    "body", ["", "not json at all!", "[1,2]", "{broken", base64.b64encode(b"\xff\xfe").decode()]
)
def test_message_rejects_garbage(body: str) -> None:
    with pytest.raises(MessageFormatError):
        MessageData.decode(body)


def test_large_message_wrapper_shape() -> None:
    message = _message()
    name = message.large_message_blob_name()
    assert name == f"i-1/message-{message.activity_id.hex}-TaskScheduled.json.gz"
    assert json.loads(MessageData.wrapper(name).encode()) == {
        "$type": "DurableTask.AzureStorage.MessageData",
        "ActivityId": "00000000-0000-0000-0000-000000000000",
        "TaskMessage": None,
        "CompressedBlobName": name,
        "SequenceNumber": 0,
        "SerializableTraceContext": None,
    }


def test_unknown_event_type_is_a_clear_error() -> None:
    with pytest.raises(MessageFormatError, match="EventType"):
        event_from_json({"EventType": 99})
    with pytest.raises(MessageFormatError, match="ExecutionFailed"):
        event_from_columns({"EventType": "ExecutionFailed"})
    with pytest.raises(MessageFormatError, match="no EventType"):
        event_from_columns({"Name": "x"})
