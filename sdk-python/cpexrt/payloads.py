"""The payload registry: what a plugin receives for each payload type, what it may
return as a modified payload, and the canonical form every plugin's private copy is
made from.

Isolation: no plugin ever holds an object another plugin or the host sees. Each
version of an invoke's payload and extensions is kept as a `Snapshot`, its canonical
MessagePack encoding; every plugin gets its own copy decoded from it (a CMF message:
cloned from the snapshot's validated value, which no plugin holds; under libcpex a
generic payload too, by a C copy of plain data), so an edit made
in place (by any plugin, in any phase) reaches nobody. A modification a plugin
returns is checked here, when it returns: encodable, of the payload type's shape,
within the size limit; the check yields the next snapshot, so the accepted value is
encoded once and never again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack  # type: ignore[import-untyped, unused-ignore]  # untyped: the package passes mypy wherever it is installed

from cpexrt import wire as wire_module
from cpexrt._generated import records  # its classes read when used: a generic payload's process makes none of them
from cpexrt._generated.errors import PAYLOAD_CMF_MESSAGE, PAYLOAD_GENERIC, PAYLOAD_TYPES
from cpexrt.errors import InvalidInputError, ParseError
from cpexrt.wire import RecordError, WireRecord, clone

if TYPE_CHECKING:
    from cpexrt._generated.records import Message, MessagePayload

_NOTHING: Any = object()
_EMPTY_MAP = b"\x80"  # MessagePack's empty map
_ENCODE_ERRORS = (TypeError, ValueError, OverflowError)


class Refusal(Exception):
    """A plugin's result that cannot be taken: code (as in PluginError.code) and why."""

    def __init__(self, code: str, why: str) -> None:
        super().__init__(why)
        self.code = code
        self.why = why


@dataclass(frozen=True)
class Limits:
    """plugin_settings' size limits, applied to what hosts send and plugins return."""

    max_payload_bytes: int
    max_extensions_bytes: int
    max_collection_entries: int


# Packers to reuse (msgpack.packb builds one per call, half its cost for a small map):
# each pack takes one from the list and gives it back, so threads and a pack re-entered
# from a value's own code (a dict subclass's items()) never share one. A packer resets
# its buffer after a failed pack.
_PACKERS: list[Any] = []


def _pack(value: Any) -> bytes:
    fast = wire_module._c_pack  # the boundary's C packer (wire.install_pack): msgpack's bytes, None for the rest
    if fast is not None:
        made = fast(value)
        if made is not None:
            return made
    packers = _PACKERS
    try:
        packer = packers.pop()
    except IndexError:
        packer = msgpack.Packer(use_bin_type=True)
    try:
        data: bytes = packer.pack(value)
    finally:
        packers.append(packer)
    return data


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False)


