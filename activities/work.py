"""The activities of the fan-out/fan-in sample."""

from .blueprint import bp


@bp.activity_trigger(input_name="count")
def get_work_items(count: int) -> list[int]:
    """Produce the work items 1..count."""
    return list(range(1, count + 1))


@bp.activity_trigger(input_name="item")
def process_item(item: int) -> int:
    """Process one work item (here: square it)."""
    return item * item
