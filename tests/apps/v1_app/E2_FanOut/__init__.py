import azure.durable_functions as df


def orchestrator_function(context: df.DurableOrchestrationContext):
    count = context.get_input() or 10
    items = yield context.call_activity("E2_GetWorkItems", count)
    squares = yield context.task_all([context.call_activity("E2_Square", item) for item in items])
    return sum(squares)


main = df.Orchestrator.create(orchestrator_function)
