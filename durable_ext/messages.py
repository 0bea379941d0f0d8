"""The queue message envelope, ``DurableTask.AzureStorage.MessageData`` (docs/storage-protocol.md §4.1, §4.3).

Bodies are Newtonsoft JSON with ``$type`` as the first member of every object except ``Sender``.
DT.AS 2.x writes the JSON as raw UTF-8 text; 1.x wrote it base64-encoded. We write raw JSON and read both.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import uuid
from dataclasses import dataclass, field
from typing import Any, ClassVar

from durable_ext.errors import MessageFormatError
from durable_ext.history import (
    ExecutionStartedEvent,
    HistoryEvent,
    OrchestrationInstance,
    event_from_json,
    event_to_json,
)
from durable_ext.storage.keys import blob_prefix
from durable_ext.wire import STRING_DICTIONARY_TYPE, TYPE_KEY, from_json_object, to_json_object

MAX_QUEUE_PAYLOAD_BYTES = 45 * 1024
"""UTF-8 size above which a message goes to a gzip blob and the queue gets a wrapper
(docs/storage-protocol.md §4.3)."""

_EMPTY_GUID = uuid.UUID(int=0)

# DT.AS numbers client messages with a process-wide counter; it only breaks ties when sorting.
_sequence = itertools.count(1)


def next_sequence_number() -> int:
    """A process-wide increasing number for ``MessageData.SequenceNumber``."""
    return next(_sequence)


@dataclass
class TaskMessage:
    """``DurableTask.Core.TaskMessage``: one history event addressed to an orchestration instance."""

    NET_TYPE: ClassVar[str] = "DurableTask.Core.TaskMessage"
    event: HistoryEvent
    orchestration_instance: OrchestrationInstance
    sequence_number: int = 0
    tags: dict[str, str] | None = None
    """``OrchestrationExecutionContext.OrchestrationTags``; None when the context is absent."""

    def to_json(self) -> dict[str, Any]:
        """Newtonsoft form with ``$type`` first."""
        context: dict[str, Any] | None = None
        if self.tags is not None:
            context = {
                TYPE_KEY: "DurableTask.Core.OrchestrationExecutionContext",
                "OrchestrationTags": {TYPE_KEY: STRING_DICTIONARY_TYPE, **self.tags},
            }
        return {
            TYPE_KEY: self.NET_TYPE,
            "Event": event_to_json(self.event),
            "SequenceNumber": self.sequence_number,
            "OrchestrationInstance": to_json_object(self.orchestration_instance, typed=True),
            "OrchestrationExecutionContext": context,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TaskMessage:
        """Read the Newtonsoft form."""
        event = data.get("Event")
        instance = data.get("OrchestrationInstance")
        if not isinstance(event, dict) or not isinstance(instance, dict):
            raise MessageFormatError("TaskMessage needs an Event and an OrchestrationInstance object")
        context = data.get("OrchestrationExecutionContext")
        tags = None
        if isinstance(context, dict) and isinstance(context.get("OrchestrationTags"), dict):
            tags = {str(k): str(v) for k, v in context["OrchestrationTags"].items() if k != TYPE_KEY}
        return cls(
            event=event_from_json(event),
            orchestration_instance=from_json_object(OrchestrationInstance, instance),
            sequence_number=int(data.get("SequenceNumber") or 0),
            tags=tags,
        )


def message_blob_stem(instance_id: str, guid: str) -> str:
    """How the names of a large message's blobs begin, for the message (or execution) ``guid``."""
    return f"{blob_prefix(instance_id)}/message-{guid}-"


