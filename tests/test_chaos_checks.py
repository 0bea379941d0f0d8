"""The fault suite's judges on hand-made histories and kill timelines (no Azurite, no workers)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from chaos.checks import duplicate_events, owner_pid, ownership_problems
from chaos.recovery import InstanceTimeline, KillRecord, recoveries
from chaos.workload import build_workload, chain_output, step
from durable_ext.history import (
    EventRaisedEvent,
    ExecutionCompletedEvent,
    ExecutionStartedEvent,
    OrchestratorCompletedEvent,
    OrchestratorStartedEvent,
    TaskCompletedEvent,
    TaskScheduledEvent,
)
from durable_ext.storage.partitions import PartitionLease

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_clean_history_has_no_duplicates() -> None:
    events = [
        OrchestratorStartedEvent(),
        ExecutionStartedEvent(),
        TaskScheduledEvent(event_id=0),
        OrchestratorCompletedEvent(),
        OrchestratorStartedEvent(),
        TaskCompletedEvent(task_scheduled_id=0),
        EventRaisedEvent(name="go"),
        ExecutionCompletedEvent(event_id=1),
        OrchestratorCompletedEvent(),
    ]
    assert duplicate_events(events, {"go": 1}) == []


def test_a_second_result_or_event_is_a_duplicate() -> None:
    events = [
        ExecutionStartedEvent(),
        TaskScheduledEvent(event_id=0),
        TaskCompletedEvent(task_scheduled_id=0),
        TaskCompletedEvent(task_scheduled_id=0),
        EventRaisedEvent(name="go"),
        EventRaisedEvent(name="go"),
        ExecutionCompletedEvent(),
        ExecutionCompletedEvent(),
    ]
    assert duplicate_events(events, {"go": 1}) == [
        "ExecutionCompleted x2",
        "activity result for #0 x2",
        "event go x2",
    ]
    # An event the driver may have raised twice (its first answer was lost) may be there twice.
    assert duplicate_events(events[4:6], {"go": 2}) == []


def test_partition_owners_must_be_live_and_unexpired() -> None:
    now = datetime.now(UTC)
    leases = [
        PartitionLease("h-control-00", "host:11:ab", expires_at=now + timedelta(seconds=30)),
        PartitionLease("h-control-01", "host:12:cd", expires_at=now + timedelta(seconds=30)),
        PartitionLease("h-control-02", "host:11:ab", expires_at=now - timedelta(seconds=1)),
    ]
    assert owner_pid("host:11:ab") == owner_pid("a:b:11:ab") == 11 and owner_pid("someone") is None
    problems = ownership_problems(leases, {11}, 3)
    assert [p.split(":")[0] for p in problems] == ["h-control-01", "h-control-02"]


def test_recovery_is_measured_for_the_victims_partitions_only() -> None:
    kill = KillRecord(1, _s(0), 0, 11, {"p0": _s(25)})
    timelines = {
        "a": InstanceTimeline("p0", _s(-5), [_s(-4), _s(31)], None),
        "b": InstanceTimeline("p1", _s(-5), [_s(-4), _s(90)], None),
        "done": InstanceTimeline("p0", _s(-5), [_s(-1)], _s(-1)),
    }
    (result,) = recoveries([kill], timelines).kills
    assert (result.active, result.seconds, result.over_bound) == (1, 31.0, False)
    assert kill.bound == timedelta(seconds=35)


def test_a_slow_recovery_with_another_fault_meanwhile_is_confounded() -> None:
    first = KillRecord(1, _s(0), 0, 11, {"p0": _s(25)})
    second = KillRecord(2, _s(10), 1, 12, {"p1": _s(40)})
    timelines = {"a": InstanceTimeline("p0", _s(-5), [_s(60)], None)}
    slow = recoveries([first, second], timelines)
    assert slow.violations() == [] and [k.kill.number for k in slow.confounded()] == [1]
    alone = recoveries([first], timelines)
    assert [k.kill.number for k in alone.violations()] == [1]


def test_a_later_kill_of_the_same_partition_censors_the_recovery() -> None:
    first = KillRecord(1, _s(0), 0, 11, {"p0": _s(25)})
    second = KillRecord(2, _s(20), 1, 12, {"p0": _s(80)})
    timelines = {"a": InstanceTimeline("p0", _s(-5), [_s(70)], None)}
    summary = recoveries([first, second], timelines)
    assert [(k.censored, k.seconds) for k in summary.kills] == [(1, None), (0, 50.0)]


def test_the_workload_oracle() -> None:
    workload = build_workload(12, random.Random(3))
    kinds = [spec.kind for spec in workload.instances]
    assert kinds == ["chain", "fanout", "parent", "timer", "event", "entity"] * 2
    chain = workload.instances[0]
    assert chain.expected == chain_output(chain.payload["seed"], chain.payload["length"])
    assert chain_output(5, 2) == step(step(5))
    entity_specs = [spec for spec in workload.instances if spec.kind == "entity"]
    assert sum(workload.entity_states.values()) == 3 * sum(spec.payload["seed"] for spec in entity_specs)
    assert set(workload.expected_children()) == {"chaos-00002-parent-child", "chaos-00008-parent-child"}
