"""A Counter entity and an orchestrator using it, written as a Durable Functions user would."""

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.entity_trigger(context_name="context")
def counter(context: df.DurableEntityContext) -> None:
    """An integer: add(amount), reset, get, delete, and add_then_fail, which raises after set_state."""
    value = context.get_state(lambda: 0)
    operation = context.operation_name
    if operation == "add":
        context.set_state(value + context.get_input())
    elif operation == "reset":
        context.set_state(0)
    elif operation == "get":
        context.set_result(value)
    elif operation == "delete":
        context.destruct_on_exit()
    elif operation == "add_then_fail":
        context.set_state(value + context.get_input())
        raise ValueError(f"{context.entity_name}/{context.entity_key} refuses {operation}")
    else:
        raise ValueError(f"Counter has no operation {operation!r}")


@app.orchestration_trigger(context_name="context")
def use_counter(context: df.DurableOrchestrationContext):
    """Signal add 5, call get, then call an operation that fails and report what was caught."""
    entity = df.EntityId("Counter", context.get_input())
    context.signal_entity(entity, "add", 5)
    value = yield context.call_entity(entity, "get")
    try:
        yield context.call_entity(entity, "add_then_fail", 100)
    except Exception as error:
        return {"value": value, "error": str(error)}
    return {"value": value, "error": None}
