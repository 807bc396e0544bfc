"""ABI stability: include/cpex.h against the newest released header in include/abi/.

The refused headers are the real header with its text edited, checked against the real
1.0 baseline (or the current header saved as a release of its version, for additions).
The tests follow the schema's current version (MINOR), so a minor bump leaves them be."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from cpex_codegen import __main__ as cli
from cpex_codegen import abi_check, render, schema
from cpex_codegen.abi_check import AbiCheckError

ROOT = Path(__file__).resolve().parents[2]
HEADER = (ROOT / "include" / "cpex.h").read_text(encoding="utf-8")
BASELINES = ROOT / "include" / "abi"
SCHEMA = schema.load(ROOT / "codegen" / "schema")
# The header's version: the tests hold for any 1.x after 1.0 (1.1 added two functions,
# each later minor more).
MINOR = SCHEMA.abi.minor
CURRENT = f"1.{MINOR}"
NEXT = MINOR + 1

NEW_FUNCTION = "cpex_status cpex_reload(cpex_manager *manager, char **err_msg);\n\n"
TAIL = "#ifdef __cplusplus\n}\n"


def copy_repo(tmp_path: Path) -> Path:
    """The schema, the released headers and the generated files, in a scratch root (as
    test_codegen.copy_repo, which mypy cannot import from here)."""
    (tmp_path / "codegen").mkdir()
    shutil.copytree(ROOT / "codegen" / "schema", tmp_path / "codegen" / "schema")
    shutil.copytree(BASELINES, tmp_path / "include" / "abi")
    for rel in render.render_all(SCHEMA):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, tmp_path / rel)
    return tmp_path


def edited(*edits: tuple[str, str], text: str = HEADER) -> str:
    for old, new in edits:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


def with_version(schema_: schema.Schema, major: int, minor: int) -> schema.Schema:
    return schema_.model_copy(update={"abi": schema_.abi.model_copy(update={"major": major, "minor": minor})})


def versioned(major: int, minor: int, text: str = HEADER) -> str:
    """The header text declaring ABI major.minor."""
    return edited(
        ("#define CPEX_ABI_VERSION_MAJOR 1\n", f"#define CPEX_ABI_VERSION_MAJOR {major}\n"),
        (f"#define CPEX_ABI_VERSION_MINOR {MINOR}\n", f"#define CPEX_ABI_VERSION_MINOR {minor}\n"),
        (f"((uint32_t){(1 << 16) | MINOR}u)", f"((uint32_t){(major << 16) | minor}u)"),
        text=text,
    )


def released_current(tmp_path: Path) -> Path:
    """A baseline folder in which the current header was released as ABI 1.MINOR."""
    d = tmp_path / "include" / "abi"
    shutil.copytree(BASELINES, d)
    (d / f"cpex-{CURRENT}.h").write_text(HEADER, encoding="utf-8")
    return d


def refused(header: str, baselines: Path = BASELINES, sch: schema.Schema = SCHEMA) -> str:
    with pytest.raises(AbiCheckError) as info:
        abi_check.check(sch, header, baselines)
    return str(info.value)


# --- what passes ---------------------------------------------------------------------


def test_the_current_header_keeps_the_abi_of_1_0() -> None:
    abi_check.check(SCHEMA, HEADER, BASELINES)
    old = abi_check.read_abi((BASELINES / "cpex-1.0.h").read_text(), "cpex")
    new = abi_check.read_abi(HEADER, "cpex")
    assert (old.version, new.version) == ("1.0", CURRENT)
    assert abi_check.compare(old, new) == []
    # the minor versions since 1.0 added functions, each documented "Since ABI 1.x"
    # (1.1: cpex_load_config_file and cpex_invoke_request); nothing else changed
    since = [f"cpex_{f.name}" for f in SCHEMA.functions if "Since ABI 1." in f.doc]
    assert [n for n in new.functions if n not in old.functions] == since
    assert [f"cpex_{f.name}" for f in SCHEMA.functions if "Since ABI 1.1." in f.doc] == [
        "cpex_load_config_file",
        "cpex_invoke_request",
    ]
    assert all(new.entities[name] == entity for name, entity in old.entities.items())
    assert len(old.functions) == 18 and len(old.entities) == 4 + 11 + 2  # types, statuses, payload types


def test_the_1_0_baseline_is_the_header_of_commit_6caf67c() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    proc = subprocess.run(["git", "show", "6caf67c:include/cpex.h"], cwd=ROOT, capture_output=True, check=False)
    if proc.returncode != 0:
        pytest.skip("commit 6caf67c is not in this clone")
    assert (BASELINES / "cpex-1.0.h").read_bytes() == proc.stdout


def test_comments_and_parameter_names_are_free() -> None:
    header = edited(
        (
            "cpex_status cpex_load_config(cpex_manager *manager, const char *yaml,",
            "cpex_status cpex_load_config(cpex_manager *mgr, const char *config_yaml,",
        ),
        ("/* Status codes. */", "/* Status codes (reworded). */"),
    )
    abi_check.check(SCHEMA, header, BASELINES)


def test_an_addition_with_a_minor_bump_passes(tmp_path: Path) -> None:
    header = versioned(1, MINOR + 1, edited((TAIL, NEW_FUNCTION + TAIL)))
    abi_check.check(with_version(SCHEMA, 1, MINOR + 1), header, released_current(tmp_path))


def test_a_major_bump_allows_anything(tmp_path: Path) -> None:
    header = versioned(
        2,
        0,
        edited(
            ("cpex_status cpex_free_context(cpex_context *context, char **err_msg);", ""),
            ("#define CPEX_ERR_PARSE ((cpex_status)(-3))", "#define CPEX_ERR_PARSE ((cpex_status)(-30))"),
        ),
    )
    abi_check.check(with_version(SCHEMA, 2, 0), header, released_current(tmp_path))


# --- what is refused -----------------------------------------------------------------


def test_a_removed_function_is_refused() -> None:
    header = edited(("cpex_status cpex_free_context(cpex_context *context, char **err_msg);", ""))
    assert refused(header) == (
        f"ABI check of include/cpex.h (ABI {CURRENT}) against include/abi/cpex-1.0.h failed:\n"
        "  function cpex_free_context was removed (it is in ABI 1.0); "
        "that needs a new major version (ABI 2.0)"
    )


def test_a_changed_parameter_type_is_refused() -> None:
    header = edited(
        (
            "cpex_load_config(cpex_manager *manager, const char *yaml,",
            "cpex_load_config(cpex_manager *manager, const uint8_t *yaml,",
        )
    )
    msg = refused(header)
    assert "function cpex_load_config: parameter 2 (yaml) changed type from `const char *` to `const uint8_t *`" in msg
    assert "(ABI 1.0: `cpex_status cpex_load_config(cpex_manager *, const char *, size_t, char **)`" in msg
    assert "that needs a new major version (ABI 2.0)" in msg


def test_a_changed_parameter_count_or_return_type_is_refused() -> None:
    msg = refused(
        edited(
            ("cpex_manager_new_from_yaml(const char *yaml, size_t yaml_len, ", "cpex_manager_new_from_yaml(const char *yaml, "),
            ("uint32_t cpex_abi_version(void);", "int cpex_abi_version(void);"),
        )
    )
    assert "function cpex_manager_new_from_yaml: parameter count changed from 4 to 3" in msg
    assert "function cpex_abi_version: return type changed from `uint32_t` to `int`" in msg


def test_a_changed_status_code_value_is_refused() -> None:
    msg = refused(edited(("#define CPEX_ERR_PARSE ((cpex_status)(-3))", "#define CPEX_ERR_PARSE ((cpex_status)(-30))")))
    assert msg == (
        f"ABI check of include/cpex.h (ABI {CURRENT}) against include/abi/cpex-1.0.h failed:\n"
        "  status code CPEX_ERR_PARSE: value changed from -3 to -30; "
        "that needs a new major version (ABI 2.0)"
    )


def test_a_removed_status_code_or_a_changed_type_is_refused() -> None:
    msg = refused(
        edited(
            ("#define CPEX_ERR_TIMEOUT ((cpex_status)(-6))\n", ""),
            ("typedef int32_t cpex_status;", "typedef uint32_t cpex_status;"),
            ("#define CPEX_PAYLOAD_CMF_MESSAGE ((uint8_t)1u)", "#define CPEX_PAYLOAD_CMF_MESSAGE ((uint32_t)1u)"),
        )
    )
    assert "status code CPEX_ERR_TIMEOUT was removed (it is in ABI 1.0)" in msg
    assert "type cpex_status: definition changed from `int32_t` to `uint32_t`" in msg
    assert "payload type CPEX_PAYLOAD_CMF_MESSAGE: type changed from uint8_t to uint32_t" in msg


def test_an_addition_without_a_minor_bump_is_refused(tmp_path: Path) -> None:
    header = edited(
        (TAIL, NEW_FUNCTION + TAIL),
        (
            "#define CPEX_ERR_ABI_MISMATCH ((cpex_status)(-10))\n",
            "#define CPEX_ERR_ABI_MISMATCH ((cpex_status)(-10))\n#define CPEX_ERR_BUSY ((cpex_status)(-11))\n",
        ),
        (
            "#define CPEX_PAYLOAD_CMF_MESSAGE ((uint8_t)1u)\n",
            "#define CPEX_PAYLOAD_CMF_MESSAGE ((uint8_t)1u)\n#define CPEX_PAYLOAD_RAW ((uint8_t)2u)\n",
        ),
    )
    msg = refused(header, released_current(tmp_path))
    assert msg.splitlines()[1:] == [
        f"  {what} was added without a minor version bump: the header says ABI {CURRENT} like the released "
        f"include/abi/cpex-{CURRENT}.h; set abi.minor to {MINOR + 1} in codegen/schema/abi.yaml"
        for what in ("function cpex_reload", "status code CPEX_ERR_BUSY", "payload type CPEX_PAYLOAD_RAW")
    ]


def test_the_version_macros_must_agree_with_the_schema_and_each_other(tmp_path: Path) -> None:
    msg = refused(HEADER, sch=with_version(SCHEMA, 1, MINOR + 1))
    assert f"include/cpex.h declares ABI {CURRENT}, codegen/schema/abi.yaml says 1.{MINOR + 1}" in msg
    code = (1 << 16) | MINOR
    msg = refused(edited((f"((uint32_t){code}u)", "((uint32_t)65536u)")))
    assert f"include/cpex.h: CPEX_ABI_VERSION is 65536, not (major << 16) | minor = {code} for ABI {CURRENT}" in msg
    msg = refused(versioned(1, 0), released_current(tmp_path), with_version(SCHEMA, 1, 0))
    assert f"ABI version went backwards: include/cpex.h is 1.0, the released include/abi/cpex-{CURRENT}.h is {CURRENT}" in msg


def test_the_baselines_are_named_by_their_version(tmp_path: Path) -> None:
    d = tmp_path / "include" / "abi"
    d.mkdir(parents=True)
    assert "no released header in" in refused(HEADER, d)
    (d / "cpex-1.1.h").write_text((BASELINES / "cpex-1.0.h").read_text())
    assert "include/abi/cpex-1.1.h declares ABI 1.0; its name says 1.1" in refused(HEADER, d)
    (d / "cpex-1.0.0.h").write_text(HEADER)
    assert "a released header is named cpex-<major>.<minor>.h" in refused(HEADER, d)


def test_enums_structs_and_function_pointers_are_compared() -> None:
    base = """#define CPEX_ABI_VERSION_MAJOR 1
