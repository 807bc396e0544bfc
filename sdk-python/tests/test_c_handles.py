"""The C shims' set of live context and background handles (ffi/handles.c): a free is
answered in C, a freed, consumed or foreign handle is refused in C with the message
Python's table gives, and Python's table and the C set agree once the freed handles
were drained."""

from __future__ import annotations

import sys
import threading
from typing import Any

import msgpack
import pytest

from conftest import config, plugin
from cpexrt._boundary.handles import HANDLES, TAG, HandleTable, Kind
from cpexrt.errors import Status
from cpexrt.host import Library
from test_abi import call, new_manager

PAYLOAD = msgpack.packb({"n": 1})


def invoke(library: Library, manager: Any, context: Any = None) -> tuple[int, str, Any, Any]:
    """cpex_invoke of tool_pre_invoke: status, message, out_context, out_background."""
    ffi = library.ffi
    out, out_len = ffi.new("uint8_t **"), ffi.new("size_t *")
    out_ctx, out_bg = ffi.new("cpex_context **"), ffi.new("cpex_background **")
    hook = b"tool_pre_invoke"
    status, message = call(
        library,
        "cpex_invoke",
        manager,
        hook,
        len(hook),
        0,
        PAYLOAD,
        len(PAYLOAD),
        ffi.NULL,
        0,
        context if context is not None else ffi.NULL,
        out,
        out_len,
        out_ctx,
        out_bg,
    )
    if status == Status.OK:
        library.take_bytes(out, out_len[0])
    return status, message, out_ctx[0], out_bg[0]


def live(library: Library) -> tuple[int, int, int]:
    m, c, b = (library.ffi.new("size_t *") for _ in range(3))
    assert call(library, "cpex_live_handles", m, c, b) == (Status.OK, "")
    return int(m[0]), int(c[0]), int(b[0])


def c_set(library: Library) -> int:
    """The size of the shims' set, through the runtime's own cffi module (the
    function is not exported from the library)."""
    live(library)  # the runtime is up, and the freed handles drained
    return int(sys.modules["_cpex_ffi"].lib.cpexrt_handles_live())


def python_tracked() -> int:
    counts = HANDLES.counts()
    return counts[Kind.CONTEXT] + counts[Kind.BACKGROUND]


@pytest.fixture
def manager(library: Library) -> Any:
    m = new_manager(
        library,
        config(plugin("count", "Counter"), plugin("rec", "SyncRecorder", mode="fire_and_forget", on_error="ignore")),
    )
    yield m
    call(library, "cpex_shutdown", m)


def token(handle: Any, library: Library) -> int:
    return int(library.ffi.cast("uintptr_t", handle))


def python_message(fn: str, kind: Kind, value: int, what: str) -> str:
    return f"{fn}: {HandleTable()._why(kind, value, what)}"


def test_refusals_in_c_give_the_boundary_messages(library: Library, manager: Any) -> None:
    ffi = library.ffi
    status, _, ctx, bg = invoke(library, manager)
    assert status == Status.OK and ctx != ffi.NULL and bg != ffi.NULL
    freed_ctx = token(ctx, library)
    assert call(library, "cpex_free_context", ctx) == (Status.OK, "")
    values = [
        0x1234,
        0xFFFF_FFFF_FFFF_FFFF,
        TAG << 48 | 7 << 40 | 1,  # an unknown kind
        token(manager, library),  # a manager
        token(bg, library),  # a live background handle
        freed_ctx,  # freed
        TAG << 48 | int(Kind.CONTEXT) << 40 | 0xFF_FFFF_FFFF,  # never issued
        TAG << 48 | int(Kind.BACKGROUND) << 40 | 0xFF_FFFF_FFFF,
    ]
    for value in values:
        as_ctx = ffi.cast("cpex_context *", value)
        as_bg = ffi.cast("cpex_background *", value)
        expected = python_message("cpex_free_context", Kind.CONTEXT, value, "context")
        assert call(library, "cpex_free_context", as_ctx) == (Status.INVALID_HANDLE, expected)
        status, message, _, _ = invoke(library, manager, context=as_ctx)
        assert (status, message) == (Status.INVALID_HANDLE, python_message("cpex_invoke", Kind.CONTEXT, value, "context"))
        if value == token(bg, library):
            continue  # a live background handle: freed below
        expected = python_message("cpex_free_background", Kind.BACKGROUND, value, "background")
        assert call(library, "cpex_free_background", as_bg) == (Status.INVALID_HANDLE, expected)
        errors, errors_len = ffi.new("uint8_t **"), ffi.new("size_t *")
        expected = python_message("cpex_wait_background", Kind.BACKGROUND, value, "background")
        assert call(library, "cpex_wait_background", as_bg, errors, errors_len) == (Status.INVALID_HANDLE, expected)
    assert call(library, "cpex_free_background", bg) == (Status.OK, "")
    assert call(library, "cpex_free_background", bg)[0] == Status.INVALID_HANDLE


