"""The generator as a tool: any schema and layout, not only cpex's (docs/codegen.md).

libkv (examples/codegen/kvstore) is the second library; these tests hold its files to
its schema, check that no template or glue knows it is cpex, and that a schema or a
layout is refused on load with the path of the mistake and what was expected."""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import pytest
import yaml

from cpex_codegen import __main__ as cli
from cpex_codegen import abi_check, header_check, layout, render, schema

ROOT = Path(__file__).resolve().parents[2]
KV = ROOT / "examples" / "codegen" / "kvstore"


def kv_copy(tmp_path: Path) -> Path:
    """libkv's schema, layout, released headers and generated files in a scratch folder."""
    dst = tmp_path / "kvstore"
    shutil.copytree(KV, dst, ignore=shutil.ignore_patterns("__pycache__", "*_test.go", "tests"))
    return dst / "layout.yaml"


def test_kv_files_match_its_schema() -> None:
    assert cli.main(["--layout", str(KV / "layout.yaml"), "--check"]) == 0


def test_kv_drift_is_detected_and_regenerated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lay = kv_copy(tmp_path)
    api = lay.parent / "go" / "api_gen.go"
    api.write_text(api.read_text() + "// edited by hand\n")
    assert cli.main(["--layout", str(lay), "--check"]) == 1
    assert "go/api_gen.go" in capsys.readouterr().err
    assert cli.main(["--layout", str(lay)]) == 0
    assert cli.main(["--layout", str(lay), "--check"]) == 0


def test_no_template_and_no_glue_names_cpex() -> None:
    for path in [*sorted((ROOT / "codegen" / "templates").glob("*.j2")), ROOT / "ffi" / "runtime.c"]:
        text = path.read_text()
        if path.name == "runtime.c":  # its comment names the generator, cpex_codegen
            text = text.replace("cpex_codegen", "")
        assert not re.search("cpex", text, re.IGNORECASE), path.name


def test_kv_outputs_name_only_kv() -> None:
    lay = layout.load(KV / "layout.yaml")
    files = render.render_all(schema.load(lay.schema_path), lay)
    assert set(files) == set(lay.targets().values())
    for rel, content in files.items():
        assert isinstance(content, str)
        body = content.replace("cpex_codegen", "")  # the marker names the generator
        assert not re.search("cpex", body, re.IGNORECASE), rel


def test_kv_header_is_strict_c99_and_cxx_and_its_abi_is_checked() -> None:
    lay = layout.load(KV / "layout.yaml")
    sch = schema.load(lay.schema_path)
    header = (KV / "include" / "kv.h").read_text()
    header_check.check(sch, header)  # pycparser, gcc -std=c99 -pedantic -Werror, g++
    abi_check.check(sch, header, KV / "include" / "abi")
    assert (KV / "include" / "abi" / "kv-1.0.h").exists()


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def test_the_abi_checker_covers_kv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lay = kv_copy(tmp_path)
    kv_yaml = lay.parent / "schema" / "kv.yaml"
    original = kv_yaml.read_text()
    # A parameter removed from a released function: refused within major 1.
    _edit(kv_yaml, "      - name: value\n        kind: bytes\n", "      - name: value\n        kind: text\n")
    assert cli.main(["--layout", str(lay)]) == 1
    assert "kv_put" in capsys.readouterr().err
    # A function added without a minor bump: refused; with it: accepted.
    clear = "  - name: clear\n    impl: python\n    params:\n      - {name: store, kind: handle, handle: store}\n"
    kv_yaml.write_text(original + "\n" + clear + "    doc: Removes every key.\n")
    assert cli.main(["--layout", str(lay)]) == 1
    assert "kv_clear" in capsys.readouterr().err
    _edit(kv_yaml, "  minor: 1\n", "  minor: 2\n")
    assert cli.main(["--layout", str(lay)]) == 0
    assert "kv_status kv_clear(kv_store *store, char **err_msg);" in (lay.parent / "include" / "kv.h").read_text()
    # A released version is not released twice.
    assert cli.main(["--layout", str(lay), "--release"]) == 0
    assert cli.main(["--layout", str(lay), "--release"]) == 1
    assert "was released already" in capsys.readouterr().err


def _kv_schema(tmp_path: Path, old: str, new: str) -> Path:
    d = tmp_path / "schema"
    shutil.copytree(KV / "schema", d)
    _edit(d / "kv.yaml", old, new)
    return d


@pytest.mark.parametrize(
    ("old", "new", "match"),
    [
        # the statuses the glue reports with
        ("  - name: runtime_init\n", "  - name: runtime_start\n", "an error status named 'runtime_init' is required"),
        # the C functions the glue defines
        (
            "    returns: const_string\n",
            "    returns: uint32\n",
            "build_info is defined by the runtime glue; expected impl: c, returns: const_string",
        ),
        (
            "        consumes: true\n",
            "        consumes: true\n        nullable: true\n",
            "only a non-nullable handle param can be consumed",
        ),
        # pydantic's own checks name the path and what was found
        (
            "        kind: size_out\n",
            "        kind: size\n",
            r"functions\[7\]\.params\[1\]\.kind: Input should be .*\(got 'size'\)",
        ),
        ("  prefix: kv\n", "  prefix: KV\n", r"abi\.prefix: String should match pattern .*\(got 'KV'\)"),
        ("    go_sentinel: ErrKvNotFound\n", "", "status not_found: an error status needs go_sentinel and py_exception"),
    ],
)
def test_invalid_schemas_name_the_path_and_the_expectation(tmp_path: Path, old: str, new: str, match: str) -> None:
    with pytest.raises(schema.SchemaError, match=match):
        schema.load(_kv_schema(tmp_path, old, new))


