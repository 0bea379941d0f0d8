"""The Counter entity: an integer with the operations add(amount), reset and get."""

import azure.durable_functions as df

from .blueprint import bp


# The entity is named after the function. Entity names are case-insensitive: df.EntityId("Counter", key)
# addresses this function (entity IDs carry the lower-cased name, "@counter@key").
@bp.entity_trigger(context_name="context")
def counter(context: df.DurableEntityContext) -> None:
    """Handle one operation. Operations on one entity never run concurrently."""
    value = context.get_state(lambda: 0)
    operation = context.operation_name

    if operation == "add":
        value += context.get_input()
    elif operation == "reset":
        value = 0
    elif operation == "get":
        context.set_result(value)
    else:
        raise ValueError(f"Counter has no operation {operation!r}")

    context.set_state(value)
