"""docs/codegen.md's walkthrough runs as written: its snippets, applied to a scratch
copy of libkv, give a library whose new function Go and Python call.

The snippets are read from the document (the indented code blocks of the
"Walkthrough: add a function" section, in order), so editing the walkthrough changes
what this test does."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

KV = Path(__file__).resolve().parents[2]
ROOT = KV.parents[2]


def walkthrough_blocks() -> list[str]:
    doc = (ROOT / "docs" / "codegen.md").read_text()
    section = doc.split("## Walkthrough: add a function", 1)[1]
    blocks: list[str] = []
    current: list[str] = []
    for line in [*section.splitlines(), ""]:
        if line.startswith(("    ", "\t")) or (current and not line.strip()):
            current.append(line)
        elif current:
            # A Markdown code block: one level of indentation (four spaces or a tab) off.
            lines = [re.sub(r"^(    |\t)", "", ln) for ln in current]
            blocks.append("\n".join(lines).strip("\n") + "\n")
            current = []
    return blocks


def test_the_walkthrough_runs_as_written(tmp_path: Path) -> None:
    if shutil.which("go") is None:
        pytest.skip("go is not installed")
    abi, function, impl, command, go_code, py_code = walkthrough_blocks()[:6]
    assert command.strip() == "make lib-kv"

    # A scratch repository: libkv, the Go module it lives in, the generator's glue.
    kv = tmp_path / "examples" / "codegen" / "kvstore"
    shutil.copytree(KV, kv, ignore=shutil.ignore_patterns("__pycache__", "tests", "together", "*_test.go"))
    for name in ("go.mod", "go.sum"):
        shutil.copy(ROOT / "examples" / name, tmp_path / "examples" / name)
    (tmp_path / "sdk-go").symlink_to(ROOT / "sdk-go")

    # 1. The schema: the version block, then the function appended to `functions:`.
    schema = kv / "schema" / "kv.yaml"
    text = schema.read_text()
    minor = re.search(r"minor: (\d+)", abi)
    assert minor is not None
    text = re.sub(r"(?m)^  minor: \d+$", f"  minor: {minor.group(1)}", text)
    schema.write_text(text.rstrip("\n") + "\n\n" + function)
    # 2. The implementation.
    impl_py = kv / "python" / "kvstore" / "impl.py"
    impl_py.write_text(impl_py.read_text() + "\n\n" + impl)
    # 4. and 5. The callers, before the store is freed.
    main_go = kv / "cmd" / "kvdemo" / "main.go"
    anchor = "\tif err := kv.StoreFree(store); err != nil {"
    go = textwrap.indent(go_code, "\t")
    main_go.write_text(main_go.read_text().replace(anchor, go + anchor, 1))
    demo_py = kv / "python" / "demo.py"
    anchor = "    calls.store_free(lib, store)\n"
    demo_py.write_text(demo_py.read_text().replace(anchor, textwrap.indent(py_code, "    ") + anchor, 1))

    # 3. The one command (what `make lib-kv` runs).
    built = subprocess.run(
        [sys.executable, "-m", "cpex_codegen", "--layout", str(kv / "layout.yaml"), "--build"],
        cwd=ROOT / "codegen",
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    env = {**os.environ, "GOFLAGS": "-mod=mod"}
    go_out = subprocess.run(
        ["go", "run", "./codegen/kvstore/cmd/kvdemo"],
        cwd=tmp_path / "examples",
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert go_out.returncode == 0, go_out.stderr
    py_out = subprocess.run([sys.executable, str(demo_py)], capture_output=True, text=True, timeout=120, check=False)
    assert py_out.returncode == 0, py_out.stderr
    added = re.search(r"- name: (\w+)", function)
    assert added is not None
    assert f"{added.group(1)} greeting: true" in go_out.stdout, go_out.stdout
    assert f"{added.group(1)} greeting: True" in py_out.stdout, py_out.stdout