class Snapshot:
    """One version of a payload or of the extensions: canonical bytes, and the value
    decoded from them. copy() hands out a private value per plugin. Without a clone
    function, the first caller may get the decoded value itself when nobody else has
    seen it, and later callers decode anew. With one (a CMF message: a decode
    validates, a clone of the validated value costs about half as much), the decoded
    value is kept as the source of every caller's clone, and only the caller that
    says it is the snapshot's last may have it. A snapshot made without its bytes
    (wire None) holds a value known to be plain data that nobody else holds: it is
    encoded when first needed, before that value is handed out. The extensions'
    snapshots take the plain copy as their clone when the boundary installed it (C,
    about a fifth of a decode): their kept value then serves the engine's reading
    (peek) and every plugin's copy, with no decode."""

    __slots__ = ("_wire", "_decode", "_spare", "_seen", "_clone", "_derive")

    def __init__(
        self,
        wire: bytes | None,
        decode: Callable[[bytes], Any],
        spare: Any = _NOTHING,
        clone: Callable[[Any], Any] | None = None,
    ) -> None:
        if wire is None and spare is _NOTHING:
            raise ValueError("a snapshot without its bytes needs its value")
        self._wire = wire
        self._decode = decode
        self._spare = spare
        self._seen: Any = _NOTHING
        self._clone = clone
        # fresh() without the bytes: (bytes, change, arg) building the same value anew,
        # change(arg, bytes decoded) (derived(): a value built from decoded bytes by a
        # known change).
        self._derive: tuple[bytes, Callable[[Any, dict[str, Any]], None], Any] | None = None

    def peek(self) -> Any:
        """The value for the engine's own reading (comparing a plugin's writes with it,
        merging them over it): never handed to a plugin nor changed (on the invoking
        thread only). With a clone, the source of the clones (which no caller holds
        until the last takes it, and copy(last) then keeps it from); else decoded
        once."""
        seen = self._seen
        if seen is _NOTHING:
            spare = self._spare
            if self._clone is not None and spare is not _NOTHING:
                seen = self._seen = spare
            else:
                seen = self._seen = self._decode(self.wire)
        return seen

    @property
    def wire(self) -> bytes:
        wire = self._wire
        if wire is None:
            wire = self._wire = _pack(self._spare)
        return wire

    def copy(self, last: bool = False) -> Any:
        """A value nobody else holds (on the invoking thread only). last: no caller
        asks this snapshot for a copy after this one (fresh() aside)."""
        wire = self._wire
        if wire is None:
            wire = self.wire  # encoded from the value before it is handed out
        spare = self._spare
        clone = self._clone
        if clone is None or last:
            if spare is not _NOTHING:
                self._spare = _NOTHING
                if spare is not self._seen:
                    return spare
            return self._decode(wire)  # (the value peek() reads is never handed out)
        if spare is _NOTHING:
            spare = self._spare = self._decode(wire)  # the source of the clones; handed to no one but the last
        try:
            return clone(spare)
        except TypeError:
            return self._decode(wire)  # not expected of decoded data; a decode is always a right copy

    def fresh(self) -> Any:
        """A value nobody else holds, decoded anew (on the invoking thread; elsewhere
        remake(*recipe()))."""
        derive = self._derive
        if derive is not None:
            wire, change, arg = derive
            fresh = _unpack(wire)
            change(arg, fresh)
            return fresh
        return self._decode(self.wire)

    def recipe(self) -> Recipe:
        """What fresh() builds its value from, for readers on other threads after the
        invoke returned (fire-and-forget followers), which keep these instead of the
        snapshot (its decoded value is not kept alive for them): remake(*recipe())
        is fresh(). The value is encoded now unless the bytes or a derivation stand
        for it, before anyone can change it in place."""
        derive = self._derive
        if derive is not None:
            return derive[0], _unpack, derive[1], derive[2]
        return self.wire, self._decode, None, None


# (bytes, decode, change, arg): see Snapshot.recipe and remake.
Recipe = tuple[bytes, Callable[[bytes], Any], Callable[[Any, Any], None] | None, Any]


def remake(wire: bytes, decode: Callable[[bytes], Any], change: Callable[[Any, Any], None] | None, arg: Any) -> Any:
    """A snapshot's fresh() value from its recipe(), on any thread."""
    value = decode(wire)
    if change is not None:
        change(arg, value)
    return value


def derived(value: dict[str, Any], wire: bytes, change: Callable[[Any, dict[str, Any]], None], arg: Any) -> Snapshot:
    """The snapshot of value, a plain map that nobody else holds, built as change(arg,
    map decoded from wire): encoded only if something needs its bytes; fresh() decodes
    wire and applies the change again."""
    snapshot = Snapshot(None, _unpack, value, _plain_clone)
    snapshot._derive = (wire, change, arg)
    return snapshot


class Encoded:
    """The payload as a handler that runs in another process receives it: the
    snapshot's canonical bytes and the payload type, with no decoded copy (the handler
    only sends the bytes on; the process that runs the plugin decodes its own)."""

    __slots__ = ("wire", "payload_type")

    def __init__(self, wire: bytes, payload_type: int) -> None:
        self.wire = wire
        self.payload_type = payload_type


