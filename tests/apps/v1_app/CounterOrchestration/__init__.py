import azure.durable_functions as df


def orchestrator_function(context: df.DurableOrchestrationContext):
    entity_id = df.EntityId("Counter", context.instance_id)
    context.signal_entity(entity_id, "add", 3)
    state = yield context.call_entity(entity_id, "add", 4)
    return state


main = df.Orchestrator.create(orchestrator_function)
