"""A durable HTTP call as the Durable Functions docs show it, added to the sample app by a test.

The orchestrator starts another orchestration through the app's own HTTP starter: the starter answers
202 with a Location (the status URL) and Retry-After, which ``call_http`` polls until the started
orchestration completes.
"""

import azure.durable_functions as df

bp = df.Blueprint()


@bp.orchestration_trigger(context_name="context")
def call_starter(context: df.DurableOrchestrationContext):
    response = yield context.call_http("POST", context.get_input())
    return {"statusCode": response["statusCode"], "content": response["content"]}
