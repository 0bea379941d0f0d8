"""Log lines that say which task hub and instance they are about.

Every line of the engine about a hub reads ``hub H: …`` and about an instance ``hub H instance I: …``,
the prefix the console shows and log searches key on. The adapters here add it, and put ``hub`` and
``instance`` on the record too, so a structured handler can read them without parsing the text.

Lines about an app's function are the Functions host's instead: they go to the logger of the host's
category ``Function.<name>`` (:func:`function_log`), where host.json's ``logging.logLevel`` finds them.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any


class ContextLog(logging.LoggerAdapter[logging.Logger]):
    """A logger whose lines carry a hub and, optionally, an instance."""

    def __init__(self, logger: logging.Logger, hub_name: str, instance_id: str | None = None) -> None:
        super().__init__(logger, {"hub": hub_name, "instance": instance_id})
        self.hub_name = hub_name
        self._prefix = f"hub {hub_name}" if instance_id is None else f"hub {hub_name} instance {instance_id}"

    def instance(self, instance_id: str) -> ContextLog:
        """The same logger for lines about ``instance_id``."""
        return ContextLog(self.logger, self.hub_name, instance_id)

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        """Log ``msg`` with the prefix; a ``%`` in the hub name or instance ID stays literal text."""
        if not self.isEnabledFor(level):
            return
        # logging formats ``msg % args`` only when there are args, so only then does a ``%`` that an
        # instance ID brings into the prefix need escaping (an ID such as ``a%:b`` broke the line).
        prefix = self._prefix.replace("%", "%%") if args else self._prefix
        _, context = self.process(msg, kwargs)
        context["stacklevel"] = context.get("stacklevel", 1) + 1  # the caller, not this frame
        self.logger.log(level, f"{prefix}: {msg}", *args, **context)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        """Add the hub and instance to the record's ``extra`` (:meth:`log` adds the text prefix)."""
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs


def hub_log(logger: logging.Logger, hub_name: str) -> ContextLog:
    """``logger`` for lines about the task hub ``hub_name``."""
    return ContextLog(logger, hub_name)


FUNCTION_CATEGORY = "Function"
"""The Functions host's log category of a function's own lines: ``Function.<name>``; what the app logs
while the function runs is ``Function.<name>.User``."""


def function_log(function_name: str) -> logging.Logger:
    """The logger of category ``Function.<function_name>`` (the host's Executing/Executed lines)."""
    return logging.getLogger(f"{FUNCTION_CATEGORY}.{function_name}")
