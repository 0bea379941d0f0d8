"""The dashboard's JSON shapes: list items, the instance detail, history events and the timeline.

docs/dashboard.md ("JSON API") is the contract these functions implement.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from durable_ext.history import (
    ContinueAsNewEvent,
    EventRaisedEvent,
    EventSentEvent,
    EventType,
    ExecutionCompletedEvent,
    ExecutionResumedEvent,
    ExecutionRewoundEvent,
    ExecutionStartedEvent,
    ExecutionSuspendedEvent,
    ExecutionTerminatedEvent,
    HistoryEvent,
    OrchestrationStatus,
    SubOrchestrationInstanceCompletedEvent,
    SubOrchestrationInstanceCreatedEvent,
    SubOrchestrationInstanceFailedEvent,
    TaskCompletedEvent,
    TaskFailedEvent,
    TaskScheduledEvent,
    TimerCreatedEvent,
    TimerFiredEvent,
)
from durable_ext.host.df_json import json_value
from durable_ext.storage.tracking import InstanceState, is_blob_url
from durable_ext.wire import format_datetime
from durable_ext.worker.history_index import answered_id

MAX_SHOWN_PAYLOAD_BYTES = 64 * 1024
"""Payloads larger than this (UTF-8 JSON text) are left out of answers and fetched on their own."""

PAYLOADS = {"input": "input", "output": "output", "customStatus": "custom_status"}
"""Payload names in URLs and answers → InstanceState attributes."""


def iso(moment: datetime | None) -> str | None:
    """A time as the dashboard writes it (ISO 8601 UTC with ``Z``), or None."""
    return format_datetime(moment) if moment is not None else None


def _too_large(text: str) -> bool:
    return len(text.encode("utf-8", "surrogatepass")) > MAX_SHOWN_PAYLOAD_BYTES


def list_item(row: InstanceState) -> dict[str, Any]:
    """One row of the instance list; a custom status kept in a blob is null and named in ``truncated``."""
    item: dict[str, Any] = {
        "instanceId": row.instance_id,
        "name": row.name,
        "runtimeStatus": row.runtime_status.name if row.runtime_status is not None else None,
        "createdTime": iso(row.created_time),
        "lastUpdatedTime": iso(row.last_updated_time),
        "customStatus": None,
    }
    if is_blob_url(row.custom_status):
        item["truncated"] = ["customStatus"]
    else:
        item["customStatus"] = json_value(row.custom_status)
    return item


def instance_detail(row: InstanceState, head: list[HistoryEvent]) -> dict[str, Any]:
    """The detail of one instance; ``head`` is the first events of its history (for the parent)."""
    ended = row.runtime_status is not None and row.runtime_status.is_terminal
    completed = row.completed_time if ended else None
    duration = None
    if completed is not None and row.created_time is not None:
        duration = round((completed - row.created_time).total_seconds() * 1000)
    body: dict[str, Any] = {
        **list_item(row),
        "completedTime": iso(completed),
        "durationMs": duration,
        "failure": None,
        "parent": _parent(head),
        "truncated": [],
    }
    for name, attribute in PAYLOADS.items():
        text: str | None = getattr(row, attribute)
        if text is not None and _too_large(text):
            body[name] = None
            body["truncated"].append(name)
        else:
            body[name] = json_value(text)
    if row.runtime_status is OrchestrationStatus.Failed:
        body["failure"] = {"message": json_value(row.output) if "output" not in body["truncated"] else None}
        body["failure"]["details"] = None
    return body


def _parent(head: list[HistoryEvent]) -> dict[str, str] | None:
    for event in head:
        if isinstance(event, ExecutionStartedEvent):
            parent = event.parent_instance
            if parent is not None and parent.orchestration_instance is not None:
                return {"instanceId": parent.orchestration_instance.instance_id}
            return None
    return None


# ---- history ----------------------------------------------------------------------------------------


def _payload(event_json: dict[str, Any], key: str, text: str | None, *, is_json: bool = True) -> None:
    """Set ``key`` to the payload (JSON text, or plain text such as a failure reason), unless too large."""
    if text is None:
        return
    if _too_large(text):
        event_json[key] = None
        event_json["truncated"] = True
    else:
        event_json[key] = json_value(text) if is_json else text


def history_event(event: HistoryEvent) -> dict[str, Any]:
    """One history event in the dashboard's shape (docs/dashboard.md, "One instance")."""
    body: dict[str, Any] = {
        "eventId": event.event_id,
        "eventType": event.event_type.name,
        "timestamp": iso(event.timestamp),
    }
    name = getattr(event, "name", None)
    if name is not None:
        body["name"] = name
    if isinstance(
        event,
        ExecutionStartedEvent
        | TaskScheduledEvent
        | SubOrchestrationInstanceCreatedEvent
        | EventRaisedEvent
        | EventSentEvent
        | ExecutionTerminatedEvent,
    ):
        _payload(body, "input", event.input)
    if isinstance(
        event, TaskCompletedEvent | SubOrchestrationInstanceCompletedEvent | ExecutionCompletedEvent
    ):
        _payload(body, "result", event.result)
    if isinstance(event, ExecutionCompletedEvent):
        body["orchestrationStatus"] = event.orchestration_status.name
    if isinstance(event, TaskFailedEvent | SubOrchestrationInstanceFailedEvent):
        _payload(body, "reason", event.reason, is_json=False)
        _payload(body, "details", event.details, is_json=False)
    if isinstance(event, ExecutionSuspendedEvent | ExecutionResumedEvent | ExecutionRewoundEvent):
        _payload(body, "reason", event.reason, is_json=False)
    if isinstance(event, TimerCreatedEvent | TimerFiredEvent) and event.fire_at is not None:
        body["fireAt"] = iso(event.fire_at)
    if isinstance(event, SubOrchestrationInstanceCreatedEvent | EventSentEvent):
        body["instanceId"] = event.instance_id
    scheduled = answered_id(event)
    if scheduled is not None:
        body["scheduledId"] = scheduled
    return body


