"""Orchestrations that wait on long durable timers, for the time-skipping tests of the testing kit.

Each returns the orchestration times it saw (``context.current_utc_datetime``, ISO 8601), so that the
tests can tell how much orchestration time passed.
"""

from datetime import timedelta

import azure.durable_functions as df

app = df.DFApp()

_attempts: dict[str, int] = {}


@app.orchestration_trigger(context_name="context")
def approval(context: df.DurableOrchestrationContext):
    """Human interaction: wait up to 30 days for the Approval event."""
    started = context.current_utc_datetime
    approval = context.wait_for_external_event("Approval")
    timeout = context.create_timer(started + timedelta(days=30))
    winner = yield context.task_any([approval, timeout])
    if winner == approval:
        timeout.cancel()
        outcome = "approved" if approval.result else "rejected"
    else:
        outcome = "timed out"
    return {"outcome": outcome, "times": [started.isoformat(), context.current_utc_datetime.isoformat()]}


@app.activity_trigger(input_name="key")
def fails_once(key: str) -> str:
    """Fails on its first attempt per key, then succeeds."""
    _attempts[key] = _attempts.get(key, 0) + 1
    if _attempts[key] == 1:
        raise RuntimeError("first attempt failed")
    return f"ok after {_attempts[key]}"


@app.orchestration_trigger(context_name="context")
def retry_after_an_hour(context: df.DurableOrchestrationContext):
    """Call fails_once with a retry an hour after the first failure."""
    started = context.current_utc_datetime
    options = df.RetryOptions(first_retry_interval_in_milliseconds=3_600_000, max_number_of_attempts=2)
    result = yield context.call_activity_with_retry("fails_once", options, context.instance_id)
    return {"result": result, "times": [started.isoformat(), context.current_utc_datetime.isoformat()]}


@app.activity_trigger(input_name="check")
def check_status(check: int) -> str:
    """What a monitor polls."""
    return f"check {check}: healthy"


@app.orchestration_trigger(context_name="context")
def hourly_monitor(context: df.DurableOrchestrationContext):
    """Check the status ``input`` times, an hour apart; returns when each check ran."""
    times = []
    for check in range(context.get_input()):
        yield context.call_activity("check_status", check)
        times.append(context.current_utc_datetime.isoformat())
        yield context.create_timer(context.current_utc_datetime + timedelta(hours=1))
    return {"times": times}
