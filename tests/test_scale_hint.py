"""The scale hint's decisions, one rule at a time, on the inputs the scale controller would see."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from durable_ext.monitoring.queues import HubSample, QueueSample
from durable_ext.monitoring.scale import (
    LatencyHistory,
    ScaleAction,
    ScaleDecision,
    ScaleInputs,
    decide,
    recommended_workers,
    scale_hint,
)

IDLE = (0, 0, 0, 0, 0)
LOW = (50, 80, 120, 60, 90)
BUSY = (1200, 1500, 1800, 2100, 2400)
MAX_POLLING_MS = 30_000


def inputs(workers: int, work_items: tuple[int, ...], *control: tuple[int, ...]) -> ScaleInputs:
    return ScaleInputs(
        worker_count=workers,
        partition_count=len(control),
        work_items=LatencyHistory(work_items),
        control_queues=tuple(LatencyHistory(history) for history in control),
        max_polling_ms=MAX_POLLING_MS,
    )


class Votes:
    """Rule 8's vote, fixed, remembering whether it was asked."""

    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.asked = 0

    def __call__(self) -> bool:
        self.asked += 1
        return self.answer


def decision(given: ScaleInputs, vote: bool = False) -> ScaleDecision:
    return decide(given, Votes(vote))


def test_rule_1_a_hub_with_work_and_no_worker_gets_its_first_worker() -> None:
    # Even before five samples.
    assert decision(inputs(0, (0, 700), IDLE, IDLE)) == ScaleDecision(
        ScaleAction.ADD_WORKER, True, "First worker"
    )


def test_rule_2_fewer_than_five_samples_change_nothing() -> None:
    busy = decision(inputs(1, (0, 0, 0, 0), BUSY, BUSY))
    assert busy == ScaleDecision(ScaleAction.NONE, True, "Not enough samples")
    # An idle hub need not keep its workers, but nothing is decided yet either.
    idle = decision(inputs(2, (0, 0), IDLE[:2], IDLE[:2]))
    assert idle == ScaleDecision(ScaleAction.NONE, False, "Not enough samples")


def test_rule_3_an_idle_hub_removes_a_worker_and_keeps_none() -> None:
    assert decision(inputs(2, IDLE, IDLE, IDLE)) == ScaleDecision(
        ScaleAction.REMOVE_WORKER, False, "Task hub is idle"
    )
    assert decision(inputs(0, IDLE, IDLE, IDLE)).action is ScaleAction.NONE


def test_rule_4_high_work_item_latency_adds_a_worker() -> None:
    decided = decision(inputs(4, BUSY, IDLE, IDLE))
    assert decided == ScaleDecision(ScaleAction.ADD_WORKER, True, "Work-item queue latency: 2400 > 1000")


def test_rule_4_a_delay_after_an_idle_sample_counts_only_from_the_polling_interval() -> None:
    # The poller of an idle queue backs off: 2.4 s after a zero sample is not load yet...
    after_idle = decision(inputs(2, (0, 0, 0, 0, 2400), LOW, LOW))
    assert after_idle.action is not ScaleAction.ADD_WORKER
    # ...but a whole polling interval is.
    waited = decision(inputs(2, (0, 0, 0, 0, MAX_POLLING_MS), LOW, LOW))
    assert waited.action is ScaleAction.ADD_WORKER


def test_the_high_threshold_is_the_polling_interval_when_that_is_shorter_than_a_second() -> None:
    given = ScaleInputs(1, 1, LatencyHistory((300,) * 5), (LatencyHistory(IDLE),), max_polling_ms=250)
    assert decide(given, Votes(False)) == ScaleDecision(
        ScaleAction.ADD_WORKER, True, "Work-item queue latency: 300 > 250"
    )


def test_rule_5_more_workers_than_partitions_with_idle_work_items_removes_one() -> None:
    decided = decision(inputs(3, IDLE, BUSY, BUSY))
    assert decided == ScaleDecision(
        ScaleAction.REMOVE_WORKER, True, "Work-items idle, #workers > partitions (3 > 2)"
    )


def test_rule_6_more_busy_control_queues_than_workers_adds_one() -> None:
    decided = decision(inputs(1, LOW, BUSY, BUSY, LOW, IDLE))
    assert decided == ScaleDecision(ScaleAction.ADD_WORKER, True, "High control queue latency: 2400 > 1000")
    # As many workers as busy partitions: orchestration work would not spread any further.
    assert decision(inputs(2, LOW, BUSY, BUSY, LOW, IDLE)).action is not ScaleAction.ADD_WORKER


