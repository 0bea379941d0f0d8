"""Recovery time after a kill (issue 15 item 14), worked out after the run from what storage recorded.

For kill *k* at time *t*: every expected orchestration of a partition the victim owned, that existed
and had not completed at *t*, must make progress again (an episode starts, seen as an
``OrchestratorStarted`` event later than *t*, or it completes). Its recovery is the time from *t* to
that progress; the kill's recovery is the longest of them. The bound is the victim's lease expiry (the
latest ``ExpiresAt`` of the rows it held, or the hold of the messages it had dequeued when that is
later) plus 10 s. A victim that owned no partition (a worker killed soon after its restart) strands
no orchestration for long, only the messages it held, and gives no figure.

Kills come faster than leases expire, so another fault may strike before an instance recovered. A
recovery is **censored** (left out) when its instance's partition was owned by a later victim, or an
outage began, before it progressed. A kill over its bound is a violation unless another fault was
unresolved inside its recovery window (an earlier kill within its own bound, a later kill, the outage):
then it is reported as confounded, since an instance may wait on a child, an entity or an activity
stranded by that other fault.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from durable_ext.worker.holds import MESSAGE_HOLD

SLACK = timedelta(seconds=10)
"""The allowance after lease expiry that issue 15 item 14 grants."""


@dataclass(frozen=True)
class KillRecord:
    """One SIGKILL: when, which slot and process, and the leases the process held then."""

    number: int
    at: datetime
    worker: int
    pid: int
    leases: dict[str, datetime | None]
    """Partition (control queue) → its ExpiresAt, for the rows the victim owned at the kill."""

    @property
    def bound(self) -> timedelta:
        """Lease expiry (or message hold, if later) after the kill, plus the slack."""
        expiries = [expiry - self.at for expiry in self.leases.values() if expiry is not None]
        return max([MESSAGE_HOLD, *expiries]) + SLACK


@dataclass(frozen=True)
class InstanceTimeline:
    """What the recovery needs of one instance: its partition and when it existed and progressed."""

    partition: str
    created: datetime
    progress: list[datetime]
    """Episode starts and the completion, sorted."""
    completed: datetime | None

    def active_at(self, moment: datetime) -> bool:
        """Existed and had not completed at ``moment``."""
        return self.created < moment and (self.completed is None or self.completed > moment)

    def next_progress(self, moment: datetime) -> datetime | None:
        """The first progress after ``moment``."""
        index = bisect.bisect_right(self.progress, moment)
        return self.progress[index] if index < len(self.progress) else None


@dataclass
class KillRecovery:
    """The recovery after one kill."""

    kill: KillRecord
    seconds: float | None = None
    """Longest uncensored recovery; None when every instance was censored or none was active."""
    active: int = 0
    censored: int = 0
    unrecovered: list[str] = field(default_factory=list)
    confounded: bool = False
    """Another fault struck between the kill and its slowest recovery."""

    @property
    def over_bound(self) -> bool:
        """Recovery took longer than the bound."""
        return self.seconds is not None and self.seconds > self.kill.bound.total_seconds()


@dataclass(frozen=True)
class RecoverySummary:
    """All kills' recoveries and the figures the report prints."""

    kills: list[KillRecovery]

    @property
    def samples(self) -> list[float]:
        """Per-kill recovery seconds (kills with a measurable recovery)."""
        return [k.seconds for k in self.kills if k.seconds is not None]

    @property
    def clean_samples(self) -> list[float]:
        """Per-kill recovery seconds of kills with no other fault unresolved during their recovery."""
        return [k.seconds for k in self.kills if k.seconds is not None and not k.confounded]

    def violations(self) -> list[KillRecovery]:
        """Kills over their bound with no other fault to blame, or with an instance that never recovered."""
        return [k for k in self.kills if (k.over_bound and not k.confounded) or k.unrecovered]

    def confounded(self) -> list[KillRecovery]:
        """Kills over their bound while later faults struck too."""
        return [k for k in self.kills if k.over_bound and k.confounded]


def recoveries(
    kills: Sequence[KillRecord],
    timelines: dict[str, InstanceTimeline],
    outages: Sequence[tuple[datetime, datetime]] = (),
) -> RecoverySummary:
    """Work out every kill's recovery."""
    return RecoverySummary([_recovery(k, kills, timelines, outages) for k in kills])


def _recovery(
    kill: KillRecord,
    kills: Sequence[KillRecord],
    timelines: dict[str, InstanceTimeline],
    outages: Sequence[tuple[datetime, datetime]],
) -> KillRecovery:
    result = KillRecovery(kill)
    slowest: datetime | None = None
    for instance_id, timeline in timelines.items():
        if timeline.partition not in kill.leases or not timeline.active_at(kill.at):
            continue
        result.active += 1
        progressed = timeline.next_progress(kill.at)
        if _censored(kill, timeline, progressed, kills, outages):
            result.censored += 1
        elif progressed is None:
            result.unrecovered.append(instance_id)
        elif slowest is None or progressed > slowest:
            slowest = progressed
    if slowest is not None:
        result.seconds = (slowest - kill.at).total_seconds()
        result.confounded = _faults_between(kill, slowest, kills, outages)
    return result


def _censored(
    kill: KillRecord,
    timeline: InstanceTimeline,
    progressed: datetime | None,
    kills: Sequence[KillRecord],
    outages: Sequence[tuple[datetime, datetime]],
) -> bool:
    """Whether a later fault hit this instance before it progressed."""
    until = progressed or datetime.max.replace(tzinfo=kill.at.tzinfo)
    for later in kills:
        if kill.at < later.at < until and timeline.partition in later.leases:
            return True
    return any(start < until and end > kill.at for start, end in outages)


def _faults_between(
    kill: KillRecord, end: datetime, kills: Sequence[KillRecord], outages: Sequence[tuple[datetime, datetime]]
) -> bool:
    """Whether another fault was unresolved at some time between ``kill`` and ``end``."""
    others = [(k.at, k.at + k.bound) for k in kills if k is not kill]
    return any(start < end and stop > kill.at for start, stop in [*others, *outages])
