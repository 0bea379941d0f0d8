"""Instance IDs as storage keys: table PartitionKeys (DT.AS's KeySanitation) and blob-name directories."""

from __future__ import annotations

_ESCAPES = {"^": "^^", "/": "^0", "\\": "^1", "#": "^2", "?": "^3"}
_UNESCAPES = {"^": "^", "0": "/", "1": "\\", "2": "#", "3": "?"}


def escape_partition_key(key: str) -> str:
    """``KeySanitation.EscapePartitionKey``: make an instance ID legal as a PartitionKey.

    Not idempotent: apply exactly once, to the raw instance ID.
    """
    out = []
    for ch in key:
        code = ord(ch)
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif code <= 0x1F or 0x7F <= code <= 0x9F:
            out.append("^" + chr(0xC0 + code))
        else:
            out.append(ch)
    return "".join(out)


def unescape_partition_key(key: str) -> str:
    """Inverse of :func:`escape_partition_key`."""
    out = []
    chars = iter(key)
    for ch in chars:
        if ch != "^":
            out.append(ch)
            continue
        nxt = next(chars, "")
        if nxt in _UNESCAPES:
            out.append(_UNESCAPES[nxt])
        elif nxt and ord(nxt) >= 0xC0:
            out.append(chr(ord(nxt) - 0xC0))
        else:
            out.append(nxt)
    return "".join(out)


def blob_prefix(instance_id: str) -> str:
    """The directory of an instance's blobs: its sanitized ID, made safe as a blob-name segment.

    Blob services resolve ``.`` and ``..`` path segments and drop a name's trailing dots, so an ID
    that is all dots or ends with one (valid instance IDs in Durable Functions) would name another
    blob or none. Trailing dots become ``^4``, an escape :func:`escape_partition_key` never produces,
    so the result is unique per ID; every other ID keeps DT.AS's name.
    """
    return blob_safe_key(escape_partition_key(instance_id))


def blob_safe_key(partition_key: str) -> str:
    """:func:`blob_prefix` of an already sanitized ID (a History or Instances PartitionKey)."""
    stripped = partition_key.rstrip(".")
    return stripped + "^4" * (len(partition_key) - len(stripped))
