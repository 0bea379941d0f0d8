"""Durable entities: call an entity operation from an orchestrator and wait for its answer."""

import azure.durable_functions as df

from .blueprint import bp


@bp.orchestration_trigger(context_name="context")
def counter_orchestrator(context: df.DurableOrchestrationContext):
    """Add 5 to the Counter entity with the given key (default: this instance's ID) and return its value."""
    key = context.get_input() or context.instance_id
    # An entity is addressed by its name and a key; each key is a separate counter.
    counter = df.EntityId("Counter", key)

    yield context.call_entity(counter, "add", 5)
    value = yield context.call_entity(counter, "get")
    return value
