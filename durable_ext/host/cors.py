"""CORS for the local host, as ``func start --cors`` applies it.

Core Tools splits ``--cors`` (or ``Host.CORS`` in local.settings.json) at commas and puts ASP.NET Core's
CORS middleware in front of the whole host with those origins, any method and any header, and
credentials when ``--cors-credentials`` (or ``Host.CORSCredentials``) is set. That middleware's rules,
reproduced by :class:`CorsMiddleware`:

- A request without an ``Origin`` header passes untouched.
- A preflight (``OPTIONS`` with ``Access-Control-Request-Method``) is answered 204 by the middleware
  itself, with the CORS headers only when the origin is allowed.
- Any other request from an allowed origin gets ``Access-Control-Allow-Origin`` (``*`` when every
  origin is allowed and credentials are not, otherwise the origin) and, with credentials,
  ``Access-Control-Allow-Credentials: true``; from another origin it gets no CORS headers.
- Origins are compared exactly, after lower-casing the configured ones; ``Vary: Origin`` is added when
  more than one origin is configured.

Where ASP.NET Core fails or silently never matches, :func:`cors_policy` refuses instead: ``*`` with
credentials (ASP.NET Core throws at start) and ``*`` among other origins (ASP.NET Core then treats it as
an origin no browser sends).
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from durable_ext.errors import ConfigError

ANY_ORIGIN = "*"
"""The origin that allows every origin."""


@dataclass(frozen=True)
class CorsPolicy:
    """Which cross-origin callers the host answers with CORS headers."""

    origins: tuple[str, ...]
    """Lower-cased origins, or just ``*``."""
    credentials: bool = False
    """Whether cross-origin requests may carry cookies and the Authorization header."""

    @property
    def any_origin(self) -> bool:
        """Whether every origin is allowed."""
        return self.origins == (ANY_ORIGIN,)

    def allows(self, origin: str) -> bool:
        """Whether a request with this ``Origin`` header gets CORS headers."""
        return self.any_origin or origin in self.origins

    def headers(self, origin: str) -> list[tuple[str, str]]:
        """The CORS headers of every answer to an allowed origin."""
        allowed = ANY_ORIGIN if self.any_origin and not self.credentials else origin
        headers = [("Access-Control-Allow-Origin", allowed)]
        if self.credentials:
            headers.append(("Access-Control-Allow-Credentials", "true"))
        if len(self.origins) > 1:
            headers.append(("Vary", "Origin"))
        return headers


def cors_policy(origins: str, credentials: bool, *, source: str) -> CorsPolicy | None:
    """The policy of a comma-separated origin list (None when it names none), as ``source`` gave it.

    Raises :class:`ConfigError` for credentials without origins, ``*`` with credentials, ``*`` among
    other origins, and origins that are not ``scheme://host[:port]``.
    """
    listed = tuple(origin.strip().lower() for origin in origins.split(",") if origin.strip())
    if not listed:
        if credentials:
            raise ConfigError(f"CORS credentials are allowed but {source} names no origin to allow them for")
        return None
    if ANY_ORIGIN in listed and len(listed) > 1:
        raise ConfigError(f"{source}: '*' allows every origin and cannot be listed with other origins")
    if listed == (ANY_ORIGIN,) and credentials:
        raise ConfigError(
            f"{source}: the CORS protocol does not allow a wildcard (any) origin together with credentials;"
            " list the origins that may send credentials"
        )
    for origin in listed:
        scheme, separator, rest = origin.partition("://")
        if origin != ANY_ORIGIN and (not separator or not scheme or not rest or "/" in rest):
            raise ConfigError(f"{source}: {origin!r} is not an origin such as http://localhost:3000")
    return CorsPolicy(listed, credentials)


class CorsMiddleware:
    """ASGI middleware applying a :class:`CorsPolicy` to every route of the host."""

    def __init__(self, app: ASGIApp, policy: CorsPolicy) -> None:
        self._app = app
        self._policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer preflights, add CORS headers to allowed origins' responses, pass everything else."""
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        request_headers = Headers(scope=scope)
        origin = request_headers.get("origin")
        if origin is None:
            await self._app(scope, receive, send)
            return
        allowed = self._policy.allows(origin)
        requested_method = request_headers.get("access-control-request-method")
        if scope["method"] == "OPTIONS" and requested_method:
            preflight = self._preflight_headers(origin, requested_method, request_headers) if allowed else []
            await Response(status_code=204, headers=dict(preflight))(scope, receive, send)
            return
        if not allowed:
            await self._app(scope, receive, send)
            return
        await self._app(scope, receive, self._adding(self._policy.headers(origin), send))

    def _preflight_headers(
        self, origin: str, requested_method: str, request_headers: Headers
    ) -> list[tuple[str, str]]:
        # Any method and any header: the ones the browser asks for are the ones allowed.
        headers = [*self._policy.headers(origin), ("Access-Control-Allow-Methods", requested_method)]
        requested_headers = request_headers.get("access-control-request-headers")
        if requested_headers:
            headers.append(("Access-Control-Allow-Headers", requested_headers))
        return headers

    @staticmethod
    def _adding(headers: list[tuple[str, str]], send: Send) -> Send:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                response_headers = MutableHeaders(scope=message)
                for name, value in headers:
                    response_headers.append(name, value)
            await send(message)

        return send_with_headers
