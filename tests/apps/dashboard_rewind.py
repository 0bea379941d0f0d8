"""An orchestration that fails until rewound, added to the sample app by the dashboard's browser tests.

``fail_once`` calls ``fail_first_call`` with a marker file path: the first call creates the file and
fails (so the orchestration is Failed); any later call, such as the one a rewind runs, sees the file
and succeeds. A file, not module state, because activities may run in another process.
"""

from pathlib import Path

import azure.durable_functions as df

bp = df.Blueprint()


@bp.orchestration_trigger(context_name="context")
def fail_once(context: df.DurableOrchestrationContext):
    """Return the activity's result; fails the first time (the input is the marker file's path)."""
    return (yield context.call_activity("fail_first_call", context.get_input()))


@bp.activity_trigger(input_name="marker")
def fail_first_call(marker: str) -> str:
    """Fail when ``marker`` does not exist yet (creating it), succeed once it does."""
    path = Path(marker)
    if not path.exists():
        path.touch()
        raise RuntimeError("fail_first_call: failing on purpose the first time")
    return "succeeded after a rewind"
