"""The DBOS Transact twins of the benchmark workloads, on SQLite.

Run as ``python -m benchmarks.dbos_twin SHAPE SIZE``; prints one JSON object (``figure``, ``unit``
and, for ``latency``, ``p50_ms``/``p99_ms``). Each run is its own process with a fresh SQLite system
database in a temporary directory, because DBOS is a process-wide singleton and must not share the
process (or its peak RSS) with the engine under test.

The shapes mirror benchmarks/app/function_app.py: a DBOS step is the activity, a DBOS workflow the
orchestration. Fan-out uses a DBOS queue (DBOS's documented way to run steps in parallel), events use
``DBOS.send``/``DBOS.recv``. DBOS's polling intervals (queue, result, notifications) are set to 10 ms
instead of the one-second defaults, so the comparison is against a tuned DBOS, not an idle-looking one.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dbos import DBOS, DBOSConfig

from benchmarks import MANY_STEPS
from benchmarks.stats import percentile

POLL = 0.01
"""Seconds between DBOS's polls of queues, results and notifications."""
FANOUT_QUEUE = "fanout"


@DBOS.step()
def inc(value: int) -> int:
    """The unit of work: add one."""
    return value + 1


@DBOS.workflow()
def sequential(count: int) -> int:
    """``inc`` count times one after another."""
    value = 0
    for _ in range(count):
        value = inc(value)
    return value


@DBOS.workflow()
def fanout(count: int) -> int:
    """``inc`` on 0..count-1 in parallel through a queue, then the sum of the results."""
    queue = DBOS.retrieve_queue(FANOUT_QUEUE)
    assert queue is not None
    handles = [queue.enqueue(inc, i) for i in range(count)]
    return sum(handle.get_result(polling_interval_sec=POLL) for handle in handles)


@DBOS.workflow()
def events(count: int) -> int:
    """Receive ``count`` messages on topic ``tick`` and sum them."""
    total = 0
    for _ in range(count):
        total += DBOS.recv("tick", timeout_seconds=60)
    return total


@DBOS.workflow()
def one_activity() -> int:
    """One step."""
    return inc(0)


@DBOS.workflow()
def timer(seconds: float) -> float:
    """One durable sleep of ``seconds``; returns how late it ended (ms)."""
    due = time.time() + seconds
    DBOS.sleep(seconds)
    return (time.time() - due) * 1000


def _check(what: str, got: Any, expected: Any) -> None:
    if got != expected:
        raise RuntimeError(f"DBOS {what}: expected {expected!r}, got {got!r}")


def run_sequential(size: int) -> dict[str, Any]:
    """One workflow of ``size`` sequential steps → steps/s."""
    started = time.perf_counter()
    _check("sequential", sequential(size), size)
    return {"figure": size / (time.perf_counter() - started), "unit": "steps/s"}


def run_fanout(size: int) -> dict[str, Any]:
    """One workflow fanning out ``size`` steps → steps/s."""
    started = time.perf_counter()
    _check("fanout", fanout(size), size * (size + 1) // 2)
    return {"figure": size / (time.perf_counter() - started), "unit": "steps/s"}


def run_many(size: int) -> dict[str, Any]:
    """``size`` workflows of MANY_STEPS sequential steps started together → workflows/s."""
    started = time.perf_counter()
    handles = [DBOS.start_workflow(sequential, MANY_STEPS) for _ in range(size)]
    for handle in handles:
        _check("many", handle.get_result(polling_interval_sec=POLL), MANY_STEPS)
    return {"figure": size / (time.perf_counter() - started), "unit": "workflows/s"}


def run_events(size: int) -> dict[str, Any]:
    """``size`` messages sent one at a time to one waiting workflow → messages/s."""
    handle = DBOS.start_workflow(events, size)
    workflow_id = handle.get_workflow_id()
    started = time.perf_counter()
    for _ in range(size):
        DBOS.send(workflow_id, 1, "tick")
    _check("events", handle.get_result(polling_interval_sec=POLL), size)
    return {"figure": size / (time.perf_counter() - started), "unit": "messages/s"}


def run_latency(size: int) -> dict[str, Any]:
    """Start → result of a one-step workflow, ``size`` runs one after another → p50/p99 ms."""
    samples: list[float] = []
    for _ in range(size):
        started = time.perf_counter()
        _check("latency", DBOS.start_workflow(one_activity).get_result(polling_interval_sec=POLL), 1)
        samples.append((time.perf_counter() - started) * 1000)
    p50 = percentile(samples, 50)
    return {"figure": p50, "unit": "ms", "p50_ms": p50, "p99_ms": percentile(samples, 99)}


TIMER_SECONDS = (1.0, 5.0)
"""As in the timers scenario: durations spread evenly between these."""


def run_timers(size: int) -> dict[str, Any]:
    """``size`` workflows each sleeping 1-5 s, started together → lateness p50/p99 ms.

    No idle time first: DBOS's durable sleep is a sleep in this process, not a queue poll.
    """
    low, high = TIMER_SECONDS
    seconds = [low + (high - low) * i / max(size - 1, 1) for i in range(size)]
    handles = [DBOS.start_workflow(timer, s) for s in seconds]
    late = [handle.get_result(polling_interval_sec=POLL) for handle in handles]
    p50 = percentile(late, 50)
    return {"figure": p50, "unit": "ms", "p50_ms": p50, "p99_ms": percentile(late, 99)}


SHAPES: dict[str, Callable[[int], dict[str, Any]]] = {
    "sequential": run_sequential,
    "fanout": run_fanout,
    "many": run_many,
    "events": run_events,
    "latency": run_latency,
    "timers": run_timers,
}


def main(argv: list[str] | None = None) -> None:
    """Run one shape on a fresh SQLite database and print its result as JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dbos_twin")
    parser.add_argument("shape", choices=sorted(SHAPES))
    parser.add_argument("size", type=int)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dbos-bench-") as tmp:
        config: DBOSConfig = {
            "name": "durable-ext-bench",
            "system_database_url": f"sqlite:///{Path(tmp) / 'dbos.sqlite'}",
            "log_level": "WARNING",
            "notification_listener_polling_interval_sec": POLL,
        }
        DBOS(config=config)
        DBOS.launch()
        try:
            DBOS.register_queue(FANOUT_QUEUE, polling_interval_sec=POLL)
            result = SHAPES[args.shape](args.size)
        finally:
            DBOS.destroy()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
