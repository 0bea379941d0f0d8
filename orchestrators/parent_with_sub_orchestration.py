"""Sub-orchestrations: an orchestrator can call another orchestrator like an activity."""

import azure.durable_functions as df

from .blueprint import bp


@bp.orchestration_trigger(context_name="context")
def parent_with_sub_orchestration(context: df.DurableOrchestrationContext):
    """Run hello_sequence as a child orchestration, then one more activity."""
    # The child gets its own instance ID and history; the parent waits for its result.
    greetings = yield context.call_sub_orchestrator("hello_sequence")
    farewell = yield context.call_activity("say_hello", "from the parent")
    return {"greetings": greetings, "parent": farewell}
