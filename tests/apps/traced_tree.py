"""Orchestrations whose spans the tracing tests check: one of each kind of child, and one that waits."""

import azure.durable_functions as df

bp = df.Blueprint()


@bp.orchestration_trigger(context_name="context")
def traced_parent(context: df.DurableOrchestrationContext):
    greeting = yield context.call_activity("say_hello", "Tokyo")
    child = yield context.call_sub_orchestrator("traced_child", "Seattle")
    total = yield context.call_entity(df.EntityId("counter", context.instance_id), "add", 2)
    context.signal_entity(df.EntityId("counter", context.instance_id), "reset")
    return [greeting, child, total]


@bp.orchestration_trigger(context_name="context")
def traced_child(context: df.DurableOrchestrationContext):
    return (yield context.call_activity("say_hello", context.get_input()))


@bp.orchestration_trigger(context_name="context")
def traced_handover(context: df.DurableOrchestrationContext):
    first = yield context.call_activity("say_hello", "Tokyo")
    yield context.wait_for_external_event("go")
    second = yield context.call_activity("say_hello", "London")
    return [first, second]
