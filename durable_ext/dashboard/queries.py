"""Instance lists and counts for the dashboard: filters, server-side paging, bounded scans.

The table service evaluates status, instance ID prefix and created-time range
(:class:`~durable_ext.storage.tracking.InstanceQuery`); it can neither compare names without regard to
case nor search inside text, so ``name`` and ``customStatus`` are applied to the rows a request reads,
and such a request reads at most :data:`MAX_SCANNED_ROWS` rows. Every read transfers only the columns
it shows or filters on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from durable_ext.client import MAX_INSTANCE_ID_LENGTH, validate_instance_id
from durable_ext.errors import ValidationError
from durable_ext.history import OrchestrationStatus
from durable_ext.host.queries import MAX_PREFIX_LENGTH, Statuses, Timestamp
from durable_ext.host.routes import Query
from durable_ext.storage.tracking import (
    MAX_QUERY_PAGE,
    InstanceQuery,
    InstanceState,
    TrackingStore,
    resume_token,
)

MAX_PAGE = 1000
"""Largest ``top`` (and bulk ``limit``) the dashboard accepts: one table service page."""
DEFAULT_PAGE = 50
MAX_SCANNED_ROWS = 5000
"""Most rows one list request reads when it filters rows itself (``name``, ``customStatus``)."""
UNKNOWN_STATUS = "Unknown"
"""How counts name rows whose status this version does not know."""

LIST_COLUMNS = ("RowKey", "Name", "RuntimeStatus", "CreatedTime", "LastUpdatedTime", "CustomStatus")
"""What a list page shows: no payload but the custom status."""

SortKey = Literal["instanceId", "createdTime", "lastUpdatedTime", "name"]


class InstanceFilter(Query):
    """Which instances: the filter keys of the list, counts and bulk requests."""

    status: Statuses | None = Field(None, description="Runtime statuses, comma-separated or repeated.")
    name: str | None = Field(
        None, max_length=MAX_INSTANCE_ID_LENGTH, description="Exact orchestrator name, any case."
    )
    prefix: str | None = Field(None, max_length=MAX_PREFIX_LENGTH, description="Instance ID prefix.")
    created_from: Timestamp | None = Field(None, alias="from", description="Created at or after.")
    created_to: Timestamp | None = Field(None, alias="to", description="Created at or before.")
    custom_status: str | None = Field(
        None, alias="customStatus", max_length=MAX_INSTANCE_ID_LENGTH, description="Custom status text."
    )

    def table_query(self) -> InstanceQuery:
        """The conditions the table service evaluates."""
        return InstanceQuery(
            created_from=self.created_from,
            created_to=self.created_to,
            statuses=self.status,
            instance_id_prefix=self.prefix or None,
        )

    def row_test(self) -> Callable[[InstanceState], bool] | None:
        """The conditions applied to rows read (None: there are none)."""
        name = self.name.casefold() if self.name else None
        text = self.custom_status.casefold() if self.custom_status else None
        if name is None and text is None:
            return None

        def matches(row: InstanceState) -> bool:
            if name is not None and (row.name or "").casefold() != name:
                return False
            return text is None or text in (row.custom_status or "").casefold()

        return matches

    def columns(self, shown: Sequence[str]) -> list[str]:
        """``shown`` plus what the row test reads."""
        needed = list(shown)
        if self.name and "Name" not in needed:
            needed.append("Name")
        if self.custom_status and "CustomStatus" not in needed:
            needed.append("CustomStatus")
        return needed


class ListQuery(InstanceFilter):
    """``GET hubs/{id}/instances``."""

    top: int = Field(DEFAULT_PAGE, ge=1, le=MAX_PAGE, description="Page size.")
    continuation: str | None = Field(None, description="The previous page's token.")
    sort: SortKey = Field("instanceId", description="Order of the rows within a page.")
    order: Literal["asc", "desc"] = Field("asc", description="Ascending or descending.")


@dataclass(frozen=True)
class RowPage:
    """Rows of one list request and the token of the next (None after the last)."""

    rows: list[InstanceState]
    continuation: str | None


async def list_rows(
    tracking: TrackingStore,
    where: InstanceFilter,
    *,
    top: int,
    continuation: str | None,
    columns: Sequence[str] = LIST_COLUMNS,
) -> RowPage:
    """Up to ``top`` matching rows from where ``continuation`` left off, reading only ``columns``."""
    query = where.table_query()
    test = where.row_test()
    selected = where.columns(columns)
    if test is None:
        page = await tracking.query_instances(
            query, top=top, continuation_token=continuation, fetch_large_values=False, columns=selected
        )
        return RowPage(page.rows, page.continuation_token)
    matched: list[InstanceState] = []
    scanned = 0
    token = continuation
    while True:
        page = await tracking.query_instances(
            query,
            top=min(MAX_QUERY_PAGE, MAX_SCANNED_ROWS - scanned),
            continuation_token=token,
            fetch_large_values=False,
            columns=selected,
        )
        for index, row in enumerate(page.rows):
            if not test(row):
                continue
            matched.append(row)
            if len(matched) == top:
                following = page.rows[index + 1 :]
                rest = resume_token(following[0].instance_id) if following else page.continuation_token
                return RowPage(matched, rest)
        scanned += len(page.rows)
        token = page.continuation_token
        if token is None or scanned >= MAX_SCANNED_ROWS:
            return RowPage(matched, token)


def sort_rows(rows: list[InstanceState], sort: SortKey, order: Literal["asc", "desc"]) -> list[InstanceState]:
    """The rows of one page in the order asked for (missing values first when ascending)."""
    keys: dict[SortKey, Callable[[InstanceState], tuple[bool, str]]] = {
        "instanceId": lambda row: (True, row.instance_id),
        "name": lambda row: (row.name is not None, (row.name or "").casefold()),
        "createdTime": lambda row: (
            row.created_time is not None,
            row.created_time.isoformat() if row.created_time else "",
        ),
        "lastUpdatedTime": lambda row: (
            row.last_updated_time is not None,
            row.last_updated_time.isoformat() if row.last_updated_time else "",
        ),
    }
    return sorted(rows, key=keys[sort], reverse=order == "desc")


async def count_statuses(tracking: TrackingStore, where: InstanceFilter) -> dict[str, int]:
    """How many instances match, by runtime status, scanning with only the columns needed."""
    counts: Counter[str] = Counter({status.name: 0 for status in OrchestrationStatus})
    test = where.row_test()
    pages = tracking.instance_pages(
        where.table_query(),
        top=MAX_QUERY_PAGE,
        fetch_large_values=False,
        columns=where.columns(["RowKey", "RuntimeStatus"]),
    )
    async for rows in pages:
        counts.update(
            row.runtime_status.name if row.runtime_status is not None else UNKNOWN_STATUS
            for row in rows
            if test is None or test(row)
        )
    return dict(counts)


def checked_instance_ids(values: object) -> list[str]:
    """A bulk request's ``instanceIds``: a list of 1..:data:`MAX_PAGE` valid instance IDs."""
    if not isinstance(values, list) or not values or not all(isinstance(value, str) for value in values):
        raise ValidationError("instanceIds must be a non-empty list of instance ID strings")
    if len(values) > MAX_PAGE:
        raise ValidationError(f"instanceIds holds {len(values)} IDs; at most {MAX_PAGE} are allowed")
    return [validate_instance_id(value) for value in values]
