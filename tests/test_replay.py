"""Replay's df context: built without df's JSON parse, it must be exactly what df's own parse builds."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.durable_functions.models import DurableOrchestrationContext

from durable_ext import replay
from durable_ext.errors import ConfigError
from durable_ext.history import (
    ExecutionResumedEvent,
    ExecutionStartedEvent,
    ExecutionSuspendedEvent,
    HistoryEvent,
    OrchestratorStartedEvent,
)
from durable_ext.replay import DF_SCHEMA_VERSION, DfEventForms, _RecordingContext, history_to_df_json
from tests.sample_events import INSTANCE, sample_events


def context_json(
    instance_id: str, events: list[HistoryEvent], new_events_start: int, parent_instance_id: str | None = None
) -> str:
    """The JSON the Functions host hands an orchestrator function: what df's own parse starts from."""
    started = next((e for e in events if isinstance(e, ExecutionStartedEvent)), None)
    return json.dumps(
        {
            "history": history_to_df_json(events, new_events_start),
            "instanceId": instance_id,
            "isReplaying": new_events_start > 0,
            "parentInstanceId": parent_instance_id,
            "input": started.input if started is not None else None,
            "upperSchemaVersion": DF_SCHEMA_VERSION,
        }
    )


def _members(event: Any) -> dict[str, Any]:
    return dict(vars(event))


def _history() -> list[HistoryEvent]:
    """Every kind of event, behind the OrchestratorStarted and ExecutionStarted df reads first."""
    samples = sample_events()
    start = datetime(2026, 3, 25, 8, 0, 0, 123456, tzinfo=UTC)
    first: list[HistoryEvent] = [
        OrchestratorStartedEvent(timestamp=start),
        ExecutionStartedEvent(
            timestamp=start, orchestration_instance=INSTANCE, name="flow", version="2.0", input='"in"'
        ),
    ]
    others = [
        e for e in samples.values() if not isinstance(e, (OrchestratorStartedEvent, ExecutionStartedEvent))
    ]
    # Whole-second, naive and later timestamps too: each must come out as df's parse makes it.
    for offset, event in enumerate(others):
        event.timestamp = start + timedelta(seconds=offset, microseconds=0 if offset % 2 else 7)
    others[0].timestamp = datetime(2026, 3, 25, 9, 30, 0)
    return [*first, *others, OrchestratorStartedEvent(timestamp=start + timedelta(minutes=5))]


def test_context_for_history_equals_dfs_own_parse_of_the_context_json() -> None:
    events = _history()
    for new_events_start in (0, 3, len(events) - 1):
        expected = DurableOrchestrationContext.from_json(
            context_json(INSTANCE.instance_id, events, new_events_start, "parent-1")
        )
        built = _RecordingContext.for_history(INSTANCE.instance_id, events, new_events_start, "parent-1")
        assert [_members(e) for e in built.histories] == [_members(e) for e in expected.histories]
        assert [type(e.timestamp.tzinfo) for e in built.histories] == [
            type(e.timestamp.tzinfo) for e in expected.histories
        ]
        assert _members(built.decision_started_event) == _members(expected.decision_started_event)
        assert built.current_utc_datetime == expected.current_utc_datetime
        assert built.instance_id == expected.instance_id
        assert built.parent_instance_id == expected.parent_instance_id
        assert built.is_replaying == expected.is_replaying
        assert built._input == expected._input
        assert built.version == expected.version == "2.0"


def test_suspended_events_keep_their_own_timestamps_when_reordered() -> None:
    start = datetime(2026, 3, 25, 8, 0, 0, tzinfo=UTC)
    middle = [
        e for e in _history()[2:5] if not isinstance(e, (ExecutionSuspendedEvent, ExecutionResumedEvent))
    ]
    events = [
        *_history()[:2],
        ExecutionSuspendedEvent(timestamp=start + timedelta(seconds=1)),
        *middle,
        ExecutionResumedEvent(timestamp=start + timedelta(seconds=9)),
    ]
    expected = DurableOrchestrationContext.from_json(context_json("i", events, 2))
    built = _RecordingContext.for_history("i", events, 2, None)
    assert [_members(e) for e in built.histories] == [_members(e) for e in expected.histories]


def test_cached_df_forms_give_the_same_context_and_are_not_shared_between_replays() -> None:
    events = _history()
    forms = DfEventForms()
    first = _RecordingContext.for_history("i", events, 3, None, forms)
    again = _RecordingContext.for_history("i", events, len(events) - 1, None, forms)
    plain = _RecordingContext.for_history("i", events, len(events) - 1, None)
    assert [_members(e) for e in again.histories] == [_members(e) for e in plain.histories]
    assert [e.is_played for e in first.histories] != [e.is_played for e in again.histories]
    first.histories[0].is_processed = True
    assert not again.histories[0].is_processed, "each replay gets its own df events"


@pytest.mark.parametrize("installed", ["1.6.1", "1.8.0", "2.0.0", "1.70.0"])
def test_an_unsupported_df_release_is_refused_with_a_clear_message(
    installed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replay, "version", lambda _: installed)
    with pytest.raises(ConfigError, match=f"azure-functions-durable 1.7.x, but {installed} is installed"):
        replay._check_df_version()


def test_the_supported_df_release_passes_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replay, "version", lambda _: "1.7.0")
    replay._check_df_version()
