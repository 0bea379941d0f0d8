"""Shared pieces of the tests that run the engine: the test app, quick leases, polling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from durable_ext.app_loader import FunctionRegistry
from durable_ext.config import DurableTaskOptions
from durable_ext.storage.queues import MessageQueue, ReceivedMessage
from durable_ext.storage.taskhub import TaskHub
from durable_ext.testing_host import FAST_LEASES
from durable_ext.worker.engine import Engine

ENGINE_APP_DIR = Path(__file__).parent / "apps" / "engine_app"
__all__ = ["ENGINE_APP_DIR", "FAST_LEASES", "engine_for", "poll", "received_again"]


def engine_for(
    hub: TaskHub, registry: FunctionRegistry, worker_id: str | None = None, **options: Any
) -> Engine:
    """An engine for ``hub`` with quick leases; ``options`` override DurableTaskOptions fields."""
    return Engine(
        hub,
        registry,
        DurableTaskOptions(hub_name=hub.names.hub, **options),
        worker_id=worker_id,
        partition_options=FAST_LEASES,
    )


async def poll(condition: Callable[[], Awaitable[bool]], what: str, timeout: float = 60.0) -> None:
    """Wait until ``condition`` holds, checking every 50 ms; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def received_again(queue: MessageQueue, timeout: float = 30.0) -> ReceivedMessage:
    """The message of ``queue`` once it is visible again (its hold ran out), dequeued with a new pop
    receipt and hidden for 30 s; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        received = await queue.receive(1, timedelta(seconds=30))
        if received:
            return received[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no message of {queue.name} became visible again within {timeout} s")
