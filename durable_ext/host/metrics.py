"""``/metrics`` (Prometheus) and ``/scale`` (the scale hint for KEDA's metrics-api scaler) of ``start``
and ``worker``, on the same listeners as the probes.

- ``GET /metrics``: the engine's registry (:mod:`durable_ext.monitoring.metrics`) in the Prometheus
  text format. The queue families come from a sample of the hub's queues taken at most every few
  seconds (:mod:`durable_ext.monitoring.queues`). While storage cannot be read the answer is still 200:
  every in-process family as it stands, ``durable_ext_storage_up 0``, and no queue families, so that
  an outage shows in the metrics instead of as a failed scrape that loses them all.
- ``GET /scale[?minWorkers=N]`` (N from 0 to 1000, default 1): the scale hint
  (:mod:`durable_ext.monitoring.scale`) as JSON, with ``recommendedWorkers`` for the scaler to read.
  It needs storage: while the queues cannot be read it answers 503 (``{"status": "Unavailable",
  ...}``), as ``/readyz`` does, and KEDA keeps the replica count (or applies its ``fallback``).

Keys, as the management API: when the ``DURABLE_EXT_SYSTEM_KEY`` setting is set, both require it
(``code`` query parameter or ``x-functions-key`` header; 401 without a body otherwise), on every
listener: they name the hub's queues and its load, which the probes do not. Prometheus passes it with
``params: {code: [...]}`` in the scrape config, KEDA with the metrics-api scaler's ``apiKey`` auth mode.
Without the setting they answer anyone, as the rest of a local host does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from durable_ext.host.guard import presents_key
from durable_ext.monitoring.queues import SampleFailedError
from durable_ext.monitoring.scale import scale_hint
from durable_ext.worker.engine import Engine

METRICS_PATH = "/metrics"
SCALE_PATH = "/scale"
MIN_WORKERS_PARAM = "minWorkers"
MAX_MIN_WORKERS = 1000
"""The largest ``minWorkers`` accepted: more is a typo, not a deployment."""
_NO_CACHE = {"Cache-Control": "no-store, no-cache"}

Endpoint = Callable[[Request], Awaitable[Response]]


def metrics_routes(engine: Engine, system_key: str | None) -> list[BaseRoute]:
    """``/metrics`` and ``/scale`` for the process running ``engine``, guarded by ``system_key``."""

    def guarded(endpoint: Endpoint) -> Endpoint:
        async def answer(request: Request) -> Response:
            if system_key is not None and not presents_key(request, system_key):
                return Response(status_code=401)
            return await endpoint(request)

        return answer

    async def metrics(request: Request) -> Response:
        # A failed sample is exported as durable_ext_storage_up 0.
        with contextlib.suppress(SampleFailedError):
            await engine.queues.sample()
        body = generate_latest(engine.metrics.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST, headers=_NO_CACHE)

    async def scale(request: Request) -> Response:
        raw = request.query_params.get(MIN_WORKERS_PARAM, "1")
        if not (raw.isascii() and raw.isdigit() and int(raw) <= MAX_MIN_WORKERS):
            error = (
                f"{MIN_WORKERS_PARAM} must be a whole number of workers from 0 to {MAX_MIN_WORKERS}, "
                f"not {raw!r}"
            )
            return JSONResponse({"error": error}, status_code=400, headers=_NO_CACHE)
        try:
            await engine.queues.sample()
        except SampleFailedError:
            body = {"status": "Unavailable", "reason": "the task hub's queues could not be read"}
            return JSONResponse(body, status_code=503, headers=_NO_CACHE)
        hint = scale_hint(list(engine.queues.history), engine.max_polling_interval, min_workers=int(raw))
        return JSONResponse(hint, headers=_NO_CACHE)

    return [
        Route(METRICS_PATH, guarded(metrics), methods=["GET"]),
        Route(SCALE_PATH, guarded(scale), methods=["GET"]),
    ]
