"""The tracking store: ``{Hub}History`` and ``{Hub}Instances`` (docs/storage-protocol.md §2 and §3).

History rows are keyed by the sanitized instance ID and a 16-digit hex sequence number; every batch
written for an instance carries the ``sentinel`` row, inserted once and then merged with If-Match, so
that two workers can never both commit the same episode.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import random
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeGuard, cast

from azure.core import MatchConditions
from azure.core.async_paging import AsyncPageIterator
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.data.tables import TableEntity, TableTransactionError
from azure.data.tables.aio import TableClient

from durable_ext.errors import OwnershipLostError, ValidationError
from durable_ext.history import (
    EventType,
    HistoryEvent,
    OrchestrationStatus,
    event_from_columns,
    event_to_columns,
)
from durable_ext.logs import hub_log
from durable_ext.messages import MessageData, message_blob_stem
from durable_ext.storage.blobs import LargeMessageStore
from durable_ext.storage.keys import blob_prefix, blob_safe_key, escape_partition_key, unescape_partition_key
from durable_ext.storage.rest import EntityWrite, TableRestClient, WriteKind
from durable_ext.wire import as_utc, parse_json

logger = logging.getLogger(__name__)

SENTINEL_ROW_KEY = "sentinel"
MAX_PROPERTY_BYTES = 60 * 1024
"""UTF-16 size above which a string column is offloaded to a blob (``> 61,440`` bytes)."""
LARGE_PROPERTIES = (
    "Name",
    "Input",
    "Result",
    "Output",
    "Reason",
    "Details",
    "Correlation",
    "FailureDetails",
    "Tags",
)
"""The variable-size columns DT.AS checks for offload, on history and Instances rows alike."""
MAX_BATCH_ROWS = 99
MAX_BATCH_ESTIMATE = 3 * 1024 * 1024
MAX_QUERY_PAGE = 1000
"""Most entities Azure Tables returns for one query request."""
DELETE_BATCH_ROWS = 100
"""Rows per purge transaction: the entity-group-transaction limit, as DT.AS uses it."""
_DELETE_BATCHES_IN_FLIGHT = 10
_ROW_OVERHEAD_ESTIMATE = 1024
_RESUME_AT = "ResumeAt"


def history_row_key(sequence_number: int) -> str:
    """RowKey of the n-th event of an execution: 16 uppercase hex digits."""
    return f"{sequence_number:016X}"


def utf16_size(text: str) -> int:
    """Bytes of ``text`` in UTF-16, the measure .NET uses for the table property limit."""
    # surrogatepass: a lone surrogate (from another tool) is one UTF-16 unit, as .NET counts it.
    return len(text.encode("utf-16-le", "surrogatepass"))


def is_blob_url(value: str | None) -> TypeGuard[str]:
    """Whether an Instances column holds a blob URL instead of the value itself."""
    return value is not None and value.startswith(("https://", "http://"))


OUTLINE_COLUMNS = (
    "EventType",
    "EventId",
    "_Timestamp",
    "Name",
    "FireAt",
    "InstanceId",
    "TaskScheduledId",
    "TimerId",
    "OrchestrationStatus",
)
"""The History columns of :meth:`TrackingStore.load_history_outline`: what an event is, when, what it
answers; no payload."""

_SENTINEL_COLUMNS = ("RowKey", "ExecutionId", "CheckpointCompletedTimestamp")


@dataclass
class HistoryLoad:
    """An instance's current execution as read from the History table."""

    events: list[HistoryEvent]
    execution_id: str | None
    etag: str | None
    """Sentinel ETag; pass it to the next :meth:`TrackingStore.append_history` (None: no sentinel yet)."""
    checkpoint_completed: datetime | None = None
    blob_names: list[str] = field(default_factory=list)
    """Offloaded blobs of this execution, to delete once a new execution has replaced it."""