def _decode_generic(wire: bytes) -> Any:
    return _unpack(wire)


def _decode_cmf(wire: bytes) -> Any:
    data = _unpack(wire)
    if type(data) is dict:
        # As model_validate has it, without the MessagePayload record (_message_of).
        message = data.get("message")
        hook = data.get("hook")
        if type(message) is dict and (hook is None or type(hook) is str):
            parse = _parse
            if parse is not None and (made := parse(records.Message, message)) is not None:
                return made
            try:
                return records.Message._parse(message)
            except RecordError as exc:
                exc.loc.insert(0, "message")
                exc.record = "MessagePayload"
                raise
    payload: MessagePayload = records.MessagePayload.model_validate(data)
    return payload.message


# How a CMF message map is parsed when it can be on a fast path: None (the generated
# _parse) unless the boundary installed its C parse (ffi/natives.c parse: the record
# _parse makes, from a map whose values are all of their exact types; None for any
# other map, which _parse then refuses naming the field, or takes as it would).
_parse: Callable[[type[Any], dict[str, Any]], Any] | None = None


def install_parse(fn: Callable[[type[Any], dict[str, Any]], Any] | None) -> None:
    """Makes fn (natives.parse's signature and results) the first parse of every CMF
    message decoded from now on; None: the generated _parse alone."""
    global _parse
    _parse = fn


def _decoder(payload_type: int) -> Callable[[bytes], Any]:
    return _decode_cmf if payload_type == PAYLOAD_CMF_MESSAGE else _decode_generic


# How a CMF message is cloned: wire.clone, or the same copy made in C (the boundary's
# clone builtin, ffi/natives.c) once the boundary installed it (install_clone).
_cmf_clone: Callable[[Any], Any] = clone


def install_clone(fn: Callable[[Any], Any]) -> None:
    """Makes fn (a function that copies what wire.clone copies, as it does, TypeError
    for the rest) the clone of every CMF snapshot made from now on."""
    global _cmf_clone
    _cmf_clone = fn


# How a generic payload (plain data) is copied when not by a decode: None (each copy
# decoded) unless the boundary installed its C copy (ffi/natives.c copy_plain, about
# half a decode's cost; install_plain_copy). The engine called directly decodes.
_plain_clone: Callable[[Any], Any] | None = None


def install_plain_copy(fn: Callable[[Any], Any] | None) -> None:
    """Makes fn (a function returning a private copy of plain data equal to what a
    MessagePack round trip decodes, TypeError for anything else) the copy of every
    generic payload snapshot made from now on; None: decode each copy."""
    global _plain_clone
    _plain_clone = fn


def _cloner(payload_type: int) -> Callable[[Any], Any] | None:
    """How a snapshot copies its decoded value for a plugin, when not by a decode: a
    CMF message is cloned (wire.clone: half a decode's cost, no validation again), a
    generic payload by the C plain copy when installed."""
    return _cmf_clone if payload_type == PAYLOAD_CMF_MESSAGE else _plain_clone


def check_type(payload_type: int) -> None:
    if payload_type not in PAYLOAD_TYPES:
        known = ", ".join(f"{k} ({v})" for k, v in PAYLOAD_TYPES.items())
        raise InvalidInputError(f"payload_type: unknown payload type {payload_type}; expected one of {known}")


def decode(payload_type: int, wire: Any) -> Any:
    """The payload as plugins see it: a dict (generic) or a typed Message (CMF)."""
    if payload_type not in PAYLOAD_TYPES:
        check_type(payload_type)
    if not isinstance(wire, dict):
        raise InvalidInputError(f"payload: a {PAYLOAD_TYPES[payload_type]} payload must be a map, got {type(wire).__name__}")
    if payload_type == PAYLOAD_CMF_MESSAGE:
        try:
            return _message_of(wire, "payload")
        except ParseError as exc:
            raise InvalidInputError(f"not a CMF MessagePayload: {exc}") from None
    return wire


