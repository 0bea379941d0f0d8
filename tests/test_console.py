"""The console as units: invocation lines, their format, categories, and host.json logging.logLevel."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from durable_ext.config import LOG_LEVEL_NONE, load_log_levels
from durable_ext.console import (
    CategoryFilter,
    ConsoleFormatter,
    LogLevels,
    category_of,
    failure_lines,
    install,
)
from durable_ext.errors import ConfigError
from durable_ext.invocations import (
    HOST_API_REASON,
    Invocation,
    InvocationKind,
    Outcome,
    current,
    invocation,
)


def _record(name: str, level: int = logging.INFO, message: str = "text") -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, None, None)


def _explode() -> None:
    raise KeyError("no such thing")


# --- invocations -------------------------------------------------------------------------------------


def test_invocation_lines_are_the_hosts(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="Function"), invocation("hello", InvocationKind.HTTP) as call:
        assert current() is call
    assert current() is None
    executing, executed = (r.getMessage() for r in caplog.records)
    assert executing == f"Executing 'Functions.hello' (Reason='{HOST_API_REASON}', Id={call.id})"
    assert re.fullmatch(rf"Executed 'Functions\.hello' \(Succeeded, Id={call.id}, Duration=\d+ms\)", executed)
    assert [r.name for r in caplog.records] == ["Function.hello", "Function.hello"]
    assert call.outcome is Outcome.SUCCEEDED


@pytest.mark.parametrize(
    "kind", [InvocationKind.ORCHESTRATOR, InvocationKind.ACTIVITY, InvocationKind.ENTITY]
)
def test_durable_triggers_have_a_null_reason(kind: InvocationKind) -> None:
    assert "(Reason='(null)', Id=" in Invocation("f", kind).executing_text()


def test_an_exception_fails_the_invocation_with_the_apps_frames(caplog: pytest.LogCaptureFixture) -> None:
    with (
        caplog.at_level(logging.INFO, logger="Function"),
        pytest.raises(KeyError),
        invocation("broken", InvocationKind.ACTIVITY) as call,
    ):
        _explode()
    executed = caplog.records[-1]
    assert executed.levelno == logging.ERROR
    assert "(Failed, Id=" in executed.getMessage()
    assert call.failure is not None
    assert call.failure.message == "KeyError: 'no such thing'"
    assert "in _explode" in call.failure.stack
    assert "durable_ext/" not in call.failure.stack


def test_the_first_failure_counts() -> None:
    call = Invocation("f", InvocationKind.ACTIVITY)
    call.fail(ValueError("first"))
    call.fail(ValueError("second"))
    assert call.failure is not None and call.failure.message == "ValueError: first"


# --- format ------------------------------------------------------------------------------------------


def test_every_line_has_the_utc_time() -> None:
    record = _record("root", message="one\ntwo")
    record.created = 1_700_000_000.25
    assert ConsoleFormatter().format(record).split("\n") == [
        "[2023-11-14T22:13:20.250Z] one",
        "[2023-11-14T22:13:20.250Z] two",
    ]


def test_a_failed_invocation_is_followed_by_the_hosts_error_lines() -> None:
    call = Invocation("broken", InvocationKind.ACTIVITY)
    try:
        _explode()
    except KeyError as exc:
        call.fail(exc)
    call.duration_ms = 3.4
    record = _record("Function.broken", logging.ERROR, call.executed_text())
    record.invocation = call
    lines = [line.split("] ", 1)[1] for line in ConsoleFormatter().format(record).split("\n")]
    assert lines[0] == f"Executed 'Functions.broken' (Failed, Id={call.id}, Duration=3ms)"
    assert lines[1:3] == [
        "System.Private.CoreLib: Exception while executing function: Functions.broken. "
        "System.Private.CoreLib: Result: Failure",
        "Exception: KeyError: 'no such thing'",
    ]
    # The traceback from the frame that caught it: here the test's own, then _explode.
    assert re.fullmatch(r'Stack:   File ".*test_console\.py", line \d+, in test_a_failed_.*', lines[3])
    assert re.fullmatch(r'  File ".*test_console\.py", line \d+, in _explode', lines[5])
    assert lines[6:] == ['    raise KeyError("no such thing")']


def test_a_successful_invocation_has_no_error_lines() -> None:
    assert failure_lines(Invocation("fine", InvocationKind.HTTP)) == []


# --- categories and levels ---------------------------------------------------------------------------


def test_categories() -> None:
    assert category_of(_record("Function.hello")) == "Function.hello"
    assert category_of(_record("durable_ext.worker.activities")) == "Host.durable_ext.worker.activities"
    assert category_of(_record("azure.core.pipeline")) == "Host.azure.core.pipeline"
    assert category_of(_record("root")) == "root"
    with invocation("hello", InvocationKind.ACTIVITY):
        assert category_of(_record("root")) == "Function.hello.User"
        assert category_of(_record("my_app.helpers")) == "Function.hello.User"
        # The engine's own lines stay the host's, whichever function runs.
        assert category_of(_record("durable_ext.replay")) == "Host.durable_ext.replay"


def test_defaults_are_core_tools_ones() -> None:
    levels = LogLevels()
    assert levels.enabled("Function.hello.User", logging.INFO)
    assert not levels.enabled("Function.hello.User", logging.DEBUG)
    assert levels.enabled("Host.durable_ext.worker", logging.WARNING)
    assert not levels.enabled("Host.durable_ext.worker", logging.INFO)


def test_the_longest_matching_category_wins_ignoring_case() -> None:
    levels = LogLevels(
        {"default": logging.ERROR, "Function": logging.WARNING, "function.HELLO": logging.DEBUG}
    )
    assert levels.enabled("Function.hello.User", logging.DEBUG)
    assert not levels.enabled("Function.other.User", logging.INFO)
    assert levels.enabled("Function.other.User", logging.WARNING)
    assert not levels.enabled("Host.durable_ext", logging.WARNING)
    assert not levels.enabled("my_app", logging.WARNING)


def test_none_hides_everything() -> None:
    levels = LogLevels({"Function.quiet": LOG_LEVEL_NONE})
    assert not levels.enabled("Function.quiet", logging.CRITICAL)


@pytest.mark.parametrize(("verbosity", "shown"), [(0, None), (1, logging.INFO), (2, logging.DEBUG)])
def test_verbose_lowers_the_hosts_categories(verbosity: int, shown: int | None) -> None:
    levels = LogLevels({"Host": logging.ERROR, "Function.hello": logging.WARNING}, verbosity)
    assert levels.threshold("Host.durable_ext.worker") == (logging.ERROR if shown is None else shown)
    # The app's categories are not the engine's detail.
    assert levels.threshold("Function.hello.User") == logging.WARNING


def test_the_filter_applies_the_levels() -> None:
    keep = CategoryFilter(LogLevels({"Function.hello": logging.WARNING}))
    assert not keep.filter(_record("Function.hello"))
    assert keep.filter(_record("Function.hello", logging.WARNING))
    assert keep.filter(_record("Function.other"))


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    engine, sdk = logging.getLogger("durable_ext"), logging.getLogger("azure")
    saved_levels = (engine.level, sdk.level)
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])
    engine.setLevel(saved_levels[0])
    sdk.setLevel(saved_levels[1])


@pytest.mark.usefixtures("restore_logging")
def test_install_writes_what_the_levels_show() -> None:
    stream = io.StringIO()
    install(LogLevels({"Function.quiet": logging.WARNING}), stream)
    logging.getLogger("durable_ext.worker").info("engine detail")
    logging.getLogger("durable_ext.worker").warning("engine trouble")
    with invocation("quiet", InvocationKind.ACTIVITY):
        logging.info("hidden")
    with invocation("chatty", InvocationKind.ACTIVITY):
        logging.info("shown")
    lines = [line.split("] ", 1)[1] for line in stream.getvalue().splitlines()]
    assert "engine trouble" in lines
    assert "shown" in lines
    assert "engine detail" not in lines
    assert "hidden" not in lines
    assert not any("Functions.quiet" in line for line in lines)
    assert sum("Functions.chatty" in line for line in lines) == 2


# --- host.json ---------------------------------------------------------------------------------------


def _host_json(tmp_path: Path, log_level: object) -> Path:
    (tmp_path / "host.json").write_text(json.dumps({"version": "2.0", "logging": {"logLevel": log_level}}))
    return tmp_path


def test_log_levels_from_host_json_any_case(tmp_path: Path) -> None:
    app = _host_json(tmp_path, {"default": "warning", "Function.hello": "DEBUG", "Host.Results": "None"})
    assert load_log_levels(app, environ={}) == {
        "default": logging.WARNING,
        "Function.hello": logging.DEBUG,
        "Host.Results": LOG_LEVEL_NONE,
    }


def test_trace_is_below_debug(tmp_path: Path) -> None:
    assert load_log_levels(_host_json(tmp_path, {"default": "Trace"}), environ={})["default"] < logging.DEBUG


def test_an_app_setting_overrides_a_category(tmp_path: Path) -> None:
    app = _host_json(tmp_path, {"function.hello": "Debug"})
    environ = {"AzureFunctionsJobHost__logging__logLevel__Function.hello": "Error"}
    assert load_log_levels(app, environ=environ) == {"Function.hello": logging.ERROR}


def test_no_logging_section(tmp_path: Path) -> None:
    (tmp_path / "host.json").write_text('{"version": "2.0"}')
    assert load_log_levels(tmp_path, environ={}) == {}


@pytest.mark.parametrize("value", ["Verbose", 3, None, ""])
def test_invalid_levels_are_refused(tmp_path: Path, value: object) -> None:
    with pytest.raises(ConfigError) as raised:
        load_log_levels(_host_json(tmp_path, {"Function.hello": value}), environ={})
    message = str(raised.value)
    assert message.startswith(f"Invalid logging.logLevel.Function.hello in {tmp_path / 'host.json'}: ")
    assert "(use one of Trace, Debug, Information, Warning, Error, Critical, None)" in message


def test_a_log_level_section_that_is_not_an_object_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"Invalid logging\.logLevel in"):
        load_log_levels(_host_json(tmp_path, "Information"), environ={})
