"""The health probes of ``start`` and ``worker``: ``/healthz`` (liveness) and ``/readyz`` (readiness).

- ``GET /healthz``: 200 ``{"status": "Healthy"}`` while the process serves requests at all.
- ``GET /readyz``: 200 when every check of :mod:`durable_ext.worker.health` passes, else 503; the body
  says which check failed: ``{"status": "Unhealthy", "checks": {"leases": {"status": "Unhealthy",
  "description": "..."}, ...}}`` (the shape of ASP.NET Core's health check reports).

No key is asked for, even where the management API needs the system key: Kubernetes' probes (and most
load balancers') cannot present one without putting it in the pod spec, and the answers say nothing an
attacker could use: no endpoint, account, key or instance, only which check failed. Answers are never
cached.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from durable_ext.host.metrics import metrics_routes
from durable_ext.worker.engine import Engine
from durable_ext.worker.health import readiness_checks

HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"
_NO_CACHE = {"Cache-Control": "no-store, no-cache"}


def _status(healthy: bool) -> str:
    return "Healthy" if healthy else "Unhealthy"


def probe_routes(engine: Engine) -> list[BaseRoute]:
    """``/healthz`` and ``/readyz`` for the process running ``engine``."""

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "Healthy"}, headers=_NO_CACHE)

    async def ready(request: Request) -> Response:
        checks = readiness_checks(engine)
        healthy = all(check.healthy for check in checks)
        body = {
            "status": _status(healthy),
            "checks": {
                check.name: {"status": _status(check.healthy), "description": check.description}
                for check in checks
            },
        }
        return JSONResponse(body, status_code=200 if healthy else 503, headers=_NO_CACHE)

    return [
        Route(HEALTH_PATH, health, methods=["GET", "HEAD"]),
        Route(READY_PATH, ready, methods=["GET", "HEAD"]),
    ]


def probes_app(engine: Engine, system_key: str | None) -> Starlette:
    """An ASGI app serving the probes, ``/metrics`` and ``/scale`` (a worker's listener,
    ``--admin-port``); ``system_key`` guards the last two (:mod:`durable_ext.host.metrics`)."""
    return Starlette(routes=[*probe_routes(engine), *metrics_routes(engine, system_key)])