@dataclass
class InstanceState:
    """One row of the Instances table."""

    instance_id: str
    execution_id: str | None = None
    name: str | None = None
    version: str | None = None
    input: str | None = None
    output: str | None = None
    custom_status: str | None = None
    runtime_status: OrchestrationStatus | None = None
    created_time: datetime | None = None
    last_updated_time: datetime | None = None
    completed_time: datetime | None = None
    scheduled_start_time: datetime | None = None
    generation: int = 0
    tags: dict[str, str] | None = None
    task_hub_name: str | None = None
    etag: str | None = None
    stored_at: datetime | None = None
    """The row's Timestamp: when storage last wrote it, by the storage service's clock."""

    def to_entity(self) -> dict[str, Any]:
        """Table form: None scalars omitted, ``"null"`` for absent CustomStatus and Tags."""
        entity: dict[str, Any] = {
            "PartitionKey": escape_partition_key(self.instance_id),
            "RowKey": "",
            "ExecutionId": self.execution_id,
            "Name": self.name,
            "Version": self.version,
            "Input": self.input,
            "Output": self.output,
            "CustomStatus": self.custom_status if self.custom_status is not None else "null",
            "RuntimeStatus": self.runtime_status.name if self.runtime_status is not None else None,
            "CreatedTime": self.created_time,
            "LastUpdatedTime": self.last_updated_time,
            "CompletedTime": self.completed_time,
            "ScheduledStartTime": self.scheduled_start_time,
            "Generation": self.generation,
            "Tags": json.dumps(self.tags, separators=(",", ":")) if self.tags is not None else "null",
            "TaskHubName": self.task_hub_name,
        }
        return {k: v for k, v in entity.items() if v is not None}

    @classmethod
    def from_entity(cls, entity: dict[str, Any]) -> InstanceState:
        """Read a row; unknown RuntimeStatus strings become None (DT.AS reads them as -1)."""
        status = entity.get("RuntimeStatus")
        custom = entity.get("CustomStatus")
        tags = entity.get("Tags")
        metadata = getattr(entity, "metadata", {}) or {}
        return cls(
            instance_id=unescape_partition_key(entity["PartitionKey"]),
            execution_id=entity.get("ExecutionId"),
            name=entity.get("Name"),
            version=entity.get("Version"),
            input=entity.get("Input"),
            output=entity.get("Output"),
            custom_status=None if custom in (None, "null") else custom,
            runtime_status=OrchestrationStatus.__members__.get(status) if status else None,
            created_time=as_utc(entity.get("CreatedTime")),
            last_updated_time=as_utc(entity.get("LastUpdatedTime")),
            completed_time=as_utc(entity.get("CompletedTime")),
            scheduled_start_time=as_utc(entity.get("ScheduledStartTime")),
            generation=int(entity.get("Generation") or 0),
            tags=json.loads(tags) if tags and tags != "null" else None,
            task_hub_name=entity.get("TaskHubName"),
            etag=metadata.get("etag"),
            stored_at=as_utc(metadata.get("timestamp")),
        )


def _odata_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _odata_datetime(value: datetime) -> str:
    utc = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    # isoformat, not strftime: strftime drops the leading zeros of years before 1000 on Linux.
    return f"datetime'{utc.replace(tzinfo=None).isoformat(timespec='microseconds')}Z'"


def _after_prefix(prefix: str) -> str | None:
    """The least key above every key that starts with ``prefix``; None if no key is above them all.

    Table keys compare by UTF-16 code units (.NET's ordinal order, and JavaScript's in Azurite), so the
    last code unit is incremented. Surrogates cannot be sent: after U+D7FF comes the first surrogate
    pair (U+10000), after the last pair (U+10FFFF) comes U+E000, and U+FFFF, the highest code unit,
    carries over to the character before it.
    """
    for end in range(len(prefix), 0, -1):
        code = ord(prefix[end - 1])
        if code != 0xFFFF:
            following = {0xD7FF: 0x10000, sys.maxunicode: 0xE000}.get(code, code + 1)
            return prefix[: end - 1] + chr(following)
    return None


@dataclass(frozen=True)
class InstanceQuery:
    """Conditions of an Instances-table query, all evaluated by the table service.

    See docs/storage-protocol.md §2.6.

    None (or an empty status set) means "no condition". ``created_from``/``created_to`` bound
    CreatedTime inclusively, ``completed_to`` bounds CompletedTime. ``instance_id_prefix`` becomes a
    PartitionKey range on the sanitized prefix, so the service seeks to it instead of scanning the
    table. ``exclude_entities`` drops the ``@name@key`` rows of entities.
    """

    created_from: datetime | None = None
    created_to: datetime | None = None
    statuses: frozenset[OrchestrationStatus] | None = None
    instance_id_prefix: str | None = None
    exclude_entities: bool = True
    completed_to: datetime | None = None
    resume_at: str | None = None
    """PartitionKey to start at (inclusive): where a page cut short by its byte limit left off."""

    def to_filter(self) -> str:
        """The OData ``$filter`` text, each condition parenthesised and joined with ``and``."""
        clauses = ["RowKey eq ''"]
        if self.created_from is not None:
            clauses.append(f"CreatedTime ge {_odata_datetime(self.created_from)}")
        if self.created_to is not None:
            clauses.append(f"CreatedTime le {_odata_datetime(self.created_to)}")
        if self.completed_to is not None:
            clauses.append(f"CompletedTime le {_odata_datetime(self.completed_to)}")
        if self.statuses:
            names = sorted(status.name for status in self.statuses)
            clauses.append(" or ".join(f"RuntimeStatus eq {_odata_string(name)}" for name in names))
        if self.instance_id_prefix:
            low = escape_partition_key(self.instance_id_prefix)
            # Escaping works character by character, so escaped IDs with this prefix start with `low`.
            clause = f"PartitionKey ge {_odata_string(low)}"
            high = _after_prefix(low)
            if high is not None:
                clause += f" and PartitionKey lt {_odata_string(high)}"
            clauses.append(clause)
        if self.resume_at is not None:
            clauses.append(f"PartitionKey ge {_odata_string(self.resume_at)}")
        if self.exclude_entities:
            # Entity IDs start with '@' (U+0040); 'A' is the next code point.
            clauses.append("PartitionKey lt '@' or PartitionKey ge 'A'")
        return " and ".join(f"({clause})" for clause in clauses)


