"""`python -m cpex_codegen [--layout FILE] [--check | --build]`: render every output a
layout names from its schema, or check the committed files for drift; --build then
links the library (cpex_codegen.build), so one command takes a schema edit to a
library Go and Python can call.

Without --layout, cpex's own layout (codegen/layout.yaml). Both modes validate the
schema and the layout, check the rendered header (pycparser, gcc -std=c99, g++) and
check it against the newest released header in the layout's abi_baselines (abi_check:
nothing removed or changed within a major version, additions only with a minor bump).
docs/codegen.md describes the schema and the layout."""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

from . import abi_check, header_check, render, schema
from . import layout as layouts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cpex_codegen", description=__doc__)
    parser.add_argument("--layout", type=Path, help="the library's layout file (default: cpex's, codegen/layout.yaml)")
    parser.add_argument("--check", action="store_true", help="fail if a committed file differs from the schema's rendering")
    parser.add_argument("--build", action="store_true", help="after rendering, build the library (python -m cpex_codegen.build)")
    parser.add_argument(
        "--release",
        action="store_true",
        help="record the rendered header as the released header of its version in abi_baselines (refused if one exists)",
    )
    parser.add_argument(
        "--root", type=Path, help="with cpex's layout: a copy of the repository to use instead of this checkout (tests)"
    )
    args = parser.parse_args(argv)
    try:
        layout = layouts.load(args.layout or render.CPEX_LAYOUT)
        if args.root is not None:
            if args.layout is not None:
                parser.error("--root is for cpex's layout; a layout names its own root")
            layout = layout.model_copy(update={"base": args.root.resolve() / "codegen"})
        if args.check and (args.build or args.release):
            parser.error("--check writes nothing; it does not combine with --build or --release")
        status = run(layout, args.check, args.release)
        if status == 0 and args.build:
            from . import build  # cffi is needed only here

            build.build(layout)
        return status
    except schema.SchemaError as exc:
        print(f"codegen: {exc}", file=sys.stderr)
        return 1


def run(layout: layouts.Layout, check: bool, release: bool = False) -> int:
    root = layout.root_dir
    try:
        sch = schema.load(layout.schema_path)
        files = render.render_all(sch, layout)
        header = files[layout.outputs.header]
        assert isinstance(header, str)
        header_check.check(sch, header)
        if release:
            _release(sch, header, root / layout.abi_baselines)
        # --check: the committed header (drift from the rendering is reported below);
        # otherwise the header about to be written.
        committed = root / layout.outputs.header
        checked = committed.read_text(encoding="utf-8") if check and committed.exists() else header
        abi_check.check(sch, checked, root / layout.abi_baselines, where=layout.outputs.header)
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
        if check:
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
        print(
            f"codegen: generated files of {layout.library.name} differ from the schema (run `make codegen`):\n"
            + "\n".join(drift),
            file=sys.stderr,
        )
        return 1
    if check:
        print(
            f"codegen: {len(files)} generated files of {layout.library.name} match the schema; header parsed and "
            f"compiled as C99 and C++; ABI kept against the newest header in {layout.abi_baselines}/"
        )
    return 0


def _release(sch: schema.Schema, header: str, baselines: Path) -> None:
    """Keeps the header as released: <abi_baselines>/<prefix>-<major>.<minor>.h."""
    path = baselines / f"{sch.abi.prefix}-{sch.abi.major}.{sch.abi.minor}.h"
    if path.exists():
        raise schema.SchemaError(f"{path} exists: ABI {sch.abi.major}.{sch.abi.minor} was released already; bump abi.minor")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header, encoding="utf-8")
    print(f"codegen: released {path}")


if __name__ == "__main__":
    sys.exit(main())
