"""Render every generated file of one library from its schema and layout."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import jinja2

from . import layout as layouts
from . import naming, vectors
from .layout import Layout
from .schema import Function, Param, PayloadType, RecordField, Schema, SchemaError, Union, Variant

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

# cpex's own layout, the default of the CLI and of render_all.
CPEX_LAYOUT = Path(__file__).resolve().parent.parent / "layout.yaml"


def cpex_layout() -> Layout:
    return layouts.load(CPEX_LAYOUT)


# template -> path in the repository, for cpex's layout.
TARGETS: dict[str, str] = cpex_layout().targets()

_GO_SCALARS = {
    "string": "string",
    "bool": "bool",
    "uint8": "uint8",
    "uint32": "uint32",
    "int": "int",
    "int64": "int64",
    "uint64": "uint64",
    "float64": "float64",
    "bytes": "[]byte",
    "any": "any",
}
_PY_SCALARS = {
    "string": "str",
    "bool": "bool",
    "uint8": "int",
    "uint32": "int",
    "int": "int",
    "int64": "int",
    "uint64": "int",
    "float64": "float",
    "bytes": "bytes",
    "any": "Any",
}
_CONTAINER = re.compile(r"^(list|map)<(?:string,)?(.+)>$")


def _type(t: str, scalars: dict[str, str], list_fmt: str, map_fmt: str) -> str:
    m = _CONTAINER.match(t)
    if m is None:
        return scalars.get(t, t)
    inner = _type(m.group(2), scalars, list_fmt, map_fmt)
    return (list_fmt if m.group(1) == "list" else map_fmt).format(inner)


def go_field_type(fl: RecordField) -> str:
    t = _type(fl.type, _GO_SCALARS, "[]{}", "map[string]{}")
    is_record = fl.type not in _GO_SCALARS and not _CONTAINER.match(fl.type)
    return f"*{t}" if fl.pointer or (is_record and fl.optional) else t


def go_present(fl: RecordField, recv: str) -> str:
    """The Go condition under which an optional field is emitted."""
    v = f"{recv}.{naming.camel(fl.name)}"
    t = go_field_type(fl)
    if t.startswith(("*", "[]", "map[")) or t == "any":
        return f"{v} != nil" if t.startswith("*") or t == "any" else f"len({v}) > 0"
    return {"string": f'{v} != ""', "bool": v}.get(t, f"{v} != 0")


def go_encoder(schema: Schema) -> Callable[[str, str], str | None]:
    """go_encode(type, value): the Go expression (of type error) that writes value, a
    field or variant of schema type `type`, as the generic path (encodeField: the
    msgpack library, map keys sorted) would write it, with no reflection or boxing; None
    for a type that keeps the generic path. Records and unions encode themselves; a
    pointer to one is emitted only when set."""
    named = {r.name for r in schema.records} | {u.name for u in schema.unions}

    def go_encode(t: str, v: str) -> str | None:
        if t == "string":
            return f"enc.EncodeString({v})"
        if t == "bool":
            return f"enc.EncodeBool({v})"
        if t in named:
            return f"{v}.EncodeMsgpack(enc)"
        if t == "list<string>":
            return f"encodeStrings(enc, {v})"
        if t == "map<string,string>":
            return f"encodeStringMap(enc, {v})"
        m = _CONTAINER.match(t)
        if m is not None and m.group(1) == "list" and m.group(2) in named:
            return f"encodeRecords(enc, {v})"
        return None

    return go_encode


def go_decoder(schema: Schema) -> Callable[[RecordField, str], str | None]:
    """go_decode(field, target): the Go expression (of type error) that reads a record
    field into target (a pointer to it) as the generic path (decodeInto: the msgpack
    library's reflection) would, with no reflection; None for a field that keeps the
    generic path. Covers the record-valued fields: a record, a pointer to one, a list
    of them (the msgpack library's fast paths already serve the scalars)."""
    named = {r.name for r in schema.records} | {u.name for u in schema.unions}

    def go_decode(fl: RecordField, target: str) -> str | None:
        t = go_field_type(fl)
        if t.startswith("*") and t[1:] in named:
            return f"decodeRecordPtr(dec, {target})"
        if t in named:
            return f"decodeRecord(dec, {target})"
        if t.startswith("[]") and t[2:] in named:
            return f"decodeRecords(dec, {target})"
        return None

    return go_decode


def union_field(v: Variant) -> str:
    return "Text" if v.type == "string" else v.go_name


def union_fields(u: Union) -> list[tuple[str, str]]:
    """The Go fields of a union: one Text for the string variants, a pointer per object."""
    out: list[tuple[str, str]] = []
    for v in u.variants:
        field = (union_field(v), "string" if v.type == "string" else f"*{v.type}")
        if field not in out:
            out.append(field)
    return out


# The generated Python records' checks (records.py.j2): per scalar type, the exact
# Python type the fast path tests inline and the check function of the wire module
# (cpexrt.wire) that converts or refuses anything else.
_PY_CHECKS = {
    "string": ("str", "check_string"),
    "bool": ("bool", "check_bool"),
    "float64": ("float", "check_float"),
    "bytes": ("bytes", "check_bytes"),
}
_PY_INT_RANGES = {
    "int": (-(2**63), 2**63 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint8": (0, 2**8 - 1),
    "uint32": (0, 2**32 - 1),
    "uint64": (0, 2**64 - 1),
}


# The wire module's one-type sets, by exact type (py_check's inline container tests).
_PY_ONLY = {"str": "_ONLY_STR", "bool": "_ONLY_BOOL", "float": "_ONLY_FLOAT", "bytes": "_ONLY_BYTES"}


def py_item_check(t: str) -> tuple[str, str]:
    """The check function (an expression) of a list item's or a map value's type, and
    the exact type whose items are taken as they are ("None": each item checked, or,
    with the check "None", any value)."""
    m = _CONTAINER.match(t)
    if m is not None:
        item, exact = py_item_check(m.group(2))
        fn = "check_list" if m.group(1) == "list" else "check_map"
        if item == "None":
            return fn, "None"
        return f"lambda y: {fn}(y, {item}, {exact})", "None"
    if t == "any":
        return "None", "None"
    if t in _PY_INT_RANGES:
        return f"lambda y: check_int(y, {t!r})", "None"
    if t in _PY_CHECKS:
        exact, fn = _PY_CHECKS[t]
        return fn, exact
    return f"{t}._check", t


def py_check(fl: RecordField, var: str) -> list[str]:
    """The lines that check (and convert) a field's value in var, one level of indent
    per nesting, for the generated records' _values: the exact type tested inline, a
    check function of the wire module for anything else."""
    t = fl.type
    m = _CONTAINER.match(t)
    if m is not None and m.group(1) == "list" and m.group(2) not in _PY_SCALARS and not _CONTAINER.match(m.group(2)):
        return [f"{var} = check_records({var}, {m.group(2)})"]
    if m is not None:
        item, exact = py_item_check(m.group(2))
        fn = "check_list" if m.group(1) == "list" else "check_map"
        args = "" if item == "None" else f", {item}, {exact}"
        if item != "None" and exact not in _PY_ONLY:
            return [f"{var} = {fn}({var}{args})"]
        # Inline, the common case: an exact list or dict (string keys) whose items are
        # all of the exact type (or of any type), copied; the check function otherwise.
        kind = "list" if m.group(1) == "list" else "dict"
        tests = [f"type({var}) is {kind}"]
        if kind == "dict":
            tests.append(f"_ONLY_STR.issuperset(map(type, {var}))")
        if item != "None":
            items = var if kind == "list" else f"{var}.values()"
            tests.append(f"{_PY_ONLY[exact]}.issuperset(map(type, {items}))")
        return [f"if {' and '.join(tests)}:", f"    {var} = {var}.copy()", "else:", f"    {var} = {fn}({var}{args})"]
    if t == "any":
        return [] if fl.optional else [f"if {var} is _MISSING:", f"    {var} = check_any({var})"]
    if t in _PY_INT_RANGES:
        lo, hi = _PY_INT_RANGES[t]
        return [f"if type({var}) is not int or not {lo} <= {var} <= {hi}:", f"    {var} = check_int({var}, {t!r})"]
    if t in _PY_CHECKS:
        exact, fn = _PY_CHECKS[t]
        return [f"if type({var}) is not {exact}:", f"    {var} = {fn}({var})"]
    return [f"if type({var}) is not {t}:", f"    {var} = {t}._parse({var}) if type({var}) is dict else {t}._check({var})"]


def py_clone(fl: RecordField) -> str | None:
    """How the generated _clone copies a field's value: None for a scalar (immutable,
    kept), clone_list for a list of records or unions, "record" for a record or union
    (its own _clone), clone for the rest."""
    t = fl.type
    m = _CONTAINER.match(t)
    if m is not None:
        inner = m.group(2)
        is_record = inner not in _PY_SCALARS and not _CONTAINER.match(inner)
        return "clone_list" if m.group(1) == "list" and is_record else "clone"
    if t in _PY_SCALARS:
        return "clone" if t == "any" else None
    return "record"


def py_field_type(fl: RecordField) -> str:
    t = _type(fl.type, _PY_SCALARS, "list[{}]", "dict[str, {}]")
    return f"{t} | None" if fl.optional else t


def go_in_type(schema: Schema, p: Param) -> str:
    h = f"*C.{naming.handle_type(schema, p.handle or '')}"
    return {
        "handle": h,
        "text": "string",
        "bytes": "[]byte",
        "u8": "uint8",
        "record_callback": f"C.{schema.abi.prefix}_record_fn",
        "raw_pointer": "unsafe.Pointer",
    }[p.kind]


def go_out_type(schema: Schema, p: Param) -> str:
    h = f"*C.{naming.handle_type(schema, p.handle or '')}"
    return {"handle_out": h, "bytes_out": "[]byte", "bool_out": "bool", "size_out": "int"}[p.kind]


# The generic Go API (api_gen.go.j2): handles as exported Go types wrapping the C pointer.
def go_api_in_type(p: Param) -> str:
    return {"handle": f"*{naming.camel(p.handle or '')}", "text": "string", "bytes": "[]byte", "u8": "uint8"}[p.kind]


def go_api_out_type(p: Param) -> str:
    return {"handle_out": f"*{naming.camel(p.handle or '')}", "bytes_out": "[]byte", "bool_out": "bool", "size_out": "int"}[
        p.kind
    ]


def go_api_arg(p: Param) -> str:
    v = naming.lower_camel(p.name)
    return f"{v}.ptr()" if p.kind == "handle" else v


def go_api_out(p: Param, v: str) -> str:
    return f"wrap{naming.camel(p.handle or '')}({v})" if p.kind == "handle_out" else v


# The generic Python exports (exports.py.j2): the C arguments of each parameter.
def py_extern_args(fn: Function) -> list[str]:
    out: list[str] = []
    for p in fn.params:
        out += [p.name, f"{p.name}_len"] if p.kind in ("text", "bytes", "bytes_out") else [p.name]
    return [f"{n}: Any" for n in [*out, "err_msg"]]


_PY_IMPL_IN = {"handle": "Any", "text": "str", "bytes": "bytes", "u8": "int"}
_PY_IMPL_OUT = {"handle_out": "Any", "bytes_out": "bytes", "bool_out": "bool", "size_out": "int"}


def handle_tag(schema: Schema) -> int:
    """The top 16 bits of the library's handle tokens: the prefix's first two bytes, so
    a token lies outside any canonical user address and names its library."""
    return int.from_bytes(schema.abi.prefix.encode("ascii")[:2].ljust(2, b"_"), "big")


def py_impl_signature(fn: Function) -> str:
    """The signature the implementation module's function has, for the docs."""
    ins = ", ".join(f"{p.name}: {_PY_IMPL_IN[p.kind]}" for p in fn.inputs)
    outs = [_PY_IMPL_OUT[p.kind] for p in fn.outputs]
    ret = "None" if not outs else outs[0] if len(outs) == 1 else f"tuple[{', '.join(outs)}]"
    return f"def {fn.name}({ins}) -> {ret}"


def go_zero(p: Param) -> str:
    return {"handle_out": "nil", "bytes_out": "nil", "bool_out": "false", "size_out": "0"}[p.kind]


def go_out_value(p: Param, fn: Function | None = None) -> str:
    """The Go value of an out-parameter. fn: the function, when the library has
    unchanged results (abi.yaml unchanged_result): an invoke's out_result is then taken
    by takeResult, which answers the payload type's unchanged result with its shared
    bytes instead of a copy."""
    v = "out." + naming.lower_camel(p.name)
    if (
        fn is not None
        and p.kind == "bytes_out"
        and p.name == "out_result"
        and any(q.name == "payload_type" and q.kind == "u8" for q in fn.params)
    ):
        return f"takeResult({v}, {v}Len, payloadType)"
    return {
        "handle_out": v,
        "bytes_out": f"takeBytes({v}, {v}Len)",
        "bool_out": f"{v} != 0",
        "size_out": f"int({v})",
    }[p.kind]


def go_c_args(fn: Function) -> list[str]:
    out: list[str] = []
    for p in fn.params:
        v = naming.lower_camel(p.name)
        if p.kind in ("handle", "record_callback", "raw_pointer"):
            out.append(v)
        elif p.kind == "text":
            out += [f"cText({v})", f"C.size_t(len({v}))"]
        elif p.kind == "bytes":
            out += [f"cBytes({v})", f"C.size_t(len({v}))"]
        elif p.kind == "u8":
            out.append(f"C.uint8_t({v})")
        elif p.kind == "bytes_out":
            out += [f"&out.{v}", f"&out.{v}Len"]
        else:
            out.append(f"&out.{v}")
    out.append("&out.errMsg")
    return out


_PY_IN = {"handle": "Any", "text": "bytes", "bytes": "bytes", "u8": "int", "record_callback": "Any", "raw_pointer": "Any"}
_PY_OUT = {"handle_out": "Any", "bytes_out": "bytes", "bool_out": "bool", "size_out": "int"}


def py_in_type(p: Param) -> str:
    return _PY_IN[p.kind]


def py_out_types(fn: Function) -> str:
    """The return annotation of a generated Python call: None, one type or a tuple."""
    types = [_PY_OUT[p.kind] for p in fn.outputs]
    if not types:
        return "None"
    return types[0] if len(types) == 1 else f"tuple[{', '.join(types)}]"


def py_out_allocs(schema: Schema, p: Param) -> list[tuple[str, str]]:
    """(variable, cffi type) of the out-parameter cells of p."""
    if p.kind == "bytes_out":
        return [(p.name, "uint8_t **"), (f"{p.name}_len", "size_t *")]
    ctype = {"handle_out": f"{naming.handle_type(schema, p.handle or '')} **", "bool_out": "int *", "size_out": "size_t *"}
    return [(p.name, ctype[p.kind])]


def py_c_args(fn: Function, src: str) -> list[str]:
    """The arguments of the C call; src prefixes the out-parameter cells ("scratch.")."""
    out: list[str] = []
    for p in fn.params:
        n = p.name
        if p.kind in ("handle", "u8", "record_callback", "raw_pointer"):
            out.append(n)
        elif p.kind in ("text", "bytes"):
            out += [n, f"len({n})"]
        elif p.kind == "bytes_out":
            out += [f"{src}{n}", f"{src}{n}_len"]
        elif p.kind in ("handle_out", "bool_out", "size_out"):
            out.append(f"{src}{n}")
        else:
            raise ValueError(f"function {fn.name}: param kind {p.kind} has no Python call")
    out.append("err_msg")
    return out


def py_out_value(p: Param, src: str) -> str:
    v = f"{src}{p.name}"
    return {
        "handle_out": f"{v}[0]",
        "bytes_out": f"library.take_bytes({v}, {v}_len[0])",
        "bool_out": f"bool({v}[0])",
        "size_out": f"int({v}[0])",
    }[p.kind]


def py_scratch_cells(schema: Schema) -> list[tuple[str, str]]:
    """The reused out-parameter cells of the fast-path functions' Python calls: one per
    out-parameter name (the same name must be the same kind in each)."""
    cells: dict[str, str] = {}
    for fn in schema.python_functions:
        if not fn.fast_path:
            continue
        for p in fn.outputs:
            for name, ctype in py_out_allocs(schema, p):
                if cells.setdefault(name, ctype) != ctype:
                    raise ValueError(f"function {fn.name}: out-parameter {name} differs from the other fast-path functions'")
    return list(cells.items())


class UnchangedResult:
    """One payload type's unchanged result (abi.yaml unchanged_result), as the
    templates render it."""

    def __init__(self, schema: Schema, payload_type: PayloadType, data: bytes) -> None:
        self.type = payload_type
        self.data = data
        self.json = json.dumps(vectors.unchanged_result_value(schema, payload_type.id))

    def hex_lines(self, per_line: int, fmt: str = "0x{:02x}", sep: str = ", ") -> list[str]:
        """The bytes in lines of per_line, each byte as fmt."""
        return [sep.join(fmt.format(b) for b in self.data[i : i + per_line]) for i in range(0, len(self.data), per_line)]

    @property
    def go_literal(self) -> str:
        """A Go interpreted string literal of the bytes (\\x takes exactly two digits)."""
        out = []
        for b in self.data:
            ch = chr(b)
            out.append(ch if 0x20 <= b < 0x7F and ch not in '"\\' else f"\\x{b:02x}")
        return '"' + "".join(out) + '"'


def unchanged_results(schema: Schema) -> list[UnchangedResult]:
    if schema.unchanged_result is None:
        return []
    data = vectors.unchanged_results(schema)
    return [UnchangedResult(schema, t, data[t.id]) for t in schema.payload_types]


def environment(schema: Schema, layout: Layout | None = None) -> jinja2.Environment:
    layout = layout or cpex_layout()
    py_exc = {s.name: s.py_exception or "" for s in schema.errors}
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["pyrepr"] = repr
    env.filters["regex_replace"] = lambda s, pattern, repl: re.sub(pattern, repl, s)
    env.filters["gostr"] = lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
    env.globals.update(
        schema=schema,
        layout=layout,
        library=layout.library,
        P=schema.abi.prefix,
        PU=schema.abi.prefix.upper(),
        ERROR_BASE=naming.camel(schema.abi.prefix) + "Error",
        HEADER=layout.header_name,
        GO_PACKAGE=layout.go.package if layout.go else "",
        GENERATED=naming.generated(layout.library.generated_from),
        REGENERATE=layout.library.regenerate,
        c_decl=naming.c_decl,
        c_args=naming.c_args,
        public_args=naming.public_args,
        camel=naming.camel,
        lower_camel=naming.lower_camel,
        go_field_type=go_field_type,
        py_field_type=py_field_type,
        py_check=py_check,
        py_clone=py_clone,
        go_in_type=go_in_type,
        go_out_type=go_out_type,
        go_zero=go_zero,
        go_out_value=go_out_value,
        go_c_args=go_c_args,
        go_present=go_present,
        go_encode=go_encoder(schema),
        go_decode=go_decoder(schema),
        go_api_in_type=go_api_in_type,
        go_api_out_type=go_api_out_type,
        go_api_arg=go_api_arg,
        go_api_out=go_api_out,
        py_extern_args=py_extern_args,
        py_impl_signature=py_impl_signature,
        py_exc=py_exc,
        sorted_exceptions=lambda *names: sorted(py_exc[n] for n in names),
        handle_kinds={h.name: i + 1 for i, h in enumerate(schema.handles)},
        handle_tag=handle_tag(schema),
        has_fast_path=any(f.fast_path for f in schema.python_functions),
        # The record sink typedef is declared only by a library with record callbacks.
        has_record_callbacks=any(p.kind == "record_callback" for f in schema.functions for p in f.params),
        py_in_type=py_in_type,
        py_out_types=py_out_types,
        py_out_allocs=py_out_allocs,
        py_c_args=py_c_args,
        py_out_value=py_out_value,
        py_scratch_cells=py_scratch_cells(schema),
        union_field=union_field,
        union_fields=union_fields,
        tuple=tuple,
        unchanged_results=unchanged_results(schema),
        capabilities=sorted({c for x in schema.extension_slots for c in (x.read, x.write, *x.read_any) if c is not None}),
    )
    return env


def render_all(schema: Schema, layout: Layout | None = None) -> dict[str, str | bytes]:
    """Every generated file the layout names: path under its root -> content (bytes for
    binary files)."""
    layout = layout or cpex_layout()
    check_fits(schema, layout)
    env = environment(schema, layout)
    out: dict[str, str | bytes] = {}
    for template, path in layout.targets().items():
        text = env.get_template(template).render()
        if path.endswith(".go"):
            text = gofmt(text, path)
        out[path] = text
    if layout.outputs.vectors is not None:
        out.update(vectors.render(schema, layout.outputs.vectors))
    return out


def check_fits(schema: Schema, layout: Layout) -> None:
    """Refuse a layout output the schema cannot fill, and Go API names that collide."""
    o = layout.outputs
    if o.unchanged_result and schema.unchanged_result is None:
        raise SchemaError("layout outputs.unchanged_result: the schema has no unchanged_result")
    if o.go_api:
        taken = {"Error": "the error type", "ABIVersionMajor": "a constant", "ABIVersionMinor": "a constant"}
        taken["CheckVersion"] = "the version check"
        if o.go_wire:
            taken["EncodeRecord"] = "the record encoder (go_wire)"
            taken["DecodeRecord"] = "the record decoder (go_wire)"
            taken["ExtraField"] = "the type of a record's unknown field (go_wire)"
        if o.go_records:
            for name in [r.name for r in schema.records] + [u.name for u in schema.unions]:
                if name in taken:
                    raise SchemaError(f"record {name}: its Go type would be {name}, which is already {taken[name]}")
                taken[name] = f"the Go type of record {name}"
        for h in schema.handles:
            name = naming.camel(h.name)
            if name in taken:
                raise SchemaError(f"handle {h.name}: its Go type would be {name}, which is already {taken[name]}")
            taken[name] = f"the Go type of handle {h.name}"
        for st in schema.errors:
            taken.setdefault(st.go_sentinel or "", f"the Go sentinel of status {st.name}")
        for f in schema.python_functions:
            for prm in f.params:
                if naming.lower_camel(prm.name) == "err":
                    raise SchemaError(f"function {f.name}, param {prm.name}: its Go name would be err, the API's error result")
            name = naming.camel(f.name)
            if name in taken:
                raise SchemaError(f"function {f.name}: its Go function would be {name}, which is already {taken[name]}")
            taken[name] = f"the Go function of {f.name}"


def gofmt(source: str, path: str) -> str:
    proc = subprocess.run(["gofmt"], input=source, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"gofmt rejected the rendering of {path}:\n{proc.stderr}")
    return proc.stdout
