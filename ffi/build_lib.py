"""Builds build/lib/libcpex.so.1 (and the libcpex.so link) with cffi's embedding mode.

The library is pinned to the interpreter running this script: its program name, home,
module search path (stdlib, lib-dynload, this environment's site-packages and the
repository's sdk-python) and an rpath to its libpython are compiled in, so the library
works from any working directory with no environment variable, and a host's
PYTHONHOME / PYTHONPATH / activated venv change nothing.
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


def build_info() -> str:
    from_schema = (ROOT / "include" / "cpex.h").read_text(encoding="utf-8")
    major = _macro(from_schema, "CPEX_ABI_VERSION_MAJOR")
    minor = _macro(from_schema, "CPEX_ABI_VERSION_MINOR")
    return json.dumps(
        {
            "abi": f"{major}.{minor}",
            "python_version": ".".join(map(str, sys.version_info[:3])),
            "python_prefix": sys.base_prefix,
            "python_executable": sys.executable,
        },
        sort_keys=True,
    )


def _macro(header: str, name: str) -> str:
    for line in header.splitlines():
        if line.startswith(f"#define {name} "):
            return line.split()[2]
    raise SystemExit(f"build_lib: {name} not found in include/cpex.h (run `make codegen`)")


INIT_CODE = """
import sys
for _path in {paths!r}:
    if _path not in sys.path:
        sys.path.append(_path)
from {module} import ffi, lib
try:
    from cpexrt._boundary import exports
    exports.install(ffi, lib)
except BaseException:
    import traceback
    _why = traceback.format_exc().encode("utf-8", "replace")[-3500:]
    lib.cpexrt_set_init_error(_why, len(_why))
"""


def make_ffi(sdk_python: Path, build_dir: Path) -> FFI:
    search_path = pinned_search_path(sdk_python)
    defines = "\n".join(
        [
            f"#define CPEX_BUILD_INFO_JSON {c_literal(build_info())}",
            f"#define CPEX_BUILD_PY_VERSION {c_literal(sys.version.split()[0])}",
            f"#define CPEX_BUILD_PROGRAM {c_wide_literal(sys.executable)}",
            f"#define CPEX_BUILD_HOME {c_wide_literal(sys.base_prefix)}",
            "#define CPEX_BUILD_SEARCH_PATH {" + ", ".join(map(c_wide_literal, search_path)) + ", NULL}",
        ]
    )
    generated = ROOT / "ffi" / "generated"
    preamble = "\n".join(
        [
            '#include "cpex.h"',
            defines,
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
        int cpexrt_plain_map(const uint8_t *bytes, size_t len, size_t max_entries);
        void cpexrt_publish_hooks(uintptr_t token, int initialized, int create, const char *hooks, size_t len,
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
        extra_link_args=[
            f"-Wl,-rpath,{libdir}",
            f"-Wl,-soname,{SONAME}",
            f"-Wl,--version-script,{version_script}",
            "-pthread",
        ],
    )
    ffi.embedding_init_code(INIT_CODE.format(paths=search_path, module=MODULE))
    return ffi


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
    if sysconfig.get_config_var("Py_ENABLE_SHARED") != 1:
        raise SystemExit("build_lib: this Python has no shared libpython; cffi embedding needs one")
    out_dir: Path = args.out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    build_dir = out_dir.parent / "ffi"
    build_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=build_dir) as tmp:
        built = make_ffi(args.sdk_python.resolve(), build_dir).compile(tmpdir=tmp, target=SONAME, verbose=False)
        # Replace atomically: a running host keeps its mapping of the old file.
        staged = out_dir / (SONAME + ".tmp")
        shutil.copy2(built, staged)
        os.replace(staged, out_dir / SONAME)
    link = out_dir / "libcpex.so"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(SONAME)
    print(f"build_lib: built {out_dir / SONAME} for Python {sys.version.split()[0]} at {sys.base_prefix}")


if __name__ == "__main__":
    main()
