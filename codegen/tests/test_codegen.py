"""The generator: schema validation, drift detection, header checks, cross-target agreement."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from cpex_codegen import __main__ as cli
from cpex_codegen import header_check, naming, render, schema
from cpex_codegen.naming import camel

ROOT = Path(__file__).resolve().parents[2]


def copy_repo(tmp_path: Path) -> Path:
    """The schema, the released headers and the committed generated files, in a scratch root."""
    (tmp_path / "codegen").mkdir()
    shutil.copytree(ROOT / "codegen" / "schema", tmp_path / "codegen" / "schema")
    shutil.copytree(ROOT / "include" / "abi", tmp_path / "include" / "abi")
    for rel in generated_paths():
        dst = tmp_path / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, dst)
    return tmp_path


def generated_paths() -> list[str]:
    return list(render.render_all(schema.load(ROOT / "codegen" / "schema")))


def test_committed_files_match_the_schema() -> None:
    assert cli.main(["--check"]) == 0


def test_drift_is_detected_in_any_generated_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = copy_repo(tmp_path)
    paths = generated_paths()
    vectors = [
        "tests/vectors/manifest.json",
        "tests/vectors/ToolCall.msgpack",
        "tests/vectors/ContentPart.unknown_variant.msgpack",
    ]
    assert set(vectors) <= set(paths)
    # every template's output, and a sample of the binary vectors (each check compiles the header)
    for rel in [*render.TARGETS.values(), *vectors]:
        path = root / rel
        original = path.read_bytes()
        path.write_bytes(original + b"\n")
        assert cli.main(["--check", "--root", str(root)]) == 1, rel
        assert rel in capsys.readouterr().err
        path.write_bytes(original)
    assert cli.main(["--check", "--root", str(root)]) == 0


def test_a_schema_change_is_drift_until_regenerated(tmp_path: Path) -> None:
    root = copy_repo(tmp_path)
    abi = root / "codegen" / "schema" / "abi.yaml"
    abi.write_text(abi.read_text().replace("minor: 2\n", "minor: 3\n"))
    assert cli.main(["--check", "--root", str(root)]) == 1
    assert cli.main(["--root", str(root)]) == 0
    assert cli.main(["--check", "--root", str(root)]) == 0
    assert "#define CPEX_ABI_VERSION_MINOR 3" in (root / "include" / "cpex.h").read_text()


def _schema_with(tmp_path: Path, edit: str, old: str, new: str) -> Path:
    d = tmp_path / "schema"
    shutil.copytree(ROOT / "codegen" / "schema", d)
    path = d / edit
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return d


@pytest.mark.parametrize(
    ("edit", "old", "new", "match"),
    [
        ("abi.yaml", "code: -2\n", "code: -1\n", "duplicate status code: -1"),
        ("abi.yaml", "- name: initialize\n", "- name: shutdown\n", "duplicate function: shutdown"),
        ("abi.yaml", "handle: context\n", "handle: session\n", "unknown handle 'session'"),
        ("abi.yaml", "kind: u8\n", "kind: u16\n", r"functions\[\d+\]\.params\[\d+\]\.kind"),
        ("abi.yaml", "- name: hook\n", "- name: default\n", "'default' is a reserved word"),
        ("records.yaml", "type: uint8}", "type: uint9}", "unknown type 'uint9'"),
        ("abi.yaml", "    go_sentinel: ErrCpexParse\n", "", "needs go_sentinel"),
    ],
)
def test_invalid_schemas_are_rejected_by_name(tmp_path: Path, edit: str, old: str, new: str, match: str) -> None:
    with pytest.raises(schema.SchemaError, match=match):
        schema.load(_schema_with(tmp_path, edit, old, new))


def test_header_checks_catch_a_broken_header() -> None:
    sch = schema.load(ROOT / "codegen" / "schema")
    header = (ROOT / "include" / "cpex.h").read_text()
    header_check.check(sch, header)
    with pytest.raises(header_check.HeaderCheckError, match="differ from the schema"):
        header_check.check_parse(sch, header.replace("size_t *out_count, ", ""))
    with pytest.raises(header_check.HeaderCheckError, match="gcc"):
        header_check.check_compile(sch, header.replace("typedef int32_t cpex_status;", "typedef int32_t cpex_status"))
    with pytest.raises(header_check.HeaderCheckError, match="g\\+\\+"):
        header_check.check_compile(sch, header.replace('extern "C" {', "{"))


def test_status_codes_agree_across_header_go_and_python() -> None:
    sch = schema.load(ROOT / "codegen" / "schema")
    header = (ROOT / "include" / "cpex.h").read_text()
    go = (ROOT / "sdk-go" / "abi_gen.go").read_text()
    from cpexrt._generated.errors import ERROR_CLASSES, Status

    for s in sch.statuses:
        macro = "CPEX_OK" if s.code == 0 else f"CPEX_ERR_{s.name.upper()}"
        assert re.search(rf"#define {macro} \(\(cpex_status\)\({s.code}\)\)", header), macro
        assert Status[s.name.upper()] == s.code
        if s.code:
            assert ERROR_CLASSES[s.code].__name__ == s.py_exception
            const = "code" + camel(s.name)
            assert re.search(rf"\n\t{const}\s+int32 = {s.code}\n", go), const
            assert re.search(rf"\n\t{const}:\s+{s.go_sentinel},", go), s.go_sentinel
    raw = yaml.safe_load((ROOT / "codegen" / "schema" / "abi.yaml").read_text())
    assert len(raw["statuses"]) == len(Status)


# A schema name equal to a name the generator gives something itself does not always
# fail to compile: a Python field `to_wire` silently replaces the encoder method, a Go
# field `Extra` the unknown-field store. Each is refused, naming the entry and why.
_TOOLCALL = "  - name: ToolCall\n    doc: A request to run a tool.\n    fields:\n"


def _toolcall_field(name: str) -> tuple[str, str, str]:
    """An edit of records.yaml that gives ToolCall a string field `name`."""
    return ("records.yaml", _TOOLCALL, f"{_TOOLCALL}      - {{name: {name}, type: string}}\n")


_NEW_RECORD = "  - name: ToolCall\n    doc: A request to run a tool.\n"


def _new_record(name: str) -> tuple[str, str, str]:
    return ("records.yaml", _NEW_RECORD, f"  - name: {name}\n    doc: x\n    fields: []\n{_NEW_RECORD}")


@pytest.mark.parametrize(
    ("edit", "old", "new", "match"),
    [
        # record fields: the members of every generated Go struct and Python model
        (
            *_toolcall_field("extra"),
            "record ToolCall, field extra: 'extra' becomes the Go field Extra, which is the field in which every Go "
            "record keeps its unknown fields",
        ),
        (*_toolcall_field("to_wire"), r"record ToolCall, field to_wire: 'to_wire' is the encoder method \(WireRecord.to_wire\)"),
        (
            *_toolcall_field("wire_from"),
            r"record ToolCall, field wire_from: 'wire_from' is the fast encoder \(WireRecord.wire_from\)",
        ),
        (*_toolcall_field("from_wire"), r"record ToolCall, field from_wire: 'from_wire' is the validating decoder"),
        (*_toolcall_field("pack"), r"record ToolCall, field pack: 'pack' is the MessagePack method \(WireRecord.pack\)"),
        (
            *_toolcall_field("encode_msgpack"),
            "record ToolCall, field encode_msgpack: 'encode_msgpack' becomes the Go field EncodeMsgpack, which is the "
            "MessagePack encoder method of every Go record",
        ),
        (
            *_toolcall_field("decode_msgpack"),
            "record ToolCall, field decode_msgpack: .* the MessagePack decoder method of every Go record",
        ),
        (
            *_toolcall_field("model_dump_json"),
            "record ToolCall, field model_dump_json: 'model_dump_json' is an attribute of pydantic's BaseModel",
        ),
        (
            *_toolcall_field("model_validate_later"),
            "record ToolCall, field model_validate_later: 'model_validate_later' is in pydantic's protected namespaces",
        ),
        (*_toolcall_field("copy"), "record ToolCall, field copy: 'copy' is an attribute of pydantic's BaseModel"),
        (
            *_toolcall_field("str"),
            "record ToolCall, field str: 'str' shadows the builtin str, which the generated Python annotations use",
        ),
        (
            *_toolcall_field("tool_call__id"),
            "record ToolCall, field tool_call_id: 'tool_call_id' becomes the Go field ToolCallID, like field tool_call__id",
        ),
        # the union's members
        (
            "records.yaml",
            "{tag: text, field: text,",
            "{tag: text, field: value,",
            "union ContentPart, variant text, field value: 'value' is a property of the generated Python union",
        ),
        (
            "records.yaml",
            "{tag: thinking, field: text,",
            "{tag: thinking, field: known,",
            "union ContentPart, variant thinking, field known: 'known' is a property of the generated Python union",
        ),
        (
            "records.yaml",
            "{tag: tool_call, field: content,",
            "{tag: tool_call, field: new_image,",
            "union ContentPart, variant tool_call, field new_image: 'new_image' is the Python constructor of variant image",
        ),
        (
            "records.yaml",
            "go_name: ToolResult}",
            "go_name: Raw}",
            "union ContentPart, variant tool_result: the Go field of variant tool_result would be Raw, which is the "
            "field in which the Go union keeps an unknown variant",
        ),
        (
            "records.yaml",
            "go_name: Resource}",
            "go_name: Text}",
            "union ContentPart, variant resource: the Go constructor of ContentPart variant resource would be "
            "NewTextPart, which is already the Go constructor of ContentPart variant text",
        ),
        # record names: the helpers beside the generated types
        (
            *_new_record("ExtraField"),
            "record ExtraField: the Go type of record ExtraField would be ExtraField, which "
            "is already the Go SDK type of an unknown field",
        ),
        (
            *_new_record("PayloadGeneric"),
            "record PayloadGeneric: the Go type of record PayloadGeneric would be "
            "PayloadGeneric, which is already the Go constant of payload type generic",
        ),
        (
            *_new_record("NewTextPart"),
            "union ContentPart, variant text: the Go constructor of ContentPart variant "
            "text would be NewTextPart, which is already the Go type of record NewTextPart",
        ),
        (*_new_record("WireRecord"), "record WireRecord: 'WireRecord' is the base class of the generated Python records"),
        (*_new_record("None"), "record None: 'None' is a reserved word in Python"),
        # C, Go and Python names of the ABI itself
        (
            "abi.yaml",
            "handles:\n",
            "handles:\n  - name: status\n    doc: x\n",
            "handle status: the typedef of handle status would be cpex_status, which is already the status typedef",
        ),
        (
            "abi.yaml",
            "    name: cmf_message\n",
            "    name: types\n",
            "payload type types: the Python constant of payload type types would be PAYLOAD_TYPES, which is already "
            "the payload type table",
        ),
        (
            "abi.yaml",
            "go_sentinel: ErrCpexParse\n",
            "go_sentinel: ErrCpexPipeline\n",
            "status pipeline: the Go sentinel of status pipeline would be ErrCpexPipeline, which is already the Go "
            "sentinel of status parse",
        ),
    ],
)
def test_names_the_generator_uses_are_refused(tmp_path: Path, edit: str, old: str, new: str, match: str) -> None:
    with pytest.raises(schema.SchemaError, match=match):
        schema.load(_schema_with(tmp_path, edit, old, new))


def test_the_cli_refuses_a_colliding_field_before_writing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = copy_repo(tmp_path)
    records = root / "codegen" / "schema" / "records.yaml"
    _, old, new = _toolcall_field("extra")
    records.write_text(records.read_text().replace(old, new, 1))
    before = (root / "sdk-go" / "records_gen.go").read_bytes()
    assert cli.main(["--root", str(root)]) == 1
    assert "record ToolCall, field extra: 'extra' becomes the Go field Extra" in capsys.readouterr().err
    assert (root / "sdk-go" / "records_gen.go").read_bytes() == before


def test_every_python_function_has_its_generated_python_call() -> None:
    """cpexrt/_generated/calls.py has one function per Python-implemented function: it
    takes the Library (and the Scratch on the fast path) and the inputs, and calls the C
    function with every C parameter, err_msg last."""
    import ast

    sch = schema.load(ROOT / "codegen" / "schema")
    source = render.render_all(sch)["sdk-python/cpexrt/_generated/calls.py"]
    assert isinstance(source, str)
    defs = {node.name: node for node in ast.parse(source).body if isinstance(node, ast.FunctionDef)}
    assert set(defs) == {f.name for f in sch.python_functions}
    for f in sch.python_functions:
        node = defs[f.name]
        head = ["library", "scratch"] if f.fast_path else ["library"]
        assert [a.arg for a in node.args.args] == [*head, *(p.name for p in f.inputs)], f.name
        c_calls = [
            c
            for c in ast.walk(node)
            if isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute) and c.func.attr.startswith("cpex_")
        ]
        assert [c.func.attr for c in c_calls] == [f"cpex_{f.name}"], f.name  # type: ignore[attr-defined]
        args = c_calls[0].args
        assert len(args) == len(naming.c_params(sch, f)), f.name
        assert isinstance(args[-1], ast.Name) and args[-1].id == "err_msg", f.name


def test_the_python_host_names_no_c_function_as_a_string() -> None:
    """The host goes through the generated calls, never getattr(lib, "cpex_...")."""
    host = ROOT / "sdk-python" / "cpexrt" / "host"
    for path in sorted(host.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert '"cpex_' not in text and "'cpex_" not in text, path.name
