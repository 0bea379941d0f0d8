"""What every request to the local host goes through, whichever route serves it: keys and body size.

One key rule for the management API and HTTP functions: a key may come as the ``code`` query parameter
or the ``x-functions-key`` header, and every key the request presents must be the right one. A wrong
``code`` is refused even when the header is right (and the other way round), so a request never
succeeds on one credential while carrying a bad one.

One body limit, :data:`MAX_BODY_BYTES`, the size of the largest payload the client accepts: a bigger
body is refused from its Content-Length before anything is read, and a streamed one as soon as it
passes the limit, without reading the rest.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request

from durable_ext.client import DEFAULT_MAX_PAYLOAD_BYTES
from durable_ext.errors import ConfigError, PayloadTooLargeError, ValidationError

KEY_QUERY_PARAM = "code"
"""The query parameter a key may be passed in, as in Azure."""

KEY_HEADER = "x-functions-key"
"""The header a key may be passed in, as in Azure."""

MAX_BODY_BYTES = DEFAULT_MAX_PAYLOAD_BYTES
"""The largest request body the host reads (16 MiB): a body cannot carry more than a payload may hold."""

MIN_EXPOSED_KEY_LENGTH = 16
"""Shortest system key accepted when the host listens beyond loopback."""


def presented_keys(request: Request) -> list[str]:
    """Every key the request carries, in the query string (possibly repeated) and the header."""
    return [*request.query_params.getlist(KEY_QUERY_PARAM), *request.headers.getlist(KEY_HEADER)]


def presents_key(request: Request, key: str) -> bool:
    """True when the request presents at least one key and each one it presents is ``key``."""
    presented = presented_keys(request)
    expected = key.encode()
    # No short-circuit: every comparison runs, so timing does not tell which credential was wrong.
    matches = [hmac.compare_digest(value.encode(), expected) for value in presented]
    return bool(matches) and all(matches)


def check_system_key(key: str, *, setting: str, exposed: bool) -> None:
    """Refuse a system key that is unusable, or too weak for a host reachable from other machines.

    Whitespace and control characters are refused everywhere: HTTP strips them from header values, so
    such a key could not be presented reliably (and a key of spaces only is no secret).
    """
    if any(ch.isspace() or not ch.isprintable() for ch in key):
        raise ConfigError(f"the {setting} app setting must not contain whitespace or control characters")
    if exposed and len(key) < MIN_EXPOSED_KEY_LENGTH:
        raise ConfigError(
            f"listening beyond this machine needs a strong key: {setting} must have at least "
            f"{MIN_EXPOSED_KEY_LENGTH} characters (it has {len(key)}); for example "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )


async def read_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None as soon as it is known to exceed ``limit`` bytes.

    A declared Content-Length over the limit is refused before reading; a streamed body stops at the
    first chunk that passes it (the rest is never read).
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def read_text(request: Request, limit: int) -> str:
    """The request body as UTF-8 text: PayloadTooLargeError (413) when it exceeds ``limit`` bytes
    (see :func:`read_body`), ValidationError (400) when it is not UTF-8."""
    body = await read_body(request, limit)
    if body is None:
        raise PayloadTooLargeError(f"the request body is larger than {limit} bytes")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError(f"request body is not UTF-8: {exc}") from exc
