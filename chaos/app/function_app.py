"""The fault suite's workload, written as an ordinary Durable Functions app.

Every orchestration returns a value the driver computes on its own (``chaos/workload.py``), and the
counter entities end with states it can compute exactly, so lost, repeated or reordered work shows up
as a wrong output or a wrong count instead of going unnoticed.
"""

import os
import time
from collections.abc import Generator
from datetime import timedelta
from pathlib import Path
from typing import Any

import azure.durable_functions as df

app = df.DFApp()

MODULUS = 1_000_003
LEDGER_SETTING = "CHAOS_LEDGER_DIR"
"""The directory ``record`` writes its side effects to (one file per process)."""


@app.activity_trigger(input_name="value")
def step(value: int) -> int:
    """One deterministic unit of work."""
    return (value * 31 + 7) % MODULUS


@app.orchestration_trigger(context_name="context")
def chain(context: df.DurableOrchestrationContext) -> Generator[Any, Any, int]:
    """``step`` applied ``length`` times in a row to ``seed``."""
    spec = context.get_input()
    value = spec["seed"]
    for _ in range(spec["length"]):
        value = yield context.call_activity("step", value)
    return value


@app.activity_trigger(input_name="entry")
def record(entry: dict[str, Any]) -> int:
    """``step`` on ``entry["value"]`` with a side effect: a line with ``entry["key"]`` appended to this
    process's file in the ledger directory, so that the suite can count how often each task ran.
    It takes ``entry["pause"]`` seconds first, so that drains find it running."""
    time.sleep(entry["pause"])
    ledger = Path(os.environ[LEDGER_SETTING]) / f"ledger-{os.getpid()}.txt"
    with ledger.open("a") as lines:
        lines.write(f"{entry['key']}\n")
    return step(entry["value"])


@app.orchestration_trigger(context_name="context")
def ledger(context: df.DurableOrchestrationContext) -> Generator[Any, Any, int]:
    """``record`` on ``seed``, ``seed + 1``, ... in parallel (``width`` of them), then ``length`` times in
    a row on the sum; each task's ledger key is ``<instance>/fan/<i>`` or ``<instance>/chain/<i>``."""
    spec = context.get_input()
    pause = spec["pause"]
    tasks = [
        context.call_activity(
            "record", {"key": f"{context.instance_id}/fan/{i}", "value": spec["seed"] + i, "pause": pause}
        )
        for i in range(spec["width"])
    ]
    value = sum((yield context.task_all(tasks)))
    for i in range(spec["length"]):
        entry = {"key": f"{context.instance_id}/chain/{i}", "value": value, "pause": pause}
        value = yield context.call_activity("record", entry)
    return value


@app.orchestration_trigger(context_name="context")
def fanout(context: df.DurableOrchestrationContext) -> Generator[Any, Any, int]:
    """``step`` on ``seed``, ``seed + 1``, ... in parallel (``width`` of them); the sum of the results."""
    spec = context.get_input()
    results = yield context.task_all(
        [context.call_activity("step", spec["seed"] + i) for i in range(spec["width"])]
    )
    return sum(results)


@app.orchestration_trigger(context_name="context")
def parent(context: df.DurableOrchestrationContext) -> Generator[Any, Any, int]:
    """A ``chain`` sub-orchestration (instance ``<id>-child``), then one more ``step`` on its output."""
    spec = context.get_input()
    child = yield context.call_sub_orchestrator("chain", spec, f"{context.instance_id}-child")
    return (yield context.call_activity("step", child))


@app.orchestration_trigger(context_name="context")
def timer(context: df.DurableOrchestrationContext) -> Generator[Any, Any, int]:
    """A durable timer of ``seconds``, then ``step`` on ``seed``."""
    spec = context.get_input()
    yield context.create_timer(context.current_utc_datetime + timedelta(seconds=spec["seconds"]))
    return (yield context.call_activity("step", spec["seed"]))


@app.orchestration_trigger(context_name="context")
def event(context: df.DurableOrchestrationContext) -> Generator[Any, Any, int]:
    """Wait for the external event ``go`` (an int), then ``step`` on ``seed`` plus its payload."""
    spec = context.get_input()
    context.set_custom_status("waiting")
    payload = yield context.wait_for_external_event("go")
    return (yield context.call_activity("step", spec["seed"] + payload))


@app.orchestration_trigger(context_name="context")
def entity(context: df.DurableOrchestrationContext) -> Generator[Any, Any, list[int]]:
    """Signal ``add seed`` to a shared counter, call ``add seed`` twice on the instance's own counter.

    Returns both call results, ``[seed, 2 * seed]``: nobody else touches the own counter.
    """
    spec = context.get_input()
    context.signal_entity(df.EntityId("counter", spec["shared"]), "add", spec["seed"])
    own = df.EntityId("counter", spec["own"])
    first = yield context.call_entity(own, "add", spec["seed"])
    second = yield context.call_entity(own, "add", spec["seed"])
    return [first, second]


@app.entity_trigger(context_name="context")
def counter(context: df.DurableEntityContext) -> None:
    """An integer: ``add`` adds its input and returns the new value."""
    value = context.get_state(lambda: 0) + context.get_input()
    context.set_state(value)
    context.set_result(value)
