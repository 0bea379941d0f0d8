"""The fault suite's judges on hand-made histories and kill timelines (no Azurite, no workers)."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from chaos.checks import duplicate_events, owner_pid, ownership_problems
from chaos.drain import ledger_counts, side_effect_findings
from chaos.recovery import InstanceTimeline, KillRecord, recoveries
from chaos.workload import DRAIN_KINDS, build_workload, chain_output, step
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


def test_each_ledger_task_must_have_run_exactly_once(tmp_path: Path) -> None:
    (tmp_path / "ledger-1.txt").write_text("i/fan/0\ni/fan/1\n")
    (tmp_path / "ledger-2.txt").write_text("i/fan/1\nstray/chain/0\n")
    counts = ledger_counts(tmp_path)
    assert counts == Counter({"i/fan/0": 1, "i/fan/1": 2, "stray/chain/0": 1})
    assert side_effect_findings(counts, ["i/fan/0", "i/fan/1", "i/chain/0"]) == [
        "i/chain/0: ran 0 times",
        "i/fan/1: ran 2 times",
        "stray/chain/0: ran 1 times, never scheduled",
    ]
    assert side_effect_findings(Counter({"i/fan/0": 1}), ["i/fan/0"]) == []


def test_the_drain_workload_names_a_ledger_key_per_activity_task() -> None:
    workload = build_workload(10, random.Random(5), DRAIN_KINDS)
    ledgers = [spec for spec in workload.instances if spec.kind == "ledger"]
    assert len(ledgers) == 4
    keys = workload.ledger_keys()
    assert len(keys) == len(set(keys)) == sum(s.payload["width"] + s.payload["length"] for s in ledgers)
    first = ledgers[0]
    assert f"{first.instance_id}/fan/0" in keys and f"{first.instance_id}/chain/0" in keys
    # The kill scenario's workloads stay as they were: no ledger instances.
    assert all(spec.kind != "ledger" for spec in build_workload(14, random.Random(5)).instances)
