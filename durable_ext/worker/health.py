"""Whether an engine is ready for work: the checks behind the ``/readyz`` probe.

Each check reads a signal the engine keeps anyway, nothing set for the probe's sake:

- ``storage``: :data:`~durable_ext.storage.outage.storage_health`, which every loop of the process
  reports its storage requests to (down from the first failed request of an outage until one succeeds);
- ``leases``: when the partition manager's last pass over the Partitions table succeeded (a pass renews
  every lease this worker holds); older than the lease interval means the leases may have expired;
- ``dispatchers``: whether the partition manager, the work-item poller and the control-queue pollers
  of the owned partitions are still running (a loop that ended on its own has died);
- ``draining``: whether the engine is shutting down (:meth:`Engine.drain`).

Descriptions name no endpoint, account or key: the probes answer without a key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from durable_ext.storage.outage import storage_health

if TYPE_CHECKING:
    from durable_ext.worker.engine import Engine


@dataclass(frozen=True)
class Check:
    """One readiness check's outcome."""

    name: str
    healthy: bool
    description: str


def readiness_checks(engine: Engine) -> tuple[Check, ...]:
    """Every readiness check of ``engine``, in a fixed order."""
    return (_storage(engine), _leases(engine), _dispatchers(engine), _draining(engine))


def _storage(engine: Engine) -> Check:
    if storage_health.reachable(engine.hub.account.describe()):
        return Check("storage", True, "storage answers")
    return Check("storage", False, "storage is unreachable")


def _leases(engine: Engine) -> Check:
    partitions = engine.partitions
    age = partitions.since_last_success()
    if age is None:
        return Check("leases", False, "no pass over the partition table has succeeded yet")
    seconds = f"{age.total_seconds():.1f} s ago"
    if age >= partitions.options.lease_interval:
        return Check("leases", False, f"the partition leases were last renewed {seconds}")
    return Check("leases", True, f"the partition leases were renewed {seconds}")


def _dispatchers(engine: Engine) -> Check:
    dead = [
        *([] if engine.partitions.running else ["the partition manager"]),
        *([] if engine.activities.polling else ["the work-item poller"]),
        *(f"the poller of {queue}" for queue in sorted(engine.orchestrations.stalled)),
    ]
    if dead:
        return Check("dispatchers", False, f"not running: {', '.join(dead)}")
    return Check("dispatchers", True, "every dispatcher loop runs")


def _draining(engine: Engine) -> Check:
    if engine.draining:
        return Check("draining", False, "shutting down: finishing in-flight work and releasing partitions")
    return Check("draining", True, "not shutting down")
