"""Logging from orchestrator code without a duplicate line per replay.

An orchestrator runs again from the start at every episode, so a plain ``logging.info`` in it prints
once per replay. :func:`replay_safe_logger` wraps a logger so records are dropped while
``context.is_replaying`` is true: each line appears once, when the orchestrator reaches it for the
first time (the ``ILogger`` from ``context.CreateReplaySafeLogger`` in C#)::

    @app.orchestration_trigger(context_name="context")
    def orchestrator(context: df.DurableOrchestrationContext):
        log = replay_safe_logger(context, logging.getLogger(__name__))
        log.info("starting %s", context.instance_id)  # once, not once per episode
        result = yield context.call_activity("work")
        log.info("work returned %s", result)
        return result

It works with any logger and handler; it only decides, at each call, whether the record is made.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol


class ReplayAware(Protocol):
    """What the logger needs of the orchestration context: df's ``DurableOrchestrationContext`` has it."""

    @property
    def is_replaying(self) -> bool:
        """True while the orchestrator re-executes code it already ran in an earlier episode."""


class ReplaySafeLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger adapter that makes no record while its orchestration context is replaying."""

    def __init__(
        self, context: ReplayAware, logger: logging.Logger, extra: Mapping[str, object] | None = None
    ) -> None:
        super().__init__(logger, extra)
        self.context = context
        """The orchestration context whose ``is_replaying`` is read at every logging call."""

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 (logging's name)
        """Whether a record at ``level`` is made now: never during replay, else as the logger says."""
        return not self.context.is_replaying and self.logger.isEnabledFor(level)


def replay_safe_logger(context: ReplayAware, logger: logging.Logger | str | None = None) -> ReplaySafeLogger:
    """``logger`` (a logger, a logger name, or the root logger by default) silenced during replay.

    Create it inside the orchestrator function, from the context the function was given.
    """
    target = logger if isinstance(logger, logging.Logger) else logging.getLogger(logger)
    return ReplaySafeLogger(context, target)
