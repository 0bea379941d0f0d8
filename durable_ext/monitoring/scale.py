"""The scale hint: how many workers the task hub wants, decided as the Durable Functions scale controller
decides for the Azure Storage provider (DurableTask.AzureStorage's ``DisconnectedPerformanceMonitor.
MakeScaleRecommendation``).

Its inputs are the latencies of the last five samples of every queue (the age of the oldest visible
message, :mod:`durable_ext.monitoring.queues`), the partition count and the current worker count. Its
rules, in order, the first that applies deciding:

1. no worker and the hub is not idle: add one ("First worker");
2. fewer than five samples of some queue: change nothing ("Not enough samples");
3. every latency of every sample is zero (idle hub): remove a worker, and workers need not be kept;
4. high work-item latency: add a worker;
5. more workers than partitions while the work-item queue is idle: remove one;
6. more control queues with high latency than workers: add one (orchestration work scales out only
   up to one worker per partition);
7. more workers than busy (not idle) control queues while the work-item queue is idle: remove one;
8. more than one worker and every queue's latency low (control: the last two samples at most 200 ms;
   work items: every sample under 200 ms): remove one, on one decision in ten only, so that a trickle of
   load after a scale-out still scales in slowly;
9. otherwise change nothing ("Queue latencies are healthy").

A latency is high when it reaches ``min(maxQueuePollingInterval, 1 s)``, or the polling interval itself
when the sample before was zero (an idle queue's poller backs off up to that interval, so such a delay
says nothing about load).

The decision is an action (add, remove or keep one worker); the hint turns it into a worker count for
KEDA's metrics-api scaler: the current count plus or minus one, never below ``min_workers`` (durable
timers are delayed messages that only a running worker fires, so an idle hub keeps one).
"""

from __future__ import annotations

import enum
import functools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from durable_ext.monitoring.queues import HISTORY_LENGTH, HubSample, QueueSample

LOW_LATENCY_MS = 200
"""At or under this, a control queue is not busy (``LowLatencyThreshold``)."""
MAX_HIGH_LATENCY_MS = 1000
"""The high-latency threshold is the polling interval, capped at this."""
RANDOM_SCALE_IN_ODDS = 10
"""Rule 8 votes to remove a worker on one decision in this many."""


class ScaleAction(enum.Enum):
    """What the decision asks of the worker count (the scale controller's ``ScaleAction``)."""

    NONE = "None"
    ADD_WORKER = "AddWorker"
    REMOVE_WORKER = "RemoveWorker"


@dataclass(frozen=True)
class LatencyHistory:
    """One queue's latencies over the latest samples, oldest first (at most :data:`HISTORY_LENGTH`)."""

    values: tuple[int, ...]

    @property
    def full(self) -> bool:
        """Whether there are as many samples as the decision needs."""
        return len(self.values) >= HISTORY_LENGTH

    @property
    def latest(self) -> int:
        """The newest latency (0 without samples)."""
        return self.values[-1] if self.values else 0

    @property
    def previous(self) -> int:
        """The latency before the newest (0 without one)."""
        return self.values[-2] if len(self.values) > 1 else 0

    @property
    def idle(self) -> bool:
        """Every sample found the queue with no visible message."""
        return all(value == 0 for value in self.values)


@dataclass(frozen=True)
class ScaleInputs:
    """What one decision reads."""

    worker_count: int
    partition_count: int
    work_items: LatencyHistory
    control_queues: tuple[LatencyHistory, ...]
    max_polling_ms: int
    """``maxQueuePollingInterval`` in milliseconds."""

    @property
    def high_latency_ms(self) -> int:
        """The latency from which a queue counts as busy."""
        return min(self.max_polling_ms, MAX_HIGH_LATENCY_MS)

    def is_high(self, history: LatencyHistory) -> bool:
        """Whether ``history``'s newest latency says the queue is behind."""
        if history.previous == 0:
            # The queue may have been idle: its poller backing off explains up to a polling interval.
            return history.latest >= self.max_polling_ms
        return history.latest >= self.high_latency_ms


@dataclass(frozen=True)
class ScaleDecision:
    """The decision and why (the scale controller's ``ScaleRecommendation``)."""

    action: ScaleAction
    keep_workers_alive: bool
    reason: str


def decide(inputs: ScaleInputs, scale_in_vote: Callable[[], bool]) -> ScaleDecision:
    """Apply the rules of the module docstring to ``inputs``. ``scale_in_vote`` is asked only where
    rule 8 could apply, and says whether this decision is the one in ten that scales in."""
    control = inputs.control_queues
    work_items = inputs.work_items
    hub_idle = work_items.idle and all(history.idle for history in control)
    if inputs.worker_count == 0 and not hub_idle:
        return ScaleDecision(ScaleAction.ADD_WORKER, True, "First worker")
    if not work_items.full or not all(history.full for history in control):
        return ScaleDecision(ScaleAction.NONE, not hub_idle, "Not enough samples")
    if hub_idle:
        action = ScaleAction.REMOVE_WORKER if inputs.worker_count > 0 else ScaleAction.NONE
        return ScaleDecision(action, False, "Task hub is idle")
    return _busy_hub(inputs, scale_in_vote)


