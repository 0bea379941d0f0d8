"""Schemathesis hooks for fuzzing the management API (``SCHEMATHESIS_HOOKS=tests.schemathesis_hooks``).

``tests/schemathesis.toml`` lets ``not_a_server_error`` pass a 500, because Durable Functions' API
answers 500 on purpose in three places; :func:`only_documented_server_errors` then fails every 500 that
is not one of them, so a crash is still found.
"""

from __future__ import annotations

import json

import schemathesis

# DF's InvalidOperationException texts for suspending a suspended instance and resuming one that is not.
_REFUSALS = ("Cannot suspend the orchestration instance ", "Cannot resume the orchestration instance ")


@schemathesis.check
def only_documented_server_errors(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> None:
    """A 500 only as Durable Functions answers one: the status of a Failed instance (asked for with
    ``returnInternalServerErrorOnFailure``) or DF's refusal to suspend or resume."""
    if response.status_code != 500:
        return
    try:
        body = json.loads(response.content)
    except ValueError:
        body = None
    if isinstance(body, dict) and _documented(body):
        return
    raise AssertionError(f"undocumented 500 from {case.operation.label}: {response.text[:500]}")


def _documented(body: dict[str, object]) -> bool:
    if body.get("runtimeStatus") == "Failed":
        return True
    message = body.get("ExceptionMessage")
    return isinstance(message, str) and message.startswith(_REFUSALS)
