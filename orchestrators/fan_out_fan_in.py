"""Fan-out/fan-in: start many activities at once, then wait for all of them and aggregate."""

import azure.durable_functions as df

from .blueprint import bp

MAX_ITEMS = 1000
"""The sample refuses bigger fan-outs: the input comes from any HTTP caller."""


@bp.orchestration_trigger(context_name="context")
def fan_out_fan_in(context: df.DurableOrchestrationContext):
    """Square n work items in parallel and return the sum. Input: n (default 5, at most 1000)."""
    count = context.get_input() or 5
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_ITEMS:
        raise ValueError(f"the input must be a number of work items from 1 to {MAX_ITEMS}, not {count!r}")
    work_items = yield context.call_activity("get_work_items", count)

    # Creating the tasks without yielding them schedules them all; they run in parallel.
    tasks = [context.call_activity("process_item", item) for item in work_items]
    # task_all completes when every task has completed, with their results in order.
    results = yield context.task_all(tasks)
    return sum(results)
