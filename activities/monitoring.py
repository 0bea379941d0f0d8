"""The activity the monitor sample polls."""

import asyncio

from .blueprint import bp


@bp.activity_trigger(input_name="remaining")
async def check_status(remaining: int) -> str:
    """Report a status. Activities may be async: the runtime awaits them."""
    await asyncio.sleep(0)  # stands in for a real call to the system being monitored
    return f"healthy ({remaining} check(s) left)"
