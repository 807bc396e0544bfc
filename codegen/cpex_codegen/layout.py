"""The output layout: where one library's generated files go and what they are called.

A layout is a small YAML file beside (or near) the schema. Paths in it are relative to
the layout file's folder; `root` is the folder every output path is relative to. The
generator renders every output the layout names and nothing else, so a library picks
the pieces it needs (cpex keeps its hand-written Go SDK and Python boundary; a new
library asks for the generic Go API, Python library loader and Python exports).
docs/codegen.md describes every key.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .schema import SchemaError, describe

MODULE = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Outputs(_Strict):
    """Output kind -> path under root. Omit a kind to skip it."""

    header: str
    embedding_api: str
    shims: str
    py_errors: str
    py_cdef: str
    py_calls: str
    go_abi: str | None = None
    # The generic Go pieces for a library without a hand-written Go SDK: the Error type
    # and pointer helpers (go_support) and one exported function per Python-backed
    # function, with a Go type per handle (go_api).
    go_support: str | None = None
    go_api: str | None = None
    go_records: str | None = None
    # The MessagePack helpers go_records needs (ExtraField, the encoders' and decoders'
    # helpers, EncodeRecord / DecodeRecord), for a generated Go package (go_support).
    go_wire: str | None = None
    py_init: str | None = None
    py_records: str | None = None
    py_slots: str | None = None
    # The base of the Python records (WireRecord, WireField, pack, unpack), imported by
    # py_records as python.wire_module.
    py_wire: str | None = None
    # The generic Python pieces: a loader of the built library (py_library) and the
    # boundary that runs inside it and calls the implementation module (py_exports).
    py_library: str | None = None
    py_exports: str | None = None
    unchanged_result: str | None = None
    vectors: str | None = None


class Library(_Strict):
    # The library's name in prose ("libcpex").
    name: str = Field(pattern=r"^lib[a-z][a-z0-9_]*$")
    # The first line of the header's description comment.
    title: str
    # What an error message names, in the header's contract ("message naming ...").
    message_names: str = "the function and the failing input"
    # The marker lines of every generated file: where it came from, how to regenerate.
    generated_from: str
    regenerate: str


class Go(_Strict):
    package: str = Field(pattern=r"^[a-z][a-z0-9]*$")


class Python(_Strict):
    # Where the generated calls import Library from (a module with class Library).
    library_module: str = Field(pattern=MODULE)
    # Where the generated errors live, as the py_exports / py_library modules import it.
    errors_module: str = Field(pattern=MODULE)
    # Where the generated C declarations live.
    cdef_module: str = Field(pattern=MODULE)
    # The module whose install(ffi, lib) attaches the Python implementations inside the
    # library (cpex: its hand-written boundary; others: the generated py_exports).
    exports_module: str = Field(pattern=MODULE)
    # The module of the implementation the generated py_exports calls: one function per
    # Python-backed function of the schema.
    implementation: str | None = Field(default=None, pattern=MODULE)
    # Where records.py imports WireField and WireRecord from (only with py_records).
    wire_module: str | None = Field(default=None, pattern=MODULE)


class Build(_Strict):
    """How `python -m cpex_codegen.build` links the shared object."""

    soname: str = Field(pattern=r"^lib[a-z0-9_]+\.so\.[0-9]+$")
    # The cffi module name inside the library; unique per library in a process.
    module: str = Field(pattern=r"^_[a-z0-9_]+$")
    # Default output folder, relative to root.
    out_dir: str
    # Folders the library puts on sys.path (relative to root), first the one holding
    # the implementation package; the interpreter's own paths follow.
    python_path: tuple[str, ...]
    # C files pasted after the runtime glue and before the shims (relative to root).
    extra_sources: tuple[str, ...] = ()
    # Extra cffi declarations of C functions those files give Python.
    extra_cdef: str = ""


class Layout(_Strict):
    # The folder of the schema's *.yaml files, relative to the layout file.
    schema_dir: str = Field(alias="schema")
    # The folder the paths below are relative to, relative to the layout file.
    root: str = "."
    # The folder of released headers the ABI check compares with (relative to root).
    abi_baselines: str
    library: Library
    outputs: Outputs
    go: Go | None = None
    python: Python
    build: Build

    # Set by load(): the layout file's folder.
    base: Path = Path(".")

    @property
    def root_dir(self) -> Path:
        return (self.base / self.root).resolve()

    @property
    def schema_path(self) -> Path:
        return (self.base / self.schema_dir).resolve()

    @property
    def header_name(self) -> str:
        return Path(self.outputs.header).name

    def targets(self) -> dict[str, str]:
        """Template -> output path under root, for the outputs this layout names."""
        o = self.outputs
        pairs = {
            "header.h.j2": o.header,
            "embedding_api.h.j2": o.embedding_api,
            "shims.c.j2": o.shims,
            "unchanged_result.c.j2": o.unchanged_result,
            "abi_gen.go.j2": o.go_abi,
            "support_gen.go.j2": o.go_support,
            "api_gen.go.j2": o.go_api,
            "records_gen.go.j2": o.go_records,
            "wire_gen.go.j2": o.go_wire,
            "errors.py.j2": o.py_errors,
            "abi_cdef.py.j2": o.py_cdef,
            "records.py.j2": o.py_records,
            "wire.py.j2": o.py_wire,
            "package_init.py.j2": o.py_init,
            "slots.py.j2": o.py_slots,
            "calls.py.j2": o.py_calls,
            "library.py.j2": o.py_library,
            "exports.py.j2": o.py_exports,
        }
        return {t: p for t, p in pairs.items() if p is not None}


def load(path: Path) -> Layout:
    """The layout at path, validated: an error names the key and the expectation."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise SchemaError(f"{path}: {exc}") from exc
    if not isinstance(data, dict):
        raise SchemaError(f"{path}: expected a mapping at the top level")
    try:
        layout = Layout.model_validate(data)
    except ValidationError as exc:
        raise SchemaError(describe(exc, f"invalid layout {path.name}")) from exc
    layout = layout.model_copy(update={"base": path.resolve().parent})
    _check(layout, path.name)
    return layout


