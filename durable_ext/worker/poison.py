"""Quarantining the messages whose orchestration episode keeps failing (``storage/quarantine.py``).

The control-queue dispatcher calls :func:`quarantine_episode_messages` when an episode fails for a
reason other than a storage outage and some of its messages were already dequeued more than
``POISON_DEQUEUE_COUNT`` times: they would otherwise come back and fail for ever.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Awaitable, Callable, Sequence

from durable_ext.logs import hub_log
from durable_ext.storage.instances import QUARANTINE_MARK
from durable_ext.storage.quarantine import POISON_DEQUEUE_COUNT
from durable_ext.storage.queues import ReceivedMessage
from durable_ext.storage.taskhub import TaskHub

logger = logging.getLogger(__name__)


async def quarantine_episode_messages(
    hub: TaskHub,
    instance_id: str,
    poison: Sequence[ReceivedMessage],
    exc: Exception,
    delete: Callable[[ReceivedMessage], Awaitable[None]],
) -> None:
    """Take ``poison`` (messages of ``instance_id`` that keep failing their episode with ``exc``)
    out of their queue through ``delete``, after storing them in the poison table; the row says why.

    The Instances row turns Failed with the reason, and turns back as soon as a later episode of the
    instance succeeds (e.g. after ``doctor --fix`` put the message back). A failure to quarantine is
    logged only: the messages then come back as they would have.
    """
    log = hub_log(logger, hub.names.hub).instance(instance_id)
    reason = (
        f"{QUARANTINE_MARK} {len(poison)} message(s) of this instance in table "
        f"{hub.quarantine.table_name} after they failed {POISON_DEQUEUE_COUNT}+ times "
        f"(last error: {type(exc).__name__}: {exc}); see `python -m durable_ext doctor`"
    )
    try:
        for message in poison:
            await hub.quarantine.add(message, "".join(traceback.format_exception(exc)))
            await delete(message)
        await hub.instances.quarantined(instance_id, reason)
    except Exception:
        log.warning("quarantine failed", exc_info=True)
        return
    log.error("%s", reason)
