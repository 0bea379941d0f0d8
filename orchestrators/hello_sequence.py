"""Function chaining: call activities one after the other, each result available to the next step."""

import azure.durable_functions as df

from .blueprint import bp


@bp.orchestration_trigger(context_name="context")
def hello_sequence(context: df.DurableOrchestrationContext):
    """Greet three cities in order and return the greetings as a list."""
    greetings = []
    for city in ("Tokyo", "Seattle", "London"):
        # `yield` hands the task to Durable Functions; the orchestrator resumes (by replay) when the
        # activity has finished, and the yield expression evaluates to its result.
        greeting = yield context.call_activity("say_hello", city)
        greetings.append(greeting)
    return greetings
