"""Generic (de)serialization of the DurableTask data classes.

DurableTask.AzureStorage writes the same objects in two forms: as Newtonsoft JSON with a ``$type``
member first (queue messages) and as table columns, where nested objects become plain JSON strings.
Rather than hand-writing both forms for two dozen classes, every wire class is a dataclass whose
fields carry their PascalCase wire name in metadata; the functions here walk those fields.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
import sys
import types
import typing
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, TypeVar, Union

from durable_ext.errors import MessageFormatError, NotJsonError, ValidationError

TYPE_KEY = "$type"

# What .NET writes for Dictionary<string,string> members under TypeNameHandling.Objects (.NET Core).
STRING_DICTIONARY_TYPE = (
    "System.Collections.Generic.Dictionary`2[[System.String, System.Private.CoreLib],"
    "[System.String, System.Private.CoreLib]]"
)

T = TypeVar("T")

MAX_JSON_DEPTH = 512
"""Deepest nesting of arrays and objects :func:`parse_json` accepts.

Python's json module recurses once per level and fails near 1000 levels, less deep inside a call stack;
a value must survive being read again by the engine, the df worker and the user's code.
"""

_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")
"""After decoding, paired ``\\uD83D\\uDE00`` escapes are one character: any surrogate left is unpaired."""


def wire(name: str, default: Any = None, *, factory: Callable[[], Any] | None = None) -> Any:
    """Declare a dataclass field together with its PascalCase wire name."""
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={"wire": name})
    return dataclasses.field(default=default, metadata={"wire": name})


class WireObject:
    """Mixin for dataclasses that map to a .NET DataContract type."""

    NET_TYPE: ClassVar[str] = ""


@dataclasses.dataclass(frozen=True)
class _FieldSpec:
    attr: str
    wire: str
    kind: type
    optional: bool


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


_SPECS: dict[type, tuple[_FieldSpec, ...]] = {}


def field_specs(cls: type) -> tuple[_FieldSpec, ...]:
    """The wire fields of a dataclass, in declaration order (base class fields first)."""
    cached = _SPECS.get(cls)
    if cached is not None:
        return cached
    hints = typing.get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        name = f.metadata.get("wire")
        if name is None:
            continue
        kind, optional = _unwrap_optional(hints[f.name])
        specs.append(_FieldSpec(f.name, name, kind, optional))
    _SPECS[cls] = tuple(specs)
    return _SPECS[cls]


class _RefusedNumberError(Exception):
    """Raised by :func:`parse_json`'s number hooks; the message says what was refused."""


def _refuse_constant(name: str) -> Any:
    raise _RefusedNumberError(f"holds {name}, which is not JSON (RFC 8259 has no NaN or Infinity)")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _RefusedNumberError(f"holds the number {text[:40]}, which is too large for a double")
    return value


def parse_json(text: str, what: str = "JSON text") -> Any:
    """``text`` as a value if it is JSON (RFC 8259) that every reader of a stored payload can handle.

    The one door for JSON from callers. Raises :class:`NotJsonError` when ``text`` does not parse as
    JSON and :class:`ValidationError` when it does but holds NaN or Infinity (Python's json reads them,
    JSON does not have them), a number beyond a double's range, an integer beyond Python's digit limit
    (4300 by default), nesting deeper than :data:`MAX_JSON_DEPTH` or a lone surrogate (UTF-8 cannot
    encode one). ``what`` names the text in the messages.
    """
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise NotJsonError(f"{what} is not valid JSON: {exc}") from exc
    except _RefusedNumberError as exc:
        raise ValidationError(f"{what} {exc}") from exc
    except ValueError as exc:
        # json.loads raises a bare ValueError only from int(): the integer digit limit.
        limit = sys.get_int_max_str_digits()
        raise ValidationError(f"{what} holds an integer of more than {limit} digits") from exc
    except RecursionError as exc:
        raise ValidationError(f"{what} is nested more than {MAX_JSON_DEPTH} levels deep") from exc
    _check_json_tree(value, what)
    return value


def _check_json_tree(value: Any, what: str) -> None:
    """Refuse nesting deeper than :data:`MAX_JSON_DEPTH` and lone surrogates; iterative, for any depth."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if _LONE_SURROGATE.search(item):
                raise ValidationError(f"{what} holds a string with a lone surrogate (\\uD800-\\uDFFF)")
            continue
        if not isinstance(item, dict | list):
            continue
        if depth > MAX_JSON_DEPTH:
            raise ValidationError(f"{what} is nested more than {MAX_JSON_DEPTH} levels deep")
        children = [part for pair in item.items() for part in pair] if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children)


def format_datetime(value: datetime) -> str:
    """Newtonsoft's round-trip format: UTC, up to 7 fractional digits with trailing zeros dropped."""
    value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += "." + f"{value.microsecond:06d}".rstrip("0")
    return text + "Z"