def _check(layout: Layout, where: str) -> None:
    o = layout.outputs
    go_files = [o.go_abi, o.go_support, o.go_api, o.go_records, o.go_wire]
    if any(go_files) and layout.go is None:
        raise SchemaError(f"{where}: go: a Go output is named, so go.package is required")
    if (o.go_api or o.go_support) and not o.go_abi:
        raise SchemaError(f"{where}: outputs.go_abi: go_api and go_support need the go_abi output")
    if o.go_api and not o.go_support:
        raise SchemaError(f"{where}: outputs.go_support: go_api needs the go_support output (its Error type)")
    if o.py_exports and layout.python.implementation is None:
        raise SchemaError(f"{where}: python.implementation: py_exports calls an implementation module; name it")
    if o.py_records and layout.python.wire_module is None:
        raise SchemaError(f"{where}: python.wire_module: py_records imports WireRecord from it; name it")
    # Records in a generated library need their support generated too: a generated Go
    # package (go_support) has no hand-written MessagePack helpers, and generated Python
    # bindings (py_exports) no hand-written wire module. cpex has both by hand.
    if o.go_records and o.go_support and not o.go_wire:
        raise SchemaError(
            f"{where}: outputs.go_wire: go_records in a generated Go package (go_support) needs the go_wire output "
            "(ExtraField and the MessagePack helpers the records call)"
        )
    if o.go_wire and not (o.go_records and o.go_support):
        raise SchemaError(
            f"{where}: outputs.go_wire: the MessagePack helpers are for go_records in a generated Go package (go_support)"
        )
    if o.py_records and o.py_exports and not o.py_wire:
        raise SchemaError(
            f"{where}: outputs.py_wire: py_records in a library with generated Python bindings (py_exports) needs the "
            "py_wire output (WireRecord, WireField, pack, unpack)"
        )
    if o.py_wire:
        module = layout.python.wire_module
        if not o.py_records:
            raise SchemaError(f"{where}: outputs.py_wire: the wire module is the base of py_records; name py_records too")
        if module is None or not ("/" + o.py_wire).endswith("/" + module.replace(".", "/") + ".py"):
            raise SchemaError(
                f"{where}: python.wire_module: must be the import path of outputs.py_wire ({o.py_wire}), got {module!r}"
            )
    paths = [p for p in o.model_dump().values() if p is not None]
    dup = sorted({p for p in paths if paths.count(p) > 1})
    if dup:
        raise SchemaError(f"{where}: outputs: more than one output goes to {', '.join(dup)}")
