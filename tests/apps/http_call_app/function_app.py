"""Orchestrations that make durable HTTP calls, written as a Durable Functions user would."""

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.activity_trigger(input_name="value")
def double(value: int) -> int:
    return value * 2


@app.orchestration_trigger(context_name="context")
def http_get(context: df.DurableOrchestrationContext):
    request = context.get_input()
    response = yield context.call_http("GET", request["uri"], headers=request.get("headers"))
    return response


@app.orchestration_trigger(context_name="context")
def http_post(context: df.DurableOrchestrationContext):
    request = context.get_input()
    response = yield context.call_http(
        "POST", request["uri"], content=request["content"], headers=request.get("headers")
    )
    return response


@app.orchestration_trigger(context_name="context")
def http_then_activity(context: df.DurableOrchestrationContext):
    """A call whose answer may be polled, then an activity: its task number comes after the polls."""
    response = yield context.call_http("POST", context.get_input())
    doubled = yield context.call_activity("double", 21)
    return {"status": response["statusCode"], "content": response["content"], "doubled": doubled}


@app.orchestration_trigger(context_name="context")
def http_catch(context: df.DurableOrchestrationContext):
    """A call that gets no answer: the orchestrator catches the failure."""
    try:
        yield context.call_http("GET", context.get_input())
    except Exception as exc:
        return f"caught: {exc}"
    return "no error"


@app.orchestration_trigger(context_name="context")
def http_with_identity(context: df.DurableOrchestrationContext):
    token = df.ManagedIdentityTokenSource("https://management.core.windows.net/.default")
    try:
        yield context.call_http("GET", context.get_input(), token_source=token)
    except Exception as exc:
        return f"caught: {exc}"
    return "no error"