def _message_of(wire: dict[str, Any], what: str) -> Message:
    """The Message of a MessagePayload map, checked as MessagePayload.from_wire(wire,
    what) checks it (ParseError naming the field), without making the MessagePayload
    record that only the message is taken from: when the message is a map and the hook
    absent or a string (the record's only other field; unknown fields are the
    record's, dropped with it), the message is parsed alone; anything else goes
    through the whole record, which refuses it or takes it as it would."""
    message = wire.get("message")
    if type(message) is dict:
        hook = wire.get("hook")
        if hook is None or type(hook) is str:
            parse = _parse
            if parse is not None and (fast := parse(records.Message, message)) is not None:
                taken: Message = fast
                return taken
            try:
                parsed: Message = records.Message._parse(message)
            except RecordError as exc:
                raise ParseError(f"{what}.message{exc.where()}: {exc.msg}") from None
            return parsed
    payload: MessagePayload = records.MessagePayload.from_wire(wire, what)
    return payload.message


def encode(payload_type: int, value: Any) -> Any:
    """The wire form (plain data) of a payload."""
    if payload_type == PAYLOAD_CMF_MESSAGE:
        return {"message": value.to_wire()}
    return value


def host_snapshot(payload_type: int, value: Any, wire: bytes | None, owned: bool) -> Snapshot:
    """The snapshot of the payload a host sent, already decoded (decode()). wire: its
    bytes when the host sent bytes; owned: nobody but the engine holds value."""
    cmf = payload_type == PAYLOAD_CMF_MESSAGE  # _decoder's and _cloner's choice, inline
    decoder = _decode_cmf if cmf else _decode_generic
    if wire is None:
        try:
            wire = _pack(encode(payload_type, value))
        except _ENCODE_ERRORS as exc:
            raise InvalidInputError(f"payload: cannot be encoded as MessagePack: {exc}") from None
        if not owned:
            # Decoded now rather than by the first plugin's copy (the same one decode):
            # what encodes but does not decode (a map key that is not a string) is the
            # caller's error here, never a failure inside some plugin's step.
            try:
                return Snapshot(wire, decoder, decoder(wire), _cmf_clone if cmf else _plain_clone)
            except (ValueError, TypeError, msgpack.UnpackException) as exc:
                raise InvalidInputError(f"payload: {exc}; a payload's map keys must be strings") from None
    return Snapshot(wire, decoder, value if owned else _NOTHING, _cmf_clone if cmf else _plain_clone)


def held_snapshot(payload_type: int, value: Any) -> Snapshot | None:
    """The snapshot of a CMF payload map its caller keeps (a Python caller that sent no
    bytes), taken as a host's bytes are: the map's own MessagePack, and the message
    decoded (validated) from it, once (decode() then host_snapshot() validate the map,
    encode the message and validate that again). None for any other payload, or when
    the map does not encode or decode as it is: the caller then takes decode() and
    host_snapshot(), which refuse it naming the problem, or take what a MessagePack
    round trip would not (a record object inside the map)."""
    if payload_type != PAYLOAD_CMF_MESSAGE or type(value) is not dict:
        return None
    try:
        wire = _pack(value)
        spare = _decode_cmf(wire)
    except Exception:  # noqa: BLE001 - not taken here; decode() names what is wrong
        return None
    return Snapshot(wire, _decode_cmf, spare, _cmf_clone)


