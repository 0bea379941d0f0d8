"""An orchestration whose timeline holds two short activities around a 2 s timer, added to the sample
app by the dashboard's browser tests: drawn to scale, each activity's bar is a few pixels wide, far
narrower than its label."""

from datetime import timedelta

import azure.durable_functions as df

bp = df.Blueprint()


@bp.orchestration_trigger(context_name="context")
def short_and_long(context: df.DurableOrchestrationContext):
    """Greet, wait 2 s on a durable timer, greet again; return both greetings."""
    first = yield context.call_activity("say_hello", "before")
    yield context.create_timer(context.current_utc_datetime + timedelta(seconds=2))
    second = yield context.call_activity("say_hello", "after")
    return [first, second]