def format_timespan(value: timedelta) -> str:
    """.NET's constant TimeSpan format (``[-][d.]hh:mm:ss[.fffffff]``), as Newtonsoft writes a TimeSpan."""
    sign = "-" if value < timedelta(0) else ""
    value = abs(value)
    hours, rest = divmod(value.seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    days = f"{value.days}." if value.days else ""
    fraction = f".{value.microseconds * 10:07d}" if value.microseconds else ""
    return f"{sign}{days}{hours:02d}:{minutes:02d}:{seconds:02d}{fraction}"


def parse_datetime(text: str) -> datetime:
    """Parse an ISO 8601 timestamp as written by .NET (7 fractional digits) or Python; result is UTC."""
    raw = text.strip()
    if raw.endswith(("Z", "z")):
        raw = raw[:-1] + "+00:00"
    # Python accepts at most 6 fractional digits; .NET ticks have 7.
    if "." in raw:
        head, _, tail = raw.partition(".")
        digits = ""
        rest = tail
        while rest and rest[0].isdigit():
            digits, rest = digits + rest[0], rest[1:]
        raw = f"{head}.{(digits + '000000')[:6]}{rest}"
    try:
        value = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise MessageFormatError(f"invalid timestamp {text!r}") from exc
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError as exc:
        # 0001-01-01T00:00:00+01:00 is a valid timestamp, but in UTC it falls before year 1.
        raise MessageFormatError(f"timestamp {text!r} is outside years 1 to 9999 in UTC") from exc


def as_utc(value: Any) -> datetime | None:
    """``value`` as an aware UTC datetime if it is a datetime (naive means UTC), else None."""
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _is_wire_class(kind: Any) -> bool:
    return isinstance(kind, type) and dataclasses.is_dataclass(kind)


def _value_to_json(kind: Any, value: Any, typed: bool) -> Any:
    if value is None:
        return None
    if _is_wire_class(kind):
        return to_json_object(value, typed=typed)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return format_datetime(value)
    if typing.get_origin(kind) is dict and typed:
        return {TYPE_KEY: STRING_DICTIONARY_TYPE, **value}
    return value


def to_json_object(obj: Any, *, typed: bool) -> dict[str, Any]:
    """Serialize a wire dataclass to a JSON-ready dict, with ``$type`` first when ``typed``."""
    out: dict[str, Any] = {}
    net_type: str = getattr(obj, "NET_TYPE", "")
    if typed and net_type:
        out[TYPE_KEY] = net_type
    for spec in field_specs(type(obj)):
        out[spec.wire] = _value_to_json(spec.kind, getattr(obj, spec.attr), typed)
    return out


def _value_from_json(kind: Any, value: Any, where: str) -> Any:
    if value is None:
        return None
    try:
        return _read_value(kind, value)
    except (TypeError, ValueError, KeyError) as exc:
        raise MessageFormatError(f"{where}: cannot read {value!r}: {exc}") from exc


def _read_value(kind: Any, value: Any) -> Any:
    """``value`` (not None) as ``kind``; TypeError, ValueError or KeyError when it is not one."""
    if _is_wire_class(kind):
        return from_json_object(kind, _mapping(value))
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return kind(value) if isinstance(value, int) else kind[str(value)]
    if kind is datetime:
        return as_utc(value) or parse_datetime(str(value))
    if typing.get_origin(kind) is dict:
        return {str(k): v for k, v in _mapping(value).items() if k != TYPE_KEY}
    reader = _SCALAR_READERS.get(kind)
    return reader(value) if reader is not None else value


def _mapping(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError("expected an object")
    return value


def _read_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError("expected a boolean")
    return value


def _read_int(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError("expected an integer")
    return int(value)


def _read_str(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


_SCALAR_READERS: dict[Any, Callable[[Any], Any]] = {bool: _read_bool, int: _read_int, str: _read_str}


def from_json_object(cls: type[T], data: Mapping[str, Any]) -> T:
    """Build a wire dataclass from a JSON dict (``$type`` and unknown members are ignored)."""
    kwargs: dict[str, Any] = {}
    for spec in field_specs(cls):
        if spec.wire in data:
            value = _value_from_json(spec.kind, data[spec.wire], f"{cls.__name__}.{spec.wire}")
            if value is not None or spec.optional:
                kwargs[spec.attr] = value
    return cls(**kwargs)
