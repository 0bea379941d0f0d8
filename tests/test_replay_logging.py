"""durable_ext.replay_safe_logger: an orchestrator's log lines appear once, not once per replay."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.durable_functions as df
import pytest

import durable_ext
from durable_ext.history import (
    ExecutionStartedEvent,
    HistoryEvent,
    OrchestrationInstance,
    OrchestratorStartedEvent,
    TaskCompletedEvent,
    TaskScheduledEvent,
)
from durable_ext.replay import run_orchestrator
from durable_ext.replay_logging import ReplaySafeLogger, replay_safe_logger

LOGGER = "tests.replay_logging"
T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
INSTANCE = OrchestrationInstance("log-1", "0" * 32)


@dataclass
class FakeContext:
    is_replaying: bool


@pytest.fixture
def log_capture(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        yield caplog


def test_records_are_dropped_while_replaying(log_capture: pytest.LogCaptureFixture) -> None:
    context = FakeContext(is_replaying=True)
    log = replay_safe_logger(context, LOGGER)
    log.info("during replay")
    log.error("failed during replay")
    context.is_replaying = False
    log.info("new %s", "work")
    log.warning("careful", extra={"k": 1})
    assert [(r.levelname, r.getMessage()) for r in log_capture.records] == [
        ("INFO", "new work"),
        ("WARNING", "careful"),
    ]


def test_logger_level_still_applies(log_capture: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger(LOGGER)
    log = replay_safe_logger(FakeContext(is_replaying=False), logger)
    logger.setLevel(logging.WARNING)
    try:
        log.info("below the level")
        log.warning("at the level")
    finally:
        logger.setLevel(logging.NOTSET)
    assert [r.getMessage() for r in log_capture.records] == ["at the level"]
    assert isinstance(log, ReplaySafeLogger)
    assert log.logger is logger


def test_default_is_the_root_logger() -> None:
    assert replay_safe_logger(FakeContext(is_replaying=False)).logger is logging.getLogger()


def test_exported_from_the_package() -> None:
    assert durable_ext.replay_safe_logger is replay_safe_logger
    assert durable_ext.ReplaySafeLogger is ReplaySafeLogger


def _orchestrator(context: df.DurableOrchestrationContext) -> Any:
    log = replay_safe_logger(context, LOGGER)
    log.info("started")
    greeting = yield context.call_activity("say_hello", "Tokyo")
    log.info("got %s", greeting)
    return greeting


def test_in_a_real_replay_each_line_appears_once(log_capture: pytest.LogCaptureFixture) -> None:
    """Episode 1 logs "started"; episode 2 replays it silently and logs only what is new."""
    handle = df.Orchestrator.create(_orchestrator)
    started: list[HistoryEvent] = [
        OrchestratorStartedEvent(timestamp=T0),
        ExecutionStartedEvent(timestamp=T0, orchestration_instance=INSTANCE, name="greet", input="null"),
    ]
    run_orchestrator(handle, "greet", INSTANCE.instance_id, started, new_events_start=0)
    assert [r.getMessage() for r in log_capture.records] == ["started"]

    later = T0 + timedelta(seconds=1)
    history: list[HistoryEvent] = [
        *started,
        TaskScheduledEvent(event_id=0, timestamp=T0, name="say_hello", input='"Tokyo"'),
        OrchestratorStartedEvent(timestamp=later),
        TaskCompletedEvent(event_id=-1, timestamp=later, task_scheduled_id=0, result='"Hello Tokyo!"'),
    ]
    log_capture.clear()
    run = run_orchestrator(handle, "greet", INSTANCE.instance_id, history, new_events_start=3)
    assert run.done
    assert [r.getMessage() for r in log_capture.records] == ["got Hello Tokyo!"]
