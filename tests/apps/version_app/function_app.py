"""Orchestrations for the versioning tests: each reports the version it runs under."""

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.orchestration_trigger(context_name="context")
def versioned(context: df.DurableOrchestrationContext):
    return context.version


@app.orchestration_trigger(context_name="context")
def versioned_parent(context: df.DurableOrchestrationContext):
    inherited = yield context.call_sub_orchestrator("versioned", None, f"{context.instance_id}-default")
    chosen = yield context.call_sub_orchestrator("versioned", None, f"{context.instance_id}-chosen", "1.5")
    return [context.version, inherited, chosen]


@app.orchestration_trigger(context_name="context")
def versioned_loop(context: df.DurableOrchestrationContext):
    generation = context.get_input() or 0
    if generation < 2:
        context.continue_as_new(generation + 1)
        return None
    return [generation, context.version]
