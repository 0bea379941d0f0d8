"""Testing orchestrations: run them on a test host, and replay recorded histories against the code.

:class:`DurableTestHost` runs an app's orchestrators, activities and entities on the real engine in
this process, on a fresh task hub in a shared Azurite, with a client to start instances, wait for them,
raise events, signal and read entities and mock activities; with ``time_skipping=True`` durable timers
fire as soon as nothing else can run while the client waits. The pytest plugin
(:mod:`durable_ext.pytest_plugin`) offers it as the ``durable_host`` fixture (time skipping with the
``durable_time_skipping`` marker).

``replay(app_dir, file)`` fails with :class:`ReplayMismatchError` when a change to an orchestrator
would break instances already running it: the error names the history event, what the code does
instead and the orchestrator's source line. Record histories with
``python -m durable_ext history export INSTANCE_ID -o FILE``.
"""

from __future__ import annotations

from pathlib import Path

from durable_ext.errors import ReplayMismatchError
from durable_ext.history_file import RecordedHistory, read_history_file
from durable_ext.history_replay import HistoryReplayer
from durable_ext.testing_host import (
    AsyncHostClient,
    DurableTestHost,
    HostClient,
    InstanceStatus,
    default_connection_string,
    shared_azurite,
)

__all__ = [
    "AsyncHostClient",
    "DurableTestHost",
    "HostClient",
    "InstanceStatus",
    "ReplayMismatchError",
    "default_connection_string",
    "replay",
    "shared_azurite",
]


def replay(app_dir: str | Path, file: str | Path) -> RecordedHistory:
    """Replay the history in ``file`` against the orchestrators of the app in ``app_dir`` (v1 or v2).

    Returns the history when the code does what it recorded; raises :class:`ReplayMismatchError` with
    the diff when it does not, and :class:`~durable_ext.errors.MessageFormatError` (or another
    :class:`~durable_ext.errors.DurableExtError`) when the file is not a history. Runs no activity
    and touches no storage.
    """
    history = read_history_file(Path(file))
    HistoryReplayer(Path(app_dir)).replay(history)
    return history
