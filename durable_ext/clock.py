"""The engine's clock: what "now" is for orchestrations (history timestamps, timers coming due).

An engine reads orchestration time from one :class:`Clock` object: the wall clock by default
(:data:`SYSTEM_CLOCK`), or a :class:`SkippingClock` in a test host with time skipping, which runs
with the wall clock but jumps forward when the host has nothing left to do but wait for a timer.
What measures real durations (leases, queue visibility, polling back-off) stays on the wall clock.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Protocol

from durable_ext.history import utc_now


class Clock(Protocol):
    """Where an engine reads the current orchestration time."""

    def now(self) -> datetime:
        """The current time as an aware UTC datetime."""
        ...


class SystemClock:
    """The wall clock (the engine's default)."""

    now = staticmethod(utc_now)
    """The current time: :func:`~durable_ext.history.utc_now` itself, so that it costs no more."""


SYSTEM_CLOCK = SystemClock()
"""The one wall clock every engine without a clock of its own reads."""


class SkippingClock:
    """The wall clock plus an offset that only ever grows: :meth:`advance_to` skips time."""

    def __init__(self) -> None:
        self._offset = timedelta(0)

    @property
    def skipped(self) -> timedelta:
        """How far this clock is ahead of the wall clock."""
        return self._offset

    def now(self) -> datetime:
        """The wall clock's time plus the time skipped so far."""
        return utc_now() + self._offset

    def advance_to(self, instant: datetime) -> bool:
        """Jump forward to ``instant``; False (and no change) when it is not in this clock's future."""
        ahead = instant - self.now()
        if ahead <= timedelta(0):
            return False
        self._offset += ahead
        return True
