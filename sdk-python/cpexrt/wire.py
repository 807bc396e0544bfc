"""MessagePack encoding shared by the boundary and the host client, and the base of the
generated wire records."""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
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
    kind = type(value)
    if kind in _PLAIN:
        return value
    plain = _PLAIN
    # Exact lists and dicts first (the common case), their scalars taken as they are.
    if kind is list:
        return [v if type(v) in plain else to_wire_value(v) for v in value]
    if kind is dict:
        return {k: v if type(v) in plain else to_wire_value(v) for k, v in value.items()}
    if isinstance(value, WireRecord):
        return value.to_wire()
    if isinstance(value, list):
        return [to_wire_value(v) for v in value]
    if isinstance(value, dict):
        return {k: to_wire_value(v) for k, v in value.items()}
    return value


# How each field of a record class goes on the wire, computed once per class: its
# name and 0 (always), 1 (optional: omitted when empty) or 2 (pointer: omitted only
# when absent); and the set of the names.
_PLANS: dict[type, tuple[tuple[tuple[str, int], ...], frozenset[str]]] = {}
_ALWAYS, _OMIT_EMPTY, _OMIT_NONE = 0, 1, 2


def _plan(cls: Any) -> tuple[tuple[tuple[str, int], ...], frozenset[str]]:
    fields = tuple((f.name, _OMIT_NONE if f.optional and f.pointer else _OMIT_EMPTY if f.optional else _ALWAYS) for f in cls.WIRE)
    plan = _PLANS[cls] = (fields, frozenset(name for name, _ in fields))
    return plan


def _wire_map(fields: tuple[tuple[str, int], ...], get: Callable[[str], Any]) -> dict[str, Any]:
    """The wire map of the fields, their values read by get (None: absent)."""
    out: dict[str, Any] = {}
    plain = _PLAIN
    for name, how in fields:
        value = get(name)
        if value is None:
            if how:
                continue
            out[name] = None
            continue
        kind = type(value)
        if how == _OMIT_EMPTY and (value is False or ((kind is int or kind is float or kind in _SIZED) and not value)):
            continue  # empty (_is_empty), inline
        out[name] = value if kind in plain else to_wire_value(value)
    return out


