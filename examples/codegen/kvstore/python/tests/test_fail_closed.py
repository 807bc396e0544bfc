"""The generated boundary fails closed: whatever the implementation does wrong, the call
fails with a status and a message naming the function, never succeeds.

Builds a libkv whose implementation misbehaves (a copy of the kvstore package with a
broken impl.py on the library's python path), and calls it from a child Python host (a
second libkv.so.1 cannot be loaded into this process beside the real one)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

KV = Path(__file__).resolve().parents[2]
ROOT = KV.parents[2]

BROKEN_IMPL = """
import os

if os.environ.get("KV_BROKEN_IMPORT"):
    raise ImportError("the implementation cannot be imported")


def store_new():
    return object()


def store_free(store):
    raise RuntimeError("cannot free")


def put(store, key, value):
    raise ValueError("boom")


def get(store, key):
    return "a str, not bytes"


def count(store):
    return -1
"""

HOST = """
import json, sys
sys.path.insert(0, sys.argv[2])
from kvstore._generated import calls
from kvstore._generated.errors import KvError
from kvstore._generated.library import load_library

lib = load_library(sys.argv[1])
out = {}
def attempt(name, fn, *args):
    try:
        out[name] = ["ok", repr(fn(lib, *args))]
    except KvError as exc:
        out[name] = [type(exc).__name__, exc.message]
attempt("store_new", calls.store_new)
store = lib.ffi.NULL
if out["store_new"][0] == "ok":
    store = calls.store_new(lib)
attempt("put", calls.put, store, b"k", b"v")
attempt("get", calls.get, store, b"k")
attempt("count", calls.count, store)
attempt("store_free", calls.store_free, store)
attempt("put after a failed free", calls.put, store, b"k", b"v")
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def broken_lib(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("broken-kv")
    shutil.copytree(KV / "python" / "kvstore", tmp / "py" / "kvstore", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp / "py" / "kvstore" / "impl.py").write_text(BROKEN_IMPL)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "cpex_codegen.build",
            "--layout",
            str(KV / "layout.yaml"),
            "--out-dir",
            str(tmp / "lib"),
            "--python-path",
            str(tmp / "py"),
        ],
        cwd=ROOT / "codegen",
        check=True,
        capture_output=True,
    )
    return tmp / "lib" / "libkv.so.1", tmp / "py"


def _run(lib: Path, py: Path, **env: str) -> dict[str, list[str]]:
    proc = subprocess.run(
        [sys.executable, "-c", HOST, str(lib), str(py)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", **env},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, list[str]] = json.loads(proc.stdout)
    return result


def test_a_misbehaving_implementation_is_a_named_failure(broken_lib: tuple[Path, Path]) -> None:
    out = _run(*broken_lib)
    assert out["store_new"][0] == "ok"
    assert out["put"] == ["InternalError", "kv_put: ValueError: boom"]
    assert out["get"] == ["InternalError", "kv_get: out_value: the implementation returned str, expected bytes"]
    assert out["count"] == [
        "InternalError",
        "kv_count: out_count: the implementation returned int, expected a non-negative int",
    ]
    # A handle is consumed only by a call that succeeds: after the failed free it still works.
    assert out["store_free"] == ["InternalError", "kv_store_free: RuntimeError: cannot free"]
    assert out["put after a failed free"] == ["InternalError", "kv_put: ValueError: boom"]


def test_an_implementation_that_cannot_load_fails_every_call(broken_lib: tuple[Path, Path]) -> None:
    out = _run(*broken_lib, KV_BROKEN_IMPORT="1")
    status, message = out["store_new"]
    assert status == "RuntimeInitError"
    assert message.startswith("kv runtime start-up failed: the engine did not load")
    assert "the implementation cannot be imported" in message
    # With no store, the shims refuse the NULL handle before Python is entered.
    for name in ("put", "get", "count"):
        assert out[name] == ["InvalidHandleError", f"kv_{name}: store handle is NULL"], out[name]