def test_a_freed_or_consumed_handle_is_dead_at_once_and_the_tables_agree(library: Library, manager: Any) -> None:
    ffi = library.ffi
    _, _, ctx, bg = invoke(library, manager)
    # The context passes on: the first table is consumed (in C too), the new one is live.
    status, _, ctx2, bg2 = invoke(library, manager, context=ctx)
    assert status == Status.OK
    assert invoke(library, manager, context=ctx)[0] == Status.INVALID_HANDLE
    assert call(library, "cpex_free_context", ctx)[0] == Status.INVALID_HANDLE
    errors, errors_len = ffi.new("uint8_t **"), ffi.new("size_t *")
    assert call(library, "cpex_wait_background", bg, errors, errors_len)[0] == Status.OK
    library.take_bytes(errors, errors_len[0])
    for handle, free in ((ctx2, "cpex_free_context"), (bg, "cpex_free_background"), (bg2, "cpex_free_background")):
        assert call(library, free, handle) == (Status.OK, "")
        assert call(library, free, handle)[0] == Status.INVALID_HANDLE
    # Used after the free, before Python drained it: refused.
    assert invoke(library, manager, context=ctx2)[:2] == (
        Status.INVALID_HANDLE,
        python_message("cpex_invoke", Kind.CONTEXT, token(ctx2, library), "context"),
    )
    assert call(library, "cpex_wait_background", bg2, errors, errors_len)[0] == Status.INVALID_HANDLE
    live(library)  # drains
    assert c_set(library) == python_tracked()


def test_more_frees_than_the_queue_holds(library: Library, manager: Any) -> None:
    handles = [invoke(library, manager)[2:] for _ in range(700)]
    before = live(library)
    assert c_set(library) == python_tracked() >= 1400
    for ctx, bg in handles:
        assert call(library, "cpex_free_context", ctx) == (Status.OK, "")
        assert call(library, "cpex_free_background", bg) == (Status.OK, "")
    for ctx, bg in handles:
        assert call(library, "cpex_free_context", ctx)[0] == Status.INVALID_HANDLE
        assert call(library, "cpex_free_background", bg)[0] == Status.INVALID_HANDLE
    after = live(library)
    assert after == (before[0], before[1] - 700, before[2] - 700)
    assert c_set(library) == python_tracked()


def test_racing_frees_of_one_handle_succeed_once(library: Library, manager: Any) -> None:
    handles = [h for _ in range(300) for h in invoke(library, manager)[2:]]
    wins: list[int] = []
    start = threading.Barrier(4)

    def freer() -> None:
        start.wait()
        for i, h in enumerate(handles):
            name = "cpex_free_context" if i % 2 == 0 else "cpex_free_background"
            if call(library, name, h)[0] == Status.OK:
                wins.append(i)

    threads = [threading.Thread(target=freer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == list(range(len(handles)))
    live(library)
    assert c_set(library) == python_tracked()


def test_shutdown_releases_the_handles_in_c_too(library: Library) -> None:
    m = new_manager(library, config(plugin("count", "Counter"), plugin("rec", "SyncRecorder", mode="fire_and_forget")))
    held = [invoke(library, m)[2:] for _ in range(5)]
    freed_ctx, freed_bg = held.pop()
    assert call(library, "cpex_free_context", freed_ctx) == (Status.OK, "")
    assert call(library, "cpex_free_background", freed_bg) == (Status.OK, "")
    before = live(library)
    assert call(library, "cpex_shutdown", m)[0] == Status.OK
    assert live(library) == (before[0] - 1, before[1] - 4, before[2] - 4)
    for ctx, bg in held:
        assert call(library, "cpex_free_context", ctx)[0] == Status.INVALID_HANDLE
        assert call(library, "cpex_free_background", bg)[0] == Status.INVALID_HANDLE
    assert c_set(library) == python_tracked()


def test_an_invoke_enters_python_once_on_either_path(library: Library) -> None:
    """The invokes enter Python through the native entry (ffi/natives.c) and, over a
    limit, through cffi's cpexpy_invoke: either way the pipeline runs once, one context
    and one background handle are issued, and the refusal over the limit issues none."""
    m = new_manager(
        library,
        config(plugin("count", "Counter"), plugin("rec", "SyncRecorder", mode="fire_and_forget", on_error="ignore")).replace(
            "plugin_settings:\n", "plugin_settings:\n  max_payload_bytes: 64\n", 1
        ),
    )
    try:
        before = live(library)
        status, message, ctx, bg = invoke(library, m)
        assert (status, message) == (Status.OK, "")
        assert live(library) == (before[0], before[1] + 1, before[2] + 1)
        assert c_set(library) == python_tracked()
        big = msgpack.packb({"n": "x" * 100})
        ffi = library.ffi
        out, out_len = ffi.new("uint8_t **"), ffi.new("size_t *")
        out_ctx, out_bg = ffi.new("cpex_context **"), ffi.new("cpex_background **")
        hook = b"tool_pre_invoke"
        status, message = call(
            library, "cpex_invoke", m, hook, len(hook), 0, big, len(big), ffi.NULL, 0, ctx, out, out_len, out_ctx, out_bg
        )
        assert status == Status.INVALID_INPUT and message.startswith("cpex_invoke: payload: ")
        assert "over the limit of 64 (plugin_settings.max_payload_bytes)" in message
        assert out[0] == ffi.NULL and out_ctx[0] == ffi.NULL and out_bg[0] == ffi.NULL
        assert live(library) == (before[0], before[1] + 1, before[2] + 1)
        # The context survived the refused call: the next hook of the request counts on it.
        status, message, ctx2, bg2 = invoke(library, m, context=ctx)
        assert (status, message) == (Status.OK, "")
        assert live(library) == (before[0], before[1] + 1, before[2] + 2)
        for handle, fn in ((ctx2, "cpex_free_context"), (bg, "cpex_free_background"), (bg2, "cpex_free_background")):
            assert call(library, fn, handle) == (Status.OK, "")
    finally:
        call(library, "cpex_shutdown", m)
