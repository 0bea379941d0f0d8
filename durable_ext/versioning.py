"""Orchestration versioning as Durable Functions has it (host.json ``defaultVersion``,
``versionMatchStrategy``, ``versionFailureStrategy``).

Every new orchestration instance gets a version: the one its starter asked for, else the app's
``defaultVersion``; it is the ``Version`` of the execution's ExecutionStarted event and of the
Instances row, and a continue-as-new keeps it. Before a worker runs an orchestration episode it checks
the instance's version against its own ``defaultVersion``, as DurableTask.Core's
``TaskOrchestrationDispatcher`` does with its ``VersioningSettings``:

* ``None``: every version runs;
* ``Strict``: only the worker's own version runs;
* ``CurrentOrOlder`` (the default): the worker's version and older ones run
  (:func:`compare_versions` orders them).

On a mismatch, ``Reject`` (the default) leaves the messages to a compatible worker: they are abandoned
with the usual growing back-off and nothing is written. ``Fail`` ends the orchestration as Failed with
DurableTask.Core's ``VersionMismatch`` failure. Pure functions: no storage, no clock.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from durable_ext.history import FailureDetails

VERSION_MISMATCH_ERROR_TYPE = "VersionMismatch"
"""``ErrorType`` of the failure a ``Fail`` strategy ends a mismatched orchestration with."""
VERSION_MISMATCH_MESSAGE = "Orchestration version did not comply with Worker Versioning"
"""DurableTask.Core's ``ErrorMessage`` for that failure."""

_DOTNET_VERSION_RE = re.compile(r"[0-9]+(?:\.[0-9]+){1,3}")
_INT32_MAX = 2**31 - 1


class VersionMatchStrategy(enum.Enum):
    """Which orchestration versions a worker runs (host.json ``versionMatchStrategy``)."""

    NONE = "None"
    STRICT = "Strict"
    CURRENT_OR_OLDER = "CurrentOrOlder"


class VersionFailureStrategy(enum.Enum):
    """What a worker does with an orchestration whose version it does not run (``versionFailureStrategy``)."""

    REJECT = "Reject"
    FAIL = "Fail"


class VersionVerdict(enum.Enum):
    """The outcome of checking one orchestration episode's version."""

    RUN = "run"
    REJECT = "reject"
    """Leave the messages for a compatible worker."""
    FAIL = "fail"
    """End the orchestration as Failed with :func:`mismatch_failure`."""


@dataclass(frozen=True)
class VersioningPolicy:
    """A worker's versioning settings: its own version and the two strategies."""

    version: str = ""
    """The app's ``defaultVersion``: given to new instances, and what instances are checked against."""
    match: VersionMatchStrategy = VersionMatchStrategy.CURRENT_OR_OLDER
    failure: VersionFailureStrategy = VersionFailureStrategy.REJECT

    def judge(self, instance_version: str | None) -> VersionVerdict:
        """Whether this worker runs an orchestration of ``instance_version`` (None or "": unversioned)."""
        if version_matches(self.match, self.version, instance_version):
            return VersionVerdict.RUN
        return VersionVerdict.FAIL if self.failure is VersionFailureStrategy.FAIL else VersionVerdict.REJECT

    def version_for_new_instance(self, requested: str | None) -> str:
        """The version a new instance or sub-orchestration gets: the one asked for, else the default."""
        return self.version if requested is None else requested


def version_matches(
    strategy: VersionMatchStrategy, worker_version: str, instance_version: str | None
) -> bool:
    """Whether ``strategy`` lets a worker of ``worker_version`` run an instance of ``instance_version``.

    ``Strict`` compares the texts exactly (ordinal, as DurableTask.Core does); an absent and an empty
    version are both "unversioned".
    """
    instance = instance_version or ""
    if strategy is VersionMatchStrategy.STRICT:
        return instance == worker_version
    if strategy is VersionMatchStrategy.CURRENT_OR_OLDER:
        return compare_versions(instance, worker_version) <= 0
    return True


def compare_versions(source: str | None, other: str | None) -> int:
    """Order two orchestration versions as DurableTask.Core's ``VersioningSettings.CompareVersions``.

    Negative when ``source`` is older than ``other``, 0 when equal, positive when newer:

    1. two empty (or blank) versions are equal, and an empty one is older than any other;
    2. two versions that .NET's ``System.Version`` parses (2 to 4 dot-separated numbers, such as
       ``1.0`` or ``2.1.0``) compare component by component, a missing component being smaller than
       any present one (``1.0`` < ``1.0.0``);
    3. anything else compares as text, ignoring case (``2025-01-01``, ``v1.0-release``).
    """
    source_blank = not (source or "").strip()
    other_blank = not (other or "").strip()
    if source_blank or other_blank:
        return int(not source_blank) - int(not other_blank)
    assert source is not None and other is not None
    parsed_source, parsed_other = _dotnet_version(source), _dotnet_version(other)
    if parsed_source is not None and parsed_other is not None:
        return _sign(parsed_source, parsed_other)
    return _sign(source.upper(), other.upper())


def mismatch_failure() -> FailureDetails:
    """The failure a ``Fail`` strategy ends an orchestration with (DurableTask.Core's text)."""
    return FailureDetails(
        error_type=VERSION_MISMATCH_ERROR_TYPE,
        error_message=VERSION_MISMATCH_MESSAGE,
        is_non_retriable=True,
    )


def _dotnet_version(text: str) -> tuple[int, ...] | None:
    """``text`` as ``System.Version.TryParse`` reads it, missing components as -1; None if it cannot."""
    stripped = text.strip()
    if not _DOTNET_VERSION_RE.fullmatch(stripped):
        return None
    parts = [int(part) for part in stripped.split(".")]
    if any(part > _INT32_MAX for part in parts):
        return None
    return (*parts, *[-1] * (4 - len(parts)))


def _sign(left: tuple[int, ...] | str, right: tuple[int, ...] | str) -> int:
    """-1, 0 or 1 as ``left`` is smaller than, equal to or larger than ``right`` (both of one type)."""
    return int(left > right) - int(left < right)  # type: ignore[operator]