@dataclass
class InstancePage:
    """One page of an Instances query and the token that continues it (None: no more rows)."""

    rows: list[InstanceState]
    continuation_token: str | None


def encode_continuation_token(token: dict[str, str | None] | None) -> str | None:
    """The table service's NextPartitionKey/NextRowKey pair as one opaque URL-safe string.

    A page cut short by its byte limit continues at a row of the service's page, which the service's
    (opaque) keys cannot name: its token is ``{"ResumeAt": PartitionKey}`` instead.
    """
    if not token:
        return None
    return base64.urlsafe_b64encode(json.dumps(token, separators=(",", ":")).encode()).decode()


def decode_continuation_token(text: str | None) -> dict[str, str | None] | None:
    """Inverse of :func:`encode_continuation_token`; ValidationError when ``text`` is not one of ours."""
    if not text:
        return None
    try:
        decoded = base64.urlsafe_b64decode(text.encode("ascii")).decode("utf-8")
        token = parse_json(decoded, "continuation token")
    except (ValueError, ValidationError):
        # binascii.Error and UnicodeError are ValueErrors; parse_json also refuses lone surrogates,
        # which the table service could not be sent.
        token = None
    if not _is_token(token):
        raise ValidationError(
            f"continuation token {text[:80]!r} is not valid; pass back the one a query returned"
        )
    return token


def _is_token(token: object) -> TypeGuard[dict[str, str | None]]:
    """A service token (NextPartitionKey/NextRowKey, either may be None) or our ``ResumeAt`` one."""
    if not isinstance(token, dict):
        return False
    if set(token) == {_RESUME_AT}:
        return isinstance(token[_RESUME_AT], str)
    return set(token) <= {"PartitionKey", "RowKey"} and all(
        v is None or isinstance(v, str) for v in token.values()
    )


def resume_token(instance_id: str) -> str:
    """A continuation token that resumes an Instances query at ``instance_id`` (inclusive).

    For callers that filter the rows of a page further and stop in the middle of it.
    """
    token = encode_continuation_token({_RESUME_AT: escape_partition_key(instance_id)})
    assert token is not None
    return token


def listed_bytes(row: InstanceState) -> int:
    """What a row adds to a listed page: the UTF-8 size of its payloads plus a fixed allowance.

    Payloads are what can be large (up to the client's payload limit each); names, IDs, statuses and
    times fit the allowance.
    """
    payloads = (row.input, row.output, row.custom_status)
    sizes = (len(text.encode("utf-8", "surrogatepass")) for text in payloads if text)
    return _ROW_OVERHEAD_ESTIMATE + sum(sizes)


def _is_conflict(exc: HttpResponseError) -> bool:
    return exc.status_code in (409, 412) or (
        getattr(exc, "error_code", None) in ("EntityAlreadyExists", "UpdateConditionNotSatisfied")
    )


