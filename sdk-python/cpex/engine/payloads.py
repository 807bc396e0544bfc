"""The payload registry: what a plugin receives for each payload type, what it may
return as a modified payload, and the wire form the boundary encodes."""

from __future__ import annotations

from typing import Any

from cpex._generated.errors import PAYLOAD_CMF_MESSAGE, PAYLOAD_GENERIC, PAYLOAD_TYPES
from cpex._generated.records import Message, MessagePayload
from cpex.errors import InvalidInputError, ParseError


def decode(payload_type: int, wire: Any) -> Any:
    """The payload as plugins see it: a dict (generic) or a typed Message (CMF)."""
    if payload_type not in PAYLOAD_TYPES:
        known = ", ".join(f"{k} ({v})" for k, v in PAYLOAD_TYPES.items())
        raise InvalidInputError(f"payload_type: unknown payload type {payload_type}; expected one of {known}")
    if not isinstance(wire, dict):
        raise InvalidInputError(f"payload: a {PAYLOAD_TYPES[payload_type]} payload must be a map, got {type(wire).__name__}")
    if payload_type == PAYLOAD_CMF_MESSAGE:
        try:
            payload: MessagePayload = MessagePayload.from_wire(wire, "payload")
        except ParseError as exc:
            raise InvalidInputError(f"not a CMF MessagePayload: {exc}") from None
        return payload.message
    return wire


def accept(payload_type: int, value: Any) -> Any:
    """A plugin's modified payload in the form later plugins get; ValueError if it is
    not a payload of this type."""
    if payload_type == PAYLOAD_GENERIC:
        if not isinstance(value, dict):
            raise ValueError(f"a modified generic payload must be a map, got {type(value).__name__}")
        return value
    if isinstance(value, Message):
        return value
    if isinstance(value, MessagePayload):
        return value.message
    if isinstance(value, dict):
        try:
            return MessagePayload.from_wire(value, "modified payload").message
        except ParseError as exc:
            raise ValueError(str(exc)) from None
    raise ValueError(f"a modified CMF payload must be a Message, got {type(value).__name__}")


def encode(payload_type: int, value: Any) -> Any:
    """The wire form (plain data) of a payload."""
    if payload_type == PAYLOAD_CMF_MESSAGE:
        return {"message": value.to_wire()}
    return value
