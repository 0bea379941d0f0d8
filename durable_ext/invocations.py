"""Function invocations: one record per call of an app's function, reported as the Functions host does.

The host writes an ``Executing 'Functions.<name>' (Reason='…', Id=<guid>)`` line when it calls a
function and an ``Executed 'Functions.<name>' (Succeeded|Failed, Id=<guid>, Duration=<n>ms)`` line when
the call returns, both in the log category ``Function.<name>``. durable_ext calls functions in four
places, each wrapped in :func:`invocation`: an HTTP trigger's request (``host/http.py``), an
orchestrator episode (``worker/episode.py``), an activity execution (``worker/activities.py``) and an
entity batch (``worker/entity_episode.py``).

The lines are ordinary log records of the logger ``Function.<name>`` (:func:`durable_ext.logs.function_log`)
carrying the :class:`Invocation` as it stood then as ``record.invocation``, so an embedding
application sees them with any handler and the ``start`` console (:mod:`durable_ext.console`) formats
them as Core Tools does. While a function runs, :func:`current` names its invocation: log records the
app writes meanwhile belong to it.
"""

from __future__ import annotations

import contextvars
import dataclasses
import enum
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from durable_ext.failures import user_stack, worker_message
from durable_ext.logs import function_log

HOST_API_REASON = "This function was programmatically called via the host APIs."
"""The Reason of an HTTP-triggered call: the host invokes HTTP functions through its own API."""
TRIGGER_REASON = "(null)"
"""The Reason of a durable trigger's call: the extension's listeners give none, printed as .NET's null."""


class InvocationKind(enum.Enum):
    """What triggered an invocation."""

    HTTP = "http"
    ORCHESTRATOR = "orchestrator"
    ACTIVITY = "activity"
    ENTITY = "entity"

    @property
    def reason(self) -> str:
        """The Reason the host's Executing line gives for this kind of call."""
        return HOST_API_REASON if self is InvocationKind.HTTP else TRIGGER_REASON


class Outcome(enum.Enum):
    """How an invocation ended, in the host's words."""

    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


@dataclass(frozen=True)
class Failure:
    """Why an invocation failed, as the Python worker reports it to the host."""

    message: str
    """``<ExceptionType>: <message>``."""
    stack: str
    """The app's traceback frames (durable_ext's and the libraries' that called the app left out)."""

    @classmethod
    def of(cls, exc: BaseException) -> Failure:
        """The failure of a function that raised ``exc``."""
        return cls(worker_message(exc), user_stack(exc.__traceback__))


@dataclass
class Invocation:
    """One call of an app's function."""

    function_name: str
    kind: InvocationKind
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    started: float = field(default_factory=time.monotonic)
    duration_ms: float | None = None
    """Set when the call returned."""
    failure: Failure | None = None

    @property
    def reason(self) -> str:
        """Why the host called the function (its Executing line's Reason)."""
        return self.kind.reason

    @property
    def outcome(self) -> Outcome:
        """Succeeded unless :meth:`fail` was called."""
        return Outcome.SUCCEEDED if self.failure is None else Outcome.FAILED

    def fail(self, exc: BaseException) -> None:
        """Record that the function raised ``exc`` (the first failure counts)."""
        if self.failure is None:
            self.failure = Failure.of(exc)

    def executing_text(self) -> str:
        """The host's line for the start of the call."""
        return f"Executing 'Functions.{self.function_name}' (Reason='{self.reason}', Id={self.id})"

    def executed_text(self) -> str:
        """The host's line for the end of the call."""
        duration = round(self.duration_ms or 0.0)
        return (
            f"Executed 'Functions.{self.function_name}' ({self.outcome.value}, Id={self.id}, "
            f"Duration={duration}ms)"
        )


_current: contextvars.ContextVar[Invocation | None] = contextvars.ContextVar("invocation", default=None)


def current() -> Invocation | None:
    """The invocation whose function is running in this context, if any."""
    return _current.get()


def fail_current(exc: BaseException) -> None:
    """Record ``exc`` as the failure of the invocation running in this context (none: nothing)."""
    running = _current.get()
    if running is not None:
        running.fail(exc)


@contextmanager
def invocation(function_name: str, kind: InvocationKind) -> Iterator[Invocation]:
    """Report a call of ``function_name`` around the block: Executing before, Executed after.

    An exception leaving the block fails the invocation; a caller that catches the function's
    exception itself reports it with :meth:`Invocation.fail`. Code run in the block (also on other
    threads, when the context is copied to them) sees the invocation as :func:`current`.
    """
    record = Invocation(function_name, kind)
    log = function_log(function_name)
    _emit(log, logging.INFO, record, record.executing_text)
    token = _current.set(record)
    try:
        yield record
    except BaseException as exc:
        record.fail(exc)
        raise
    finally:
        _current.reset(token)
        record.duration_ms = (time.monotonic() - record.started) * 1000
        level = logging.INFO if record.failure is None else logging.ERROR
        _emit(log, level, record, record.executed_text)


def _emit(log: logging.Logger, level: int, record: Invocation, text: Callable[[], str]) -> None:
    """Log one of the invocation's lines, building it only when some handler may want it (an engine
    embedded without the console runs this for every episode and activity)."""
    if log.isEnabledFor(level):
        # Each line carries a copy as it stands, so a handler that formats later still sees that moment.
        log.log(level, "%s", text(), extra={"invocation": dataclasses.replace(record)})
