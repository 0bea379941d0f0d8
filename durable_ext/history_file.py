"""Recorded histories: one execution's history as a JSON file (``history export``, ``replay``).

The file is an envelope around the events, which keep DurableTask.Core's own JSON form of
``HistoryEvent`` (the members and names of the History table, ``$type`` first and ``EventType`` as its
number, as :func:`~durable_ext.history.event_to_json` writes them)::

    {
      "format": "durable-ext-history/1",
      "hub": "MyTaskHub",
      "instanceId": "4f1c...",
      "name": "hello_sequence",
      "executionId": "a9e0...",
      "events": [{"$type": "DurableTask.Core.History.ExecutionStartedEvent", "EventType": 0, ...}, ...]
    }

``EventType`` may also be the type's name (as the History table's column has it), so histories saved
by other Durable Functions tools convert by wrapping their events in the envelope.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from durable_ext.errors import InstanceNotFoundError, MessageFormatError
from durable_ext.history import ExecutionStartedEvent, HistoryEvent, event_from_json, event_to_json
from durable_ext.storage.taskhub import TaskHub
from durable_ext.wire import parse_json

FORMAT = "durable-ext-history/1"
"""The ``format`` member of the files this version writes and reads."""


@dataclass(frozen=True)
class RecordedHistory:
    """The history of one execution of an orchestration, as recorded in a task hub."""

    instance_id: str
    name: str
    events: list[HistoryEvent]
    execution_id: str | None = None
    hub: str | None = None

    @property
    def started(self) -> ExecutionStartedEvent:
        """The execution's ExecutionStarted event."""
        return _started(self.events, f"the history of instance {self.instance_id!r}")

    @property
    def parent_instance_id(self) -> str | None:
        """The parent's instance ID, when this is a sub-orchestration."""
        parent = self.started.parent_instance
        orchestration = parent.orchestration_instance if parent is not None else None
        return orchestration.instance_id if orchestration is not None else None

    def to_json(self) -> dict[str, Any]:
        """The file's JSON object."""
        return {
            "format": FORMAT,
            "hub": self.hub,
            "instanceId": self.instance_id,
            "name": self.name,
            "executionId": self.execution_id,
            "events": [event_to_json(e) for e in self.events],
        }

    def dumps(self) -> str:
        """The file's text (indented JSON, ending with a newline)."""
        return json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, data: Any, what: str = "history file") -> RecordedHistory:
        """Read the file's JSON object; raises :class:`MessageFormatError`, naming ``what``, if not."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise MessageFormatError(
                f"{what} is not a durable_ext history (format {FORMAT!r}, found {found!r})"
            )
        events = data.get("events")
        if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
            raise MessageFormatError(f"{what}: 'events' must be a list of history event objects")
        instance_id = data.get("instanceId")
        if not isinstance(instance_id, str) or not instance_id:
            raise MessageFormatError(f"{what}: 'instanceId' must be a non-empty string")
        parsed = []
        for index, event in enumerate(events):
            try:
                parsed.append(event_from_json(event))
            except MessageFormatError as exc:
                raise MessageFormatError(f"{what}: event #{index}: {exc}") from exc
        name = _optional_str(data, "name") or _started(parsed, what).name
        if not name:
            raise MessageFormatError(f"{what}: no orchestration name (neither 'name' nor ExecutionStarted's)")
        return cls(instance_id, name, parsed, _optional_str(data, "executionId"), _optional_str(data, "hub"))


def _started(events: list[HistoryEvent], what: str) -> ExecutionStartedEvent:
    started = next((e for e in events if isinstance(e, ExecutionStartedEvent)), None)
    if started is None:
        raise MessageFormatError(f"{what} has no ExecutionStarted event")
    return started


def _optional_str(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) else None


def read_history_file(path: Path) -> RecordedHistory:
    """Read a file written by :meth:`RecordedHistory.dumps` (``history export``)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MessageFormatError(f"cannot read history file {path}: {exc}") from None
    return RecordedHistory.from_json(parse_json(text, f"history file {path}"), f"history file {path}")


async def export_history(hub: TaskHub, instance_id: str) -> RecordedHistory:
    """The current execution of ``instance_id`` in ``hub``, large payloads read back from their blobs.

    Raises :class:`InstanceNotFoundError` when the hub has no history for it.
    """
    load = await hub.tracking.load_history(instance_id)
    if not load.events:
        raise InstanceNotFoundError(f"task hub {hub.names.hub!r} has no history for instance {instance_id!r}")
    name = _started(load.events, f"the history of instance {instance_id!r}").name or ""
    return RecordedHistory(instance_id, name, load.events, load.execution_id, hub.names.hub)
