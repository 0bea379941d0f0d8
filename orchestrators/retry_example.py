"""Automatic retries: Durable Functions re-runs a failed activity according to RetryOptions."""

import azure.durable_functions as df

from .blueprint import bp


@bp.orchestration_trigger(context_name="context")
def retry_example(context: df.DurableOrchestrationContext):
    """Call flaky_activity (fails twice, then succeeds) with up to three attempts, 1 s apart."""
    retry_options = df.RetryOptions(first_retry_interval_in_milliseconds=1000, max_number_of_attempts=3)
    # The instance ID is the key flaky_activity counts attempts by, so every run starts afresh.
    result = yield context.call_activity_with_retry("flaky_activity", retry_options, context.instance_id)
    return result
