"""The hub/instance prefix of the engine's log lines (durable_ext/logs.py)."""

from __future__ import annotations

import logging

import pytest

from durable_ext.logs import hub_log


@pytest.mark.parametrize("instance_id", ["a%:b", "100%", "%s%d", "%(x)s"])
def test_a_percent_sign_in_an_instance_id_stays_literal(
    caplog: pytest.LogCaptureFixture, instance_id: str
) -> None:
    log = hub_log(logging.getLogger("test_logs"), "Hub%1").instance(instance_id)
    with caplog.at_level(logging.INFO, logger="test_logs"):
        log.info("replayed %d events", 3)
        log.info("no arguments: 50%")
    assert [r.getMessage() for r in caplog.records] == [
        f"hub Hub%1 instance {instance_id}: replayed 3 events",
        f"hub Hub%1 instance {instance_id}: no arguments: 50%",
    ]


def test_the_record_carries_the_context_and_the_callers_line(caplog: pytest.LogCaptureFixture) -> None:
    log = hub_log(logging.getLogger("test_logs"), "Hub")
    with caplog.at_level(logging.WARNING, logger="test_logs"):
        log.instance("i1").warning("late by %s", "2 s")
    (record,) = caplog.records
    assert (record.hub, record.instance) == ("Hub", "i1")  # type: ignore[attr-defined]
    assert (record.filename, record.funcName) == (
        "test_logs.py",
        "test_the_record_carries_the_context_and_the_callers_line",
    )


def test_a_level_below_the_loggers_is_not_formatted(caplog: pytest.LogCaptureFixture) -> None:
    log = hub_log(logging.getLogger("test_logs"), "Hub")
    with caplog.at_level(logging.WARNING, logger="test_logs"):
        log.debug("dropped %s", object())
    assert caplog.records == []
