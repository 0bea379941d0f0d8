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

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        """Prefix the message and add the context to the record's ``extra``."""
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return f"{self._prefix}: {msg}", kwargs


def hub_log(logger: logging.Logger, hub_name: str) -> ContextLog:
    """``logger`` for lines about the task hub ``hub_name``."""
    return ContextLog(logger, hub_name)


FUNCTION_CATEGORY = "Function"
"""The Functions host's log category of a function's own lines: ``Function.<name>``; what the app logs
while the function runs is ``Function.<name>.User``."""


def function_log(function_name: str) -> logging.Logger:
    """The logger of category ``Function.<function_name>`` (the host's Executing/Executed lines)."""
    return logging.getLogger(f"{FUNCTION_CATEGORY}.{function_name}")
