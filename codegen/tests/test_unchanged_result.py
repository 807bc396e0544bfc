"""The unchanged result (abi.yaml unchanged_result): one wire fact, computed once by the
generator and rendered for C, Go and Python. Each rendering holds the same bytes, and
they are what the SDKs' encoders write for a PipelineResult nobody changed (the Go side:
sdk-go/unchanged_result_test.go)."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from pathlib import Path

import msgpack
import pytest

from cpex_codegen import render, schema, vectors

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = schema.load(ROOT / "codegen" / "schema")
EXPECTED = vectors.unchanged_results(SCHEMA)


def test_there_is_one_per_payload_type_and_it_is_the_documented_record() -> None:
    assert list(EXPECTED) == [t.id for t in SCHEMA.payload_types]
    for t in SCHEMA.payload_types:
        assert msgpack.unpackb(EXPECTED[t.id]) == {
            "continue_processing": True,
            "payload_modified": False,
            "extensions_modified": False,
            "payload_type": t.id,
        }


def test_the_python_encoder_writes_the_same_bytes() -> None:
    from cpexrt._generated.errors import UNCHANGED_RESULTS
    from cpexrt._generated.records import PipelineResult
    from cpexrt.wire import pack, unpack

    assert UNCHANGED_RESULTS == EXPECTED
    for payload_type, data in UNCHANGED_RESULTS.items():
        wire = PipelineResult.wire_from(
            continue_processing=True, payload_modified=False, extensions_modified=False, payload_type=payload_type
        )
        assert pack(wire, "pipeline result") == data, payload_type
        # ... and a full decode reads them back as that record, which re-encodes the same.
        record = PipelineResult.from_wire(unpack(data, "pipeline result"))
        assert (record.continue_processing, record.payload_modified, record.extensions_modified) == (True, False, False)
        assert record.payload_type == payload_type
        assert record.pack() == data


def test_the_go_rendering_holds_the_same_bytes() -> None:
    go = (ROOT / "sdk-go" / "abi_gen.go").read_text(encoding="utf-8")
    found = {
        name: ast.literal_eval("b" + literal)  # Go's \xNN and printable ASCII read the same in Python
        for name, literal in re.findall(r'\n\t(\w+): +\[\]byte\(("[^"\n]*")\),\n', go)
    }
    assert found == {t.go_name: EXPECTED[t.id] for t in SCHEMA.payload_types}


def test_the_c_rendering_holds_the_same_bytes(tmp_path: Path) -> None:
    """Compiles the generated file and asks cpex__unchanged_result for every id."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    generated = ROOT / "ffi" / "generated" / "unchanged_result.c"
    program = tmp_path / "dump.c"
    program.write_text(
        '#include <stdio.h>\n#include "cpex.h"\n'
        + generated.read_text(encoding="utf-8")
        + """
int main(void)
{
    int id;
    for (id = 0; id < 256; id++) {
        size_t len = 99, i;
        const uint8_t *bytes = cpex__unchanged_result((uint8_t)id, &len);
        if (bytes == NULL) {
            if (len != 0)
                return 1;
            continue;
        }
        printf("%d ", id);
        for (i = 0; i < len; i++)
            printf("%02x", bytes[i]);
        printf("\\n");
    }
    return 0;
}
""",
        encoding="utf-8",
    )
    exe = tmp_path / "dump"
    subprocess.run(
        ["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", f"-I{ROOT / 'include'}", str(program), "-o", str(exe)],
        check=True,
    )
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    found = {int(id_): bytes.fromhex(data) for id_, data in (line.split() for line in out.splitlines())}
    assert found == EXPECTED


def test_the_header_lists_the_bytes_with_cpex_invoke() -> None:
    header = (ROOT / "include" / "cpex.h").read_text(encoding="utf-8")
    doc = header.split(" * cpex_invoke\n", 1)[1].split("*/", 1)[0]
    assert "hosts may" in doc and "instead of decoding" in doc
    for t in SCHEMA.payload_types:
        listing = doc.split(f"CPEX_PAYLOAD_{t.name.upper()}, {len(EXPECTED[t.id])} bytes:\n", 1)[1]
        lines = [line.removeprefix(" *    ") for line in listing.splitlines()]
        is_hex = [re.fullmatch(r"[0-9a-f]{2}( [0-9a-f]{2})*", line) is not None for line in lines]
        first = is_hex.index(True)  # after the record, as JSON
        last = is_hex.index(False, first)
        assert bytes.fromhex("".join(lines[first:last])) == EXPECTED[t.id], t.name


def test_every_rendering_is_in_the_generated_files() -> None:
    files = render.render_all(SCHEMA)
    assert "ffi/generated/unchanged_result.c" in files
    for rel in ("ffi/generated/unchanged_result.c", "sdk-go/abi_gen.go", "sdk-python/cpexrt/_generated/errors.py"):
        assert files[rel] == (ROOT / rel).read_text(encoding="utf-8"), rel


def _schema_with(tmp_path: Path, old: str, new: str) -> Path:
    d = tmp_path / "schema"
    shutil.copytree(ROOT / "codegen" / "schema", d)
    path = d / "abi.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return d


FIELDS = "fields: {continue_processing: true, payload_modified: false, extensions_modified: false}"


@pytest.mark.parametrize(
    ("old", "new", "match"),
    [
        ("record: PipelineResult", "record: PipelineOutcome", "unchanged_result: unknown record 'PipelineOutcome'"),
        (
            "payload_type_field: payload_type",
            "payload_type_field: continue_processing",
            "payload_type_field 'continue_processing' must be a required uint8 field of PipelineResult",
        ),
        (
            FIELDS,
            FIELDS.replace("continue_processing: true, ", ""),
            "required fields of PipelineResult without a value: continue_processing",
        ),
        (
            FIELDS,
            FIELDS.replace("}", ", retry_delay_ms: 0}"),
            "field 'retry_delay_ms' is optional; an unchanged result leaves optional fields absent",
        ),
        (FIELDS, FIELDS.replace("}", ", payload_type: 0}"), "field 'payload_type' is the payload_type_field"),
        (FIELDS, FIELDS.replace("}", ", verdict: allow}"), "PipelineResult has no field 'verdict'"),
        (
            FIELDS,
            FIELDS.replace("continue_processing: true", "continue_processing: 1"),
            "field 'continue_processing' is a bool, not 1",
        ),
        ("listed_in: [invoke]", "listed_in: [invoke_hook]", "listed_in names unknown function 'invoke_hook'"),
        ("listed_in: [invoke]", "listed_in: [initialize]", "listed_in function 'initialize' returns no bytes"),
    ],
)
def test_an_unchanged_result_that_is_not_a_complete_record_is_refused(tmp_path: Path, old: str, new: str, match: str) -> None:
    with pytest.raises(schema.SchemaError, match=match):
        schema.load(_schema_with(tmp_path, old, new))
