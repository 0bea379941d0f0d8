"""Scale (issue 18 item 6): what keeps a worker sound when storage is slower than its intake."""

from __future__ import annotations

from datetime import timedelta

import pytest

from durable_ext.history import utc_now
from durable_ext.messages import MessageData
from durable_ext.storage.queues import ReceivedMessage
from durable_ext.worker import holds as holds_module
from durable_ext.worker.holds import HeldMessages

HOLD = timedelta(seconds=30)
QUEUE = "hub-control-00"


class _Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def _message(message_id: str) -> ReceivedMessage:
    return ReceivedMessage(
        data=MessageData.wrapper(message_id),
        queue_name=QUEUE,
        message_id=message_id,
        pop_receipt="receipt",
        dequeue_count=1,
        inserted_on=utc_now(),
        next_visible_on=utc_now() + HOLD,
    )


def _never_renewed(message: ReceivedMessage) -> object:
    raise AssertionError("the renewal loop is not started in this test")


async def test_held_messages_lag_once_the_oldest_needs_renewing(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(holds_module, "time", clock)
    holds = HeldMessages(HOLD, _never_renewed, hub_name="hub", storage="test")  # type: ignore[arg-type]
    first, second = _message("first"), _message("second")
    assert not holds.lagging(), "nothing held"

    holds.hold_message(first)
    clock.now += 8
    holds.hold_message(second)
    holds.hold_message(_message("first"))  # a redelivered copy keeps the time it was first taken
    assert not holds.lagging(), "held for less than a third of the hold"

    clock.now += 3
    assert holds.lagging(), "the first has been held for 11 s, more than a third of 30 s"

    await holds.release(first)
    assert not holds.lagging(), "the oldest left is held for 3 s"
    clock.now += 8
    assert holds.lagging()
    holds.forget(QUEUE)
    assert not holds.lagging(), "nothing held once the queue is given up"
