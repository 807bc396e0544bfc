"""MessagePack encoding shared by the boundary and the host client, and the base of the
generated wire records."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import msgpack  # type: ignore[import-untyped, unused-ignore]  # untyped: the package passes mypy wherever it is installed
from pydantic import BaseModel, ConfigDict

from cpexrt.errors import InvalidInputError, ParseError, SerializeError


@dataclass(frozen=True)
class WireField:
    """How one field crosses the wire. optional: omitted when empty; pointer: omitted
    only when absent (so 0 / "" survive)."""

    name: str
    optional: bool = False
    pointer: bool = False


_SIZED = (str, bytes, list, dict, tuple)
_PLAIN = frozenset({str, bytes, int, float, bool, type(None)})


def _is_empty(value: Any) -> bool:
    """Empty as an optional wire field: None, false, zero, or an empty string / list / map."""
    if value is None or value is False:
        return True
    kind = type(value)
    if kind is int or kind is float:
        return not value
    if kind in _SIZED:
        return not value
    return False


def to_wire_value(value: Any) -> Any:
    if isinstance(value, WireRecord):
        return value.to_wire()
    if isinstance(value, list):
        return [to_wire_value(v) for v in value]
    if isinstance(value, dict):
        return {k: to_wire_value(v) for k, v in value.items()}
    return value


class WireRecord(BaseModel):
    """A record that crosses the ABI as a MessagePack map keyed by field name. Known
    fields are emitted in schema order, then unknown fields as they were received, so
    a decode / encode round trip is byte-identical for canonical input."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, defer_build=True)
    WIRE: ClassVar[tuple[WireField, ...]] = ()

    def to_wire(self) -> dict[str, Any]:
        out = self.wire_from(**{f.name: getattr(self, f.name) for f in self.WIRE})
        out.update(self.model_extra or {})
        return out

    @classmethod
    def wire_from(cls, **values: Any) -> dict[str, Any]:
        """The wire map of a record built from trusted values without constructing (and
        validating) the model: the hot path of the boundary."""
        out: dict[str, Any] = {}
        get = values.get
        for f in cls.WIRE:
            value = get(f.name)
            if value is None:
                if f.optional:
                    continue
            elif f.optional and not f.pointer and _is_empty(value):
                continue
            out[f.name] = value if type(value) in _PLAIN else to_wire_value(value)
        return out

    @classmethod
    def from_wire(cls, data: Any, what: str | None = None) -> Any:
        """Validates a decoded MessagePack value; a ParseError names the bad field."""
        from pydantic import ValidationError

        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            where = what or cls.__name__
            problems = "; ".join(
                f"{where}{''.join(f'[{p}]' if isinstance(p, int) else f'.{p}' for p in e['loc'])}: {e['msg']}"
                for e in exc.errors()
            )
            raise ParseError(problems) from None

    def pack(self) -> bytes:
        return pack(self.to_wire(), type(self).__name__)


def pack(value: Any, what: str) -> bytes:
    try:
        data: bytes = msgpack.packb(value, use_bin_type=True)
        return data
    except (TypeError, ValueError, OverflowError) as exc:
        raise SerializeError(f"{what}: cannot encode as MessagePack: {exc}") from exc


def _no_ext(code: int, data: bytes) -> Any:
    # Named fields and bin only: an extension type could not reach the other SDK.
    raise ValueError(f"MessagePack extension type {code} is not supported")


def unpack(data: bytes | memoryview, what: str, max_entries: int | None = None) -> Any:
    """Decodes MessagePack from a host. max_entries bounds every map and array
    (plugin_settings.max_collection_entries), checked before anything is built."""
    limits = {} if max_entries is None else {"max_array_len": max_entries, "max_map_len": max_entries}
    try:
        return msgpack.unpackb(data, raw=False, ext_hook=_no_ext, **limits)
    except msgpack.ExtraData:
        raise ParseError(f"{what}: trailing bytes after the MessagePack value") from None
    except ValueError as exc:
        count = (str(exc).split() or [""])[0]
        if max_entries is not None and "exceeds max_" in str(exc) and count.isdigit() and int(count) > max_entries:
            raise InvalidInputError(
                f"{what}: a map or array has {count} entries, over the limit of {max_entries} "
                "(plugin_settings.max_collection_entries)"
            ) from None
        raise ParseError(f"{what}: invalid MessagePack: {exc}") from exc
    except (TypeError, msgpack.UnpackException) as exc:
        raise ParseError(f"{what}: invalid MessagePack: {exc}") from exc
