"""The readiness checks of ``/readyz`` follow the engine's own loops (in process, against Azurite)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from durable_ext.app_loader import FunctionRegistry
from durable_ext.storage.taskhub import TaskHub
from durable_ext.worker.engine import Engine
from durable_ext.worker.health import Check, readiness_checks
from tests.engine_support import engine_for, poll


def failing(engine: Engine) -> dict[str, str]:
    """The failing checks' descriptions by name."""
    return {check.name: check.description for check in readiness_checks(engine) if not check.healthy}


async def until_failing(engine: Engine, name: str) -> Check:
    async def failed() -> bool:
        return name in failing(engine)

    await poll(failed, f"the {name} check to fail")
    return next(check for check in readiness_checks(engine) if check.name == name)


async def test_readiness_follows_the_engines_loops(hub: TaskHub, registry: FunctionRegistry) -> None:
    engine = engine_for(hub, registry, "ready-a")
    assert "leases" in failing(engine)  # no pass over the partition table yet
    await engine.start()
    try:

        async def ready() -> bool:
            return not failing(engine) and len(engine.orchestrations.owned) == len(hub.control_queues)

        await poll(ready, "the engine to get ready")

        # A control-queue poller that ended on its own has died.
        queue = sorted(engine.orchestrations.owned)[0]
        engine.orchestrations._loops[queue].cancel()
        check = await until_failing(engine, "dispatchers")
        assert check.description == f"not running: the poller of {queue}"

        loop = engine.activities._loop_task
        assert loop is not None
        loop.cancel()
        await asyncio.wait({loop})
        assert failing(engine)["dispatchers"] == (f"not running: the work-item poller, the poller of {queue}")

        # Without the partition manager the leases are no longer renewed: not ready once they may have
        # expired (FAST_LEASES: 3 s).
        await engine.partitions.stop(graceful=False)
        assert "the partition manager" in failing(engine)["dispatchers"]
        check = await until_failing(engine, "leases")
        assert check.description.startswith("the partition leases were last renewed ")

        assert "draining" not in failing(engine)
        assert await engine.drain(timedelta(seconds=30), release=False)
        assert failing(engine)["draining"].startswith("shutting down")
        assert "storage" not in failing(engine)
    finally:
        await engine.stop(graceful=False)
