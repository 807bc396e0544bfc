"""The ABI schema as typed, validated objects.

Everything the generator renders comes from these models, so a mistake in
`codegen/schema/*.yaml` is reported here, by path, before any file is written.
"""

from __future__ import annotations

import builtins
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .reserved import (
    GO_PACKAGE_NAMES,
    GO_RECORD_MEMBERS,
    GO_UNION_MEMBERS,
    PY_CALLS_LOCALS,
    PY_CALLS_MODULE,
    PY_ERRORS_MODULE,
    PY_PROTECTED_PREFIXES,
    PY_RECORDS_MODULE,
    PY_RESERVED,
    PY_UNION_RESERVED,
    RESERVED,
)

IDENT = r"^[a-z][a-z0-9_]*$"
PASCAL = r"^[A-Z][A-Za-z0-9]*$"


class SchemaError(Exception):
    """The schema is invalid; the message names the offending entry."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Abi(Strict):
    major: int = Field(ge=0, le=0xFFFF)
    minor: int = Field(ge=0, le=0xFFFF)
    prefix: str = Field(pattern=IDENT)


class Handle(Strict):
    name: str = Field(pattern=IDENT)
    doc: str
    # The shims keep a C-side set of this kind's live handles ({P}__handles_* in the
    # layout's extra sources): an input of it is checked there before Python is
    # entered, a handle_out of it is registered when the call succeeds, and a
    # release_in_c function frees it without entering Python.
    tracked: bool = False


class Status(Strict):
    name: str = Field(pattern=IDENT)
    code: int = Field(le=0)
    message: str
    doc: str
    go_sentinel: str | None = Field(default=None, pattern=r"^Err[A-Za-z0-9]+$")
    py_exception: str | None = Field(default=None, pattern=r"^[A-Z][A-Za-z0-9]*Error$")
    # A Python built-in exception the class also derives from, so that callers' own
    # `except TimeoutError` catches it.
    py_builtin_base: str | None = Field(default=None, pattern=r"^[A-Z][A-Za-z0-9]*Error$")

    @model_validator(mode="after")
    def _error_names(self) -> Status:
        if self.code < 0 and (self.go_sentinel is None or self.py_exception is None):
            raise ValueError(f"status {self.name}: an error status needs go_sentinel and py_exception")
        if self.code == 0 and (self.go_sentinel or self.py_exception or self.py_builtin_base):
            raise ValueError(f"status {self.name}: the ok status has no error names")
        if self.py_builtin_base is not None:
            base = getattr(builtins, self.py_builtin_base, None)
            if not (isinstance(base, type) and issubclass(base, Exception)):
                raise ValueError(f"status {self.name}: py_builtin_base {self.py_builtin_base!r} is no built-in Exception class")
        return self


class PayloadType(Strict):
    id: int = Field(ge=0, le=255)
    name: str = Field(pattern=IDENT)
    go_name: str = Field(pattern=PASCAL)
    doc: str


ParamKind = Literal[
    "handle", "handle_out", "bytes", "text", "u8", "bytes_out", "bool_out", "size_out", "raw_pointer", "record_callback"
]
OUT_KINDS = frozenset({"handle_out", "bytes_out", "bool_out", "size_out"})


class Param(Strict):
    name: str = Field(pattern=IDENT)
    kind: ParamKind
    handle: str | None = None
    nullable: bool = False
    # A handle the call releases when it succeeds (a free or close function): the
    # token is dead afterwards, and a second call with it fails with invalid_handle.
    consumes: bool = False
    # A nullable handle a successful call consumes, its state going on in a handle the
    # call returns (an invoke's context); a failed call leaves it valid. For a tracked
    # handle the shim forgets it when the call succeeds.
    consumed_if_ok: bool = False
    doc: str = ""

    @model_validator(mode="after")
    def _handle_kind(self) -> Param:
        wants_handle = self.kind in ("handle", "handle_out")
        if wants_handle != (self.handle is not None):
            raise ValueError(f"param {self.name}: `handle` is required for handle kinds and only for them")
        if self.nullable and self.kind != "handle":
            raise ValueError(f"param {self.name}: only handle params can be nullable")
        if self.consumes and (self.kind != "handle" or self.nullable):
            raise ValueError(f"param {self.name}: only a non-nullable handle param can be consumed")
        if self.consumed_if_ok and (self.kind != "handle" or self.consumes):
            raise ValueError(f"param {self.name}: consumed_if_ok is for a handle param the call does not consume always")
        return self

    @property
    def is_out(self) -> bool:
        return self.kind in OUT_KINDS


class Function(Strict):
    name: str = Field(pattern=IDENT)
    impl: Literal["c", "python"]
    returns: Literal["status", "uint32", "const_string", "void"] = "status"
    params: tuple[Param, ...] = ()
    doc: str
    # A C function cpex__fast_<name> (ffi/) may answer the call before Python is
    # entered; it returns CPEX__DECLINED to let Python answer.
    fast_path: bool = False
    # A C function cpex__remote_<name> (ffi/remote.c) answers the call for a manager
    # running engine workers (or a handle they issued), after the fast path; it returns
    # CPEX__DECLINED for everything else.
    remote: bool = False
    # The function only releases its one input, a consumed tracked handle: the shim
    # answers it in C ({P}__handles_release) and enters Python only when that declines.
    release_in_c: bool = False
    # The shim enters Python through a C function cpex__native_<name> (ffi/), with
    # cpexpy_<name>'s signature, which calls the boundary's entry with the inputs as
    # Python objects (no cffi conversions) and calls cpexpy_<name> when it declines.
    native_entry: bool = False

    @model_validator(mode="after")
    def _returns(self) -> Function:
        if self.impl == "python" and self.returns != "status":
            raise ValueError(f"function {self.name}: Python-implemented functions return a status")
        names = [p.name for p in self.params]
        if len(set(names)) != len(names):
            raise ValueError(f"function {self.name}: duplicate parameter names")
        if self.native_entry and self.impl != "python":
            raise ValueError(f"function {self.name}: native_entry is for Python-implemented functions")
        if self.impl == "python" and "err_msg" in names:
            raise ValueError(f"function {self.name}: err_msg is added by the generator")
        return self

    @property
    def inputs(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if not p.is_out)

    @property
    def outputs(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.is_out)


FieldType = str


class RecordField(Strict):
    name: str = Field(pattern=IDENT)
    type: FieldType
    optional: bool = False
    pointer: bool = False
    doc: str = ""
    example: Any = None
    # The value a decoder gives a field absent from the wire (string fields only); such
    # a field is always encoded but not required on decode.
    default: str | None = None

    @model_validator(mode="after")
    def _pointer(self) -> RecordField:
        if self.pointer and not self.optional:
            raise ValueError(f"field {self.name}: pointer fields must be optional")
        if self.default is not None and (self.optional or self.type != "string"):
            raise ValueError(f"field {self.name}: a default is for required string fields only")
        return self


class Record(Strict):
    name: str = Field(pattern=PASCAL)
    doc: str
    fields: tuple[RecordField, ...]


class Variant(Strict):
    tag: str = Field(pattern=IDENT)
    field: str = Field(pattern=IDENT)
    type: FieldType
    go_name: str = Field(pattern=PASCAL)


class Union(Strict):
    name: str = Field(pattern=PASCAL)
    doc: str
    tag: str = Field(pattern=IDENT)
    variants: tuple[Variant, ...]


class ExtensionSlot(Strict):
    path: str = Field(pattern=r"^[a-z_]+(\.[a-z_]+)*$")
    tier: Literal["immutable", "monotonic", "guarded", "mutable"]
    read: str | None = Field(default=None, pattern=IDENT)
    read_any: tuple[str, ...] = ()
    write: str | None = Field(default=None, pattern=IDENT)

    @model_validator(mode="after")
    def _write_needs_tier(self) -> ExtensionSlot:
        if (self.write is not None) != (self.tier in ("guarded", "monotonic")):
            raise ValueError(f"slot {self.path}: guarded and monotonic slots, and only they, name a write capability")
        return self


class UnchangedResult(Strict):
    """The result of an invoke nobody changed: `record` with `fields` set, its
    `payload_type_field` set to the payload type's id, and every optional field absent.
    The generator encodes it once per payload type (vectors.unchanged_results)."""

    record: str = Field(pattern=PASCAL)
    payload_type_field: str = Field(pattern=IDENT)
    fields: dict[str, bool | int | str]
    # The functions whose C doc lists the bytes, after the function's own doc.
    listed_in: tuple[str, ...] = ()
    doc: str


SCALARS = frozenset({"string", "bool", "uint8", "uint32", "int", "int64", "uint64", "float64", "bytes", "any"})
_CONTAINER = re.compile(r"^(list|map)<(.+)>$")


class Schema(Strict):
    abi: Abi
    handles: tuple[Handle, ...]
    statuses: tuple[Status, ...]
    payload_types: tuple[PayloadType, ...] = ()
    functions: tuple[Function, ...]
    records: tuple[Record, ...] = ()
    unions: tuple[Union, ...] = ()
    extension_slots: tuple[ExtensionSlot, ...] = ()
    unchanged_result: UnchangedResult | None = None

    @model_validator(mode="after")
    def _cross_checks(self) -> Schema:
        named: tuple[tuple[str, list[str]], ...] = (
            ("handle", [h.name for h in self.handles]),
            ("status", [s.name for s in self.statuses]),
            ("status code", [str(s.code) for s in self.statuses]),
            ("payload type", [p.name for p in self.payload_types]),
            ("payload type id", [str(p.id) for p in self.payload_types]),
            ("function", [f.name for f in self.functions]),
            ("record or union", [r.name for r in self.records] + [u.name for u in self.unions]),
            ("extension slot", [x.path for x in self.extension_slots]),
        )
        for what, names in named:
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ValueError(f"duplicate {what}: {', '.join(dup)}")
        if not any(s.code == 0 and s.name == "ok" for s in self.statuses):
            raise ValueError("statuses: an `ok` status with code 0 is required")
        _check_glue(self)
        handles = {h.name for h in self.handles}
        tracked = {h.name for h in self.handles if h.tracked}
        for f in self.functions:
            for p in f.params:
                if p.handle is not None and p.handle not in handles:
                    raise ValueError(f"function {f.name}, param {p.name}: unknown handle {p.handle!r}")
            if f.release_in_c and (
                f.impl != "python" or len(f.params) != 1 or not f.params[0].consumes or f.params[0].handle not in tracked
            ):
                raise ValueError(f"function {f.name}: release_in_c needs one param, a consumed handle of a tracked kind")
        records = {r.name for r in self.records} | {u.name for u in self.unions}
        for r in self.records:
            fields = [fl.name for fl in r.fields]
            if len(set(fields)) != len(fields):
                raise ValueError(f"record {r.name}: duplicate field names")
            for fl in r.fields:
                _check_type(fl.type, records, f"record {r.name}, field {fl.name}")
        for u in self.unions:
            tags = [v.tag for v in u.variants]
            if len(set(tags)) != len(tags):
                raise ValueError(f"union {u.name}: duplicate variant tags")
            for v in u.variants:
                _check_type(v.type, records, f"union {u.name}, variant {v.tag}")
        by_name = {r.name: r for r in self.records}
        for slot in self.extension_slots:
            _check_slot(slot.path, by_name)
        if self.unchanged_result is not None:
            _check_unchanged_result(self.unchanged_result, by_name, {f.name: f for f in self.functions})
        _check_reserved(self)
        return self

    @property
    def ok(self) -> Status:
        return next(s for s in self.statuses if s.code == 0)

    @property
    def errors(self) -> tuple[Status, ...]:
        return tuple(s for s in self.statuses if s.code < 0)

    @property
    def python_functions(self) -> tuple[Function, ...]:
        return tuple(f for f in self.functions if f.impl == "python")


# What the shared runtime glue (ffi/runtime.c, the generated shims and the generic Go
# and Python pieces) relies on in every library: these statuses, by name, and these C
# functions, which the glue defines.
GLUE_STATUSES: dict[str, str] = {
    "invalid_handle": "a NULL, freed or foreign handle",
    "invalid_input": "a NULL buffer with a non-zero length, bad UTF-8 or a NULL out-parameter",
    "internal": "an exception the implementation did not classify",
    "runtime_init": "the embedded Python runtime could not start",
    "abi_mismatch": "a library of another ABI version or Python",
}
GLUE_FUNCTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "abi_version": ("uint32", ()),
    "build_info": ("const_string", ()),
    "free_buffer": ("void", ("raw_pointer",)),
}


def _check_glue(schema: Schema) -> None:
    names = {s.name: s for s in schema.statuses}
    for name, why in GLUE_STATUSES.items():
        st = names.get(name)
        if st is None or st.code >= 0:
            raise ValueError(f"statuses: an error status named {name!r} is required: the runtime glue reports {why} with it")
    by_name = {f.name: f for f in schema.functions}
    for name, (returns, kinds) in GLUE_FUNCTIONS.items():
        fn = by_name.get(name)
        want = f"impl: c, returns: {returns}, params of kinds {list(kinds)}"
        if fn is None:
            raise ValueError(f"functions: the runtime glue defines {schema.abi.prefix}_{name}; declare it ({want})")
        if fn.impl != "c" or fn.returns != returns or tuple(p.kind for p in fn.params) != kinds:
            raise ValueError(f"functions: {name} is defined by the runtime glue; expected {want}")


def _check_slot(path: str, records: dict[str, Record]) -> None:
    record = records.get("Extensions")
    if record is None:
        raise ValueError("extension_slots need an Extensions record")
    for part in path.split("."):
        if record is None:
            raise ValueError(f"extension slot {path}: {part!r} is inside a field that is not a record")
        field = next((f for f in record.fields if f.name == part), None)
        if field is None:
            raise ValueError(f"extension slot {path}: {record.name} has no field {part!r}")
        record = records.get(field.type)


_INTEGERS = frozenset({"uint8", "uint32", "int", "int64", "uint64"})


def _check_unchanged_result(u: UnchangedResult, records: dict[str, Record], functions: dict[str, Function]) -> None:
    """The unchanged result must be a complete record: every required field set (the
    payload type's included), no optional one, each value of its field's type."""
    where = "unchanged_result"
    record = records.get(u.record)
    if record is None:
        raise ValueError(f"{where}: unknown record {u.record!r}")
    by_name = {fl.name: fl for fl in record.fields}
    pt = by_name.get(u.payload_type_field)
    if pt is None or pt.optional or pt.type != "uint8":
        raise ValueError(f"{where}: payload_type_field {u.payload_type_field!r} must be a required uint8 field of {u.record}")
    for name, value in u.fields.items():
        fl = by_name.get(name)
        if fl is None:
            raise ValueError(f"{where}: {u.record} has no field {name!r}")
        if name == u.payload_type_field:
            raise ValueError(f"{where}: field {name!r} is the payload_type_field, set per payload type")
        if fl.optional:
            raise ValueError(f"{where}: field {name!r} is optional; an unchanged result leaves optional fields absent")
        ok = (
            (fl.type == "bool" and isinstance(value, bool))
            or (
                fl.type in _INTEGERS
                and isinstance(value, int)
                and not isinstance(value, bool)
                and (value >= 0 or not fl.type.startswith("uint"))
            )
            or (fl.type == "string" and isinstance(value, str))
        )
        if not ok:
            raise ValueError(f"{where}: field {name!r} is a {fl.type}, not {value!r}")
    missing = [fl.name for fl in record.fields if not fl.optional and fl.name not in u.fields and fl.name != pt.name]
    if missing:
        raise ValueError(f"{where}: required fields of {u.record} without a value: {', '.join(missing)}")
    for name in u.listed_in:
        fn = functions.get(name)
        if fn is None:
            raise ValueError(f"{where}: listed_in names unknown function {name!r}")
        if not any(p.kind == "bytes_out" for p in fn.params):
            raise ValueError(f"{where}: listed_in function {name!r} returns no bytes")


def _check_type(t: str, records: set[str], where: str) -> None:
    m = _CONTAINER.match(t)
    if m:
        kind, inner = m.groups()
        if kind == "map":
            key, _, inner = inner.partition(",")
            if key != "string":
                raise ValueError(f"{where}: map keys must be string, got {key!r}")
        _check_type(inner, records, where)
    elif t not in SCALARS and t not in records:
        raise ValueError(f"{where}: unknown type {t!r}")


def _check_reserved(schema: Schema) -> None:
    """Refuse names that are keywords of a target language or that collide with a name
    the generator gives something itself; the message names the entry and says why."""
    from .naming import camel  # naming imports this module

    idents: list[tuple[str, str]] = [(f"function {f.name}", f.name) for f in schema.functions]
    idents += [(f"function {f.name}, param {p.name}", p.name) for f in schema.functions for p in f.params]
    idents += [(f"handle {h.name}", h.name) for h in schema.handles]
    for where, name in idents:
        if name in RESERVED:
            raise ValueError(f"{where}: {name!r} is a reserved word in {RESERVED[name]}")

    # C: every handle is a typedef <prefix>_<handle>, beside <prefix>_status and the
    # functions <prefix>_<function>.
    P = schema.abi.prefix
    c_names: dict[str, str] = {f"{P}_status": "the status typedef"}
    for h in schema.handles:
        _claim(c_names, f"{P}_{h.name}", f"the typedef of handle {h.name}", f"handle {h.name}")
    for f in schema.functions:
        _claim(c_names, f"{P}_{f.name}", f"function {f.name}", f"function {f.name}")

    # Go: package-level names of package cpex, and the unexported cgo wrappers and codes.
    go_names: dict[str, str] = dict(GO_PACKAGE_NAMES)
    for pt in schema.payload_types:
        _claim(go_names, pt.go_name, f"the Go constant of payload type {pt.name}", f"payload type {pt.name}")
    for st in schema.errors:
        _claim(go_names, st.go_sentinel or "", f"the Go sentinel of status {st.name}", f"status {st.name}")
    for r in schema.records:
        _claim(go_names, r.name, f"the Go type of record {r.name}", f"record {r.name}")
    for u in schema.unions:
        _claim(go_names, u.name, f"the Go type of union {u.name}", f"union {u.name}")
        for v in u.variants:
            _claim(
                go_names,
                f"New{v.go_name}Part",
                f"the Go constructor of {u.name} variant {v.tag}",
                f"union {u.name}, variant {v.tag}",
            )
    go_private: dict[str, str] = {}
    for f in schema.python_functions:
        _claim(go_private, f"call{camel(f.name)}", f"the Go wrapper of function {f.name}", f"function {f.name}")
    for st in schema.statuses:
        _claim(go_private, f"code{camel(st.name)}", f"the Go code of status {st.name}", f"status {st.name}")

    # Python calls.py: one function per Python-implemented function, whose parameters
    # live beside the generated locals.
    py_calls: dict[str, str] = dict(PY_CALLS_MODULE)
    for f in schema.python_functions:
        _claim(py_calls, f.name, f"the Python call of function {f.name}", f"function {f.name}")
        for p in f.params:
            if p.name in PY_CALLS_LOCALS:
                raise ValueError(f"function {f.name}, param {p.name}: {p.name!r} {PY_CALLS_LOCALS[p.name]}")

    # Python errors.py: the enum, the exception classes, the payload type constants.
    py_errors: dict[str, str] = dict(PY_ERRORS_MODULE)
    py_errors["PAYLOAD_TYPES"] = "the payload type table of the generated errors.py"
    py_errors["UNCHANGED_RESULTS"] = "the unchanged-result table of the generated errors.py"
    for st in schema.errors:
        _claim(py_errors, st.py_exception or "", f"the Python exception of status {st.name}", f"status {st.name}")
    for pt in schema.payload_types:
        _claim(
            py_errors, f"PAYLOAD_{pt.name.upper()}", f"the Python constant of payload type {pt.name}", f"payload type {pt.name}"
        )

    # Python records.py: the classes, beside what the module imports.
    for where, name in [(f"record {r.name}", r.name) for r in schema.records] + [
        (f"union {u.name}", u.name) for u in schema.unions
    ]:
        if name in RESERVED:
            raise ValueError(f"{where}: {name!r} is a reserved word in {RESERVED[name]}")
        if name in PY_RECORDS_MODULE:
            raise ValueError(f"{where}: {name!r} {PY_RECORDS_MODULE[name]}")

    for r in schema.records:
        go_fields: dict[str, str] = {}
        for fl in r.fields:
            where = f"record {r.name}, field {fl.name}"
            _check_py_attr(where, fl.name, {})
            go = camel(fl.name)
            if go in GO_RECORD_MEMBERS:
                raise ValueError(f"{where}: {fl.name!r} becomes the Go field {go}, which is {GO_RECORD_MEMBERS[go]}")
            if go in go_fields:
                raise ValueError(f"{where}: {fl.name!r} becomes the Go field {go}, like field {go_fields[go]}")
            go_fields[go] = fl.name

    for u in schema.unions:
        py_union = dict(PY_UNION_RESERVED)
        py_union.update({f"new_{v.tag}": f"is the Python constructor of variant {v.tag}" for v in u.variants})
        _check_py_attr(f"union {u.name}, tag {u.tag}", u.tag, py_union)
        go_members: dict[str, str] = {}
        _claim(go_members, camel(u.tag), f"the Go field of tag {u.tag}", f"union {u.name}, tag {u.tag}", GO_UNION_MEMBERS)
        for v in u.variants:
            where = f"union {u.name}, variant {v.tag}"
            if v.field == u.tag:
                raise ValueError(f"{where}: field {v.field!r} is the union's tag")
            _check_py_attr(f"{where}, field {v.field}", v.field, py_union)
            if v.type == "string":  # the string variants share one Go field, Text
                go, owner = "Text", "the Go field Text of the string variants"
            else:
                go, owner = v.go_name, f"the Go field of variant {v.tag}"
            if go_members.get(go) != owner:
                _claim(go_members, go, owner, where, GO_UNION_MEMBERS)


def _claim(names: dict[str, str], name: str, what: str, where: str, members: dict[str, str] | None = None) -> None:
    """Record that `what` (declared by schema entry `where`) takes `name`, or refuse it."""
    if members is not None and name in members:
        raise ValueError(f"{where}: {what} would be {name}, which is {members[name]}")
    if name in names:
        raise ValueError(f"{where}: {what} would be {name}, which is already {names[name]}")
    names[name] = what


def _check_py_attr(where: str, name: str, extra: dict[str, str]) -> None:
    """A field of a generated pydantic model: not a keyword, not a member of the model."""
    why = extra.get(name) or PY_RESERVED.get(name)
    if why is None and name.startswith(PY_PROTECTED_PREFIXES):
        why = f"is in pydantic's protected namespaces {', '.join(p + '*' for p in PY_PROTECTED_PREFIXES)}"
    if why is not None:
        raise ValueError(f"{where}: {name!r} {why}")


def load(schema_dir: Path) -> Schema:
    data: dict[str, object] = {}
    for path in sorted(schema_dir.glob("*.yaml")):
        try:
            part = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise SchemaError(f"{path.name}: {exc}") from exc
        if not isinstance(part, dict):
            raise SchemaError(f"{path.name}: expected a mapping at the top level")
        for key, value in part.items():
            if key in data:
                raise SchemaError(f"{path.name}: key {key!r} is defined in more than one schema file")
            data[key] = value
    try:
        return Schema.model_validate(data)
    except ValidationError as exc:
        raise SchemaError(describe(exc, "invalid ABI schema")) from exc


def describe(exc: ValidationError, title: str) -> str:
    """One line per problem: the path of the entry (functions[3].params[0].kind), what
    was expected, and what was found."""
    lines = []
    for err in exc.errors():
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
        found = "" if err["type"] in ("missing", "value_error") else f" (got {err.get('input')!r:.60})"
        msg = str(err["msg"]).removeprefix("Value error, ")
        lines.append(f"{loc or 'top level'}: {msg}{found}")
    return f"{title}:\n  " + "\n  ".join(lines)