@dataclass
class MessageData:
    """``DurableTask.AzureStorage.MessageData``: what one control-queue or work-item message holds.

    A large message is stored in a blob; the queue then holds a wrapper whose ``task_message`` is None
    and whose ``compressed_blob_name`` names the blob.
    """

    NET_TYPE: ClassVar[str] = "DurableTask.AzureStorage.MessageData"
    task_message: TaskMessage | None
    activity_id: uuid.UUID = field(default_factory=uuid.uuid4)
    sequence_number: int = field(default_factory=next_sequence_number)
    episode: int | None = None
    sender: OrchestrationInstance | None = None
    compressed_blob_name: str | None = None
    serializable_trace_context: str | None = None

    @property
    def instance_id(self) -> str:
        """Target instance ID (empty for a large-message wrapper)."""
        return self.task_message.orchestration_instance.instance_id if self.task_message else ""

    @property
    def event(self) -> HistoryEvent:
        """The carried history event."""
        if self.task_message is None:
            raise MessageFormatError("a large-message wrapper carries no event until it is resolved")
        return self.task_message.event

    def to_json(self) -> dict[str, Any]:
        """Newtonsoft form: ``$type`` first, ``Episode`` and ``Sender`` omitted when None."""
        out: dict[str, Any] = {
            TYPE_KEY: self.NET_TYPE,
            "ActivityId": str(self.activity_id),
            "TaskMessage": self.task_message.to_json() if self.task_message else None,
            "CompressedBlobName": self.compressed_blob_name,
            "SequenceNumber": self.sequence_number,
        }
        if self.episode is not None:
            out["Episode"] = self.episode
        if self.sender is not None:
            # Sender is serialized with TypeNameHandling.None: no $type.
            out["Sender"] = to_json_object(self.sender, typed=False)
        out["SerializableTraceContext"] = self.serializable_trace_context
        return out

    def encode(self) -> str:
        """The queue body: compact JSON text."""
        return json.dumps(self.to_json(), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MessageData:
        """Read the Newtonsoft form."""
        task = data.get("TaskMessage")
        sender = data.get("Sender")
        try:
            activity_id = uuid.UUID(str(data.get("ActivityId") or _EMPTY_GUID))
        except ValueError as exc:
            raise MessageFormatError(f"invalid ActivityId {data.get('ActivityId')!r}") from exc
        return cls(
            task_message=TaskMessage.from_json(task) if isinstance(task, dict) else None,
            activity_id=activity_id,
            sequence_number=int(data.get("SequenceNumber") or 0),
            episode=data.get("Episode"),
            sender=from_json_object(OrchestrationInstance, sender) if isinstance(sender, dict) else None,
            compressed_blob_name=data.get("CompressedBlobName") or None,
            serializable_trace_context=data.get("SerializableTraceContext"),
        )

    @classmethod
    def decode(cls, body: str | bytes) -> MessageData:
        """Parse a queue body: raw JSON (DT.AS 2.x) or base64 of it (DT.AS 1.x)."""
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        stripped = text.lstrip()
        if not stripped.startswith("{"):
            try:
                stripped = base64.b64decode(stripped, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise MessageFormatError("queue message is neither JSON nor base64-encoded JSON") from exc
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise MessageFormatError(f"queue message is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise MessageFormatError("queue message JSON is not an object")
        return cls.from_json(data)

    def large_message_blob_name(self) -> str:
        """Blob name for this message when it is too large for a queue.

        DT.AS names it by the raw instance ID; that is :func:`blob_prefix` for every ID without
        characters a blob name cannot carry, and the escaped ID for the others. The GUID in the name
        is the message's ActivityId, except that a start carries its execution ID there: a purge
        then knows the blob belongs to the execution it removes, however recently it was written.
        """
        event = self.event
        guid = self.activity_id.hex
        if isinstance(event, ExecutionStartedEvent) and self.task_message is not None:
            guid = self.task_message.orchestration_instance.execution_id or guid
        return f"{message_blob_stem(self.instance_id, guid)}{event.event_type.name}.json.gz"

    @classmethod
    def wrapper(cls, blob_name: str) -> MessageData:
        """The small message enqueued in place of a large one."""
        return cls(
            task_message=None, activity_id=_EMPTY_GUID, sequence_number=0, compressed_blob_name=blob_name
        )
