"""`python -m cpex_codegen.build --layout FILE`: links one library's shared object with
cffi's embedding mode, from its generated files and the shared runtime glue, in one of
two modes.

checkout (the default): <build.out_dir>/<soname> and the unversioned link beside it,
pinned to the interpreter running this: its program name, home, module search path
(the layout's build.python_path first, then the stdlib, lib-dynload and this
environment's site-packages) and an rpath to its libpython are compiled in, so the
library works from any working directory with no environment variable, and a host's
PYTHONHOME / PYTHONPATH / activated venv change nothing. <out>/../pkgconfig/<prefix>.pc
names these absolute paths.

package (a wheel's: the library inside a Python package, <package>/lib/<soname>, the
header in <package>/include, <package>/lib/pkgconfig/<prefix>.pc relative to itself):
nothing of the building environment (pip builds in a throwaway one) is pinned but the
Python major.minor and an rpath to its libpython. At start-up the library finds its own
file (dladdr), takes the site-packages it is installed in, and starts the interpreter of
the environment around it (a venv's bin/pythonX.Y, whose pyvenv.cfg names the base
installation), so a Go program linking an installed package runs on that venv.

Only `<prefix>_*` symbols are exported (a version script), so libraries made this way
load into one process side by side; they then share that process's one interpreter, so
they must be built with the same Python.

The C source is, in order: the library's header, the RT_* macros of the glue
(glue_defines), the generated embedding_api.h, ffi/runtime.c (the glue), the layout's
build.extra_sources, and the generated shims.c.
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

from . import layout as layouts
from . import schema as schemas
from .layout import Layout
from .schema import Schema

# The shared runtime glue (prefix-neutral C; see its first comment).
GLUE = Path(__file__).resolve().parents[2] / "ffi" / "runtime.c"


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


def pinned_search_path(first: list[Path]) -> list[str]:
    paths = sysconfig.get_paths()
    return [
        *(str(p) for p in first),
        paths["stdlib"],
        sysconfig.get_config_var("DESTSHARED"),
        paths["purelib"],
        paths["platlib"],
    ]


MODES = ("checkout", "package")


def base_executable() -> str:
    """The interpreter of the base installation (not of a venv or pip's build env)."""
    base = getattr(sys, "_base_executable", "") or sys.executable
    return base if Path(base).exists() else sys.executable


def build_info(schema: Schema, mode: str = "checkout") -> str:
    return json.dumps(
        {
            "abi": f"{schema.abi.major}.{schema.abi.minor}",
            "layout": mode,
            "python_version": ".".join(map(str, sys.version_info[:3])),
            "python_prefix": sys.base_prefix,
            "python_executable": sys.executable if mode == "checkout" else base_executable(),
        },
        sort_keys=True,
    )


def glue_defines(schema: Schema, search_path: list[str], mode: str = "checkout") -> str:
    """The macros that bind ffi/runtime.c to one library's prefix and interpreter."""
    p, pu = schema.abi.prefix, schema.abi.prefix.upper()
    lines = [
        f"#define RT_PUBLIC(name) {p}_##name",
        f"#define RT_EXPORT(name) {p}rt_##name",
        f"#define RT_PRIVATE(name) {p}__##name",
        f"#define RT_STATUS(name) {pu}_##name",
        f"#define RT_NAME {c_literal(p)}",
        f"#define RT_ABI_VERSION {pu}_ABI_VERSION",
        f"typedef {p}_status rt_status;",
        f"#define RT_BUILD_INFO_JSON {c_literal(build_info(schema, mode))}",
        f"#define RT_BUILD_PY_VERSION {c_literal(sys.version.split()[0])}",
        f"#define RT_BUILD_PY_MAJOR_MINOR {c_literal('{}.{}'.format(*sys.version_info[:2]))}",
    ]
    if mode == "checkout":
        lines += [
            f"#define RT_BUILD_PROGRAM {c_wide_literal(sys.executable)}",
            f"#define RT_BUILD_HOME {c_wide_literal(sys.base_prefix)}",
            "#define RT_BUILD_SEARCH_PATH {" + ", ".join(map(c_wide_literal, search_path)) + ", NULL}",
        ]
    else:
        lines += [
            "#define RT_BUILD_RELOCATABLE 1",
            # Only when the library finds no interpreter around it (e.g. a --user install).
            f"#define RT_BUILD_PROGRAM {c_wide_literal(base_executable())}",
        ]
    return "\n".join(lines)


def glue_cdef(schema: Schema) -> str:
    """The glue functions the library's Python side calls through cffi's lib."""
    p = schema.abi.prefix
    return f"""
        void *{p}rt_copy_out(const void *data, size_t len);
        char *{p}rt_message(const char *utf8, size_t len);
        void {p}rt_set_init_error(const char *utf8, size_t len);
        int {p}rt_embedded(void);
        const char *{p}rt_library_path(void);
        """


# checkout: the pinned module search path, appended in a Python host too.
PINNED_INIT_CODE = """
import sys
for _path in {paths!r}:
    if _path not in sys.path:
        sys.path.append(_path)
"""

# package: the site-packages this library is installed in (<it>/<package>/lib/<soname>),
# with its .pth files, unless the interpreter has it already (a Python host that
# imported the package from it, or the venv's own site-packages).
PACKAGE_INIT_CODE = """
import os, sys
from {module} import ffi as _ffi, lib as _lib
_self = _ffi.string(_lib.{prefix}rt_library_path()).decode("utf-8", "surrogateescape")
if _self:
    _site = os.path.dirname(os.path.dirname(os.path.dirname(_self)))
    if not any(os.path.realpath(_p) == os.path.realpath(_site) for _p in sys.path if _p):
        import site
        site.addsitedir(_site)
"""

LOAD_EXPORTS = """
from {module} import ffi, lib
try:
    {import_exports}
    _exports.install(ffi, lib)
except BaseException:
    import traceback
    _why = traceback.format_exc().encode("utf-8", "replace")[-3500:]
    lib.{prefix}rt_set_init_error(_why, len(_why))
"""


def _import_as(module: str, name: str) -> str:
    package, _, leaf = module.rpartition(".")
    return f"from {package} import {leaf} as {name}" if package else f"import {module} as {name}"


def make_ffi(schema: Schema, layout: Layout, python_path: list[Path], build_dir: Path, mode: str = "checkout") -> FFI:
    root = layout.root_dir
    search_path = pinned_search_path(python_path)
    embedding_api = (root / layout.outputs.embedding_api).read_text(encoding="utf-8")
    preamble = "\n".join(
        [
            f'#include "{layout.header_name}"',
            glue_defines(schema, search_path, mode),
            embedding_api,
            GLUE.read_text(encoding="utf-8"),
            *((root / src).read_text(encoding="utf-8") for src in layout.build.extra_sources),
            (root / layout.outputs.shims).read_text(encoding="utf-8"),
        ]
    )
    ffi = FFI()
    ffi.embedding_api(embedding_api)
    ffi.cdef(glue_cdef(schema) + layout.build.extra_cdef)
    libdir = sysconfig.get_config_var("LIBDIR")
    version_script = build_dir / f"{schema.abi.prefix}-exports.map"
    version_script.parent.mkdir(parents=True, exist_ok=True)
    version_script.write_text(f"{{ global: {schema.abi.prefix}_*; local: *; }};\n", encoding="utf-8")
    ffi.set_source(
        layout.build.module,
        preamble,
        include_dirs=[str((root / layout.outputs.header).parent)],
        extra_compile_args=["-O2"],
        libraries=["dl"],
        extra_link_args=[
            f"-Wl,-rpath,{libdir}",
            f"-Wl,-soname,{layout.build.soname}",
            f"-Wl,--version-script,{version_script}",
            "-pthread",
        ],
    )
    names = {
        "module": layout.build.module,
        "prefix": schema.abi.prefix,
        "import_exports": _import_as(layout.python.exports_module, "_exports"),
    }
    first = PINNED_INIT_CODE.format(paths=search_path) if mode == "checkout" else PACKAGE_INIT_CODE.format(**names)
    ffi.embedding_init_code(first + LOAD_EXPORTS.format(**names))
    return ffi


def pkg_config(schema: Schema, layout: Layout, mode: str, out_dir: Path, include_dir: Path) -> str:
    """<prefix>.pc: checkout's names its absolute paths; package's is relative to itself
    (${pcfiledir}, which pkg-config and pkgconf both define), since a wheel installs
    anywhere, and links -l:<soname> because a wheel cannot hold the unversioned link."""
    soname = layout.build.soname
    if mode == "checkout":
        head = [f"libdir={out_dir}", f"includedir={include_dir}"]
        lib = "-l" + soname.split(".so.")[0].removeprefix("lib")
    else:
        head = ["libdir=${pcfiledir}/..", "includedir=${pcfiledir}/../../include"]
        lib = f"-l:{soname}"
    return "\n".join(
        [
            *head,
            "",
            f"Name: {schema.abi.prefix}",
            f"Description: {layout.library.title}",
            f"Version: {schema.abi.major}.{schema.abi.minor}",
            "Cflags: -I${includedir}",
            f"Libs: -L${{libdir}} {lib} -Wl,-rpath,${{libdir}}",
            "",
        ]
    )


def build(
    layout: Layout,
    out_dir: Path | None = None,
    python_path: list[Path] | None = None,
    mode: str = "checkout",
    build_dir: Path | None = None,
) -> Path:
    """Builds <out_dir>/<soname> in the given mode (see the module's doc), with its
    header and <prefix>.pc; returns its path."""
    if mode not in MODES:
        raise SystemExit(f"build: mode {mode!r}: expected one of {', '.join(MODES)}")
    if sysconfig.get_config_var("Py_ENABLE_SHARED") != 1:
        raise SystemExit("build: this Python has no shared libpython; cffi embedding needs one")
    schema = schemas.load(layout.schema_path)
    root = layout.root_dir
    out = (out_dir or root / layout.build.out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = (build_dir or out.parent / "ffi").resolve()
    work.mkdir(parents=True, exist_ok=True)
    paths = [p.resolve() for p in python_path] if python_path else [root / p for p in layout.build.python_path]
    soname = layout.build.soname
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        built = make_ffi(schema, layout, paths, work, mode).compile(tmpdir=tmp, target=soname, verbose=False)
        # Replace atomically: a running host keeps its mapping of the old file.
        staged = out / (soname + ".tmp")
        shutil.copy2(built, staged)
        os.replace(staged, out / soname)
    header = root / layout.outputs.header
    if mode == "checkout":
        link = out / soname.split(".so.")[0]
        link = link.with_name(link.name + ".so")
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(soname)
        include_dir = header.parent
        pc_dir = out.parent / "pkgconfig"
    else:
        include_dir = out.parent / "include"
        include_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(header, include_dir / header.name)
        pc_dir = out / "pkgconfig"
    pc_dir.mkdir(parents=True, exist_ok=True)
    (pc_dir / f"{schema.abi.prefix}.pc").write_text(pkg_config(schema, layout, mode, out, include_dir), encoding="utf-8")
    print(f"build: built {out / soname} ({mode}) for Python {sys.version.split()[0]} at {sys.base_prefix}")
    return out / soname


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cpex_codegen.build", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layout", type=Path, required=True, help="the library's layout file")
    parser.add_argument("--mode", choices=MODES, default="checkout", help="checkout (default) or package (a wheel's)")
    parser.add_argument("--out-dir", type=Path, help="where the shared object goes (default: the layout's build.out_dir)")
    parser.add_argument(
        "--python-path",
        type=Path,
        action="append",
        help="a folder to put on the library's sys.path instead of the layout's build.python_path (repeatable)",
    )
    args = parser.parse_args(argv)
    try:
        layout = layouts.load(args.layout)
        build(layout, args.out_dir, args.python_path, args.mode)
    except schemas.SchemaError as exc:
        print(f"build: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
