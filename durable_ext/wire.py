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
import types
import typing
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar, Union

from durable_ext.errors import MessageFormatError

TYPE_KEY = "$type"

# What .NET writes for Dictionary<string,string> members under TypeNameHandling.Objects (.NET Core).
STRING_DICTIONARY_TYPE = (
    "System.Collections.Generic.Dictionary`2[[System.String, System.Private.CoreLib],"
    "[System.String, System.Private.CoreLib]]"
)

T = TypeVar("T")


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


def format_datetime(value: datetime) -> str:
    """Newtonsoft's round-trip format: UTC, up to 7 fractional digits with trailing zeros dropped."""
    value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += "." + f"{value.microsecond:06d}".rstrip("0")
    return text + "Z"


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
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


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
        if _is_wire_class(kind):
            if not isinstance(value, Mapping):
                raise TypeError("expected an object")
            return from_json_object(kind, value)
        if isinstance(kind, type) and issubclass(kind, enum.Enum):
            return kind(value) if isinstance(value, int) else kind[str(value)]
        if kind is datetime:
            return as_utc(value) or parse_datetime(str(value))
        if typing.get_origin(kind) is dict:
            if not isinstance(value, Mapping):
                raise TypeError("expected an object")
            return {str(k): v for k, v in value.items() if k != TYPE_KEY}
        if kind is bool:
            if not isinstance(value, bool):
                raise TypeError("expected a boolean")
            return value
        if kind is int:
            if isinstance(value, bool):
                raise TypeError("expected an integer")
            return int(value)
        if kind is str:
            return value if isinstance(value, str) else json.dumps(value)
    except (TypeError, ValueError, KeyError) as exc:
        raise MessageFormatError(f"{where}: cannot read {value!r}: {exc}") from exc
    return value


def from_json_object(cls: type[T], data: Mapping[str, Any]) -> T:
    """Build a wire dataclass from a JSON dict (``$type`` and unknown members are ignored)."""
    kwargs: dict[str, Any] = {}
    for spec in field_specs(cls):
        if spec.wire in data:
            value = _value_from_json(spec.kind, data[spec.wire], f"{cls.__name__}.{spec.wire}")
            if value is not None or spec.optional:
                kwargs[spec.attr] = value
    return cls(**kwargs)
