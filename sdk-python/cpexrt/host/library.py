"""Loads libcpex.so in cffi's ABI mode and refuses one built for another ABI or Python."""

from __future__ import annotations

import functools
import json
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cffi import FFI  # type: ignore[import-untyped, unused-ignore]  # untyped: the package passes mypy wherever it is installed

from cpexrt import config
from cpexrt._generated.abi_cdef import CDEF
from cpexrt._generated.calls import Scratch
from cpexrt._generated.errors import ABI_VERSION_MAJOR, ABI_VERSION_MINOR, ERROR_CLASSES
from cpexrt.errors import AbiMismatchError, InternalError, RuntimeInitError

# The library of an installed cpexrt (cpexrt/lib), else the one `make lib` builds in
# this checkout (cpexrt.config).
DEFAULT_PATH = config.layout().library


@dataclass(frozen=True)
class Library:
    """The loaded library. The generated calls (cpexrt._generated.calls) take it: they
    call its C functions through lib and report failures through check and take_bytes.
    Only the loader below (cpex_abi_version and cpex_build_info, which return no status
    and run before the Library exists) and check / take_bytes (cpex_free_buffer, on
    every call's path) call lib themselves."""

    ffi: Any
    lib: Any
    path: Path
    build_info: dict[str, str]
    _local: threading.local = field(default_factory=threading.local)

    def scratch(self) -> Scratch:
        """This thread's out-parameter buffers for the fast-path calls (the values read
        from them must be used before the thread's next call)."""
        scratch: Scratch | None = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = Scratch(self.ffi)
        return scratch

    def check(self, status: int, err: Any) -> None:
        """Raises the error class of status, with the library's message, unless ok."""
        if status == 0:
            return
        message = ""
        if err[0] != self.ffi.NULL:
            message = self.ffi.string(err[0]).decode("utf-8", "replace")
            self.lib.cpex_free_buffer(err[0])
            err[0] = self.ffi.NULL
        raise ERROR_CLASSES.get(status, InternalError)(message or f"status {status}")

    def take_bytes(self, ptr: Any, length: int) -> bytes:
        buffer = ptr[0]
        data: bytes = self.ffi.buffer(buffer, length)[:] if length else b""
        self.lib.cpex_free_buffer(buffer)
        return data


def load_library(path: str | os.PathLike[str] | None = None) -> Library:
    """The library at path, else $CPEX_LIBRARY, else the installed package's
    (cpexrt/lib/libcpex.so.1), else this checkout's build/lib."""
    chosen = Path(path or os.environ.get("CPEX_LIBRARY") or DEFAULT_PATH).resolve()
    return _load(chosen)


@functools.cache
def _load(path: Path) -> Library:
    if not path.exists():
        raise RuntimeInitError(f"libcpex not found at {path}; build it with `make lib` (in a checkout) or reinstall cpexrt")
    ffi = FFI()
    ffi.cdef(CDEF)
    try:
        lib = ffi.dlopen(str(path))
    except OSError as exc:
        raise RuntimeInitError(f"cannot load {path}: {exc}") from None
    info: dict[str, str] = json.loads(ffi.string(lib.cpex_build_info()).decode("utf-8"))
    check_compatible(path, int(lib.cpex_abi_version()), info)
    return Library(ffi=ffi, lib=lib, path=path, build_info=info)


def check_compatible(path: Path, version: int, info: dict[str, str]) -> None:
    """Refuses a library of another ABI major (or an older minor), or one built for
    another Python: loaded into this process it would run on this interpreter. A
    checkout's library is pinned to one installation (version and prefix); an installed
    package's (layout "package") to a Python version (major.minor), wherever it is."""
    major, minor = version >> 16, version & 0xFFFF
    if major != ABI_VERSION_MAJOR or minor < ABI_VERSION_MINOR:
        raise AbiMismatchError(
            f"{path} has ABI {major}.{minor}; this client needs {ABI_VERSION_MAJOR}.x with x >= {ABI_VERSION_MINOR}"
        )
    running = ".".join(map(str, sys.version_info[:3]))
    if info.get("layout") == "package":
        built = str(info.get("python_version", "")).split(".")[:2]
        if built != running.split(".")[:2]:
            raise AbiMismatchError(
                f"{path} was built for Python {'.'.join(built)}; this process runs Python {running} at {sys.base_prefix}"
            )
        return
    if info.get("python_version") != running or info.get("python_prefix") != sys.base_prefix:
        raise AbiMismatchError(
            f"{path} was built for Python {info.get('python_version')} at {info.get('python_prefix')}; "
            f"this process runs Python {running} at {sys.base_prefix}"
        )