class WireRecord(BaseModel):
    """A record that crosses the ABI as a MessagePack map keyed by field name. Known
    fields are emitted in schema order, then unknown fields as they were received, so
    a decode / encode round trip is byte-identical for canonical input."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, defer_build=True)
    WIRE: ClassVar[tuple[WireField, ...]] = ()

    def to_wire(self) -> dict[str, Any]:
        cls = type(self)
        plan = _PLANS.get(cls) or _plan(cls)
        d = self.__dict__
        # The fields' values straight from the instance dict (a validated record has
        # them all); getattr's, an error for a missing one, otherwise.
        get = d.get if d.keys() >= plan[1] else {name: getattr(self, name) for name, _ in plan[0]}.get
        out = _wire_map(plan[0], get)
        extra = self.__pydantic_extra__
        if extra:
            out.update(extra)
        return out

    @classmethod
    def wire_from(cls, **values: Any) -> dict[str, Any]:
        """The wire map of a record built from trusted values without constructing (and
        validating) the model: the hot path of the boundary."""
        return _wire_map((_PLANS.get(cls) or _plan(cls))[0], values.get)

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


# -- private copies of validated records ---------------------------------------------
#
# clone(value) is a deep copy of a value a decode produced (records, and plain data in
# maps and lists), with no validation: what a validated record holds is already of its
# fields' types. The copy equals the original in everything a decode of the same bytes
# would give: field values, fields set, unknown fields (model_extra), and any other
# entry of the instance dict (a content part's raw map). It costs about half a decode
# (MessagePack unpack + pydantic validation) of the same value; the engine hands one to
# each plugin of a CMF payload (payloads.Snapshot.copy).

_new = object.__new__
_set_dict = BaseModel.__dict__["__dict__"].__set__
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__
_CLONERS: dict[type, Callable[[Any], Any]] = {}


def clone(value: Any) -> Any:
    """A deep copy of decoded data: wire records whose values are such data, dicts,
    lists (tuples become lists, as a MessagePack round trip makes them) and immutable
    scalars. TypeError for anything else."""
    kind = type(value)
    if kind is dict:
        return {k: v if type(v) in _PLAIN else clone(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [v if type(v) in _PLAIN else clone(v) for v in value]
    if kind in _PLAIN:
        return value
    cloner = _CLONERS.get(kind)
    if cloner is None:
        if not isinstance(value, WireRecord):
            raise TypeError(f"cannot clone a {kind.__name__}")
        cloner = _CLONERS[kind] = _cloner(kind)
    return cloner(value)


def _immutable(annotation: Any) -> bool:
    """Whether a field of this annotation only ever holds immutable scalars (an
    annotation not resolved yet, a ForwardRef, is not: its values are copied deep)."""
    if annotation in _PLAIN:
        return True
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    return bool(args) and origin in (typing.Union, types.UnionType) and all(a in _PLAIN for a in args)


def _cloner(cls: type[WireRecord]) -> Callable[[Any], Any]:
    """The copy function of one model class, made once per class: the instance dict
    copied at once, then only the fields that may hold something mutable copied deep."""
    fields = cls.__pydantic_fields__
    mutable = tuple(name for name, info in fields.items() if not _immutable(info.annotation))
    count = len(fields)
    plain = _PLAIN
    cloners = _CLONERS
    new, set_dict, set_fields_set, set_extra, set_private = _new, _set_dict, _set_fields_set, _set_extra, _set_private

    # The function's source, with the mutable fields spelled out (no loop over their
    # names, one lookup each): made once per class.
    lines = ["def clone_record(o):", "    d = o.__dict__.copy()"]
    for name in mutable:
        lines += [
            f"    v = d.get({name!r})",
            "    kind = type(v)",
            "    if kind not in plain:",
            # A list of records and a record are the common cases: their records' copy
            # functions are called directly (clone() makes one the first time).
            "        if kind is list:",
            f"            d[{name!r}] = [x if type(x) in plain else (cloners.get(type(x)) or clone)(x) for x in v]",
            "        else:",
            f"            d[{name!r}] = (cloners.get(kind) or clone)(v)",
        ]
    lines += [
        "    if len(d) != count:",
        # Entries other than the fields (a content part's raw map), copied deep.
        "        for key, v in d.items():",
        "            if key not in fields and type(v) not in plain:",
        "                d[key] = clone(v)",
        "    n = new(cls)",
        "    set_dict(n, d)",
        "    set_fields_set(n, o.__pydantic_fields_set__.copy())",
        "    e = o.__pydantic_extra__",
        "    set_extra(n, clone(e) if e else e if e is None else {})",
        "    p = o.__pydantic_private__",
        "    set_private(n, clone(p) if p else p)",
        "    return n",
    ]
    scope: dict[str, Any] = {
        "plain": plain,
        "cloners": cloners,
        "clone": clone,
        "count": count,
        "fields": fields,
        "cls": cls,
        "new": new,
        "set_dict": set_dict,
        "set_fields_set": set_fields_set,
        "set_extra": set_extra,
        "set_private": set_private,
    }
    exec("\n".join(lines), scope)  # our own source, from the class's field names
    clone_record: Callable[[Any], Any] = scope["clone_record"]
    return clone_record


# Packers to reuse (msgpack.packb builds one per call): each pack takes one from the
# list and gives it back, so threads and a pack re-entered from a value's own code
# never share one. A packer resets its buffer after a failed pack.
_PACKERS: list[Any] = []


def pack(value: Any, what: str) -> bytes:
    packers = _PACKERS
    try:
        packer = packers.pop()
    except IndexError:
        packer = msgpack.Packer(use_bin_type=True)
    try:
        data: bytes = packer.pack(value)
        return data
    except (TypeError, ValueError, OverflowError) as exc:
        raise SerializeError(f"{what}: cannot encode as MessagePack: {exc}") from exc
    finally:
        packers.append(packer)


def _no_ext(code: int, data: bytes) -> Any:
    # Named fields and bin only: an extension type could not reach the other SDK.
    raise ValueError(f"MessagePack extension type {code} is not supported")


def unpack(data: bytes | memoryview, what: str, max_entries: int | None = None) -> Any:
    """Decodes MessagePack from a host. max_entries bounds every map and array
    (plugin_settings.max_collection_entries), checked before anything is built."""
    try:
        if max_entries is None:
            return msgpack.unpackb(data, raw=False, ext_hook=_no_ext)
        # The limits spelled out, not a map spread (a call on every invoke's path).
        return msgpack.unpackb(data, raw=False, ext_hook=_no_ext, max_array_len=max_entries, max_map_len=max_entries)
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
