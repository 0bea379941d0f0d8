import azure.durable_functions as df
import azure.functions as func


async def main(request: func.HttpRequest, client: str, message: func.Out[func.HttpResponse]) -> None:
    durable = df.DurableOrchestrationClient(client)
    instance_id = await durable.start_new(request.route_params["functionName"], None, request.get_json())
    message.set(durable.create_check_status_response(request, instance_id))