class TrackingStore:
    """Reads and writes the History and Instances tables of one task hub."""

    def __init__(
        self,
        hub_name: str,
        history: TableClient,
        instances: TableClient,
        large_messages: LargeMessageStore,
        *,
        history_rest: TableRestClient,
        instance_rows: TableRestClient,
    ) -> None:
        """The SDK clients query Instances and purge; History reads and the checkpoint's writes, and
        point reads of Instances rows, go through the REST clients."""
        self.hub_name = hub_name
        self._history = history
        self._instances = instances
        self._large = large_messages
        self._history_rest = history_rest
        self._instance_rows = instance_rows

    # ---- History ------------------------------------------------------------------------------

    def history_entity(
        self, instance_id: str, execution_id: str, sequence_number: int, event: HistoryEvent
    ) -> dict[str, Any]:
        """The table entity of one history event (before large-property offload)."""
        entity = {
            "PartitionKey": escape_partition_key(instance_id),
            "RowKey": history_row_key(sequence_number),
            "ExecutionId": execution_id,
        }
        entity.update(event_to_columns(event))
        return entity

    async def _offload_large_properties(self, entity: dict[str, Any], slot: str) -> list[str]:
        """Move oversized string columns to gzip blobs (``<Prop>BlobName`` column, value ``""``)."""
        names = []
        for prop in LARGE_PROPERTIES:
            value = entity.get(prop)
            if isinstance(value, str) and utf16_size(value) > MAX_PROPERTY_BYTES:
                blob_name = (
                    f"{blob_safe_key(entity['PartitionKey'])}/history-{entity['RowKey']}-{slot}-"
                    f"{random.getrandbits(32):08X}-{prop}.json.gz"
                )
                await self._large.upload(blob_name, value)
                entity[f"{prop}BlobName"] = blob_name
                entity[prop] = ""
                names.append(blob_name)
        return names

    async def _restore_large_properties(self, entity: dict[str, Any]) -> list[str]:
        names = []
        for prop in LARGE_PROPERTIES:
            blob_name = entity.get(f"{prop}BlobName")
            if blob_name:
                entity[prop] = await self._large.download(blob_name)
                names.append(blob_name)
        return names

    async def _history_event(self, row: TableEntity) -> tuple[HistoryEvent, list[str]]:
        """The event a History row holds, its large values downloaded; and the blobs they came from."""
        entity = dict(row)
        blob_names = await self._restore_large_properties(entity)
        return event_from_columns(entity), blob_names

    async def load_history(self, instance_id: str, expected_execution_id: str | None = None) -> HistoryLoad:
        """Read the current execution's events in order (docs/storage-protocol.md §3.6).

        Rows left over from an older, longer execution (another ExecutionId) end the read.
        If ``expected_execution_id`` is given and the sentinel names another execution, the
        history is returned empty (with the sentinel ETag).
        """
        rows, execution_id, etag, completed = await self._current_execution(instance_id)
        if expected_execution_id is not None and execution_id != expected_execution_id:
            return HistoryLoad([], execution_id, etag, completed)
        events: list[HistoryEvent] = []
        blob_names: list[str] = []
        for row in rows:
            event, names = await self._history_event(row)
            events.append(event)
            blob_names.extend(names)
        return HistoryLoad(events, execution_id, etag, completed, blob_names)

    async def load_history_outline(self, instance_id: str) -> list[HistoryEvent]:
        """The current execution's events without their payloads: inputs, results and failure details
        are neither read from the table nor downloaded from blobs (a timeline needs none of them)."""
        rows, _, _, _ = await self._current_execution(instance_id, OUTLINE_COLUMNS)
        # A selected column that a row lacks comes back as null.
        return [event_from_columns({k: v for k, v in row.items() if v is not None}) for row in rows]

    async def _current_execution(
        self, instance_id: str, columns: Sequence[str] | None = None
    ) -> tuple[list[TableEntity], str | None, str | None, datetime | None]:
        """The current execution's History rows in order (``columns`` of them, or all), its ID, the
        sentinel's ETag and its CheckpointCompletedTimestamp."""
        pk = escape_partition_key(instance_id)
        select = None if columns is None else [*_SENTINEL_COLUMNS, *columns]
        query = self._history_rest.query("PartitionKey eq @pk", {"pk": pk}, select=select)
        rows = [row async for row in query]
        rows.sort(key=lambda r: r["RowKey"])
        sentinel = rows.pop() if rows and rows[-1]["RowKey"] == SENTINEL_ROW_KEY else None
        etag = sentinel.metadata.get("etag") if sentinel is not None else None
        execution_id = sentinel.get("ExecutionId") if sentinel is not None else None
        if execution_id is None and rows:
            execution_id = rows[0].get("ExecutionId")
        completed = as_utc(sentinel.get("CheckpointCompletedTimestamp")) if sentinel is not None else None
        current = []
        for row in rows:
            if row.get("ExecutionId") != execution_id:
                break
            current.append(row)
        return current, execution_id, etag, completed

    async def load_history_head(self, instance_id: str, count: int) -> list[HistoryEvent]:
        """The first ``count`` events of the instance's current execution (rows 0 to count-1).

        A new execution overwrites the rows from the first, so these rows are always the current
        execution's, without the rest of the partition being read.
        """
        pk = escape_partition_key(instance_id)
        query = "PartitionKey eq @pk and RowKey lt @end"
        parameters = {"pk": pk, "end": history_row_key(count)}
        events: list[HistoryEvent] = []
        async for row in self._history_rest.query(query, parameters):
            events.append((await self._history_event(row))[0])
        return events

    async def load_history_page(
        self, instance_id: str, execution_id: str, first: int, top: int
    ) -> tuple[list[HistoryEvent], int | None]:
        """Events ``first`` to ``first + top - 1`` of the execution ``execution_id``, and the sequence
        number of the next one (None when there is none), reading only those rows (and one more).

        Rows of an older, longer execution carry another ExecutionId and are filtered out by the table
        service, so the execution's rows are the contiguous run from 0.
        """
        query = "PartitionKey eq @pk and RowKey ge @low and RowKey lt @sentinel and ExecutionId eq @execution"
        parameters = {
            "pk": escape_partition_key(instance_id),
            "low": history_row_key(first),
            "sentinel": SENTINEL_ROW_KEY,
            "execution": execution_id,
        }
        rows = self._history_rest.query(query, parameters, results_per_page=min(top + 1, MAX_QUERY_PAGE))
        events: list[HistoryEvent] = []
        async for row in rows:
            if len(events) == top:
                return events, int(row["RowKey"], 16)
            events.append((await self._history_event(row))[0])
        return events, None

    async def sub_orchestration_ids(self, instance_id: str, execution_id: str) -> list[str]:
        """The instance IDs of the sub-orchestrations the execution ``execution_id`` started, in order,
        without repeats. The table service picks the SubOrchestrationInstanceCreated rows, so a long
        history is neither sent nor parsed."""
        query = "PartitionKey eq @pk and ExecutionId eq @execution and EventType eq @type"
        parameters = {
            "pk": escape_partition_key(instance_id),
            "execution": execution_id,
            "type": EventType.SubOrchestrationInstanceCreated.name,
        }
        rows = self._history_rest.query(query, parameters, select=["RowKey", "InstanceId"])
        created = sorted([(row["RowKey"], row.get("InstanceId")) async for row in rows])
        return list(dict.fromkeys(child for _, child in created if child))

    async def append_history(
        self,
        instance_id: str,
        execution_id: str,
        new_events: Sequence[HistoryEvent],
        first_sequence_number: int,
        etag: str | None,
    ) -> str:
        """Write new events as rows ``first_sequence_number...`` and return the new sentinel ETag.

        Rows are UpsertReplace'd, so a re-run episode overwrites what a failed attempt left. Each
        batch of at most 99 rows carries the sentinel: Insert when ``etag`` is None, else Merge with
        If-Match. A conflict means another worker committed first: :class:`OwnershipLostError`.
        """
        pk = escape_partition_key(instance_id)
        operations: list[EntityWrite] = []
        estimate = 0
        for offset, event in enumerate(new_events):
            entity = self.history_entity(instance_id, execution_id, first_sequence_number + offset, event)
            await self._offload_large_properties(entity, event.event_type.name)
            operations.append(EntityWrite(WriteKind.UPSERT_REPLACE, entity))
            estimate += _ROW_OVERHEAD_ESTIMATE + sum(
                utf16_size(entity[p]) for p in LARGE_PROPERTIES if isinstance(entity.get(p), str)
            )
            last = offset == len(new_events) - 1
            if len(operations) >= MAX_BATCH_ROWS or estimate > MAX_BATCH_ESTIMATE or last:
                etag = await self._commit_batch(pk, instance_id, execution_id, operations, etag, final=last)
                operations, estimate = [], 0
        if not new_events:
            etag = await self._commit_batch(pk, instance_id, execution_id, [], etag, final=True)
        assert etag is not None
        return etag

    async def _commit_batch(
        self,
        pk: str,
        instance_id: str,
        execution_id: str,
        operations: list[EntityWrite],
        etag: str | None,
        *,
        final: bool,
    ) -> str:
        sentinel: dict[str, Any] = {
            "PartitionKey": pk,
            "RowKey": SENTINEL_ROW_KEY,
            "ExecutionId": execution_id,
            "IsCheckpointComplete": final,
        }
        if final:
            sentinel["CheckpointCompletedTimestamp"] = datetime.now(UTC)
        if etag is None:
            operations.append(EntityWrite(WriteKind.INSERT, sentinel))
        else:
            operations.append(EntityWrite(WriteKind.MERGE, sentinel, etag))
        try:
            etags = await self._history_rest.submit_transaction(operations)
        except HttpResponseError as exc:
            # A 404 on the If-Match merge: the sentinel this worker knew is gone (purged meanwhile).
            gone = etag is not None and exc.status_code == 404
            if _is_conflict(exc) or gone:
                hub_log(logger, self.hub_name).instance(instance_id).warning(
                    "history sentinel conflict; another worker committed first"
                )
                raise OwnershipLostError(
                    f"instance {instance_id!r}: history was changed by another worker"
                ) from exc
            raise
        if not etags[-1]:
            raise OwnershipLostError(f"instance {instance_id!r}: no sentinel ETag in the batch response")
        return etags[-1]

    # ---- Instances ----------------------------------------------------------------------------

    async def get_instance(
        self, instance_id: str, *, fetch_large_values: bool = True
    ) -> InstanceState | None:
        """Point read of an instance's row, or None.

        With ``fetch_large_values`` Input, Output and CustomStatus that live in blobs (a URL in the
        column, or the ``InputBlobName`` quirk of DT.AS) are downloaded and inlined.
        """
        entity = await self._instance_rows.get(escape_partition_key(instance_id), "")
        if entity is None:
            return None
        state = InstanceState.from_entity(entity)
        if fetch_large_values:
            state.input = await self._resolve_column(entity, "Input")
            await self._resolve_output_columns(entity, state)
        return state

    async def _resolve_output_columns(self, entity: dict[str, Any], state: InstanceState) -> None:
        """Inline Output and CustomStatus when they live in blobs."""
        state.output = await self._resolve_column(entity, "Output")
        if is_blob_url(state.custom_status):
            state.custom_status = await self._resolve_column(entity, "CustomStatus")

    async def _resolve_column(self, entity: dict[str, Any], column: str) -> str | None:
        blob_name = entity.get(f"{column}BlobName")
        if blob_name:
            return await self._large.download(blob_name)
        value: str | None = entity.get(column)
        if not is_blob_url(value):
            return value
        name = self._large.blob_name_from_url(value)
        if name is None:
            return value
        text = await self._large.download(name)
        if name.endswith("ExecutionStarted.json.gz"):
            # A client wrote a start message too large for the queue; the row points at that message.
            started = MessageData.decode(text).event
            return getattr(started, "input", None)
        return text

    async def _instance_entity(self, state: InstanceState) -> dict[str, Any]:
        """Entity with oversized Input/Output/CustomStatus moved to blobs and replaced by their URLs."""
        entity = state.to_entity()
        for prop in _INSTANCE_BLOB_COLUMNS:
            value = entity.get(prop)
            if isinstance(value, str) and utf16_size(value) > MAX_PROPERTY_BYTES:
                blob_name = _instance_blob_name(state, prop, value)
                await self._large.upload(blob_name, value)
                entity[prop] = self._large.url(blob_name)
        return entity

    async def insert_instance(self, state: InstanceState) -> bool:
        """Insert a new row; False if one already exists (the storage decides a start race)."""
        try:
            await self._instance_rows.insert(await self._instance_entity(state))
        except HttpResponseError as exc:
            if _is_conflict(exc):
                return False
            raise
        return True

    async def replace_instance(self, state: InstanceState, etag: str) -> bool:
        """Replace the row only if it still has ``etag``; False if someone changed it first."""
        try:
            await self._instance_rows.replace(await self._instance_entity(state), etag)
        except HttpResponseError as exc:
            if isinstance(exc, ResourceNotFoundError) or _is_conflict(exc):
                return False
            raise
        return True

    async def merge_instance(
        self, state: InstanceState, columns: Sequence[str] | None = None, *, etag: str | None = None
    ) -> bool:
        """Merge ``columns`` (default: all) of ``state`` into the row; True if written.

        Without ``etag`` this is the checkpoint's InsertOrMerge and always writes. With one, the row
        must exist and still have that ETag; False if it changed or went away.
        """
        entity = await self._instance_entity(state)
        if columns is not None:
            keep = {"PartitionKey", "RowKey", *columns}
            entity = {k: v for k, v in entity.items() if k in keep}
        try:
            await self._instance_rows.merge(entity, etag)
        except HttpResponseError as exc:
            if etag is not None and (isinstance(exc, ResourceNotFoundError) or _is_conflict(exc)):
                return False
            raise
        return True

    async def query_instances(
        self,
        query: InstanceQuery,
        *,
        top: int,
        continuation_token: str | None = None,
        fetch_inputs: bool = True,
        fetch_large_values: bool = True,
        max_bytes: int | None = None,
        columns: Sequence[str] | None = None,
    ) -> InstancePage:
        """Up to ``top`` Instances rows matching ``query``, starting where ``continuation_token`` left off.

        The service may answer with short (even empty) pages; requests continue until ``top`` rows
        are collected or the table is exhausted, and the returned token resumes right after the last
        row returned. Without ``fetch_inputs`` the Input column is not even transferred; with
        ``fetch_large_values`` Input, Output and CustomStatus kept in blobs are downloaded and inlined.
        ``max_bytes`` bounds the page's payloads (see :func:`listed_bytes`): the page ends before the
        row that would pass it, yet always holds one row, so paging progresses. ``columns`` transfers
        only those columns (PartitionKey is always among them); it overrides ``fetch_inputs``.
        """
        if top < 1:
            raise ValidationError(f"page size must be at least 1, got {top}")
        token = decode_continuation_token(continuation_token)
        if token is not None and _RESUME_AT in token:
            query, token = replace(query, resume_at=token[_RESUME_AT]), None
        select = None if fetch_inputs else _INSTANCE_COLUMNS_WITHOUT_INPUT
        if columns is not None:
            select = ["PartitionKey", *(column for column in columns if column != "PartitionKey")]
        query_filter = query.to_filter()
        rows: list[InstanceState] = []
        size = 0
        while len(rows) < top:
            entities = self._instances.query_entities(
                query_filter, results_per_page=min(top - len(rows), MAX_QUERY_PAGE), select=select
            )
            # The SDK types the token as str, but the tables pager takes and returns a key dict.
            pages = cast(
                "AsyncPageIterator[TableEntity]", entities.by_page(continuation_token=cast(Any, token))
            )
            try:
                page = await anext(pages)
            except StopAsyncIteration:
                token = None
                break
            async for entity in page:
                row = await self._instance_from_query(entity, fetch_inputs, fetch_large_values)
                size += listed_bytes(row)
                if max_bytes is not None and rows and size > max_bytes:
                    return InstancePage(rows, encode_continuation_token({_RESUME_AT: entity["PartitionKey"]}))
                rows.append(row)
            token = cast("dict[str, str | None] | None", pages.continuation_token)
            if not token:
                break
        return InstancePage(rows, encode_continuation_token(token))

    async def instance_pages(
        self,
        query: InstanceQuery,
        *,
        top: int = MAX_QUERY_PAGE,
        fetch_inputs: bool = True,
        fetch_large_values: bool = True,
        columns: Sequence[str] | None = None,
    ) -> AsyncIterator[list[InstanceState]]:
        """Every Instances row matching ``query``, :meth:`query_instances` pages of ``top`` at a time
        (the same options). The caller may delete a page's rows before it asks for the next: the token
        points past them."""
        token: str | None = None
        while True:
            page = await self.query_instances(
                query,
                top=top,
                continuation_token=token,
                fetch_inputs=fetch_inputs,
                fetch_large_values=fetch_large_values,
                columns=columns,
            )
            yield page.rows
            token = page.continuation_token
            if token is None:
                return

    async def _instance_from_query(
        self, entity: TableEntity, fetch_inputs: bool, fetch_large_values: bool
    ) -> InstanceState:
        state = InstanceState.from_entity(entity)
        if fetch_large_values:
            await self._resolve_output_columns(entity, state)
            state.input = await self._resolve_column(entity, "Input") if fetch_inputs else None
        return state

    async def purge_instance(self, row: InstanceState) -> PurgeOutcome | None:
        """Delete what ``row`` describes: its history, its blobs, then the row itself; None if it changed.

        The caller judged ``row`` (read with its ETag) purgeable. Every delete is conditional so that
        a start of the same ID racing the purge always wins: History rows go only with the ETag they
        had when listed, and only those of the row's execution or stored before the row (leftovers of
        older executions); blobs only those the purged history names or that predate the row; the
        Instances row only with the ETag it was judged by. A new execution's rows, written after the
        start replaced the row, keep their own ETags and survive. History goes before the row so an
        interrupted purge can be run again.
        """
        history_rows, blob_names = await self._purge_history(row)
        blob_names.extend(
            name
            for value in (row.input, row.output, row.custom_status)
            if is_blob_url(value) and (name := self._large.blob_name_from_url(value)) is not None
        )
        blobs = await self._purge_blobs(row, set(blob_names))
        if row.etag is None:
            raise ValueError(f"instance {row.instance_id!r}: a row without an ETag cannot be purged")
        try:
            await self._instances.delete_entity(
                escape_partition_key(row.instance_id),
                "",
                etag=row.etag,
                match_condition=MatchConditions.IfNotModified,
            )
        except ResourceNotFoundError:
            return None
        except HttpResponseError as exc:
            if exc.status_code != 412:
                raise
            return None
        return PurgeOutcome(history_rows, blobs)

    async def _purge_history(self, row: InstanceState) -> tuple[int, list[str]]:
        """Delete the History rows that belong to ``row``; returns the count and the blobs they name."""
        pk = escape_partition_key(row.instance_id)
        doomed: list[TableEntity] = []
        async for entity in self._history.query_entities("PartitionKey eq @pk", parameters={"pk": pk}):
            if _belongs_to(entity, row):
                doomed.append(entity)
        blob_names = [
            entity[f"{prop}BlobName"]
            for entity in doomed
            for prop in LARGE_PROPERTIES
            if entity.get(f"{prop}BlobName")
        ]
        batches = [
            doomed[start : start + DELETE_BATCH_ROWS] for start in range(0, len(doomed), DELETE_BATCH_ROWS)
        ]
        deleted = 0
        for first in range(0, len(batches), _DELETE_BATCHES_IN_FLIGHT):
            group = batches[first : first + _DELETE_BATCHES_IN_FLIGHT]
            deleted += sum(await asyncio.gather(*(self._delete_history_batch(pk, batch) for batch in group)))
        return deleted, blob_names

    async def _delete_history_batch(self, pk: str, rows: list[TableEntity]) -> int:
        """Delete ``rows`` if unchanged (one transaction, or one by one if any changed); returns how many."""
        operations: list[Any] = [("delete", row, _if_unchanged(row)) for row in rows]
        try:
            await self._history.submit_transaction(operations)
        except TableTransactionError as exc:
            if exc.status_code not in (404, 412):
                raise
        else:
            return len(rows)
        # One row that changed (a new execution overwrote it) or vanished (a concurrent purge) fails
        # the whole transaction; the others still go, one by one.
        deleted = 0
        for row in rows:
            try:
                await self._history.delete_entity(pk, row["RowKey"], **_if_unchanged(row))
            except HttpResponseError as exc:
                if exc.status_code != 412:
                    raise
            else:
                deleted += 1
        return deleted

    async def _purge_blobs(self, row: InstanceState, names: set[str]) -> int:
        """Delete ``names`` and the instance's other blobs that are older than ``row``; returns how many.

        Blobs live under :func:`blob_prefix` (and, when DT.AS wrote them, queue messages' under the
        raw ID); the trailing '/' keeps IDs that merely extend this one out. A blob written within
        two seconds of the row may be a racing start's input (blob times have whole-second
        precision), so it stays unless the purged history names it or it is the start message or a
        custom status of the purged execution (their names carry the execution ID).
        """
        cutoff = row.stored_at - _BLOB_CLOCK_MARGIN if row.stored_at is not None else None
        owned = (
            _custom_status_blob_stem(row),
            message_blob_stem(row.instance_id, row.execution_id or "none"),
        )
        prefixes = {f"{blob_prefix(row.instance_id)}/", f"{row.instance_id}/"}
        for prefix in prefixes:
            names.update(
                blob.name
                for blob in await self._large.list(prefix)
                if blob.name.startswith(owned) or (cutoff is not None and blob.last_modified < cutoff)
            )
        await asyncio.gather(*(self._large.delete(name) for name in names))
        return len(names)


