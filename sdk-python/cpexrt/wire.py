"""MessagePack encoding shared by the boundary and the host client, and the base of the
generated wire records."""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import msgpack  # type: ignore[import-untyped, unused-ignore]  # untyped: the package passes mypy wherever it is installed

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


# -- the records' base ---------------------------------------------------------------

_MISSING: Any = object()  # a required field's value when the map has none
_new = object.__new__


class RecordError(ValueError):
    """A value that does not fit a wire record: loc is where (field names, list indexes,
    map keys, outermost first), msg what was expected and what came; record names the
    record validated, once known."""

    def __init__(self, msg: str, loc: list[str | int] | None = None, record: str = "") -> None:
        super().__init__(msg)
        self.msg = msg
        self.loc: list[str | int] = loc if loc is not None else []
        self.record = record

    def where(self) -> str:
        return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in self.loc)

    def __str__(self) -> str:
        return f"{self.record}{self.where()}: {self.msg}"


class FieldInfo:
    """One field of a record class, as model_fields lists it: its Python annotation
    (the text the generated class declares), its default, and whether it is required."""

    __slots__ = ("annotation", "default", "required")

    def __init__(self, annotation: str, default: Any = None, required: bool = False) -> None:
        self.annotation = annotation
        self.default = default
        self.required = required

    def is_required(self) -> bool:
        return self.required

    def __repr__(self) -> str:
        tail = "required=True" if self.required else f"default={self.default!r}"
        return f"FieldInfo(annotation={self.annotation}, {tail})"


def _shown(value: Any) -> str:
    """A value as an error message shows it: a scalar by its repr, the rest by type."""
    if type(value) in _PLAIN:
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    return f"a {type(value).__name__}"


def _refuse(value: Any, expected: str) -> RecordError:
    if value is _MISSING:
        return RecordError(f"required, missing (expected {expected})")
    return RecordError(f"expected {expected}, got {_shown(value)}")


# The checks of the generated records' fields: each takes a value that is not already
# of the exact expected type (the generated code tests that inline) and returns it
# converted, or raises RecordError (loc empty: the caller adds where). What they
# convert: a subclass of the type to the type itself, an int to a float, an integral
# float to an int, a bytearray to bytes, a tuple to a list. Nothing else (no string
# to number, number to string, bool to number or number to bool).


def check_string(value: Any) -> str:
    if isinstance(value, str):
        return str.__str__(value)
    raise _refuse(value, "a string")


def check_bool(value: Any) -> bool:
    if value is True or value is False:
        return value
    raise _refuse(value, "a boolean")


