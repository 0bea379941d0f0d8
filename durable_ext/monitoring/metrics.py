"""The Prometheus metrics of one engine, in a registry of its own (several engines may share a process).

Counted as work happens (:class:`WorkerMetrics`):

- ``durable_ext_episodes_total{kind, outcome}`` and ``durable_ext_episode_duration_seconds{kind}``:
  orchestration and entity episodes (``kind`` ``orchestration`` or ``entity``); ``outcome`` is
  ``succeeded`` (the episode's checkpoint was written, whatever the orchestration did), ``failed``
  (the messages were abandoned to be retried) or ``conflict`` (another worker or a purge changed the
  instance first; the messages were abandoned).
- ``durable_ext_activities_total{outcome}`` and ``durable_ext_activity_duration_seconds``: activity
  executions, the built-in HTTP activity of ``call_http`` included, ``completed`` or ``failed`` (the
  function raised or does not exist, or the HTTP request failed).

Read when scraped (:class:`EngineCollector`):

- ``durable_ext_storage_requests_total{kind, status}``: every request of the engine's task hub
  clients, by kind (``queue GET control/messages``, ``table POST $batch``, ...) and HTTP status
  (``none``: no answer);
- ``durable_ext_leases_owned``: the partitions (control queues) this worker owns;
- ``durable_ext_session_cache_hits_total`` / ``..._misses_total`` / ``durable_ext_session_cache_entries``
  / ``durable_ext_session_cache_events``: episodes that found the instance's history in memory, those
  that read it from storage, how many instances the cache holds and how many history events (the
  bound on its memory);
- ``durable_ext_orchestrator_runs_total{mode}``: orchestrator executions that ``continued`` a live
  orchestrator with the new events, and those ``replayed`` from event 0 (a cache miss, a doubt, or
  ``warmContinuation`` off);
- from the latest queue sample (:mod:`durable_ext.monitoring.queues`): per partition
  ``durable_ext_control_queue_length{queue}`` and
  ``durable_ext_control_queue_oldest_message_age_seconds{queue}``, and
  ``durable_ext_work_item_queue_length`` and ``durable_ext_work_item_queue_oldest_message_age_seconds``;
- ``durable_ext_storage_up``: 1 when that sample was read, 0 when storage could not be read; the
  queue families are then left out rather than repeated from an older sample.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from durable_ext.monitoring.queues import QueueMonitor
    from durable_ext.storage.requests import RequestTally
    from durable_ext.worker.session import SessionCache

PREFIX = "durable_ext"
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class WorkerMetrics:
    """The counters the dispatchers update, registered in :attr:`registry`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        """This engine's registry: ``/metrics`` exports it, and nothing else."""
        self._episodes = Counter(
            f"{PREFIX}_episodes",
            "Orchestration and entity episodes run by this worker, by outcome.",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self._episode_seconds = Histogram(
            f"{PREFIX}_episode_duration_seconds",
            "How long episodes took, from taking their messages to writing their checkpoint.",
            ["kind"],
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self._activities = Counter(
            f"{PREFIX}_activities",
            "Activity executions by this worker, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self._activity_seconds = Histogram(
            f"{PREFIX}_activity_duration_seconds",
            "How long activity functions ran.",
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )

    def episode(self, instance_id: str, outcome: str, seconds: float) -> None:
        """One episode of ``instance_id`` ended with ``outcome`` after ``seconds``."""
        kind = "entity" if instance_id.startswith("@") else "orchestration"
        self._episodes.labels(kind=kind, outcome=outcome).inc()
        self._episode_seconds.labels(kind=kind).observe(seconds)

    def activity(self, failed: bool, seconds: float) -> None:
        """One activity execution ended after ``seconds``."""
        self._activities.labels(outcome="failed" if failed else "completed").inc()
        self._activity_seconds.observe(seconds)


class EngineCollector(Collector):
    """What the engine's state and storage say at scrape time (see the module docstring)."""

    def __init__(
        self,
        requests: RequestTally,
        cache: SessionCache,
        queues: QueueMonitor,
        leases: Callable[[], int],
        runs: Callable[[], Mapping[str, int]],
    ) -> None:
        """``leases`` counts the partitions owned now; ``runs`` the orchestrator executions by mode."""
        self._requests = requests
        self._cache = cache
        self._runs = runs
        self._queues = queues
        self._leases = leases

    def collect(self) -> Iterator[Metric]:
        """The families read now."""
        yield from self._storage_requests()
        yield GaugeMetricFamily(
            f"{PREFIX}_leases_owned", "Partitions (control queues) this worker owns.", value=self._leases()
        )
        yield from self._cache_families()
        yield from self._queue_families()

    def _storage_requests(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            f"{PREFIX}_storage_requests",
            "Storage requests of this worker's task hub clients, by kind and HTTP status (none: no answer).",
            labels=["kind", "status"],
        )
        for (kind, status), count in sorted(self._requests.snapshot().items()):
            family.add_metric([kind, status], count)
        yield family

    def _cache_families(self) -> Iterator[Metric]:
        cache = self._cache
        yield CounterMetricFamily(
            f"{PREFIX}_session_cache_hits",
            "Episodes that found their instance's history in the session cache.",
            value=cache.hits,
        )
        yield CounterMetricFamily(
            f"{PREFIX}_session_cache_misses",
            "Episodes that read their instance's history from storage.",
            value=cache.misses,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_session_cache_entries", "Instances in the session cache.", value=len(cache)
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_session_cache_events",
            "History events of the executions in the session cache (its memory bound).",
            value=cache.events,
        )
        runs = CounterMetricFamily(
            f"{PREFIX}_orchestrator_runs",
            "Orchestrator executions: continued (a live orchestrator took the new events) or replayed "
            "(from event 0).",
            labels=["mode"],
        )
        for mode in ("continued", "replayed"):
            runs.add_metric([mode], self._runs().get(mode, 0))
        yield runs

    def _queue_families(self) -> Iterator[Metric]:
        sample = self._queues.latest
        yield GaugeMetricFamily(
            f"{PREFIX}_storage_up",
            "1 when the latest read of the task hub's queues succeeded, 0 when storage could not be read.",
            value=0 if sample is None else 1,
        )
        if sample is None:
            return
        length = GaugeMetricFamily(
            f"{PREFIX}_control_queue_length",
            "Approximate messages in each control queue (delayed and held messages included).",
            labels=["queue"],
        )
        age = GaugeMetricFamily(
            f"{PREFIX}_control_queue_oldest_message_age_seconds",
            "Age of each control queue's first visible message (0: none visible).",
            labels=["queue"],
        )
        for queue in sample.control_queues:
            length.add_metric([queue.name], queue.length)
            age.add_metric([queue.name], queue.oldest_age.total_seconds())
        yield length
        yield age
        yield GaugeMetricFamily(
            f"{PREFIX}_work_item_queue_length",
            "Approximate messages in the work-item queue.",
            value=sample.work_items.length,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_work_item_queue_oldest_message_age_seconds",
            "Age of the work-item queue's first visible message (0: none visible).",
            value=sample.work_items.oldest_age.total_seconds(),
        )
