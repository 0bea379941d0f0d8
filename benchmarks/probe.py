"""The storage ceiling: how fast one Python caller can talk to this Azurite with the same SDKs.

Before each scenario the harness measures, on the scenario's own fresh Azurite, two strictly
sequential loops with the async SDKs durable_ext uses:

- queue: put one message, get it, delete it (three requests per cycle);
- table: upsert one entity, over and over (one request each).

Together they give the mean rate of single storage round trips, the ceiling a strictly sequential
step chain could reach. Dividing it by a scenario's step rate says how many sequential round trips
one step costs us.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass

from azure.storage.queue.aio import QueueClient

from durable_ext.storage.account import StorageAccount

WARMUP = 5
"""Untimed iterations first: connection set-up and first-call costs are not the ceiling."""


@dataclass(frozen=True)
class ProbeResult:
    """The raw storage rates of one Azurite, measured from this process."""

    queue_cycles_per_s: float
    """put + get + delete of one message per second."""
    table_upserts_per_s: float
    """Upserts of one entity per second."""
    requests_per_s: float
    """Mean rate of single round trips over both loops: total requests / total time."""
    round_trip_ms: float
    """Mean duration of one round trip (1000 / requests_per_s)."""
    iterations: int

    def as_dict(self) -> dict[str, float | int]:
        """The result as JSON-ready numbers."""
        return asdict(self)


async def probe_storage(account: StorageAccount, iterations: int) -> ProbeResult:
    """Measure the sequential queue cycle and table upsert rates; the probe resources are deleted."""
    suffix = uuid.uuid4().hex[:8]
    queue_name = f"probe-{suffix}"
    table_name = f"Probe{suffix}"
    async with account.queue_service() as queues, account.table_service() as tables:
        queue = queues.get_queue_client(queue_name)
        await queue.create_queue()
        table = await tables.create_table(table_name)
        try:
            for _ in range(WARMUP):
                await _queue_cycle(queue)
                await table.upsert_entity({"PartitionKey": "p", "RowKey": "r", "Value": 0})

            started = time.perf_counter()
            for _ in range(iterations):
                await _queue_cycle(queue)
            queue_seconds = time.perf_counter() - started

            started = time.perf_counter()
            for i in range(iterations):
                await table.upsert_entity({"PartitionKey": "p", "RowKey": "r", "Value": i})
            table_seconds = time.perf_counter() - started
        finally:
            await queue.delete_queue()
            await tables.delete_table(table_name)
    requests_per_s = 4 * iterations / (queue_seconds + table_seconds)
    return ProbeResult(
        queue_cycles_per_s=iterations / queue_seconds,
        table_upserts_per_s=iterations / table_seconds,
        requests_per_s=requests_per_s,
        round_trip_ms=1000.0 / requests_per_s,
        iterations=iterations,
    )


async def _queue_cycle(queue: QueueClient) -> None:
    """Put one message, get it back and delete it."""
    await queue.send_message("probe")
    message = await queue.receive_message()
    if message is None:
        raise RuntimeError(f"probe: the message just put into {queue.queue_name} could not be read back")
    await queue.delete_message(message)
