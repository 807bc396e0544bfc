"""Builds libcpex.so.1 with cffi's embedding mode, in one of two layouts.

checkout (the default; `make lib`): build/lib/libcpex.so.1 and the libcpex.so link,
pinned to the interpreter running this script: its program name, home, module search
path (stdlib, lib-dynload, this environment's site-packages and the repository's
sdk-python) and an rpath to its libpython are compiled in, so the library works from any
working directory with no environment variable, and a host's PYTHONHOME / PYTHONPATH /
activated venv change nothing. build/pkgconfig/cpex.pc points cgo at this checkout
(the Makefile puts that folder on PKG_CONFIG_PATH).

package (the wheel; sdk-python/setup.py): <package>/lib/libcpex.so.1, the header in
<package>/include and <package>/lib/pkgconfig/cpex.pc, relative to itself. Nothing of
the building environment (pip builds in a throwaway one) is pinned but the Python
version and an rpath to its libpython: at start-up the library finds its own file
(dladdr), takes the site-packages it is installed in, and starts the interpreter of
the environment around it (a venv's bin/python3, whose pyvenv.cfg names the base
installation), so a Go program linking an installed cpexrt runs on that venv.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path

from cffi import FFI

ROOT = Path(__file__).resolve().parent.parent
SONAME = "libcpex.so.1"
MODULE = "_cpex_ffi"
LAYOUTS = ("checkout", "package")


def c_literal(text: str) -> str:
    """A C narrow string literal of text's UTF-8 bytes."""
    out = []
    for byte in text.encode("utf-8"):
        ch = chr(byte)
        out.append(ch if 0x20 <= byte < 0x7F and ch not in '"\\?' else f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def c_wide_literal(text: str) -> str:
    out = []
    for ch in text:
        out.append(ch if 0x20 <= ord(ch) < 0x7F and ch not in '"\\?' else f"\\U{ord(ch):08x}")
    return 'L"' + "".join(out) + '"'


def pinned_search_path(sdk_python: Path) -> list[str]:
    paths = sysconfig.get_paths()
    return [
        str(sdk_python),
        paths["stdlib"],
        sysconfig.get_config_var("DESTSHARED"),
        paths["purelib"],
        paths["platlib"],
    ]


def abi_version() -> tuple[str, str]:
    from_schema = (ROOT / "include" / "cpex.h").read_text(encoding="utf-8")
    return _macro(from_schema, "CPEX_ABI_VERSION_MAJOR"), _macro(from_schema, "CPEX_ABI_VERSION_MINOR")


def base_executable() -> str:
    """The interpreter of the base installation (not of a venv or pip's build env)."""
    base = getattr(sys, "_base_executable", "") or sys.executable
    return base if Path(base).exists() else sys.executable


def build_info(layout: str) -> str:
    major, minor = abi_version()
    return json.dumps(
        {
            "abi": f"{major}.{minor}",
            "layout": layout,
            "python_version": ".".join(map(str, sys.version_info[:3])),
            "python_prefix": sys.base_prefix,
            "python_executable": sys.executable if layout == "checkout" else base_executable(),
        },
        sort_keys=True,
    )


def _macro(header: str, name: str) -> str:
    for line in header.splitlines():
        if line.startswith(f"#define {name} "):
            return line.split()[2]
    raise SystemExit(f"build_lib: {name} not found in include/cpex.h (run `make codegen`)")


# The checkout layout: the pinned module search path, appended in a Python host too.
PINNED_INIT_CODE = """
import sys
for _path in {paths!r}:
    if _path not in sys.path:
        sys.path.append(_path)
"""

# The package layout: the site-packages this library is installed in (<it>/cpexrt/lib/
# libcpex.so.1), with its .pth files, unless the interpreter has it already (a Python
# host that imported cpexrt from it, or the venv's own site-packages).
PACKAGE_INIT_CODE = """
import os, sys
from {module} import ffi as _ffi, lib as _lib
_self = _ffi.string(_lib.cpexrt_library_path()).decode("utf-8", "surrogateescape")
if _self:
    _site = os.path.dirname(os.path.dirname(os.path.dirname(_self)))
    if not any(os.path.realpath(_p) == os.path.realpath(_site) for _p in sys.path if _p):
        import site
        site.addsitedir(_site)
"""

LOAD_ENGINE = """
from {module} import ffi, lib
try:
    from cpexrt._boundary import exports
    exports.install(ffi, lib)
except BaseException:
    import traceback
    _why = traceback.format_exc().encode("utf-8", "replace")[-3500:]
    lib.cpexrt_set_init_error(_why, len(_why))
"""


def make_ffi(layout: str, sdk_python: Path, build_dir: Path) -> FFI:
    py_version = sys.version.split()[0]
    macros = [
        f"#define CPEX_BUILD_INFO_JSON {c_literal(build_info(layout))}",
        f"#define CPEX_BUILD_PY_VERSION {c_literal(py_version)}",
        f"#define CPEX_BUILD_PY_MAJOR_MINOR {c_literal('{}.{}'.format(*sys.version_info[:2]))}",
    ]
    if layout == "checkout":
        search_path = pinned_search_path(sdk_python)
        init_code = PINNED_INIT_CODE.format(paths=search_path) + LOAD_ENGINE.format(module=MODULE)
        macros += [
            f"#define CPEX_BUILD_PROGRAM {c_wide_literal(sys.executable)}",
            f"#define CPEX_BUILD_HOME {c_wide_literal(sys.base_prefix)}",
            "#define CPEX_BUILD_SEARCH_PATH {" + ", ".join(map(c_wide_literal, search_path)) + ", NULL}",
        ]
    else:
        init_code = PACKAGE_INIT_CODE.format(module=MODULE) + LOAD_ENGINE.format(module=MODULE)
        macros += [
            "#define CPEX_BUILD_RELOCATABLE 1",
            # Only when the library finds no interpreter around it (e.g. a --user install).
            f"#define CPEX_BUILD_PROGRAM {c_wide_literal(base_executable())}",
        ]
    generated = ROOT / "ffi" / "generated"
    preamble = "\n".join(
        [
            '#include "cpex.h"',
            "\n".join(macros),
            (generated / "embedding_api.h").read_text(encoding="utf-8"),
            (ROOT / "ffi" / "runtime.c").read_text(encoding="utf-8"),
            (generated / "unchanged_result.c").read_text(encoding="utf-8"),
            (ROOT / "ffi" / "fastpath.c").read_text(encoding="utf-8"),
            (generated / "shims.c").read_text(encoding="utf-8"),
        ]
    )
    ffi = FFI()
    ffi.embedding_api((generated / "embedding_api.h").read_text(encoding="utf-8"))
    ffi.cdef(
        """
        void *cpexrt_copy_out(const void *data, size_t len);
        char *cpexrt_message(const char *utf8, size_t len);
        void cpexrt_set_init_error(const char *utf8, size_t len);
        int cpexrt_embedded(void);
        const char *cpexrt_library_path(void);
        int cpexrt_plain_map(const uint8_t *bytes, size_t len, size_t max_entries);
        void cpexrt_publish_hooks(uintptr_t token, int initialized, const char *hooks, size_t len,
                                  size_t max_payload, size_t max_extensions, size_t max_entries);
        """
    )
    libdir = sysconfig.get_config_var("LIBDIR")
    version_script = build_dir / "exports.map"
    version_script.parent.mkdir(parents=True, exist_ok=True)
    version_script.write_text("{ global: cpex_*; local: *; };\n", encoding="utf-8")
    ffi.set_source(
        MODULE,
        preamble,
        include_dirs=[str(ROOT / "include")],
        extra_compile_args=["-O2"],
        libraries=["dl"],
        extra_link_args=[
            f"-Wl,-rpath,{libdir}",
            f"-Wl,-soname,{SONAME}",
            f"-Wl,--version-script,{version_script}",
            "-pthread",
        ],
    )
    ffi.embedding_init_code(init_code)
    return ffi


def pkg_config(layout: str, out_dir: Path, include_dir: Path) -> str:
    """cpex.pc: the checkout's names its absolute paths; the package's is relative to
    itself (${pcfiledir}, which pkg-config and pkgconf both define), since a wheel
    installs anywhere. -l:libcpex.so.1 because a wheel cannot hold the libcpex.so link."""
    major, minor = abi_version()
    if layout == "checkout":
        head = [f"libdir={out_dir}", f"includedir={include_dir}"]
        lib = "-lcpex"
    else:
        head = ["libdir=${pcfiledir}/..", "includedir=${pcfiledir}/../../include"]
        lib = f"-l:{SONAME}"
    return "\n".join(
        [
            *head,
            "",
            "Name: cpex",
            "Description: the cpex plugin runtime (libcpex, C ABI; Python embedded)",
            f"Version: {major}.{minor}",
            "Cflags: -I${includedir}",
            f"Libs: -L${{libdir}} {lib} -Wl,-rpath,${{libdir}}",
            "",
        ]
    )


def build(out_dir: Path, layout: str = "checkout", sdk_python: Path = ROOT / "sdk-python", build_dir: Path | None = None) -> Path:
    """Builds the library into out_dir (see the module's doc for the layouts); returns
    its path."""
    if layout not in LAYOUTS:
        raise SystemExit(f"build_lib: layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
    if sysconfig.get_config_var("Py_ENABLE_SHARED") != 1:
        raise SystemExit("build_lib: this Python has no shared libpython; cffi embedding needs one")
    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    build_dir = (build_dir or out_dir.parent / "ffi").resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=build_dir) as tmp:
        built = make_ffi(layout, sdk_python.resolve(), build_dir).compile(tmpdir=tmp, target=SONAME, verbose=False)
        # Replace atomically: a running host keeps its mapping of the old file.
        staged = out_dir / (SONAME + ".tmp")
        shutil.copy2(built, staged)
        os.replace(staged, out_dir / SONAME)
    if layout == "checkout":
        link = out_dir / "libcpex.so"
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(SONAME)
        include_dir = ROOT / "include"
        pc_dir = out_dir.parent / "pkgconfig"
    else:
        include_dir = out_dir.parent / "include"
        include_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / "include" / "cpex.h", include_dir / "cpex.h")
        pc_dir = out_dir / "pkgconfig"
    pc_dir.mkdir(parents=True, exist_ok=True)
    (pc_dir / "cpex.pc").write_text(pkg_config(layout, out_dir, include_dir), encoding="utf-8")
    return out_dir / SONAME


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
    path = build(args.out_dir, args.layout, args.sdk_python)
    print(f"build_lib: built {path} ({args.layout} layout) for Python {sys.version.split()[0]} at {sys.base_prefix}")


if __name__ == "__main__":
    main()
