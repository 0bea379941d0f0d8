"""The query parameters of the management API, as typed pydantic models.

Each endpoint of :mod:`durable_ext.host.api` reads one of these models (see
:class:`~durable_ext.host.routes.Query`); the parsing rules are Durable Functions' where it has them
(``bool.TryParse``, ISO 8601 times, comma-separated statuses), bounded where DF is not (see the notes
in :mod:`durable_ext.host.api`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from pydantic import BeforeValidator, Field, PlainValidator, WithJsonSchema, model_validator

from durable_ext.errors import DurableExtError
from durable_ext.history import OrchestrationStatus
from durable_ext.host.routes import Query
from durable_ext.wire import parse_datetime

MAX_WAIT_SECONDS = 3600.0
"""Longest ``timeout`` a start or restart may wait for the instance to end (``pollingInterval`` ≤ it)."""

MAX_IDLE_SECONDS = timedelta(days=999_999_998).total_seconds()
"""A day short of the longest timedelta, so that no float below it rounds into an overflow."""

MAX_PREFIX_LENGTH = 256
"""An instance ID prefix or entity name longer than an instance ID cannot match anything."""


def _df_bool(value: object) -> object:
    # .NET's bool.TryParse, which also reads the df client's Python-style "True".
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered not in ("true", "false"):
            raise ValueError("must be true or false")
        return lowered == "true"
    return value


def _timestamp(value: object) -> datetime:
    text = str(value).strip()
    year, dash, rest = text.partition("-")
    if dash and year.isdigit() and len(year) < 4:
        # Python's strftime writes years before 1000 without leading zeros (DF pads them).
        text = f"{year.zfill(4)}-{rest}"
    try:
        return parse_datetime(text)
    except DurableExtError as exc:
        raise ValueError("is not an ISO 8601 timestamp") from exc


_STATUS_BY_NAME = {status.name.lower(): status for status in OrchestrationStatus}


def _statuses(value: object) -> frozenset[OrchestrationStatus]:
    values = value if isinstance(value, list) else [value]
    names = [name.strip() for text in values for name in str(text).split(",") if name.strip()]
    unknown = [name for name in names if name.lower() not in _STATUS_BY_NAME]
    if unknown:
        known = ", ".join(status.name for status in OrchestrationStatus)
        raise ValueError(f"unknown status {', '.join(unknown)}; use {known}")
    return frozenset(_STATUS_BY_NAME[name.lower()] for name in names)


DfBool = Annotated[bool, BeforeValidator(_df_bool)]
"""``true`` or ``false`` in any case."""

PositiveInt = Annotated[int, Field(ge=1)]

Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
"""A duration in seconds: a finite, non-negative number."""

Timestamp = Annotated[
    datetime,
    PlainValidator(_timestamp),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
"""An ISO 8601 time; without an offset it is UTC."""

Statuses = Annotated[
    frozenset[OrchestrationStatus],
    PlainValidator(_statuses),
    WithJsonSchema(
        {
            "type": "array",
            "items": {"type": "string", "enum": [status.name for status in OrchestrationStatus]},
        }
    ),
]
"""Runtime status names, case-insensitive, comma-separated or repeated."""


class HubQuery(Query):
    """What every management route reads: which task hub (and connection) the caller means."""

    task_hub: str | None = Field(None, alias="taskHub", description="Task hub name; must be the host's hub.")
    connection: str | None = Field(
        None, description="The connection setting's name; accepted for compatibility, the host uses its own."
    )


class StatusFlags(HubQuery):
    """What a status body shows."""

    show_history: DfBool = Field(False, alias="showHistory", description="Include the execution history.")
    show_history_output: DfBool = Field(
        False,
        alias="showHistoryOutput",
        description="Include activity and orchestration outputs in the history.",
    )
    show_input: DfBool = Field(True, alias="showInput", description="Include the input.")
    return_internal_server_error_on_failure: DfBool = Field(
        False,
        alias="returnInternalServerErrorOnFailure",
        description="Answer 500 instead of 200 for a Failed instance.",
    )


class WaitQuery(StatusFlags):
    """``timeout`` and ``pollingInterval``: wait for the instance to end when both are given (as DF).

    A wait that ends without completion answers with a status body, which the status flags shape.
    """

    # A wait holds a connection (and delays shutdown), so both are bounded.
    timeout: Seconds | None = Field(
        None, le=MAX_WAIT_SECONDS, description="Seconds to wait for the instance to end."
    )
    polling_interval: Seconds | None = Field(
        None,
        alias="pollingInterval",
        gt=0,
        le=MAX_WAIT_SECONDS,
        description="Seconds between status checks; not more than timeout.",
    )

    @model_validator(mode="after")
    def _interval_within_timeout(self) -> WaitQuery:
        interval = self.polling_interval
        if self.timeout is not None and interval is not None and interval > self.timeout:
            # DF refuses this too (WaitForCompletionOrCreateCheckStatusResponse).
            raise ValueError(
                f"pollingInterval ({interval:g} s) must not be larger than timeout ({self.timeout:g} s)"
            )
        return self


class StartQuery(WaitQuery):
    """``POST orchestrators/{functionName}[/{instanceId}]``."""

    version: str | None = Field(
        None, description="The new instance's orchestration version (default: host.json's defaultVersion)."
    )


class RestartQuery(WaitQuery):
    """``POST instances/{id}/restart``."""

    restart_with_new_instance_id: DfBool = Field(
        True, alias="restartWithNewInstanceId", description="Start under a new instance ID."
    )


class ReasonQuery(HubQuery):
    """Terminate, suspend, resume and rewind: why, recorded in the history."""

    reason: str | None = Field(
        None, description="Why; recorded in the history and, for terminate, the output."
    )


class TimeRange(HubQuery):
    """Instances created in a range of times, in some statuses."""

    created_time_from: Timestamp | None = Field(
        None, alias="createdTimeFrom", description="Created at or after."
    )
    created_time_to: Timestamp | None = Field(
        None, alias="createdTimeTo", description="Created at or before."
    )
    runtime_status: Statuses | None = Field(None, alias="runtimeStatus", description="Only these statuses.")


class ListQuery(TimeRange):
    """``GET instances``."""

    instance_id_prefix: str | None = Field(
        None,
        alias="instanceIdPrefix",
        max_length=MAX_PREFIX_LENGTH,
        description="Instance IDs that start with this.",
    )
    top: PositiveInt | None = Field(None, description="Page size.")
    show_input: DfBool = Field(True, alias="showInput", description="Include each instance's input.")


class PurgeQuery(TimeRange):
    """``DELETE instances``: ended instances only, whatever ``runtimeStatus`` says."""

    created_time_from: Timestamp = Field(
        alias="createdTimeFrom", description="Created at or after (required)."
    )


class EntityListQuery(HubQuery):
    """``GET entities[/{entityName}]``."""

    fetch_state: DfBool = Field(False, alias="fetchState", description="Include each entity's state.")
    last_operation_time_from: Timestamp | None = Field(
        None, alias="lastOperationTimeFrom", description="Last operation at or after."
    )
    last_operation_time_to: Timestamp | None = Field(
        None, alias="lastOperationTimeTo", description="Last operation at or before."
    )
    top: PositiveInt | None = Field(None, description="Page size.")


class SignalQuery(HubQuery):
    """``POST entities/{entityName}/{entityKey}``."""

    op: str = Field(min_length=1, description="The operation's name.")


class CleanQuery(HubQuery):
    """``POST entities/clean``."""

    min_idle_seconds: Seconds | None = Field(
        None,
        alias="minIdleSeconds",
        le=MAX_IDLE_SECONDS,
        description="Only entities idle at least this long.",
    )