def _busy_hub(inputs: ScaleInputs, scale_in_vote: Callable[[], bool]) -> ScaleDecision:
    control = inputs.control_queues
    work_items = inputs.work_items
    workers = inputs.worker_count
    if inputs.is_high(work_items):
        reason = f"Work-item queue latency: {work_items.latest} > {inputs.high_latency_ms}"
        return ScaleDecision(ScaleAction.ADD_WORKER, True, reason)
    if workers > inputs.partition_count and work_items.idle:
        reason = f"Work-items idle, #workers > partitions ({workers} > {inputs.partition_count})"
        return ScaleDecision(ScaleAction.REMOVE_WORKER, True, reason)
    busy = [history for history in control if inputs.is_high(history)]
    if workers < len(busy):
        reason = f"High control queue latency: {busy[0].latest} > {inputs.high_latency_ms}"
        return ScaleDecision(ScaleAction.ADD_WORKER, True, reason)
    if workers > sum(not history.idle for history in control) and work_items.idle:
        keep = any(history.idle for history in control)
        return ScaleDecision(ScaleAction.REMOVE_WORKER, keep, "One or more control queues idle")
    if workers > 1 and _all_low(inputs) and scale_in_vote():
        return ScaleDecision(ScaleAction.REMOVE_WORKER, True, "All queues are not busy")
    return ScaleDecision(ScaleAction.NONE, True, "Queue latencies are healthy")


def _all_low(inputs: ScaleInputs) -> bool:
    control_low = all(
        h.latest <= LOW_LATENCY_MS and h.previous <= LOW_LATENCY_MS for h in inputs.control_queues
    )
    return control_low and all(value < LOW_LATENCY_MS for value in inputs.work_items.values)


def random_scale_in_vote() -> bool:
    """True on one call in :data:`RANDOM_SCALE_IN_ODDS`, at random (rule 8's vote)."""
    return random.randrange(RANDOM_SCALE_IN_ODDS) == 0


def recommended_workers(decision: ScaleDecision, worker_count: int, min_workers: int) -> int:
    """The worker count the decision asks for, never below ``min_workers``."""
    change = {ScaleAction.ADD_WORKER: 1, ScaleAction.REMOVE_WORKER: -1, ScaleAction.NONE: 0}
    return max(min_workers, worker_count + change[decision.action])


def inputs_from(samples: Sequence[HubSample], max_polling: timedelta) -> ScaleInputs:
    """The decision's inputs from the latest samples, oldest first (the newest gives the counts)."""
    newest = samples[-1]

    def history(pick: Callable[[HubSample], QueueSample]) -> LatencyHistory:
        return LatencyHistory(tuple(pick(sample).latency_ms for sample in samples[-HISTORY_LENGTH:]))

    control = tuple(
        history(functools.partial(_control_queue, index=index)) for index in range(len(newest.control_queues))
    )
    return ScaleInputs(
        worker_count=newest.workers,
        partition_count=len(newest.control_queues),
        work_items=history(lambda sample: sample.work_items),
        control_queues=control,
        max_polling_ms=int(max_polling.total_seconds() * 1000),
    )


def _control_queue(sample: HubSample, index: int) -> QueueSample:
    return sample.control_queues[index]


def scale_hint(
    samples: Sequence[HubSample],
    max_polling: timedelta,
    *,
    min_workers: int = 1,
    scale_in_vote: Callable[[], bool] = random_scale_in_vote,
) -> dict[str, Any]:
    """The ``/scale`` document: the recommended worker count, the decision, and the inputs it used."""
    inputs = inputs_from(samples, max_polling)
    decision = decide(inputs, scale_in_vote)
    newest = samples[-1]

    def queue(sample: QueueSample, latencies: LatencyHistory) -> dict[str, Any]:
        return {"name": sample.name, "length": sample.length, "latenciesMs": list(latencies.values)}

    return {
        "recommendedWorkers": recommended_workers(decision, inputs.worker_count, min_workers),
        "action": decision.action.value,
        "keepWorkersAlive": decision.keep_workers_alive,
        "reason": decision.reason,
        "inputs": {
            "workerCount": inputs.worker_count,
            "partitionCount": inputs.partition_count,
            "minWorkers": min_workers,
            "samples": min(len(samples), HISTORY_LENGTH),
            "sampledAt": newest.taken_at.isoformat(),
            "maxPollingLatencyMs": inputs.max_polling_ms,
            "highLatencyThresholdMs": inputs.high_latency_ms,
            "lowLatencyThresholdMs": LOW_LATENCY_MS,
            "workItemQueue": queue(newest.work_items, inputs.work_items),
            "controlQueues": [
                queue(sample, latencies)
                for sample, latencies in zip(newest.control_queues, inputs.control_queues, strict=True)
            ],
        },
    }
