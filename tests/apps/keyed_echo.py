"""A function-level HTTP function, added to the sample app (all anonymous) by the key tests."""

import azure.durable_functions as df
import azure.functions as func

bp = df.Blueprint()


@bp.route(route="keyed/echo", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def keyed_echo(req: func.HttpRequest) -> func.HttpResponse:
    """Answers 200 to a caller with the key."""
    return func.HttpResponse("ok")
