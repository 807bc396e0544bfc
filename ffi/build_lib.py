"""Builds libcpex.so.1: cpex's use of the generic library builder,
`python -m cpex_codegen.build --layout codegen/layout.yaml` (codegen/cpex_codegen/build.py,
docs/codegen.md), in one of its two modes.

checkout (the default; `make lib`): build/lib/libcpex.so.1 and the libcpex.so link,
pinned to the interpreter running this script: its program name, home, module search
path (stdlib, lib-dynload, this environment's site-packages and the repository's
sdk-python) and an rpath to its libpython are compiled in, so the library works from any
working directory with no environment variable, and a host's PYTHONHOME / PYTHONPATH /
activated venv change nothing. build/pkgconfig/cpex.pc names this checkout's paths.

package (the wheel; sdk-python/setup.py): <package>/lib/libcpex.so.1, the header in
<package>/include and <package>/lib/pkgconfig/cpex.pc, relative to itself; at start-up
the library finds the interpreter of the environment it is installed in.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "codegen"))

from cpex_codegen import build as builder  # noqa: E402  (the generator is not installed)
from cpex_codegen import layout as layouts  # noqa: E402

LAYOUTS = builder.MODES


def build(out_dir: Path, layout: str = "checkout", sdk_python: Path = ROOT / "sdk-python", build_dir: Path | None = None) -> Path:
    """Builds libcpex.so.1 into out_dir in the given layout (checkout or package);
    returns its path."""
    return builder.build(layouts.load(ROOT / "codegen" / "layout.yaml"), out_dir, [sdk_python], layout, build_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "build" / "lib", help="where libcpex.so.1 goes")
    parser.add_argument("--layout", choices=LAYOUTS, default="checkout", help="checkout (default) or package (a wheel's)")
    parser.add_argument(
        "--sdk-python",
        type=Path,
        default=ROOT / "sdk-python",
        help="checkout layout: the directory the library imports the engine from (tests point it elsewhere)",
    )
    args = parser.parse_args()
    build(args.out_dir, args.layout, args.sdk_python)


if __name__ == "__main__":
    main()