def extensions_snapshot(value: dict[str, Any], wire: bytes | None, owned: bool, plain: bool = False) -> Snapshot:
    """The snapshot of the call's extensions (a map, possibly empty); wire and owned
    as for host_snapshot. plain: value is plain data (decoded from MessagePack, or
    built from such): when owned, it is encoded only if something needs its bytes."""
    if wire is None and plain and owned and value:
        return Snapshot(None, _unpack, value, _plain_clone)
    if wire is None:
        try:
            wire = _pack(value) if value else _EMPTY_MAP  # most calls carry none: no encode for them
        except _ENCODE_ERRORS as exc:
            raise InvalidInputError(f"extensions: cannot be encoded as MessagePack: {exc}") from None
        if value and not plain:
            # Not known to be plain data: decoded now (the first reader's copy, unless
            # the engine owns the value), so what encodes but does not decode (a map key
            # that is not a string) is the caller's error, not a failure of whichever
            # plugin reads the extensions first, which its on_error could let through.
            try:
                decoded = _unpack(wire)
            except (ValueError, TypeError, msgpack.UnpackException) as exc:
                raise InvalidInputError(f"extensions: {exc}; the extensions' map keys must be strings") from None
            return Snapshot(wire, _unpack, value if owned else decoded, _plain_clone)
    return Snapshot(wire, _unpack, value if owned else _NOTHING, _plain_clone)


def accept(payload_type: int, value: Any, limits: Limits) -> Snapshot:
    """A plugin's modified payload, checked: Refusal when it is not a payload of this
    type, cannot be encoded, or is larger than the limit. The snapshot's spare value
    is the canonical one (a dict with string keys; a validated Message)."""
    if payload_type == PAYLOAD_GENERIC:
        if not isinstance(value, dict):
            raise Refusal(
                "modified_payload_invalid",
                f"returned a modified payload of type {type(value).__name__}; a generic payload must be a map",
            )
        wire = _encode(value, "modified_payload")
    else:
        message = _as_message(value)
        try:
            wire_value = encode(payload_type, message)
        except Exception as exc:  # noqa: BLE001 - a model built without validation may hold anything
            raise Refusal(
                "modified_payload_unencodable", f"returned a modified payload that cannot be encoded: {type(exc).__name__}: {exc}"
            ) from None
        wire = _encode(wire_value, "modified_payload")
    if len(wire) > limits.max_payload_bytes:
        raise Refusal(
            "modified_payload_too_large",
            f"returned a modified payload of {len(wire)} bytes; "
            f"the limit is {limits.max_payload_bytes} (plugin_settings.max_payload_bytes)",
        )
    try:
        canonical = _checked_decode(wire, limits, "modified payload")
        if payload_type == PAYLOAD_CMF_MESSAGE:
            canonical = records.MessagePayload.from_wire(canonical, "modified payload").message
    except ParseError as exc:
        raise Refusal("modified_payload_invalid", f"returned an invalid modified payload: {exc}") from None
    return Snapshot(wire, _decoder(payload_type), canonical, _cloner(payload_type))


def _as_message(value: Any) -> Message:
    if isinstance(value, records.Message):
        return value
    if isinstance(value, records.MessagePayload):
        return value.message
    if isinstance(value, dict):
        try:
            payload: MessagePayload = records.MessagePayload.from_wire(value, "modified payload")
        except ParseError as exc:
            raise Refusal("modified_payload_invalid", f"returned an invalid modified payload: {exc}") from None
        return payload.message
    raise Refusal(
        "modified_payload_invalid", f"returned a modified payload of type {type(value).__name__}; a CMF payload must be a Message"
    )


def accept_extensions(merged: dict[str, Any], changed: set[str], limits: Limits) -> Snapshot:
    """The call's extensions after a plugin's accepted writes, checked: encodable,
    within the limit, and every changed slot of its record's shape."""
    wire = _encode(merged, "modified_extensions")
    if len(wire) > limits.max_extensions_bytes:
        raise Refusal(
            "modified_extensions_too_large",
            f"returned extensions of {len(wire)} bytes; "
            f"the limit is {limits.max_extensions_bytes} (plugin_settings.max_extensions_bytes)",
        )
    try:
        canonical = _private_value(merged, wire, limits, "modified extensions")
        if changed:
            _check_slots(canonical, changed)
    except ParseError as exc:
        raise Refusal("modified_extensions_invalid", f"returned invalid extensions: {exc}") from None
    return Snapshot(wire, _unpack, canonical, _plain_clone)


