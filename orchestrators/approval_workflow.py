"""Human interaction: wait for someone to approve, but not forever.

Approve with the management API, e.g. POST
/runtime/webhooks/durabletask/instances/{instanceId}/raiseEvent/Approval with body `true` (or `false`
to reject).
"""

from datetime import timedelta

import azure.durable_functions as df

from .blueprint import bp


@bp.orchestration_trigger(context_name="context")
def approval_workflow(context: df.DurableOrchestrationContext):
    """Return "approved", "rejected" or "timed out". Input: {"timeout_seconds": N} (default 60)."""
    settings = context.get_input() or {}
    timeout_seconds = int(settings.get("timeout_seconds", 60))

    # current_utc_datetime comes from the history, so the deadline is the same on every replay.
    deadline = context.current_utc_datetime + timedelta(seconds=timeout_seconds)
    context.set_custom_status("Waiting for approval")

    approval = context.wait_for_external_event("Approval")
    timeout = context.create_timer(deadline)
    # task_any completes as soon as the first of the tasks completes and gives back that task.
    winner = yield context.task_any([approval, timeout])

    if winner == approval:
        # Cancel the timer, or the orchestration would stay "Running" until the deadline.
        timeout.cancel()
        outcome = "approved" if approval.result else "rejected"
    else:
        outcome = "timed out"
    context.set_custom_status(outcome)
    return outcome
