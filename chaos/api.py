"""The management API as a user's client sees it, spread over whichever workers are up.

Workers die under the suite's feet, so every call goes to a random ready worker and is retried on
another one after a connection error or a 503 (storage outage). A failure after the request was sent
leaves it unknown whether the worker acted on it; such attempts are counted, so that the checks can
tell an event the driver may really have raised twice from one the engine duplicated.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

import httpx

from chaos.cluster import Cluster

logger = logging.getLogger(__name__)

PREFIX = "/runtime/webhooks/durabletask"
RETRY_PAUSE = 0.2
REQUEST_TIMEOUT = 30.0
RETRYABLE_STATUS = frozenset({502, 503, 504})


class ApiError(Exception):
    """A call failed on every attempt until its deadline, or was refused."""


@dataclass(frozen=True)
class Answer:
    """The final response of a call and how many earlier attempts may have reached the engine."""

    response: httpx.Response
    ambiguous: int


class ManagementApi:
    """``await api.call("POST", "orchestrators/chain/id", json=...)`` with fail-over across workers."""

    def __init__(self, cluster: Cluster, rng: random.Random, deadline: float = 300.0) -> None:
        self._cluster = cluster
        self._rng = rng
        self._deadline = deadline
        self._http = httpx.AsyncClient(timeout=REQUEST_TIMEOUT)

    async def close(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def call(self, method: str, path: str, json: Any = None) -> Answer:
        """Send until a worker answers with something other than a 5xx outage code."""
        deadline = time.monotonic() + self._deadline
        ambiguous = 0
        while True:
            worker = await self._cluster.pick_ready(self._rng)
            url = f"{worker.base_url}{PREFIX}/{path}"
            try:
                response = await self._http.request(method, url, json=json)
            except (httpx.ConnectError, httpx.ConnectTimeout):
                pass  # never reached the worker
            except httpx.TransportError as exc:
                ambiguous += 1
                logger.debug("%s %s: %r after sending; retrying", method, path, exc)
            else:
                if response.status_code not in RETRYABLE_STATUS:
                    return Answer(response, ambiguous)
            if time.monotonic() > deadline:
                raise ApiError(f"{method} {path}: no worker answered within {self._deadline:g} s")
            await asyncio.sleep(RETRY_PAUSE)

    async def start(self, name: str, instance_id: str, payload: Any) -> None:
        """Start an orchestration; a 409 after an attempt that may have started it counts as started."""
        answer = await self.call("POST", f"orchestrators/{name}/{instance_id}", json=payload)
        status = answer.response.status_code
        if status == 202 or (status == 409 and answer.ambiguous):
            return
        raise ApiError(f"start {name} {instance_id}: HTTP {status} {answer.response.text[:300]}")

    async def raise_event(self, instance_id: str, name: str, payload: Any) -> int:
        """Raise an event; how many times it may have been raised (1 plus the ambiguous attempts)."""
        answer = await self.call("POST", f"instances/{instance_id}/raiseEvent/{name}", json=payload)
        response = answer.response
        if response.status_code != 202:
            raise ApiError(f"raise {name} to {instance_id}: HTTP {response.status_code} {response.text[:99]}")
        return 1 + answer.ambiguous

    async def entity_state(self, name: str, key: str) -> Any:
        """An entity's state, or None if it does not exist."""
        answer = await self.call("GET", f"entities/{name}/{key}")
        if answer.response.status_code == 404:
            return None
        if answer.response.status_code != 200:
            raise ApiError(f"entity {name}/{key}: HTTP {answer.response.status_code}")
        return answer.response.json()