# Each Extensions slot's own record class (a slot checked alone costs a fraction of
# the whole record's check, which reads every slot); None for a slot whose field is
# not a record (the Extensions record checks it, alone).
_SLOT_RECORDS: dict[str, type[WireRecord] | None] = {}


def _slot_records() -> dict[str, type[WireRecord] | None]:
    for name, info in records.Extensions.model_fields.items():
        kind = getattr(records, info.annotation.removesuffix(" | None"), None)
        _SLOT_RECORDS[name] = kind if isinstance(kind, type) and issubclass(kind, WireRecord) else None
    return _SLOT_RECORDS


def _check_slots(slots: dict[str, Any], names: Iterable[str] | None = None) -> None:
    """ParseError naming the field when a slot is not of its record's shape, checked as
    the Extensions record checks it (a slot it does not name is kept as it is, as the
    record keeps an unknown field). names: the slots of the map to check (those a
    plugin changed; None: all)."""
    kinds = _SLOT_RECORDS or _slot_records()
    fast = _parse
    for name in slots if names is None else names:
        value = slots.get(name)
        if value is None or name not in kinds:
            continue
        kind = kinds[name]
        try:
            if kind is None:
                records.Extensions._parse({name: value})
            elif type(value) is dict:
                # The C parse takes a slot of exact types all the way down (the record
                # _parse makes); anything else (None) is _parse's to refuse, naming the field.
                if fast is None or fast(kind, value) is None:
                    kind._parse(value)
            else:
                kind._check(value)
        except RecordError as exc:
            where = exc.where() if kind is None else f".{name}{exc.where()}"
            raise ParseError(f"extensions{where}: {exc.msg}") from None


def plain_copy(value: Any, code: str, what: str) -> Any:
    """A private copy of plain data a plugin returned (metadata, violation details);
    Refusal when it cannot be encoded."""
    return _unpack(_encode(value, code, what))


def _encode(value: Any, code: str, what: str | None = None) -> bytes:
    try:
        return _pack(value)
    except _ENCODE_ERRORS as exc:
        what = what or code.replace("_", " ")
        raise Refusal(f"{code}_unencodable", f"returned a {what} that cannot be encoded as MessagePack: {exc}") from None


# The boundary's C checker of MessagePack bytes (ffi/natives.c plain_maps: bit 1 set when
# the first is one map, string or bytes keys, no extension type, no map or array over
# the entry limit), installed with the C plain copy (install_plain_check); None: the
# engine called directly, which decodes.
_plain_check: Callable[[bytes, None, int], int] | None = None


def install_plain_check(fn: Callable[[bytes, None, int], int] | None) -> None:
    """Makes fn (plain_maps' signature and bits) the check by which _private_value
    takes a C copy of an encoded map instead of a decode of its bytes; None: decode."""
    global _plain_check
    _plain_check = fn


def _private_value(value: dict[str, Any], wire: bytes, limits: Limits, what: str) -> Any:
    """A value equal to what _checked_decode(wire) gives (wire: value's own encoding,
    just made), shared with nobody: under libcpex, when the C checker passes the bytes
    (a decode would then succeed), the C plain copy of value (about a fifth of a
    decode; equal to a MessagePack round trip of the exact plain types it takes, a
    TypeError for anything else, which is decoded); else the decode, with its
    checks."""
    check, copy = _plain_check, _plain_clone
    if check is not None and copy is not None and check(wire, None, limits.max_collection_entries) & 1:
        try:
            return copy(value)
        except TypeError:
            pass  # a type it does not copy (a str subclass, a tuple): decoded
    return _checked_decode(wire, limits, what)


def _checked_decode(wire: bytes, limits: Limits, what: str) -> Any:
    """Decodes canonical bytes as the boundary decodes a host's: string map keys only,
    collections within the entry limit."""
    n = limits.max_collection_entries
    try:
        return msgpack.unpackb(wire, raw=False, max_array_len=n, max_map_len=n)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ParseError(f"{what}: {exc}") from None
