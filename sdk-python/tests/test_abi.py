"""The raw C ABI through cffi: handle checks, pointer checks, error ownership."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import msgpack
import pytest

from conftest import config, plugin
from cpexrt.errors import AbiMismatchError, RuntimeInitError, Status
from cpexrt.host import Library, load_library
from cpexrt.host.library import check_compatible


def call(library: Library, name: str, *args: Any) -> tuple[int, str]:
    ffi = library.ffi
    err = ffi.new("char **")
    status = getattr(library.lib, name)(*args, err)
    message = ""
    if err[0] != ffi.NULL:
        message = ffi.string(err[0]).decode()
        library.lib.cpex_free_buffer(err[0])
    return int(status), message


def new_manager(library: Library, yaml: str) -> Any:
    out = library.ffi.new("cpex_manager **")
    raw = yaml.encode()
    status, message = call(library, "cpex_manager_new_from_yaml", raw, len(raw), out)
    assert status == Status.OK, message
    assert call(library, "cpex_initialize", out[0]) == (Status.OK, "")
    return out[0]


def invoke(
    library: Library,
    manager: Any,
    payload: bytes,
    context: Any = None,
    hook: bytes = b"tool_pre_invoke",
    payload_type: int = 0,
    extensions: bytes = b"",
) -> tuple[int, str, Any, Any]:
    ffi = library.ffi
    out, out_len = ffi.new("uint8_t **"), ffi.new("size_t *")
    out_ctx, out_bg = ffi.new("cpex_context **"), ffi.new("cpex_background **")
    status, message = call(
        library,
        "cpex_invoke",
        manager,
        hook,
        len(hook),
        payload_type,
        payload,
        len(payload),
        extensions or ffi.NULL,
        len(extensions),
        context if context is not None else ffi.NULL,
        out,
        out_len,
        out_ctx,
        out_bg,
    )
    result = library.take_bytes(out, out_len[0]) if status == Status.OK else None
    if status != Status.OK:
        assert out[0] == ffi.NULL and out_len[0] == 0 and out_ctx[0] == ffi.NULL, "outputs written on failure"
    return status, message, result, out_ctx[0]


@pytest.mark.parametrize("value", [0, 0x1234, 0x4350_0100_0000_9999, 0x4350_0200_0000_0001, 0xFFFF_FFFF_FFFF_FFFF])
def test_garbage_and_foreign_handles_are_refused(library: Library, value: int) -> None:
    bogus = library.ffi.cast("cpex_manager *", value)
    status, message = call(library, "cpex_initialize", bogus)
    assert status == Status.INVALID_HANDLE
    assert "manager" in message


def test_a_context_handle_is_not_a_manager(library: Library) -> None:
    m = new_manager(library, config(plugin("count", "Counter")))
    status, message, _, ctx = invoke(library, m, msgpack.packb({}))
    assert status == Status.OK and ctx != library.ffi.NULL
    status, message = call(library, "cpex_initialize", library.ffi.cast("cpex_manager *", ctx))
    assert status == Status.INVALID_HANDLE and "expected a manager handle, got a context handle" in message
    assert call(library, "cpex_free_context", ctx) == (Status.OK, "")
    status, message = call(library, "cpex_free_context", ctx)
    assert status == Status.INVALID_HANDLE and "freed, consumed or shut down" in message
    assert call(library, "cpex_shutdown", m)[0] == Status.OK


def test_shutdown_invalidates_the_manager_and_its_contexts(library: Library) -> None:
    m = new_manager(library, config(plugin("count", "Counter")))
    _, _, _, ctx = invoke(library, m, msgpack.packb({}))
    assert call(library, "cpex_shutdown", m)[0] == Status.OK
    assert call(library, "cpex_shutdown", m)[0] == Status.INVALID_HANDLE
    assert call(library, "cpex_free_context", ctx)[0] == Status.INVALID_HANDLE
    assert invoke(library, m, msgpack.packb({}))[0] == Status.INVALID_HANDLE


def test_null_buffers_and_bad_bytes(library: Library) -> None:
    ffi = library.ffi
    m = new_manager(library, config(plugin("a", "Allow")))
    out = ffi.new("int *")
    status, message = call(library, "cpex_has_hooks_for", m, ffi.NULL, 5, out)
    assert status == Status.INVALID_INPUT and "hook is NULL but hook_len is 5" in message
    status, message = call(library, "cpex_has_hooks_for", m, b"\xff\xfe", 2, out)
    assert status == Status.INVALID_INPUT and "not valid UTF-8" in message
    status, message = call(library, "cpex_plugin_count", m, ffi.NULL)
    assert status == Status.INVALID_INPUT and "out_count must not be NULL" in message
    assert invoke(library, m, b"")[:2] == (Status.INVALID_INPUT, "cpex_invoke: payload: empty; expected a MessagePack map")
    status, message, _, _ = invoke(library, m, msgpack.packb({"a": "long string"})[:-3])
    assert status == Status.PARSE and "payload" in message
    status, message, _, _ = invoke(library, m, b"\xc1")
    assert status == Status.PARSE
    status, message, _, _ = invoke(library, m, msgpack.packb({}) + b"\x01")
    assert status == Status.PARSE and "trailing bytes" in message
    assert call(library, "cpex_shutdown", m)[0] == Status.OK


def test_a_failed_invoke_leaves_the_context_valid_and_unchanged(library: Library) -> None:
    m = new_manager(library, config(plugin("count", "CountThenFail", "[tool_pre_invoke, tool_post_invoke]")))
    _, _, _, ctx = invoke(library, m, msgpack.packb({}))
    # A host-side mistake, then a plugin failure (on_error: fail): the table survives both ...
    assert invoke(library, m, b"\xc1", context=ctx)[0] == Status.PARSE
    status, message, _, _ = invoke(library, m, msgpack.packb({"fail": True}), context=ctx)
    assert status == Status.PIPELINE and "plugin 'count' raised RuntimeError: asked to fail" in message
    # ... unchanged: the failed call's increment of the plugin's state is not in it.
    status, _, result, _ = invoke(library, m, msgpack.packb({}), context=ctx, hook=b"tool_post_invoke")
    assert status == Status.OK and result is not None
    assert msgpack.unpackb(result)["metadata"] == {"calls": 1}
    # A successful invoke consumed it.
    status, message, _, _ = invoke(library, m, msgpack.packb({}), context=ctx)
    assert status == Status.INVALID_HANDLE and "context" in message
    assert call(library, "cpex_shutdown", m)[0] == Status.OK


def test_error_message_pointer_may_be_null(library: Library) -> None:
    ffi = library.ffi
    status = library.lib.cpex_initialize(ffi.cast("cpex_manager *", 0x77), ffi.NULL)
    assert status == Status.INVALID_HANDLE


def test_build_info_and_version(library: Library) -> None:
    assert library.lib.cpex_abi_version() == 1 << 16 | 3
    assert set(library.build_info) == {"abi", "layout", "python_version", "python_prefix", "python_executable"}
    assert library.build_info["layout"] == "checkout"


def test_an_incompatible_library_is_refused_naming_both_versions(library: Library, tmp_path: Path) -> None:
    good = dict(library.build_info)
    version = library.lib.cpex_abi_version()
    check_compatible(library.path, version, good)
    with pytest.raises(AbiMismatchError, match=r"has ABI 2\.0; this client needs 1\.x"):
        check_compatible(library.path, 2 << 16, good)
    other = {**good, "python_version": "3.12.1"}
    running = ".".join(map(str, sys.version_info[:3]))
    with pytest.raises(AbiMismatchError, match=rf"built for Python 3\.12\.1 at .*; this process runs Python {running}"):
        check_compatible(library.path, version, other)
    moved = {**good, "python_prefix": "/elsewhere"}
    with pytest.raises(AbiMismatchError, match=r"built for Python .* at /elsewhere; this process runs"):
        check_compatible(library.path, version, moved)
    with pytest.raises(RuntimeInitError, match="libcpex not found"):
        load_library(tmp_path / "missing.so")


def test_an_installed_library_is_refused_only_for_another_python_version(library: Library) -> None:
    # A wheel's library (layout "package") runs on any installation of its Python
    # major.minor: the prefix and the patch level of the build do not matter.
    version = library.lib.cpex_abi_version()
    major, minor = sys.version_info[:2]
    wheel = {**library.build_info, "layout": "package", "python_prefix": "/build/env", "python_version": f"{major}.{minor}.0"}
    check_compatible(library.path, version, wheel)
    other = {**wheel, "python_version": f"{major}.{minor + 1}.0"}
    with pytest.raises(AbiMismatchError, match=rf"built for Python {major}\.{minor + 1}; this process runs Python"):
        check_compatible(library.path, version, other)


NOBODY = b"hook_nobody_handles"
GOOD = msgpack.packb({"tool_name": "x", "n": [1, 2.5, None, True, b"\x00"], "deep": {"k": "\u00e9t\u00e9"}})
BAD = [
    (msgpack.packb({"a": "long enough to cut"})[:-4], Status.PARSE, "payload"),
    (b"\x81\x01\x02", Status.PARSE, "payload"),  # an integer map key
    (b"\x81\xa1a\xa2\xff\xfe", Status.PARSE, "payload"),  # a string that is not UTF-8
    (b"\x81\xa1a\xd5\x30\x30\x30", Status.PARSE, "extension type"),
    (msgpack.packb([1, 2]), Status.INVALID_INPUT, "must be a map"),
    (msgpack.packb({}) + b"\x00", Status.PARSE, "trailing bytes"),
]


def test_hooks_nobody_handles_get_the_same_answers_from_the_c_fast_path(
    library: Library, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cpexrt.engine import Engine

    m = new_manager(library, config(plugin("a", "Allow")))

    def not_here(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the engine was entered for a hook nobody handles")

    with monkeypatch.context() as patch:
        patch.setattr(Engine, "invoke", not_here)
        status, message, result, ctx = invoke(library, m, GOOD, hook=NOBODY)
    assert (status, message, ctx) == (Status.OK, "", library.ffi.NULL)
    assert msgpack.unpackb(result) == {
        "continue_processing": True,
        "payload_modified": False,
        "extensions_modified": False,
        "payload_type": 0,
    }
    for payload, want, text in BAD:
        status, message, _, _ = invoke(library, m, payload, hook=NOBODY)
        assert status == want and text in message, (payload, status, message)
    status, message, _, _ = invoke(library, m, GOOD, hook=NOBODY, extensions=b"\x92")
    assert status == Status.PARSE and "extensions" in message
    status, message, _, _ = invoke(library, m, GOOD, hook=NOBODY, payload_type=7)
    assert status == Status.INVALID_INPUT and "unknown payload type 7" in message
    status, message, _, _ = invoke(library, m, msgpack.packb({"message": {}}), hook=NOBODY, payload_type=1)
    assert status == Status.INVALID_INPUT and "payload.message" in message
    status, message, _, _ = invoke(library, m, GOOD, hook=b"\xff")
    assert status == Status.INVALID_INPUT and "not valid UTF-8" in message
    assert call(library, "cpex_shutdown", m)[0] == Status.OK
    status, message, _, _ = invoke(library, m, GOOD, hook=NOBODY)
    assert status == Status.INVALID_HANDLE


def test_the_fast_path_waits_for_initialize(library: Library) -> None:
    out = library.ffi.new("cpex_manager **")
    raw = config(plugin("a", "Allow")).encode()
    assert call(library, "cpex_manager_new_from_yaml", raw, len(raw), out)[0] == Status.OK
    status, message, _, _ = invoke(library, out[0], GOOD, hook=NOBODY)
    assert status == Status.PIPELINE and "not initialized" in message
    assert call(library, "cpex_initialize", out[0])[0] == Status.OK
    assert invoke(library, out[0], GOOD, hook=NOBODY)[0] == Status.OK
    assert call(library, "cpex_shutdown", out[0])[0] == Status.OK