def test_rule_7_more_workers_than_busy_control_queues_with_idle_work_items_removes_one() -> None:
    decided = decision(inputs(3, IDLE, LOW, IDLE, IDLE, IDLE))
    assert decided == ScaleDecision(ScaleAction.REMOVE_WORKER, True, "One or more control queues idle")
    # Work items still flowing: the workers are kept for them.
    assert decision(inputs(3, LOW, LOW, IDLE, IDLE, IDLE)).action is ScaleAction.NONE


@pytest.mark.parametrize(("vote", "action"), [(True, ScaleAction.REMOVE_WORKER), (False, ScaleAction.NONE)])
def test_rule_8_low_latencies_everywhere_remove_a_worker_on_one_vote_in_ten(
    vote: bool, action: ScaleAction
) -> None:
    votes = Votes(vote)
    decided = decide(inputs(2, LOW, LOW, LOW), votes)
    assert decided.action is action and votes.asked == 1
    if vote:
        assert decided.reason == "All queues are not busy"


def test_rule_8_is_not_asked_for_one_worker_or_latencies_that_are_not_low() -> None:
    for given in (
        inputs(1, LOW, LOW),
        inputs(2, LOW, LOW, (50, 80, 120, 300, 90)),
        inputs(2, (50, 80, 250, 60, 90), LOW, LOW),
    ):
        votes = Votes(True)
        assert decide(given, votes).action is ScaleAction.NONE
        assert votes.asked == 0


def test_rule_9_healthy_latencies_change_nothing() -> None:
    decided = decision(inputs(2, (300, 400, 350, 300, 320), LOW, (300, 500, 400, 450, 600)))
    assert decided == ScaleDecision(ScaleAction.NONE, True, "Queue latencies are healthy")


def test_the_recommended_count_moves_by_one_and_never_below_the_minimum() -> None:
    add = ScaleDecision(ScaleAction.ADD_WORKER, True, "")
    remove = ScaleDecision(ScaleAction.REMOVE_WORKER, False, "")
    keep = ScaleDecision(ScaleAction.NONE, True, "")
    assert recommended_workers(add, 3, 1) == 4
    assert recommended_workers(keep, 3, 1) == 3
    assert recommended_workers(remove, 3, 1) == 2
    # Timers need a running worker: an idle hub keeps one unless told otherwise.
    assert recommended_workers(remove, 1, 1) == 1
    assert recommended_workers(remove, 1, 0) == 0
    assert recommended_workers(keep, 0, 1) == 1


def sample(second: int, work_item_age: float, workers: int) -> HubSample:
    return HubSample(
        taken_at=datetime(2026, 12, 6, 12, 0, second, tzinfo=UTC),
        control_queues=(
            QueueSample("h-control-00", 0, timedelta(0)),
            QueueSample("h-control-01", 2, timedelta(0)),
        ),
        work_items=QueueSample("h-workitems", 7, timedelta(seconds=work_item_age)),
        workers=workers,
    )


def test_the_document_reads_the_last_five_samples_and_shows_its_inputs() -> None:
    samples = [sample(n, age, 2) for n, age in enumerate((0.0, 0.5, 1.2, 1.7, 2.25, 3.5))]
    hint = scale_hint(samples, timedelta(seconds=30), scale_in_vote=Votes(False))
    assert hint["recommendedWorkers"] == 3
    assert hint["action"] == "AddWorker"
    assert hint["reason"] == "Work-item queue latency: 3500 > 1000"
    assert hint["keepWorkersAlive"] is True
    given = hint["inputs"]
    assert given["workerCount"] == 2 and given["partitionCount"] == 2 and given["samples"] == 5
    assert given["workItemQueue"] == {
        "name": "h-workitems",
        "length": 7,
        "latenciesMs": [500, 1200, 1700, 2250, 3500],
    }
    assert given["controlQueues"][1] == {"name": "h-control-01", "length": 2, "latenciesMs": [0, 0, 0, 0, 0]}
    assert given["highLatencyThresholdMs"] == 1000 and given["maxPollingLatencyMs"] == 30_000
    assert given["sampledAt"] == "2026-12-06T12:00:05+00:00"
