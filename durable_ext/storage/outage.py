"""Telling a storage outage from a bug, and logging an outage once rather than once per request.

While Azure Storage (or Azurite) is away, every poll and every management request fails the same way.
Those failures are expected and say nothing new after the first one, so callers ask :func:`is_outage`
and report through :data:`storage_health`, which logs one line when storage goes away and one when it
answers again. Anything else is still the caller's to log with its traceback.
"""

from __future__ import annotations

import logging

import aiohttp
from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

from durable_ext.errors import StorageUnreachableError

logger = logging.getLogger(__name__)

OUTAGE_STATUSES = frozenset({500, 502, 503, 504})
"""Storage answers that mean "the service is unwell", not "this request is wrong"."""

_TRANSPORT_ERRORS = (
    StorageUnreachableError,
    ServiceRequestError,
    ServiceResponseError,
    aiohttp.ClientConnectionError,
    ConnectionError,
    TimeoutError,
)


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) says storage could not be reached.

    Connection refused or reset, timeouts and 5xx answers count. The chain is followed because our own
    REST client and TaskHub wrap the transport error in an HttpResponseError or a StorageError. Only
    explicit causes count: an error raised while handling an outage is a bug of its own.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _TRANSPORT_ERRORS):
            return True
        if isinstance(current, HttpResponseError) and current.status_code in OUTAGE_STATUSES:
            return True
        current = current.__cause__
    return False


def describe_outage(exc: BaseException) -> str:
    """A one-line reason for log lines and error bodies (the first line of the message, or the type)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class StorageHealth:
    """Which storage endpoints are known to be down in this process; logs each transition once.

    Only used from the event loop, so it needs no lock.

    Endpoints are keys chosen by the callers (one per storage account); the API and the dispatchers of
    one host use the same key, so one outage is one line however many loops notice it.
    """

    def __init__(self) -> None:
        self._down: set[str] = set()

    def failed(self, endpoint: str, exc: BaseException) -> bool:
        """Record ``exc`` if it is an outage and return True (it has been logged); False otherwise.

        A False answer leaves the reporting to the caller: it is not a storage outage.
        """
        if not is_outage(exc):
            return False
        if endpoint not in self._down:
            self._down.add(endpoint)
            logger.warning("storage unreachable at %s: %s; retrying", endpoint, describe_outage(exc))
        return True

    def succeeded(self, endpoint: str) -> None:
        """Storage at ``endpoint`` answered; logs once if it had been down."""
        if endpoint in self._down:
            self._down.discard(endpoint)
            # At the outage line's level, so whoever saw storage go away also sees it come back.
            logger.warning("storage reachable again at %s", endpoint)

    def reachable(self, endpoint: str) -> bool:
        """False while ``endpoint`` is known to be down (its last request failed with an outage)."""
        return endpoint not in self._down


storage_health = StorageHealth()
"""The process's one tracker, shared by the management API and the worker loops."""
