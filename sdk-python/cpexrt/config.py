"""Where libcpex is, and the flags a C or cgo build needs to link it.

An installed cpexrt (a wheel, or an sdist built at install time) carries the library
built for its interpreter: cpexrt/lib/libcpex.so.1, the header cpexrt/include/cpex.h
and cpexrt/lib/pkgconfig/cpex.pc. In a checkout (the editable install `make` makes)
they are the checkout's build/lib/libcpex.so.1, include/cpex.h and build/pkgconfig.

    eval "$(cpexrt-config --cgo-env)"  # CGO_CFLAGS and CGO_LDFLAGS for the Go SDK
    cpexrt-config --cflags --libs     # the flags of a C build (-I; -L, -l, -rpath)
    cpexrt-config --pkg-config-path   # the folder of cpex.pc, for PKG_CONFIG_PATH
    cpexrt-config --library           # the library's path

(`python -m cpexrt.config` is the same command.) It also answers as pkg-config does for
the one package `cpex` (`cpexrt-config --cflags cpex`), for build tools that take a
pkg-config program.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

SONAME = "libcpex.so.1"
PACKAGE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Layout:
    """The library, its header and its pkg-config folder, installed or in a checkout."""

    kind: str  # "package" or "checkout"
    library: Path
    include_dir: Path
    pkg_config_dir: Path

    @property
    def libdir(self) -> Path:
        return self.library.parent

    def cflags(self) -> list[str]:
        return [f"-I{self.include_dir}"]

    def libs(self) -> list[str]:
        # -l:<soname>: a wheel cannot hold the libcpex.so link that -lcpex would need.
        return [f"-L{self.libdir}", f"-l:{SONAME}", f"-Wl,-rpath,{self.libdir}"]

    def cgo_environ(self) -> dict[str, str]:
        """CGO_CFLAGS and CGO_LDFLAGS for the Go SDK: Go's defaults (-O2 -g, which
        setting them replaces), the header's folder, the library's folder and an rpath
        to it (sdk-go/cgo.go names the library itself)."""
        return {
            "CGO_CFLAGS": " ".join(["-O2", "-g", *self.cflags()]),
            "CGO_LDFLAGS": " ".join(["-O2", "-g", f"-L{self.libdir}", f"-Wl,-rpath,{self.libdir}"]),
        }

    def cgo_env(self) -> str:
        """cgo_environ as shell exports, for eval."""
        return "export " + " ".join(f"{name}={shlex.quote(value)}" for name, value in self.cgo_environ().items())


def layout() -> Layout:
    """The installed library when the package has one, else the checkout's."""
    installed = PACKAGE / "lib" / SONAME
    if installed.exists():
        return Layout("package", installed, PACKAGE / "include", PACKAGE / "lib" / "pkgconfig")
    root = PACKAGE.parent.parent
    return Layout("checkout", root / "build" / "lib" / SONAME, root / "include", root / "build" / "pkgconfig")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cpexrt-config", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--library", action="store_true", help="the path of libcpex.so.1")
    parser.add_argument("--libdir", action="store_true", help="the folder of libcpex.so.1")
    parser.add_argument("--includedir", action="store_true", help="the folder of cpex.h")
    parser.add_argument("--pkg-config-path", action="store_true", help="the folder of cpex.pc (for PKG_CONFIG_PATH)")
    parser.add_argument("--cgo-env", action="store_true", help="shell exports of CGO_CFLAGS and CGO_LDFLAGS, for eval")
    parser.add_argument("--cflags", action="store_true", help="compiler flags (-I)")
    parser.add_argument("--libs", action="store_true", help="linker flags (-L, -l, -rpath)")
    parser.add_argument("--modversion", action="store_true", help="the ABI version (pkg-config's Version)")
    parser.add_argument("--exists", action="store_true", help="exit 0 when the library is there (as pkg-config)")
    parser.add_argument("packages", nargs="*", help="as pkg-config: only `cpex` is known")
    args = parser.parse_args(argv)
    unknown = [p for p in args.packages if p != "cpex"]
    if unknown:
        print(f"cpexrt-config: package {unknown[0]!r} not known; this command describes `cpex` only", file=sys.stderr)
        return 1
    found = layout()
    if not found.library.exists():
        hint = "build it with `make lib`" if found.kind == "checkout" else "reinstall cpexrt"
        print(f"cpexrt-config: libcpex not found at {found.library}; {hint}", file=sys.stderr)
        return 1
    if args.exists:
        return 0
    if args.modversion:
        from cpexrt._generated.errors import ABI_VERSION_MAJOR, ABI_VERSION_MINOR

        print(f"{ABI_VERSION_MAJOR}.{ABI_VERSION_MINOR}")
        return 0
    lines = [
        str(path)
        for wanted, path in (
            (args.library, found.library),
            (args.libdir, found.libdir),
            (args.includedir, found.include_dir),
            (args.pkg_config_path, found.pkg_config_dir),
        )
        if wanted
    ]
    if args.cgo_env:
        lines.append(found.cgo_env())
    flags = (found.cflags() if args.cflags else []) + (found.libs() if args.libs else [])
    if flags:
        lines.append(" ".join(flags))
    if not lines:
        parser.print_help()
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
