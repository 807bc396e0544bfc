"""cpexrt's build step: the wheel carries libcpex for the interpreter that builds it.

setuptools builds the package; this file adds one step to its build_py (compile
cpexrt/lib/libcpex.so.1 with cffi's embedding mode through ffi/build_lib.py, package
layout: the header in cpexrt/include, cpex.pc in cpexrt/lib/pkgconfig) and marks the
distribution as binary, so the wheel is tagged for this interpreter and platform
(cp311-cp311-linux_x86_64), not py3-none-any. The sources the step compiles live
outside sdk-python/ in the repository (ffi/, include/); the sdist copies them into
native/ so that `pip install cpexrt-*.tar.gz` builds the library at install time.
An editable install (`make venv`) skips the step: the checkout's library is
build/lib/libcpex.so.1 (`make lib`).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent
# What the library is built from, relative to the repository root (and to native/).
NATIVE_FILES = [
    "ffi/build_lib.py",
    # the generic library builder that ffi/build_lib.py drives (and the rest of its
    # package: NATIVE_GLOBS), and the layout and schema it reads
    "codegen/cpex_codegen/build.py",
    "codegen/layout.yaml",
    "codegen/schema/abi.yaml",
    "ffi/runtime.c",
    "ffi/fastpath.c",
    "ffi/remote.c",
    "ffi/handles.c",
    "ffi/natives.c",
    "ffi/generated/shims.c",
    "ffi/generated/unchanged_result.c",
    "ffi/generated/embedding_api.h",
    "include/cpex.h",
]


# Whole folders of it, by pattern.
NATIVE_GLOBS = ["codegen/cpex_codegen/*.py", "codegen/schema/*.yaml"]


def native_files(root: Path) -> list[str]:
    """NATIVE_FILES and what NATIVE_GLOBS match under root, relative to it."""
    found = {str(path.relative_to(root)) for pattern in NATIVE_GLOBS for path in root.glob(pattern)}
    return sorted(set(NATIVE_FILES) | found)


def native_root() -> Path:
    """native/ of an sdist, else the repository around sdk-python/."""
    for root in (HERE / "native", HERE.parent):
        if all((root / name).is_file() for name in NATIVE_FILES):
            return root
    raise SystemExit(
        f"cpexrt: the library's sources ({', '.join(NATIVE_FILES)}) are neither in {HERE / 'native'} nor in {HERE.parent}"
    )


def load_builder(root: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("cpex_build_lib", root / "ffi" / "build_lib.py")
    if spec is None or spec.loader is None:
        raise SystemExit(f"cpexrt: cannot load {root / 'ffi' / 'build_lib.py'}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildPyWithLibrary(build_py):
    """build_py, then libcpex into the built package (not for editable installs)."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        builder = load_builder(native_root())
        out_dir = Path(self.build_lib) / "cpexrt" / "lib"
        work = Path(self.build_lib).parent / "cpexrt-ffi"
        path = builder.build(out_dir, "package", build_dir=work)
        self.announce(f"cpexrt: built {path}", level=2)

    def get_outputs(self, include_bytecode: Any = 1) -> list[str]:
        outputs: list[str] = super().get_outputs(include_bytecode)
        if not getattr(self, "editable_mode", False):
            package = Path(self.build_lib) / "cpexrt"
            outputs += [str(package / rel) for rel in ("lib/libcpex.so.1", "lib/pkgconfig/cpex.pc", "include/cpex.h")]
        return outputs


class SdistWithNative(sdist):
    """sdist, with the library's sources from the repository in native/."""

    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        super().make_release_tree(base_dir, files)
        root = native_root()
        for name in native_files(root):
            target = Path(base_dir) / "native" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / name, target)


class BinaryDistribution(Distribution):
    """The wheel holds a library built for one interpreter and platform."""

    def has_ext_modules(self) -> bool:
        return True


os.chdir(HERE)
setup(distclass=BinaryDistribution, cmdclass={"build_py": BuildPyWithLibrary, "sdist": SdistWithNative})
