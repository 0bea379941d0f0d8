"""An orchestration of one slow activity that leaves marks of where it ran, added to the sample app by
the worker and drain tests.

The input is ``{"dir": DIR, "tag": TAG, "seconds": S}``; the activity writes ``DIR/TAG.started.PID``
when it starts, sleeps S seconds, then appends its process ID as one line to ``DIR/TAG.finished``.
"""

import os
import time
from pathlib import Path

import azure.durable_functions as df

bp = df.Blueprint()


@bp.orchestration_trigger(context_name="context")
def slow_once(context: df.DurableOrchestrationContext):
    """Runs slow_step once and returns its output."""
    return (yield context.call_activity("slow_step", context.get_input()))


@bp.activity_trigger(input_name="job")
def slow_step(job: dict[str, object]) -> int:
    """Marks its start, sleeps, marks its end; returns the process ID it ran in."""
    directory = Path(str(job["dir"]))
    tag = str(job["tag"])
    pid = os.getpid()
    (directory / f"{tag}.started.{pid}").touch()
    time.sleep(float(str(job["seconds"])))
    with (directory / f"{tag}.finished").open("a") as marks:
        marks.write(f"{pid}\n")
    return pid
