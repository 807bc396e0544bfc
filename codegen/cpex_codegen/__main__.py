"""`python -m cpex_codegen [--check]`: regenerate every generated file, or check for drift."""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

from . import header_check, render, schema

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
        header_check.check(sch, files["include/cpex.h"])
    except (schema.SchemaError, header_check.HeaderCheckError, RuntimeError) as exc:
        print(f"codegen: {exc}", file=sys.stderr)
        return 1
    drift = []
    for rel, text in files.items():
        path = root / rel
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        if args.check:
            diff = difflib.unified_diff((current or "").splitlines(True), text.splitlines(True), f"a/{rel}", f"b/{rel}")
            drift.append("".join(list(diff)[:40]))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"codegen: wrote {rel}")
    if drift:
        print("codegen: generated files differ from the schema (run `make codegen`):\n" + "\n".join(drift), file=sys.stderr)
        return 1
    if args.check:
        print(f"codegen: {len(files)} generated files match the schema; header parsed and compiled as C99 and C++")
    return 0


if __name__ == "__main__":
    sys.exit(main())
