"""Builds build/lib/libcpex.so.1 (and the libcpex.so link): cpex's use of the generic
library builder, `python -m cpex_codegen.build --layout codegen/layout.yaml`
(codegen/cpex_codegen/build.py, docs/codegen.md).

The library is pinned to the interpreter running this script: its program name, home,
module search path (stdlib, lib-dynload, this environment's site-packages and the
repository's sdk-python) and an rpath to its libpython are compiled in, so the library
works from any working directory with no environment variable, and a host's
PYTHONHOME / PYTHONPATH / activated venv change nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "codegen"))

from cpex_codegen import build, layout  # noqa: E402  (the generator is not installed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "build" / "lib", help="where libcpex.so.1 goes")
    parser.add_argument(
        "--sdk-python",
        type=Path,
        default=ROOT / "sdk-python",
        help="the directory the library imports the engine from (tests point it elsewhere)",
    )
    args = parser.parse_args()
    build.build(layout.load(ROOT / "codegen" / "layout.yaml"), args.out_dir, [args.sdk_python])


if __name__ == "__main__":
    main()
