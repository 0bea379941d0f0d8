"""Entities in the dashboard: a page of them with state, lock and queue; signal; delete.

An entity is the Instances row ``@name@key`` (docs/storage-protocol.md §2.7): its Input column holds
the scheduler state (state, queue, lock), its CustomStatus the ``EntityStatus`` summary.
"""

from __future__ import annotations

import json
from typing import Any

from durable_ext.client import TaskHubClient
from durable_ext.dashboard.views import MAX_SHOWN_PAYLOAD_BYTES, iso
from durable_ext.entities import SchedulerState, entity_instance_id, parse_entity_instance_id
from durable_ext.errors import (
    InstanceNotFoundError,
    InvalidInstanceStateError,
    MessageFormatError,
    ValidationError,
)
from durable_ext.host.df_json import json_value
from durable_ext.host.queries import MAX_PREFIX_LENGTH
from durable_ext.storage.tracking import InstanceQuery, InstanceState

_ENTITY_ID_PREFIX = "@"


def _id_prefix(prefix: str | None) -> str:
    """``@`` plus the name prefix, lower-cased as entity names are in IDs (``name@key`` keeps the key)."""
    if not prefix:
        return _ENTITY_ID_PREFIX
    if len(prefix) > MAX_PREFIX_LENGTH:
        raise ValidationError(f"query parameter prefix: at most {MAX_PREFIX_LENGTH} characters")
    name, at, key = prefix.partition("@")
    return f"{_ENTITY_ID_PREFIX}{name.lower()}{at}{key}"


def _item(row: InstanceState) -> dict[str, Any] | None:
    """The list item of an entity row; None for an entity that was deleted and has nothing queued."""
    try:
        scheduler = SchedulerState.from_json_text(row.input)
    except MessageFormatError:
        scheduler = SchedulerState()
    if not (scheduler.entity_exists or scheduler.queue or scheduler.locked_by):
        return None
    name, key = parse_entity_instance_id(row.instance_id)
    state = scheduler.state
    item: dict[str, Any] = {
        "name": name,
        "key": key,
        "instanceId": row.instance_id,
        "state": None,
        "lastOperationTime": iso(row.last_updated_time),
        "lockedBy": scheduler.locked_by,
        "queuedOperations": len(scheduler.queue),
    }
    if state is not None and len(state.encode("utf-8", "surrogatepass")) > MAX_SHOWN_PAYLOAD_BYTES:
        item["truncated"] = ["state"]
    else:
        item["state"] = json_value(state)
    return item


async def entity_page(
    client: TaskHubClient, prefix: str | None, top: int, continuation: str | None
) -> dict[str, Any]:
    """``{"entities": [...], "continuation": ...}``: one page of the hub's entity rows."""
    query = InstanceQuery(instance_id_prefix=_id_prefix(prefix), exclude_entities=False)
    page = await client.hub.tracking.query_instances(query, top=top, continuation_token=continuation)
    items = [item for item in map(_item, page.rows) if item is not None]
    return {"entities": items, "continuation": page.continuation_token}


async def signal_entity(client: TaskHubClient, name: str, key: str, body: dict[str, Any]) -> dict[str, Any]:
    """Queue ``body["operation"]`` (with ``body["input"]`` if given) for the entity."""
    operation = body.get("operation")
    if not isinstance(operation, str) or not operation:
        raise ValidationError("operation must be a non-empty string")
    entity_id = entity_instance_id(name, key)
    payload = json.dumps(body["input"], ensure_ascii=False) if "input" in body else None
    await client.signal_entity(entity_id, operation, payload)
    return {"instanceId": entity_id, "ok": True}


async def delete_entity(client: TaskHubClient, name: str, key: str) -> dict[str, Any]:
    """Purge the entity's row and history, as DF's entity storage clean-up does.

    Refused while it holds a lock or has operations queued: those belong to callers still waiting.
    """
    entity_id = entity_instance_id(name, key)
    row = await client.hub.tracking.get_instance(entity_id)
    if row is None:
        raise InstanceNotFoundError(f"no entity {entity_id!r} exists in task hub {client.hub.names.hub}")
    scheduler = SchedulerState.from_json_text(row.input)
    if scheduler.locked_by is not None or scheduler.queue:
        raise InvalidInstanceStateError(
            f"entity {entity_id!r} is locked by an orchestration or has operations queued; signal its "
            "'delete' operation instead, or try again later"
        )
    if await client.purge_instance(entity_id) == 0:
        raise InstanceNotFoundError(f"no entity {entity_id!r} exists in task hub {client.hub.names.hub}")
    return {"instanceId": entity_id, "ok": True}