_INT_RANGES: dict[str, tuple[int, int]] = {
    "int": (-(2**63), 2**63 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint8": (0, 2**8 - 1),
    "uint32": (0, 2**32 - 1),
    "uint64": (0, 2**64 - 1),
}


def check_int(value: Any, kind: str = "int64") -> int:
    lo, hi = _INT_RANGES[kind]
    if isinstance(value, int) and not isinstance(value, bool):
        number = int(value)
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    else:
        raise _refuse(value, f"an integer ({kind})")
    if not lo <= number <= hi:
        raise RecordError(f"expected an integer in {lo}..{hi} ({kind}), got {number}")
    return number


def check_float(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise _refuse(value, "a number")


def check_bytes(value: Any) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise _refuse(value, "bytes")


def check_any(value: Any) -> Any:
    if value is _MISSING:
        raise _refuse(value, "a value")
    return value


def _at(where: str | int, error: RecordError) -> RecordError:
    error.loc.insert(0, where)
    return error


# The one-type sets the container checks test their items' types against (the
# superset test walks the items without building a set of their types).
_ONLY_STR, _ONLY_BOOL, _ONLY_FLOAT, _ONLY_BYTES = (frozenset({t}) for t in (str, bool, float, bytes))
_ONLY: dict[type, frozenset[type]] = {str: _ONLY_STR, bool: _ONLY_BOOL, float: _ONLY_FLOAT, bytes: _ONLY_BYTES}


def check_list(value: Any, item: Callable[[Any], Any] | None = None, exact: type | None = None) -> list[Any]:
    """A copy of a list (or tuple), each item checked by item unless it is of the exact
    type (None: items of any value)."""
    if type(value) is not list and not isinstance(value, (list, tuple)):
        raise _refuse(value, "a list")
    if item is None or (exact is not None and (_ONLY.get(exact) or frozenset({exact})).issuperset(map(type, value))):
        return list(value)
    out = []
    for i, x in enumerate(value):
        if type(x) is exact:
            out.append(x)
            continue
        try:
            out.append(item(x))
        except RecordError as exc:
            raise _at(i, exc) from None
    return out


def check_map(value: Any, item: Callable[[Any], Any] | None = None, exact: type | None = None) -> dict[str, Any]:
    """A copy of a map with string keys, each value checked by item unless it is of the
    exact type (None: values of any value)."""
    if type(value) is not dict and not isinstance(value, dict):
        raise _refuse(value, "a map")
    if not _ONLY_STR.issuperset(map(type, value)):
        for key in value:
            if type(key) is not str:
                raise RecordError(f"expected a map with string keys, got the key {_shown(key)}")
    if item is None or (exact is not None and (_ONLY.get(exact) or frozenset({exact})).issuperset(map(type, value.values()))):
        return dict(value)
    out = {}
    for key, x in value.items():
        if type(x) is exact:
            out[key] = x
            continue
        try:
            out[key] = item(x)
        except RecordError as exc:
            raise _at(key, exc) from None
    return out


def check_records(value: Any, cls: Any) -> list[Any]:
    """A copy of a list (or tuple) of records of cls: each a record of it as it is, a
    map checked (the common case, called directly), RecordError naming the index."""
    if type(value) is not list and not isinstance(value, (list, tuple)):
        raise _refuse(value, "a list")
    parse = cls._parse
    out = []
    for i, x in enumerate(value):
        try:
            out.append(parse(x) if type(x) is dict else cls._check(x))
        except RecordError as exc:
            raise _at(i, exc) from None
    return out


def _dump(value: Any, json: bool, exclude_unset: bool, exclude_none: bool) -> Any:
    kind = type(value)
    if kind in _PLAIN:
        return value.decode() if json and kind is bytes else value
    if isinstance(value, WireRecord):
        return value.model_dump(mode="json" if json else "python", exclude_unset=exclude_unset, exclude_none=exclude_none)
    if isinstance(value, (list, tuple)):
        return [_dump(v, json, exclude_unset, exclude_none) for v in value]
    if isinstance(value, dict):
        return {k: _dump(v, json, exclude_unset, exclude_none) for k, v in value.items()}
    if json and isinstance(value, (bytes, bytearray)):
        return bytes(value).decode()
    return value


@typing.dataclass_transform(kw_only_default=True, field_specifiers=())
class WireRecord:
    """A record that crosses the ABI as a MessagePack map keyed by field name. Known
    fields are emitted in schema order, then unknown fields as they were received, so
    a decode / encode round trip is byte-identical for canonical input.

    A plain class (no pydantic): the field values live in the instance dict; the names
    of the fields set (given to the constructor, present in the decoded map, or
    assigned since) and the unknown fields (None when there are none) in two slots.
    Each generated class has a `_parse(data)` that checks a map's fields and makes
    the record, and `_clone()`. The API is pydantic's, by the same names, so plugin
    code written against the pydantic records keeps working: keyword constructor,
    model_validate, model_fields, model_fields_set, model_extra, model_dump,
    model_copy; errors are RecordError (a ValueError) naming Record.field."""

    __slots__ = ("__dict__", "_fields_set", "_extra")
    WIRE: ClassVar[tuple[WireField, ...]] = ()
    model_fields: ClassVar[dict[str, FieldInfo]] = {}
    _NAMES: ClassVar[frozenset[str]] = frozenset()
    _fields_set: set[str]
    _extra: dict[str, Any] | None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._NAMES = frozenset(cls.model_fields)

    def __init__(self, /, **data: Any) -> None:
        try:
            self._parse(data, self)
        except RecordError as exc:
            exc.record = exc.record or type(self).__name__
            raise

    @classmethod
    def _parse(cls, data: dict[str, Any], obj: Any = None) -> Any:
        """The record of a map (obj, when given, is made it), checked (RecordError
        without the record's name): each generated class's own, straight-line."""
        raise TypeError("WireRecord is the base of the generated records, not a record")

    @classmethod
    def _check(cls, value: Any) -> Any:
        """A field's value of this record's type: a record of it as it is, a map checked."""
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            return cls._parse(value)
        raise _refuse(value, f"a {cls.__name__} (a map)")

    @classmethod
    def model_validate(cls, data: Any) -> Self:
        """A record of a map (checked), or the record given as it is."""
        try:
            made: Self = cls._parse(data) if type(data) is dict else cls._check(data)
        except RecordError as exc:
            exc.record = exc.record or cls.__name__
            raise
        return made

    @classmethod
    def from_wire(cls, data: Any, what: str | None = None) -> Self:
        """Validates a decoded MessagePack value; a ParseError names the bad field."""
        try:
            made: Self = cls._parse(data) if type(data) is dict else cls._check(data)
        except RecordError as exc:
            raise ParseError(f"{what or cls.__name__}{exc.where()}: {exc.msg}") from None
        return made

    @classmethod
    def model_construct(cls, **values: Any) -> Self:
        """A record of trusted values, not checked (as pydantic's): a field not given
        takes its default, a name that is not a field is an unknown field."""
        names = cls._NAMES
        d = {name: values.get(name, info.default) for name, info in cls.model_fields.items()}
        obj = _new(cls)
        _set_dict(obj, d)
        _set_fields_set(obj, values.keys() & names)
        _set_extra(obj, {k: v for k, v in values.items() if k not in names} or None)
        return obj

    @property
    def model_fields_set(self) -> set[str]:
        return self._fields_set

    @property
    def model_extra(self) -> dict[str, Any]:
        extra = self._extra
        if extra is None:
            extra = self._extra = {}
        return extra

    if not typing.TYPE_CHECKING:
        # No __getattr__ (pydantic's reads unknown fields as attributes: model_extra
        # has them here): a type with one has every attribute read go through it, and
        # the interpreter's specialised reads of instance attributes never apply.
        #
        # As pydantic's: a field assigned counts as set; an unknown name is an unknown
        # field (emitted after the known ones); no validation. Hidden from type
        # checkers too, so an assignment to a misspelt field stays an error to them.
        def __setattr__(self, name: str, value: Any) -> None:
            if name in self._NAMES:
                self.__dict__[name] = value
                self._fields_set.add(name)
            elif name[:1] == "_":
                object.__setattr__(self, name, value)
            else:
                self.model_extra[name] = value

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, WireRecord)
        return self.__dict__ == other.__dict__ and (self._extra or {}) == (other._extra or {})

    __hash__ = None  # type: ignore[assignment]  # mutable, as pydantic's models

    def __repr__(self) -> str:
        d = self.__dict__
        parts = [f"{name}={d.get(name)!r}" for name in self.model_fields]
        parts += [f"{name}={value!r}" for name, value in (self._extra or {}).items()]
        return f"{type(self).__name__}({', '.join(parts)})"

    def model_dump(self, *, mode: str = "python", exclude_unset: bool = False, exclude_none: bool = False) -> dict[str, Any]:
        """The record as plain data (records as maps), then its unknown fields; mode
        "json" gives bytes as (UTF-8) text, as pydantic's does."""
        if mode not in ("python", "json"):
            raise ValueError(f"model_dump: mode must be 'python' or 'json', not {mode!r}")
        json = mode == "json"
        d = self.__dict__
        fields_set = self._fields_set
        out: dict[str, Any] = {}
        for name in self.model_fields:
            if exclude_unset and name not in fields_set:
                continue
            value = d.get(name)
            if exclude_none and value is None:
                continue
            out[name] = _dump(value, json, exclude_unset, exclude_none)
        for name, value in (self._extra or {}).items():
            if not (exclude_none and value is None):
                out[name] = _dump(value, json, exclude_unset, exclude_none)
        return out

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy, shallow unless deep; update's values set as they are (no validation),
        each counted as set, an unknown name as an unknown field."""
        d = self.__dict__.copy()
        extra = dict(self._extra) if self._extra else None
        fields_set = set(self._fields_set)
        if deep:
            import copy

            d, extra = copy.deepcopy((d, extra))
        for name, value in (update or {}).items():
            if name in self._NAMES:
                d[name] = value
                fields_set.add(name)
            else:
                extra = extra or {}
                extra[name] = value
        out = _new(type(self))
        _set_dict(out, d)
        _set_fields_set(out, fields_set)
        _set_extra(out, extra)
        return out

    def _clone(self) -> Any:
        """A deep copy (each generated class has its own, copying only the fields
        that may hold something mutable)."""
        d = {k: v if type(v) in _PLAIN else clone(v) for k, v in self.__dict__.items()}
        out = _new(type(self))
        _set_dict(out, d)
        _set_fields_set(out, self._fields_set.copy())
        extra = self._extra
        _set_extra(out, None if extra is None else clone(extra))
        return out

    def to_wire(self) -> dict[str, Any]:
        cls = type(self)
        plan = _PLANS.get(cls) or _plan(cls)
        d = self.__dict__
        # The fields' values straight from the instance dict (a validated record has
        # them all); getattr's, an error for a missing one, otherwise.
        if not d.keys() >= plan[1]:
            d = {name: getattr(self, name) for name, _ in plan[0]}
        # _wire_map's loop, inline (a call and a read through get the less per record).
        out: dict[str, Any] = {}
        plain = _PLAIN
        for name, how in plan[0]:
            value = d[name]
            if value is None:
                if how:
                    continue
                out[name] = None
                continue
            kind = type(value)
            if how == _OMIT_EMPTY and (value is False or ((kind is int or kind is float or kind in _SIZED) and not value)):
                continue  # empty (_is_empty), inline
            out[name] = value if kind in plain else to_wire_value(value)
        extra = self._extra
        if extra:
            out.update(extra)
        return out

    @classmethod
    def wire_from(cls, **values: Any) -> dict[str, Any]:
        """The wire map of a record built from trusted values without constructing (and
        validating) the record: the hot path of the boundary."""
        return _wire_map((_PLANS.get(cls) or _plan(cls))[0], values.get)

    def pack(self) -> bytes:
        return pack(self.to_wire(), type(self).__name__)


# The slots' own setters (WireRecord.__setattr__ is for fields, and costs a call).
_set_dict = WireRecord.__dict__["__dict__"].__set__
_set_fields_set = WireRecord.__dict__["_fields_set"].__set__
_set_extra = WireRecord.__dict__["_extra"].__set__


# -- private copies of validated records ---------------------------------------------
#
# clone(value) is a deep copy of a value a decode produced (records, and plain data in
# maps and lists), with no validation: what a validated record holds is already of its
# fields' types. The copy equals the original in everything a decode of the same bytes
# would give: field values, fields set, unknown fields (model_extra), and any other
# entry of the instance dict (a content part's raw map). Each record class copies
# itself (its generated _clone: only the fields that may hold something mutable copied
# deep); the engine hands a copy to each plugin of a CMF payload
# (payloads.Snapshot.copy).


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
    if not isinstance(value, WireRecord):
        raise TypeError(f"cannot clone a {kind.__name__}")
    return value._clone()


def _clone_rest(d: dict[str, Any], names: frozenset[str]) -> None:
    """Copies deep the entries of a record's instance dict copy d that are not its
    fields (a content part's raw map)."""
    for key, value in d.items():
        if key not in names and type(value) not in _PLAIN:
            d[key] = clone(value)


def clone_list(value: Any) -> Any:
    """clone of a list field's value (a generated _clone's list of records), its
    records copied directly."""
    if type(value) is not list:
        return clone(value)
    return [v if type(v) in _PLAIN else v._clone() if isinstance(v, WireRecord) else clone(v) for v in value]


# Packers to reuse (msgpack.packb builds one per call): each pack takes one from the
# list and gives it back, so threads and a pack re-entered from a value's own code
# never share one. A packer resets its buffer after a failed pack.
_PACKERS: list[Any] = []


# The boundary's C packer (ffi/natives.c pack: the bytes msgpack gives for a value of
# exact types all the way down, None for anything else), once installed (install_pack).
_c_pack: Callable[[Any], bytes | None] | None = None


def install_pack(fn: Callable[[Any], bytes | None] | None) -> None:
    """Makes fn (natives.pack's signature and results) the first packer of every pack
    (this module's and cpexrt.payloads'); None: msgpack alone."""
    global _c_pack
    _c_pack = fn


def pack(value: Any, what: str) -> bytes:
    fast = _c_pack
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
        return data
    except (TypeError, ValueError, OverflowError) as exc:
        raise SerializeError(f"{what}: cannot encode as MessagePack: {exc}") from exc
    finally:
        packers.append(packer)


# The boundary's C packer of wire maps (ffi/natives.c pack_wire: pack's bytes, and
# records packed as their to_wire() maps from the plans of pack_plans), once installed
# (install_pack_wire).
_c_pack_wire: Callable[[Any], bytes | None] | None = None


def install_pack_wire(fn: Callable[[Any], bytes | None] | None) -> None:
    """Makes fn (natives.pack_wire's signature and results) the first packer of
    pack_wire; None: pack of the records' maps alone."""
    global _c_pack_wire
    _c_pack_wire = fn


def pack_wire(value: Any, what: str) -> bytes:
    """pack(), where value may hold wire records at any depth, packed as their
    to_wire() maps: the bytes pack(to_wire_value(value)) gives, which is what it
    falls back to, made by the C packer without the records' maps when it takes the
    value (pack_plans)."""
    fast = _c_pack_wire
    if fast is not None:
        made = fast(value)
        if made is not None:
            return made
    return pack(to_wire_value(value), what)


def pack_plans(classes: dict[str, Any]) -> dict[type, tuple[bool, tuple[Any, ...]]]:
    """The C packer's plans of the record classes among classes (a records module's
    namespace): {cls: (union, (name, how, name, how, ...))}, the fields in WIRE order
    with _plan's how; union: a part that may keep an unknown variant's map (_raw),
    which its to_wire() gives as it is. For the generated classes, whose to_wire is
    the plan's walk (test_records.py holds each equal to it); a class not in the map
    (a subclass) is packed by its own to_wire()."""
    plans: dict[type, tuple[bool, tuple[Any, ...]]] = {}
    for cls in classes.values():
        if not (isinstance(cls, type) and issubclass(cls, WireRecord)) or cls is WireRecord:
            continue
        union = "VARIANTS" in cls.__dict__
        fields = (_PLANS.get(cls) or _plan(cls))[0]
        plans[cls] = (union, tuple(x for field in fields for x in field))
    return plans


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


# -- the specs of the boundary's C parse ---------------------------------------------
#
# ffi/natives.c parse(cls, data) makes the record cls._parse(data) makes when data is
# of exact types all the way down, from a spec per class (its kinds below, the C
# enum's order); it leaves anything else to _parse. parse_specs builds the specs from
# the generated classes: a class with a field whose check the spec cannot say gets
# none (C then calls its _parse).

(
    PARSE_STR,
    PARSE_STR_DEFAULT,
    PARSE_STR_OPT,
    PARSE_RECORD,
    PARSE_RECORD_OPT,
    PARSE_RECORDS,
    PARSE_RECORDS_OPT,
    PARSE_MAP,
    PARSE_MAP_OPT,
    PARSE_ANY,
    PARSE_ANY_OPT,
    PARSE_SMAP,
    PARSE_SMAP_OPT,
) = range(13)


def parse_specs(classes: dict[str, Any]) -> dict[type, tuple[frozenset[str], bool, tuple[Any, ...]]]:
    """The C parse's specs of the record classes among classes (a records module's
    namespace): {cls: (field names, False, ((name, kind, default, sub), ...))} for a
    record, {cls: (field names, True, (tag, {tag: (field, kind)}, fields))} for a
    union."""
    records = {name: c for name, c in classes.items() if isinstance(c, type) and issubclass(c, WireRecord)}
    specs: dict[type, tuple[frozenset[str], bool, tuple[Any, ...]]] = {}
    for cls in records.values():
        if cls is WireRecord:
            continue
        variants = cls.__dict__.get("VARIANTS")
        if variants is not None:
            wire = [f.name for f in cls.WIRE]
            specs[cls] = (cls._NAMES, True, (wire[0], dict(variants), tuple(wire[1:])))
            continue
        fields = []
        for name, info in cls.model_fields.items():
            field = _parse_field(info, records)
            if field is None:
                break
            fields.append((name, *field))
        else:
            specs[cls] = (cls._NAMES, False, tuple(fields))
    return specs


def _parse_field(info: FieldInfo, records: dict[str, type]) -> tuple[int, Any, Any] | None:
    """(kind, default, record class) of a field as its generated check has it, None
    for a check the C parse does not make."""
    optional = info.annotation.endswith(" | None")
    base = info.annotation.removesuffix(" | None")
    if optional or info.required:
        slot = 1 if optional else 0
        if base == "str":
            return (PARSE_STR, PARSE_STR_OPT)[slot], None, None
        if base == "Any":
            return (PARSE_ANY, PARSE_ANY_OPT)[slot], None, None
        if base == "dict[str, Any]":
            return (PARSE_MAP, PARSE_MAP_OPT)[slot], None, None
        if base == "dict[str, str]":
            return (PARSE_SMAP, PARSE_SMAP_OPT)[slot], None, None
        if base in records:
            return (PARSE_RECORD, PARSE_RECORD_OPT)[slot], None, records[base]
        if base.startswith("list[") and base[5:-1] in records:
            return (PARSE_RECORDS, PARSE_RECORDS_OPT)[slot], None, records[base[5:-1]]
        return None
    if base == "str" and type(info.default) is str:
        return PARSE_STR_DEFAULT, info.default, None
    return None
