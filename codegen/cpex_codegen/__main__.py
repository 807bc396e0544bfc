"""`python -m cpex_codegen [--check]`: regenerate every generated file, or check for drift.

Both validate the schema, check the rendered header (pycparser, gcc, g++) and check it
against the newest released header in include/abi/ (abi_check: nothing removed or
changed within a major version, additions only with a minor bump)."""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

from . import abi_check, header_check, render, schema

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cpex_codegen", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if a committed file differs from the schema's rendering")
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root (default: this checkout)")
    args = parser.parse_args(argv)
    root: Path = args.root
    try:
        sch = schema.load(root / "codegen" / "schema")
        files = render.render_all(sch)
        header = files["include/cpex.h"]
        assert isinstance(header, str)
        header_check.check(sch, header)
        # --check: the committed include/cpex.h (drift from the rendering is reported
        # below); otherwise the header about to be written.
        committed = root / "include" / "cpex.h"
        checked = committed.read_text(encoding="utf-8") if args.check and committed.exists() else header
        abi_check.check(sch, checked, root / "include" / "abi")
    except (schema.SchemaError, header_check.HeaderCheckError, abi_check.AbiCheckError, RuntimeError) as exc:
        print(f"codegen: {exc}", file=sys.stderr)
        return 1
    drift = []
    for rel, content in files.items():
        path = root / rel
        data = content.encode("utf-8") if isinstance(content, str) else content
        current = path.read_bytes() if path.exists() else None
        if current == data:
            continue
        if args.check:
            if isinstance(content, str):
                old = (current or b"").decode("utf-8", "replace")
                diff = difflib.unified_diff(old.splitlines(True), content.splitlines(True), f"a/{rel}", f"b/{rel}")
                drift.append("".join(list(diff)[:40]))
            else:
                drift.append(f"{rel}: binary content differs" if current is not None else f"{rel}: missing")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            print(f"codegen: wrote {rel}")
    if drift:
        print("codegen: generated files differ from the schema (run `make codegen`):\n" + "\n".join(drift), file=sys.stderr)
        return 1
    if args.check:
        print(
            f"codegen: {len(files)} generated files match the schema; header parsed and compiled as C99 and C++; "
            "ABI kept against the newest header in include/abi/"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