#define CPEX_ABI_VERSION_MINOR 0
#define CPEX_ABI_VERSION ((uint32_t)65536u)
typedef enum cpex_level { CPEX_LEVEL_LOW, CPEX_LEVEL_MID, CPEX_LEVEL_HIGH = 4 } cpex_level;
typedef struct cpex_point { int32_t x; int32_t y; } cpex_point;
#define CPEX_LIMIT (CPEX_LEVEL_HIGH << 2)
int32_t cpex_norm(const cpex_point *p, cpex_level level, int (*cb)(void *, size_t));
"""
    old = abi_check.read_abi(base, "cpex", "old.h")
    assert old.functions["cpex_norm"].signature() == (
        "int32_t cpex_norm(const cpex_point *, cpex_level, int (*)(void *, size_t))"
    )
    assert {n: e.definition for n, e in old.entities.items() if e.kind != "type"} == {
        "CPEX_LEVEL_LOW": "0",
        "CPEX_LEVEL_MID": "1",
        "CPEX_LEVEL_HIGH": "4",
        "CPEX_LIMIT": "16",
    }
    new = abi_check.read_abi(
        edited(
            ("CPEX_LEVEL_LOW, CPEX_LEVEL_MID,", "CPEX_LEVEL_LOW, CPEX_LEVEL_NEW, CPEX_LEVEL_MID,"),
            ("int32_t y; }", "int64_t y; }"),
            ("int (*cb)(void *, size_t)", "int (*cb)(void *)"),
            text=base.replace("typedef enum", "typedef long long int64_t;\ntypedef enum"),
        ),
        "cpex",
        "new.h",
    )
    problems = abi_check.compare(old, new)
    assert any("enum constant CPEX_LEVEL_MID: value changed from 1 to 2" in p for p in problems)
    assert any(
        "type struct cpex_point: definition changed from `{ int32_t x; int32_t y; }` to `{ int32_t x; int64_t y; }`" in p
        for p in problems
    )
    assert any(
        "function cpex_norm: parameter 3 (cb) changed type from `int (*)(void *, size_t)` to `int (*)(void *)`" in p
        for p in problems
    )
    assert any("enum constant CPEX_LEVEL_NEW was added without a minor version bump" in p for p in problems)


# --- wired into the generator --------------------------------------------------------


def test_codegen_refuses_a_schema_that_breaks_the_abi(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = copy_repo(tmp_path)
    abi = root / "codegen" / "schema" / "abi.yaml"
    abi.write_text(edited(("code: -10\n", "code: -11\n"), text=abi.read_text()))
    before = (root / "include" / "cpex.h").read_bytes()
    assert cli.main(["--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert "status code CPEX_ERR_ABI_MISMATCH: value changed from -10 to -11" in err
    assert (root / "include" / "cpex.h").read_bytes() == before  # nothing written
    assert cli.main(["--check", "--root", str(root)]) == 1


def test_codegen_check_reads_the_committed_header(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = copy_repo(tmp_path)
    header = root / "include" / "cpex.h"
    header.write_text(edited(("cpex_status cpex_free_context(cpex_context *context, char **err_msg);", "")))
    assert cli.main(["--check", "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert "function cpex_free_context was removed (it is in ABI 1.0)" in err


def test_the_command_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert abi_check.main([]) == 0
    bad = tmp_path / "cpex.h"
    bad.write_text(edited(("#define CPEX_ERR_PARSE ((cpex_status)(-3))", "#define CPEX_ERR_PARSE ((cpex_status)(-30))")))
    assert abi_check.main(["--header", str(bad)]) == 1
    assert "status code CPEX_ERR_PARSE: value changed from -3 to -30" in capsys.readouterr().err
