"""The ``start`` console: log lines as Core Tools prints them, filtered by host.json's ``logging.logLevel``.

Every record gets a Functions log category (:func:`category_of`):

- ``Function.<name>``: the host's Executing/Executed lines of a function (:mod:`durable_ext.invocations`);
- ``Function.<name>.User``: what the app logs while that function runs (any logger but the host's own);
- ``Host.<logger>``: durable_ext's engine and the libraries the host runs on (``Host.durable_ext.worker…``);
- the logger's name for anything else (the app logging outside a function, at import say).

As under Core Tools, a category is shown from the level of the longest ``logging.logLevel`` key it starts
with (ignoring case), else from ``default``, else from Information for the app's categories and Warning
for ``Host.…`` ones. ``-v`` lowers ``Host.…`` to Information (durable_ext's engine detail) and ``-vv`` to
Debug, whatever host.json says. Lines go to stdout as ``[<UTC time>] <line>``, every line of a
multi-line message prefixed; a failed invocation's Executed line is followed by the error as the host
prints it: ``System.Private.CoreLib: Exception while executing function: Functions.<name>.
System.Private.CoreLib: Result: Failure``, ``Exception: <Type>: <message>`` and ``Stack:`` with the app's
frames.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TextIO

from durable_ext.invocations import Invocation, current
from durable_ext.logs import FUNCTION_CATEGORY

HOST_CATEGORY = "Host"
"""Prefix of the host's own categories (Core Tools' system logs)."""
DEFAULT_KEY = "default"
"""The ``logging.logLevel`` key that applies to every category without a more specific one."""
USER_DEFAULT_LEVEL = logging.INFO
"""Where the app's categories start when host.json says nothing (Core Tools' user log default)."""
HOST_DEFAULT_LEVEL = logging.WARNING
"""Where ``Host.…`` categories start when host.json says nothing (Core Tools' system log default)."""
HOST_LOGGERS = ("durable_ext", "azure", "uvicorn", "starlette", "anyio", "asyncio", "aiohttp", "urllib3")
"""Loggers of the host itself and the libraries it runs on: their records are ``Host.<logger>``."""
_ENGINE_LOGGER = "durable_ext"
_SDK_LOGGER = "azure"
_EXCEPTION_SOURCE = "System.Private.CoreLib"


@dataclass(frozen=True)
class LogLevels:
    """Which categories the console shows from which level."""

    rules: Mapping[str, int] = field(default_factory=dict)
    """host.json's ``logging.logLevel``: category (or ``default``) -> Python logging level."""
    verbosity: int = 0
    """``-v`` count: 1 shows ``Host.…`` from Information, 2 and more from Debug."""

    def threshold(self, category: str) -> int:
        """The lowest level of ``category`` the console shows."""
        folded = category.lower()
        matches = [key for key in self.rules if key.lower() != DEFAULT_KEY and folded.startswith(key.lower())]
        host = is_host_category(category)
        if matches:
            level = self.rules[max(matches, key=len)]
        else:
            fallback = HOST_DEFAULT_LEVEL if host else USER_DEFAULT_LEVEL
            level = next((v for k, v in self.rules.items() if k.lower() == DEFAULT_KEY), fallback)
        if host and self.verbosity > 0:
            level = min(level, logging.INFO if self.verbosity == 1 else logging.DEBUG)
        return level

    def enabled(self, category: str, level: int) -> bool:
        """Whether a record of ``level`` in ``category`` is shown."""
        return level >= self.threshold(category)

    def lowest(self, prefix: str = "") -> int:
        """The lowest level any category starting with ``prefix`` is shown from (a logger's level, so
        that records no category shows are never made)."""
        narrower = [level for key, level in self.rules.items() if key.lower().startswith(prefix.lower())]
        return min([*narrower, self.threshold(prefix), self.threshold(f"{HOST_CATEGORY}.{prefix}")])


def is_host_category(category: str) -> bool:
    """Whether ``category`` is one of the host's own (``Host.…``)."""
    return category.startswith(f"{HOST_CATEGORY}.")


def _is_host_logger(name: str) -> bool:
    return any(name == root or name.startswith(f"{root}.") for root in HOST_LOGGERS)


def category_of(record: logging.LogRecord) -> str:
    """The Functions log category of ``record`` (see the module docstring)."""
    name = record.name
    if name.startswith(f"{FUNCTION_CATEGORY}."):
        return name
    if _is_host_logger(name):
        return f"{HOST_CATEGORY}.{name}"
    running = current()
    if running is not None:
        return f"{FUNCTION_CATEGORY}.{running.function_name}.User"
    return name


class CategoryFilter(logging.Filter):
    """Lets through the records :class:`LogLevels` enables for their category."""

    def __init__(self, levels: LogLevels) -> None:
        super().__init__()
        self.levels = levels

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether the console shows ``record``."""
        return self.levels.enabled(category_of(record), record.levelno)


def failure_lines(invocation: Invocation) -> list[str]:
    """The host's error lines after a failed invocation's Executed line (none when it succeeded)."""
    failure = invocation.failure
    if failure is None:
        return []
    stack = failure.stack.rstrip("\n")
    return [
        f"{_EXCEPTION_SOURCE}: Exception while executing function: Functions.{invocation.function_name}. "
        f"{_EXCEPTION_SOURCE}: Result: Failure",
        f"Exception: {failure.message}",
        f"Stack: {stack}",
    ]


class ConsoleFormatter(logging.Formatter):
    """Core Tools' console format: ``[2024-05-01T12:00:00.000Z] message``, on every line."""

    def format(self, record: logging.LogRecord) -> str:
        """The record's lines, each with the UTC time of the record."""
        parts = [record.getMessage()]
        invocation = getattr(record, "invocation", None)
        if isinstance(invocation, Invocation) and invocation.duration_ms is not None:
            parts += failure_lines(invocation)
        if record.exc_info:
            parts.append(self.formatException(record.exc_info))
        moment = datetime.fromtimestamp(record.created, UTC)
        stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
        return "\n".join(f"[{stamp}] {line}" for line in "\n".join(parts).split("\n"))


def install(levels: LogLevels, stream: TextIO | None = None) -> logging.Handler:
    """Make the console the root logger's only handler, writing to ``stream`` (default: stdout).

    Sets the root, durable_ext and Azure SDK loggers' levels so that records no category shows are not
    even made; the SDK's HTTP traffic is shown only from ``-vv`` on. Returns the handler.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stdout)
    handler.setFormatter(ConsoleFormatter())
    handler.addFilter(CategoryFilter(levels))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(levels.lowest())
    logging.getLogger(_ENGINE_LOGGER).setLevel(levels.lowest(f"{HOST_CATEGORY}.{_ENGINE_LOGGER}"))
    logging.getLogger(_SDK_LOGGER).setLevel(logging.DEBUG if levels.verbosity >= 2 else logging.WARNING)
    return handler
