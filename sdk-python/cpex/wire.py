"""MessagePack encoding shared by the boundary and the host client, and the base of the
generated wire records."""

from __future__ import annotations

from typing import Any, ClassVar

import msgpack
from pydantic import BaseModel, ConfigDict

from cpex.errors import ParseError, SerializeError


class WireRecord(BaseModel):
    """A record that crosses the ABI as a MessagePack map keyed by field name. Optional
    fields are omitted from the wire when empty (None, "", empty list or map)."""

    model_config = ConfigDict(extra="forbid")
    OPTIONAL: ClassVar[frozenset[str]] = frozenset()

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, WireRecord):
                value = value.to_wire()
            elif isinstance(value, list):
                value = [v.to_wire() if isinstance(v, WireRecord) else v for v in value]
            if name in self.OPTIONAL and (value is None or (isinstance(value, (str, bytes, list, dict)) and not value)):
                continue
            out[name] = value
        return out


def pack(value: Any, what: str) -> bytes:
    try:
        data: bytes = msgpack.packb(value, use_bin_type=True)
        return data
    except (TypeError, ValueError, OverflowError) as exc:
        raise SerializeError(f"{what}: cannot encode as MessagePack: {exc}") from exc


def unpack(data: bytes | memoryview, what: str) -> Any:
    try:
        return msgpack.unpackb(data, raw=False)
    except msgpack.ExtraData:
        raise ParseError(f"{what}: trailing bytes after the MessagePack value") from None
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ParseError(f"{what}: invalid MessagePack: {exc}") from exc
