"""Monitor: poll something at an interval, using a durable timer and continue_as_new.

continue_as_new restarts the orchestration with a new input and an empty history, so an endless (or
long) loop never makes the history grow.
"""

from datetime import timedelta

import azure.durable_functions as df

from .blueprint import bp


@bp.orchestration_trigger(context_name="context")
def monitor(context: df.DurableOrchestrationContext):
    """Check a status `checks` times, `interval_seconds` apart.

    Input: {"checks": k, "interval_seconds": s} (defaults 3 and 5).
    """
    settings = context.get_input() or {}
    checks = int(settings.get("checks", 3))
    interval_seconds = int(settings.get("interval_seconds", 5))

    if checks <= 0:
        return "no checks requested"

    status = yield context.call_activity("check_status", checks)
    if checks == 1:
        return status  # the last check: finish with what it reported

    # A durable timer: the orchestrator is unloaded while it waits, nothing sleeps in memory.
    yield context.create_timer(context.current_utc_datetime + timedelta(seconds=interval_seconds))

    # Start the next generation with one check fewer.
    context.continue_as_new({"checks": checks - 1, "interval_seconds": interval_seconds})
    return None
