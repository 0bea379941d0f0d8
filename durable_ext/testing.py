"""Testing orchestrations: replay recorded histories against the current code.

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

__all__ = ["ReplayMismatchError", "replay"]


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