def _layout_with(tmp_path: Path, edit: dict[str, object]) -> Path:
    data = yaml.safe_load((KV / "layout.yaml").read_text())
    for dotted, value in edit.items():
        *parents, leaf = dotted.split(".")
        node = data
        for part in parents:
            node = node[part]
        if value is None:
            del node[leaf]
        else:
            node[leaf] = value
    path = tmp_path / "layout.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        ({"outputs.header": None}, r"outputs\.header: Field required"),
        ({"outputs.shim": "x.c"}, r"outputs\.shim: Extra inputs are not permitted"),
        ({"go.package": "Kv-Store"}, r"go\.package: String should match pattern"),
        ({"build.soname": "kv.so"}, r"build\.soname: String should match pattern .*\(got 'kv.so'\)"),
        ({"outputs.go_support": None}, "outputs.go_support: go_api needs the go_support output"),
        ({"python.implementation": None}, "python.implementation: py_exports calls an implementation module"),
        ({"outputs.py_calls": "go/api_gen.go"}, "more than one output goes to go/api_gen.go"),
        # records in a generated library need their support generated too
        (
            {"outputs.go_wire": None},
            "outputs.go_wire: go_records in a generated Go package .go_support. needs the go_wire output",
        ),
        ({"outputs.go_records": None}, "outputs.go_wire: the MessagePack helpers are for go_records"),
        (
            {"outputs.py_wire": None},
            r"outputs\.py_wire: py_records in a library with generated Python bindings .py_exports. needs the py_wire output",
        ),
        ({"outputs.py_records": None}, "outputs.py_wire: the wire module is the base of py_records"),
        ({"python.wire_module": None}, "python.wire_module: py_records imports WireRecord from it"),
        (
            {"python.wire_module": "kvstore.wire"},
            r"python\.wire_module: must be the import path of outputs\.py_wire "
            r"\(python/kvstore/_generated/wire\.py\), got 'kvstore\.wire'",
        ),
    ],
)
def test_invalid_layouts_name_the_key_and_the_expectation(tmp_path: Path, edit: dict[str, object], match: str) -> None:
    with pytest.raises(schema.SchemaError, match=match):
        layout.load(_layout_with(tmp_path, edit))


def test_a_go_api_name_collision_is_refused(tmp_path: Path) -> None:
    sch = schema.load(_kv_schema(tmp_path, "  - name: count\n", "  - name: check_version\n"))
    with pytest.raises(schema.SchemaError, match="function check_version: its Go function would be CheckVersion"):
        render.render_all(sch, layout.load(KV / "layout.yaml"))


def test_a_record_named_like_a_go_api_name_is_refused(tmp_path: Path) -> None:
    record = "records:\n  - name: Stats\n    doc: Taken.\n    fields:\n      - {name: n, type: int64}\n"
    sch = schema.load(_kv_schema(tmp_path, "records:\n", record))
    with pytest.raises(
        schema.SchemaError, match="function stats: its Go function would be Stats, which is already the Go type of record Stats"
    ):
        render.render_all(sch, layout.load(KV / "layout.yaml"))


def test_a_record_field_named_like_the_wire_decoder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(schema.SchemaError, match=r"record KvBlob, field unpack: 'unpack' is the MessagePack decoder"):
        schema.load(_kv_schema(tmp_path, "      - {name: data, type: bytes}\n", "      - {name: unpack, type: bytes}\n"))


def _defs(source: str, names: dict[str, str]) -> dict[str, str]:
    """The module-level and WireRecord-level definitions of a wire module, docstrings
    dropped and the names in `names` renamed, as comparable AST dumps."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in names:
            node.id = names[node.id]
        body = getattr(node, "body", None)
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and body and isinstance(body[0], ast.Expr):
            if isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                node.body = body[1:]
    out: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            out[node.name] = ast.dump(node)
            if node.name == "WireRecord":
                out.update({f"WireRecord.{m.name}": ast.dump(m) for m in node.body if isinstance(m, ast.FunctionDef)})
        elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            out[node.targets[0].id] = ast.dump(node)
    return out


def test_the_generated_wire_module_is_cpexs_generic_wire_code() -> None:
    """cpex keeps its hand-written cpexrt/wire.py; the wire module the generator emits
    for other libraries (py_wire) is the same code where it is generic, so a fix to one
    must reach the other."""
    generated = _defs((KV / "python" / "kvstore" / "_generated" / "wire.py").read_text(), {})
    cpex = _defs(
        (ROOT / "sdk-python" / "cpexrt" / "wire.py").read_text(),
        {"ParseError": "InvalidInputError", "SerializeError": "InternalError"},
    )
    shared = ["WireField", "_SIZED", "_PLAIN", "_is_empty", "to_wire_value", "_no_ext", "_plan", "_wire_map"]
    shared += ["WireRecord.to_wire", "WireRecord.wire_from", "WireRecord.from_wire", "WireRecord.pack", "pack"]
    for name in shared:
        assert generated[name] == cpex[name], name


def test_the_cli_reports_a_bad_layout_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lay = kv_copy(tmp_path)
    header = lay.parent / "include" / "kv.h"
    before = header.read_bytes()
    _edit(lay, "  package: kvstore\n", "  package: Kv\n")
    _edit(lay.parent / "schema" / "kv.yaml", "  minor: 1\n", "  minor: 2\n")  # would change kv.h
    assert cli.main(["--layout", str(lay)]) == 1
    assert "go.package: String should match pattern" in capsys.readouterr().err
    assert header.read_bytes() == before


def test_check_does_not_combine_with_build_or_release() -> None:
    with pytest.raises(SystemExit):
        cli.main(["--layout", str(KV / "layout.yaml"), "--check", "--build"])
