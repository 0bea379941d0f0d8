"""Orchestrator functions: the code that decides what runs, in which order, and waits for it.

Orchestrators are replayed from their history many times, so they must be deterministic: no I/O, no
random numbers, no datetime.now() (use context.current_utc_datetime). Real work goes into activities.
"""

# Importing each module runs its decorators, which is what puts its orchestrator on `bp`.
from . import (  # noqa: F401
    approval_workflow,
    counter_orchestrator,
    fan_out_fan_in,
    hello_sequence,
    monitor,
    parent_with_sub_orchestration,
    retry_example,
)
from .blueprint import bp

__all__ = ["bp"]