_INSTANCE_BLOB_COLUMNS = ("Input", "Output", "CustomStatus")
"""Instances columns that move to a blob when too large for a table property."""


def _instance_blob_name(state: InstanceState, prop: str, value: str) -> str:
    """Where an oversized Instances column goes.

    A custom status is written again by every episode, so its name comes from the execution and the
    content: rewriting the same status overwrites the same blob instead of leaving one per episode,
    and a later execution of the same ID never shares a blob that a purge of this one deletes.
    """
    if prop == "CustomStatus":
        digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        return f"{_custom_status_blob_stem(state)}{digest}.json.gz"
    suffix = f"{random.getrandbits(32):08X}-{prop}.json.gz"
    return f"{blob_prefix(state.instance_id)}/history--{prop}-{suffix}"


def _custom_status_blob_stem(state: InstanceState) -> str:
    """How the names of one execution's custom-status blobs begin."""
    return f"{blob_prefix(state.instance_id)}/history--CustomStatus-{state.execution_id or 'none'}-"


@dataclass(frozen=True)
class PurgeOutcome:
    """What :meth:`TrackingStore.purge_instance` deleted besides the Instances row."""

    history_rows: int
    blobs: int


_BLOB_CLOCK_MARGIN = timedelta(seconds=2)


def _if_unchanged(entity: TableEntity) -> dict[str, Any]:
    return {"etag": entity.metadata["etag"], "match_condition": MatchConditions.IfNotModified}


def _belongs_to(entity: TableEntity, row: InstanceState) -> bool:
    """Whether a History row is part of what purging ``row`` removes.

    Its own execution's rows, and the sentinel while it names that execution; rows of other
    executions only when stored before the row (an older execution's leftovers), never a newer one's.
    """
    if entity.get("ExecutionId") == row.execution_id:
        return True
    if entity["RowKey"] == SENTINEL_ROW_KEY:
        return False
    stored_at = as_utc(entity.metadata.get("timestamp"))
    return stored_at is not None and row.stored_at is not None and stored_at < row.stored_at


_INSTANCE_COLUMNS_WITHOUT_INPUT = [
    "PartitionKey",
    "RowKey",
    "ExecutionId",
    "Name",
    "Version",
    "Output",
    "OutputBlobName",
    "CustomStatus",
    "RuntimeStatus",
    "CreatedTime",
    "LastUpdatedTime",
    "CompletedTime",
    "ScheduledStartTime",
    "Generation",
    "Tags",
    "TaskHubName",
    "Timestamp",
]
"""What a query without inputs transfers: every Instances column but Input and InputBlobName."""