# ---- timeline ---------------------------------------------------------------------------------------

_KINDS = {
    EventType.TaskScheduled: "activity",
    EventType.SubOrchestrationInstanceCreated: "suborchestration",
    EventType.TimerCreated: "timer",
}
_ENDED = {
    OrchestrationStatus.Completed: "Completed",
    OrchestrationStatus.ContinuedAsNew: "Completed",
}


@dataclass
class _Timeline:
    """Builds the timeline items from a history, pairing scheduling events with their outcomes."""

    items: list[dict[str, Any]]
    open: dict[int, dict[str, Any]]
    """Items still waiting for their outcome, by the scheduling event's ID."""

    def add(self, event: HistoryEvent) -> None:
        kind = _KINDS.get(event.event_type)
        if kind is not None:
            self._scheduled(kind, event)
        elif isinstance(event, ExecutionStartedEvent):
            self.items.append(_item("orchestration", "orchestration", event.name, event.timestamp, "Running"))
        elif isinstance(event, EventRaisedEvent | EventSentEvent):
            self._point(event)
        elif isinstance(event, ExecutionCompletedEvent | ExecutionTerminatedEvent):
            self._ended(event)
        else:
            self._outcome(event)

    def _scheduled(self, kind: str, event: HistoryEvent) -> None:
        name = getattr(event, "name", None)
        item = _item(f"{kind}-{event.event_id}", kind, name, event.timestamp, "Running")
        if isinstance(event, TimerCreatedEvent):
            item["name"] = "timer"
            item["status"] = "Pending"
            item["fireAt"] = iso(event.fire_at)
        if isinstance(event, SubOrchestrationInstanceCreatedEvent):
            item["instanceId"] = event.instance_id
        self.items.append(item)
        self.open[event.event_id] = item

    def _point(self, event: EventRaisedEvent | EventSentEvent) -> None:
        item = _item(f"event-{len(self.items)}", "event", event.name, event.timestamp, "Completed")
        item["end"] = item["start"]
        if isinstance(event, EventSentEvent):
            item["instanceId"] = event.instance_id
        self.items.append(item)

    def _outcome(self, event: HistoryEvent) -> None:
        scheduled = answered_id(event)
        item = self.open.pop(scheduled, None) if scheduled is not None else None
        if item is None:
            return
        item["end"] = iso(event.timestamp)
        failed = isinstance(event, TaskFailedEvent | SubOrchestrationInstanceFailedEvent)
        item["status"] = "Failed" if failed else "Completed"
        if isinstance(event, TimerFiredEvent):
            item["end"] = iso(event.fire_at or event.timestamp)

    def _ended(self, event: ExecutionCompletedEvent | ExecutionTerminatedEvent) -> None:
        orchestration = self.items[0] if self.items and self.items[0]["kind"] == "orchestration" else None
        if orchestration is None or orchestration["end"] is not None:
            return
        orchestration["end"] = iso(event.timestamp)
        if isinstance(event, ExecutionTerminatedEvent):
            orchestration.update(status="Failed", terminated=True)
        elif isinstance(event, ContinueAsNewEvent):
            orchestration["status"] = "Completed"
        else:
            orchestration["status"] = _ENDED.get(event.orchestration_status, "Failed")
            if event.orchestration_status is OrchestrationStatus.Terminated:
                orchestration["terminated"] = True

    def finish(self) -> list[dict[str, Any]]:
        """The items, with timers the ended orchestration abandoned closed as cancelled."""
        orchestration = self.items[0] if self.items and self.items[0]["kind"] == "orchestration" else None
        end = orchestration["end"] if orchestration is not None else None
        if end is not None:
            for item in self.open.values():
                if item["kind"] == "timer":
                    item.update(end=end, status="Completed", canceled=True)
        return self.items


def _item(item_id: str, kind: str, name: str | None, start: datetime, status: str) -> dict[str, Any]:
    return {"id": item_id, "kind": kind, "name": name, "start": iso(start), "end": None, "status": status}


def timeline(events: list[HistoryEvent]) -> list[dict[str, Any]]:
    """The timeline items of a history (docs/dashboard.md): one pass, scheduling paired with outcome."""
    builder = _Timeline([], {})
    for event in events:
        builder.add(event)
    return builder.finish()
