"""The generator: schema validation, drift detection, header checks, cross-target agreement."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from cpex_codegen import __main__ as cli
from cpex_codegen import header_check, render, schema
from cpex_codegen.naming import camel

ROOT = Path(__file__).resolve().parents[2]


def copy_repo(tmp_path: Path) -> Path:
    """The schema plus the committed generated files, in a scratch root."""
    (tmp_path / "codegen").mkdir()
    shutil.copytree(ROOT / "codegen" / "schema", tmp_path / "codegen" / "schema")
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
    vectors = ["tests/vectors/manifest.json", "tests/vectors/ToolCall.msgpack", "tests/vectors/ContentPart.unknown_variant.msgpack"]
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
    abi.write_text(abi.read_text().replace("minor: 1\n", "minor: 2\n"))
    assert cli.main(["--check", "--root", str(root)]) == 1
    assert cli.main(["--root", str(root)]) == 0
    assert cli.main(["--check", "--root", str(root)]) == 0
    assert "#define CPEX_ABI_VERSION_MINOR 2" in (root / "include" / "cpex.h").read_text()


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
