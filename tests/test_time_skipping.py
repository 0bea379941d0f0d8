"""Time skipping in the testing kit: durable timers fire as soon as nothing else can run."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from durable_ext.clock import SkippingClock
from durable_ext.history import OrchestrationStatus, OrchestratorStartedEvent, TimerFiredEvent, utc_now
from durable_ext.testing import AsyncHostClient, DurableTestHost, HostClient, InstanceStatus
from durable_ext.worker.scheduled import ScheduledMessages

pytestmark = pytest.mark.durable_app("tests/apps/timer_app")

SAMPLE_APP = Path(__file__).resolve().parents[1]


def _times(status: InstanceStatus) -> list[datetime]:
    assert status.runtime_status is OrchestrationStatus.Completed, status.output
    return [datetime.fromisoformat(text) for text in status.output["times"]]


def _timers_taken(status: InstanceStatus) -> list[tuple[datetime, datetime]]:
    """(fire_at, the time of the episode that took it) for each timer that fired, in order."""
    pairs = []
    for index, event in enumerate(status.history):
        if isinstance(event, TimerFiredEvent):
            assert event.fire_at is not None
            episode = next(
                e for e in reversed(status.history[:index]) if isinstance(e, OrchestratorStartedEvent)
            )
            pairs.append((event.fire_at, episode.timestamp))
    return pairs


def test_the_skipping_clock_only_moves_forward() -> None:
    clock = SkippingClock()
    assert not clock.advance_to(utc_now() - timedelta(hours=1))
    assert clock.skipped == timedelta(0)
    target = utc_now() + timedelta(days=30)
    assert clock.advance_to(target)
    assert clock.now() >= target
    assert timedelta(days=30) - timedelta(minutes=1) < clock.skipped <= timedelta(days=30)


@pytest.mark.durable_time_skipping
def test_a_30_day_approval_times_out_at_once_with_the_time_passed(durable_host: HostClient) -> None:
    status = durable_host.wait(durable_host.start("approval"))
    started, ended = _times(status)
    assert status.output["outcome"] == "timed out"
    assert ended >= started + timedelta(days=30)
    # df splits a timer this long into shorter ones (maxDurableTimerDuration), each fired in turn.
    taken = _timers_taken(status)
    assert taken[-1][0] == started + timedelta(days=30)
    assert all(taken_at >= fire_at for fire_at, taken_at in taken)
    assert [fire_at for fire_at, _ in taken] == sorted(fire_at for fire_at, _ in taken)


@pytest.mark.durable_time_skipping
def test_an_approval_raised_before_the_timeout_wins(durable_host: HostClient) -> None:
    instance_id = durable_host.start("approval")
    durable_host.raise_event(instance_id, "Approval", True)
    status = durable_host.wait(instance_id)
    started, ended = _times(status)
    assert status.output["outcome"] == "approved"
    assert ended < started + timedelta(days=30)
    assert _timers_taken(status) == []


@pytest.mark.durable_time_skipping
def test_a_retry_an_hour_later_runs_at_once(durable_host: HostClient) -> None:
    status = durable_host.wait(durable_host.start("retry_after_an_hour"))
    started, ended = _times(status)
    assert status.output["result"] == "ok after 2"
    assert ended >= started + timedelta(hours=1)


@pytest.mark.durable_time_skipping
def test_a_monitor_of_hourly_timers_fires_them_in_order(durable_host: HostClient) -> None:
    status = durable_host.wait(durable_host.start("hourly_monitor", 4))
    checks = _times(status)
    assert len(checks) == 4
    assert all(later - earlier >= timedelta(hours=1) for earlier, later in itertools.pairwise(checks))
    taken = _timers_taken(status)
    assert len(taken) == 4
    assert all(taken_at >= fire_at for fire_at, taken_at in taken)
    assert [fire_at for fire_at, _ in taken] == sorted(fire_at for fire_at, _ in taken)


@pytest.mark.durable_time_skipping
def test_a_timer_left_to_its_queue_is_made_visible_when_its_time_comes(
    durable_host: HostClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No room in memory: the engine leaves each timer to its queue, invisible for days of real time.
    monkeypatch.setattr(ScheduledMessages, "full", property(lambda _: True))
    status = durable_host.wait(durable_host.start("hourly_monitor", 2))
    first, second = _times(status)
    assert second - first >= timedelta(hours=1)


@pytest.mark.durable_time_skipping
async def test_a_start_scheduled_hours_ahead_runs_at_its_time_at_once(
    durable_host_async: AsyncHostClient,
) -> None:
    at = utc_now() + timedelta(hours=2)
    client = durable_host_async.client
    instance_id = await client.start_new("hourly_monitor", input="1", scheduled_start_time=at)
    (checked,) = _times(await durable_host_async.wait(instance_id))
    assert checked >= at


async def test_a_host_made_by_hand_skips_time_for_the_sample_approval(azurite_connection_string: str) -> None:
    host = DurableTestHost(SAMPLE_APP, connection_string=azurite_connection_string, time_skipping=True)
    async with host as client:
        instance_id = await client.start("approval_workflow", {"timeout_seconds": 30 * 86400})
        status = await client.wait(instance_id)
    assert status.output == "timed out"


def test_without_the_marker_timers_wait_for_the_wall_clock(durable_host: HostClient) -> None:
    instance_id = durable_host.start("approval")
    with pytest.raises(TimeoutError):
        durable_host.wait(instance_id, timeout=2)
    durable_host.raise_event(instance_id, "Approval", False)
    status = durable_host.wait(instance_id)
    assert status.output["outcome"] == "rejected"
