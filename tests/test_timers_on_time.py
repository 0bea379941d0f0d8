"""Timers on time (issue 18 item 1): a worker that owns a partition takes the delayed messages it sent
there at their due time, however far its poller has backed off; the queue message stays the durable
fallback, and what was scheduled for a partition the worker gives up is dropped.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta

import pytest

from durable_ext.app_loader import FunctionRegistry
from durable_ext.client import TaskHubClient
from durable_ext.config import StorageProviderOptions
from durable_ext.history import (
    EventType,
    HistoryEvent,
    OrchestrationInstance,
    OrchestrationStatus,
    OrchestratorStartedEvent,
    TimerFiredEvent,
    utc_now,
)
from durable_ext.messages import MessageData, TaskMessage
from durable_ext.storage.queues import ReceivedMessage
from durable_ext.storage.taskhub import TaskHub
from durable_ext.worker.backoff import BackoffPolling
from durable_ext.worker.engine import Engine
from durable_ext.worker.holds import HeldMessages
from durable_ext.worker.scheduled import ScheduledMessages
from tests.engine_support import engine_for, poll, received_again

MAX_INTERVAL = timedelta(seconds=30)
TIMEOUT = 20.0
"""Well under the 30 s back-off: without the scheduled take, the timers below would not fire in time."""
ON_TIME = timedelta(seconds=1.5)
"""Generous bound on lateness; the whole back-off (and Azure's whole seconds) is what it rules out."""


# ---- BackoffPolling.wake_at ------------------------------------------------------------------------


def _backed_off(polling: BackoffPolling) -> BackoffPolling:
    for _ in range(40):
        polling.next_interval()
    return polling


async def test_a_scheduled_wake_ends_a_backed_off_wait_at_its_time() -> None:
    polling = _backed_off(BackoffPolling(MAX_INTERVAL))
    assert polling.next_interval() == MAX_INTERVAL.total_seconds()
    loop = asyncio.get_running_loop()
    due = loop.time() + 0.2
    polling.wake_at(due)
    await asyncio.wait_for(polling.wait(), timeout=10)
    assert loop.time() >= due, "not before its time"
    assert polling.scheduled == 0


async def test_a_wake_scheduled_during_a_wait_shortens_it() -> None:
    polling = _backed_off(BackoffPolling(MAX_INTERVAL))
    loop = asyncio.get_running_loop()
    waiting = asyncio.create_task(polling.wait())
    await asyncio.sleep(0)  # the wait has begun, for the full interval
    assert not waiting.done()
    polling.wake_at(loop.time() + 0.1)
    await asyncio.wait_for(waiting, timeout=10)


async def test_wakes_close_together_are_served_by_one_poll_and_a_short_retry_follows() -> None:
    polling = _backed_off(BackoffPolling(MAX_INTERVAL))
    now = asyncio.get_running_loop().time()
    polling.wake_at(now - 1)
    polling.wake_at(now - 1 + 0.001)
    polling.wake_at(now + 3600)
    await asyncio.wait_for(polling.wait(), timeout=10)
    assert polling.scheduled == 1, "the two due wakes taken together, the later one kept"
    # The message due may show a little after its time: the next empty poll comes quickly.
    assert polling.next_interval() == pytest.approx(0.05)


async def test_without_a_due_wake_the_back_off_is_kept() -> None:
    polling = _backed_off(BackoffPolling(MAX_INTERVAL))
    polling.wake_at(asyncio.get_running_loop().time() + 3600)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(polling.wait(), timeout=0.3)
    assert polling.next_interval() == MAX_INTERVAL.total_seconds(), "a far wake does not reset it"


# ---- ScheduledMessages -------------------------------------------------------------------------------


def _message(queue_name: str, message_id: str) -> ReceivedMessage:
    return ReceivedMessage(
        data=MessageData.wrapper("unused"),
        queue_name=queue_name,
        message_id=message_id,
        pop_receipt="r",
        dequeue_count=1,
        inserted_on=None,
        next_visible_on=None,
    )


async def test_scheduled_messages_are_taken_at_their_time_and_dropped_with_their_queue() -> None:
    taken: list[tuple[str, datetime]] = []
    scheduled = ScheduledMessages(lambda m: taken.append((m.message_id, utc_now())), limit=3)
    due = utc_now() + timedelta(milliseconds=100)
    assert scheduled.add(_message("q-00", "a"), due)
    assert scheduled.add(_message("q-01", "b"), due)
    assert scheduled.add(_message("q-01", "c"), due)
    assert not scheduled.add(_message("q-00", "d"), due), "over the bound: left to the queue"
    scheduled.drop("q-01")
    assert (scheduled.pending("q-00"), scheduled.pending("q-01")) == (1, 0)

    async def _taken() -> bool:
        return bool(taken)

    await poll(_taken, "the due message to be taken", timeout=10)
    assert [message_id for message_id, _ in taken] == ["a"]
    assert taken[0][1] >= due
    assert len(scheduled) == 0


# ---- against Azurite ---------------------------------------------------------------------------------


@pytest.fixture
def backed_off(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every poller waits its longest interval after each poll, as after a long idle time."""
    monkeypatch.setattr(BackoffPolling, "next_interval", lambda self: MAX_INTERVAL.total_seconds())
    yield


def _engine(hub: TaskHub, registry: FunctionRegistry, **provider: timedelta) -> Engine:
    options = StorageProviderOptions(max_queue_polling_interval=MAX_INTERVAL, **provider)
    return engine_for(hub, registry, "worker-a", storage_provider=options)


async def _owns_all(hub: TaskHub, engine: Engine) -> None:
    async def _all() -> bool:
        return len(engine.orchestrations.owned) == len(hub.control_queues)

    await poll(_all, "the engine to own every partition", TIMEOUT)


async def _history(hub: TaskHub, instance_id: str) -> list[HistoryEvent]:
    return (await hub.tracking.load_history(instance_id)).events


def _lateness(events: Sequence[HistoryEvent]) -> list[timedelta]:
    """For each TimerFired: its episode's start minus the timer's fire_at."""
    late = []
    started = events[0].timestamp
    for event in events:
        if isinstance(event, OrchestratorStartedEvent):
            started = event.timestamp
        elif isinstance(event, TimerFiredEvent) and event.fire_at is not None:
            late.append(started - event.fire_at)
    return late


@pytest.mark.usefixtures("backed_off")
async def test_a_timer_fires_on_time_after_the_poller_backed_off(
    hub: TaskHub, registry: FunctionRegistry
) -> None:
    async with _engine(hub, registry) as engine:
        await _owns_all(hub, engine)
        client = TaskHubClient(hub, handoff=engine)
        instance = await client.start_new("long_timer", "on-time-1", json.dumps(2))
        state = await client.wait_for_completion(instance, timeout=TIMEOUT)
    assert state.runtime_status is OrchestrationStatus.Completed
    late = _lateness(await _history(hub, instance))
    assert len(late) == 1
    assert timedelta(0) <= late[0] < ON_TIME


@pytest.mark.usefixtures("backed_off")
async def test_a_scheduled_start_starts_on_time(hub: TaskHub, registry: FunctionRegistry) -> None:
    async with _engine(hub, registry) as engine:
        await _owns_all(hub, engine)
        client = TaskHubClient(hub, handoff=engine)
        at = utc_now() + timedelta(seconds=2)
        instance = await client.start_new("long_timer", "scheduled-1", json.dumps(0), scheduled_start_time=at)
        state = await client.wait_for_completion(instance, timeout=TIMEOUT)
    assert state.runtime_status is OrchestrationStatus.Completed
    first = (await _history(hub, instance))[0]
    assert timedelta(0) <= first.timestamp - at < ON_TIME


@pytest.mark.usefixtures("backed_off")
async def test_retry_waits_that_hop_are_on_time(hub: TaskHub, registry: FunctionRegistry) -> None:
    # A 3 s retry wait with a 2 s maximum delay: a hop at 2 s, sent round again for the last second.
    provider = {"max_timer_delay": timedelta(seconds=2), "long_timer_interval": timedelta(seconds=1)}
    async with _engine(hub, registry, **provider) as engine:
        await _owns_all(hub, engine)
        client = TaskHubClient(hub, handoff=engine)
        instance = await client.start_new("slow_retry", "hop-on-time-1", json.dumps(3000))
        state = await client.wait_for_completion(instance, timeout=TIMEOUT)
    assert state.runtime_status is OrchestrationStatus.Completed
    assert json.loads(state.output or "null") == "ok after 3"
    late = _lateness(await _history(hub, instance))
    assert len(late) == 2
    assert all(timedelta(0) <= wait < ON_TIME for wait in late), late


async def _peek(hub: TaskHub, queue_name: str) -> int:
    async with hub.account.queue_service() as service:
        return len(await service.get_queue_client(queue_name).peek_messages(max_messages=32))


async def _visible(hub: TaskHub, queue_name: str) -> bool:
    return await _peek(hub, queue_name) > 0


class _NoConsumer:
    """A Handoff that takes nothing in memory: the test holds the delayed messages itself."""

    def claim(self, queue_name: str) -> timedelta | None:
        return None

    def deliver(self, message: ReceivedMessage) -> None:
        raise AssertionError("nothing is claimed")

    def release(self, queue_name: str) -> None:
        raise AssertionError("nothing is claimed")

    def enqueued(self, queue_name: str) -> None:
        pass

    def now(self) -> datetime:
        return utc_now()

    def schedules(self, queue_name: str) -> bool:
        return False

    def scheduled(self, message: ReceivedMessage, due: datetime) -> None:
        pass


async def test_a_message_taken_when_due_is_renewed_before_it_turns_visible_unless_released(
    hub: TaskHub,
) -> None:
    queue = hub.control_queues[0]
    holds = HeldMessages(
        timedelta(seconds=20), lambda _: queue, hub_name=hub.names.hub, storage=hub.account.describe()
    )
    holds.start()
    try:
        taken, done = [
            await queue.put(MessageData.wrapper(name), timedelta(seconds=1), _NoConsumer())
            for name in ("taken", "done")
        ]
        assert taken is not None and done is not None and taken.next_visible_on is not None
        first_visible = taken.next_visible_on
        for message in (taken, done):
            holds.hold_message(message)
            holds.renew_before_visible(message)
        await holds.release(done)  # its episode finished in time: no renewal needed

        # Both were put alike; the renewal loop comes round only after a third of the hold (6.7 s).
        await poll(lambda: _visible(hub, queue.name), "the released message to turn visible", TIMEOUT)
        assert await _peek(hub, queue.name) == 1, "the held one stays hidden"
        assert taken.next_visible_on is not None and taken.next_visible_on > first_visible
    finally:
        await holds.stop()


async def test_a_message_held_long_is_renewed_for_as_long_as_it_was_held(hub: TaskHub) -> None:
    """Renewals of a message that waits in memory grow apart (each hides it for as long as it has been
    held), up to the longest renewal."""
    queue = hub.control_queues[0]
    longest = timedelta(seconds=4)
    holds = HeldMessages(
        timedelta(seconds=1),
        lambda _: queue,
        hub_name=hub.names.hub,
        storage=hub.account.describe(),
        longest=longest,
    )
    event = TimerFiredEvent(timer_id=0, fire_at=utc_now())
    await queue.send(MessageData(TaskMessage(event, OrchestrationInstance("long", "e"))))
    [message] = await queue.receive(1, timedelta(seconds=1))
    holds.hold_message(message)
    hidden: list[float] = []

    async def hidden_for_long() -> bool:
        assert message.next_visible_on is not None
        hidden.append((message.next_visible_on - utc_now()).total_seconds())
        return hidden[-1] > 2.5

    holds.start()
    try:
        await poll(hidden_for_long, "a renewal longer than the first hold", TIMEOUT)
        assert not await queue.has_visible(), "held throughout"
        assert max(hidden) <= longest.total_seconds() + 0.5
    finally:
        await holds.stop()
    assert holds.renewal(("nobody", "x")) == timedelta(seconds=1)


async def test_a_renewal_of_a_superseded_copy_leaves_the_newer_copy_held(hub: TaskHub) -> None:
    """The hold ran out and a poll took the message again while its renewal was on its way: the
    renewal fails on the stale receipt, and the newer copy, held meanwhile, stays held."""
    queue = hub.control_queues[0]
    holds = HeldMessages(
        timedelta(seconds=20), lambda _: queue, hub_name=hub.names.hub, storage=hub.account.describe()
    )
    event = TimerFiredEvent(timer_id=0, fire_at=utc_now())
    await queue.send(MessageData(TaskMessage(event, OrchestrationInstance("again", "e"))))
    [stale] = await queue.receive(1, timedelta(seconds=1))
    holds.hold_message(stale)
    newer = await received_again(queue)
    renewals = holds.renew_due()  # the stale copy's renewal, not started yet
    holds.hold_message(newer)  # the poll's copy replaces it, as the dispatcher does
    await asyncio.wait(renewals)
    assert len(holds) == 1
    await holds.release(newer)
    await queue.delete(newer)
    assert await queue.approximate_count() == 0


@pytest.mark.usefixtures("backed_off")
async def test_what_was_scheduled_for_a_released_partition_is_dropped(
    hub: TaskHub, registry: FunctionRegistry
) -> None:
    engine = _engine(hub, registry)  # its dispatcher alone: this test moves the partition itself
    dispatcher = engine.orchestrations
    for queue in hub.control_queues:
        await dispatcher.start_listening(queue.name)
    try:
        client = TaskHubClient(hub, handoff=engine)
        instance = await client.start_new("long_timer", "released-1", json.dumps(2))
        queue_name = hub.control_queue_for(instance).name

        async def _scheduled() -> bool:
            return dispatcher.scheduling.messages.pending(queue_name) == 1

        await poll(_scheduled, "the timer to be scheduled in memory", TIMEOUT)
        await dispatcher.stop_listening(queue_name)
        assert dispatcher.scheduling.messages.pending(queue_name) == 0
        # The partition comes back at once, with a fresh poller that has just polled and now backs
        # off. Had the old delivery been kept, it would take the message at its time and hide it.
        await dispatcher.start_listening(queue_name)
        await poll(lambda: _visible(hub, queue_name), "the timer message to become visible", TIMEOUT)
        assert EventType.TimerFired not in {e.event_type for e in await _history(hub, instance)}
        # The queue message was the durable truth all along: the owner's next poll takes it.
        dispatcher.wake(queue_name)
        state = await client.wait_for_completion(instance, timeout=TIMEOUT)
        assert state.runtime_status is OrchestrationStatus.Completed
    finally:
        await dispatcher.stop()
