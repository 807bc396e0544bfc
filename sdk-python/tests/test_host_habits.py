"""Python habits of the host SDK: context-managed handles, PipelineTimeoutError as a
TimeoutError, and a per-call timeout that the library enforces (cpex_invoke_with)."""

from __future__ import annotations

import asyncio
import math
import time

import msgpack
import pytest

from conftest import config, plugin
from cpexrt._generated import calls
from cpexrt.engine import Engine
from cpexrt.errors import CpexError, InvalidHandleError, InvalidInputError, PipelineTimeoutError
from cpexrt.host import BackgroundTasks, ContextTable, Library, PluginManager

# A generous bound for "promptly": the feature is a deadline, the machine is shared.
PROMPT = 5.0


def started(text: str) -> PluginManager:
    m = PluginManager(text)
    m.initialize()
    return m


def contexts_and_backgrounds(library: Library) -> tuple[int, int]:
    _, contexts, backgrounds = calls.live_handles(library)
    return contexts, backgrounds


# -- context managers -------------------------------------------------------------------


def test_a_context_table_closes_when_its_block_ends(library: Library) -> None:
    with started(config(plugin("c", "Counter", hooks="[tool_pre_invoke, tool_post_invoke]"))) as m:
        before = contexts_and_backgrounds(library)[0]
        res = m.invoke("tool_pre_invoke", {"tool_name": "x"})
        assert isinstance(res.context, ContextTable)
        with res.context as ctx:
            assert ctx is res.context and not ctx.closed
            assert contexts_and_backgrounds(library)[0] == before + 1
        assert ctx.closed
        assert contexts_and_backgrounds(library)[0] == before
        with pytest.raises(InvalidHandleError, match="already consumed, closed"):
            m.invoke("tool_post_invoke", {"tool_name": "x"}, context=ctx)


def test_leaving_the_block_of_a_consumed_context_table_is_a_no_op(library: Library) -> None:
    with started(config(plugin("c", "Counter", hooks="[tool_pre_invoke, tool_post_invoke]"))) as m:
        before = contexts_and_backgrounds(library)[0]
        pre = m.invoke("tool_pre_invoke", {"tool_name": "x"})
        assert pre.context is not None
        with pre.context as ctx:
            post = m.invoke("tool_post_invoke", {"tool_name": "x"}, context=ctx)  # consumes it
            assert ctx.closed
        assert post.metadata == {"calls": 2}
        assert post.context is not None
        post.context.close()
        assert contexts_and_backgrounds(library)[0] == before


def test_a_context_table_a_failed_invoke_left_valid_is_freed_at_the_end_of_its_block(library: Library) -> None:
    with started(config(plugin("c", "Counter", hooks="[tool_pre_invoke, tool_post_invoke]"))) as m:
        before = contexts_and_backgrounds(library)[0]
        pre = m.invoke("tool_pre_invoke", {"tool_name": "x"})
        assert pre.context is not None
        with pre.context as ctx:
            with pytest.raises(InvalidInputError, match="payload type"):
                m.invoke("tool_post_invoke", {"tool_name": "x"}, context=ctx, payload_type=99)
            assert not ctx.closed  # put back, valid
        # The failed invoke put the table back (valid); the block's end freed it.
        assert ctx.closed
        assert contexts_and_backgrounds(library)[0] == before


def test_a_context_table_outliving_its_manager_leaves_its_block_quietly() -> None:
    m = started(config(plugin("c", "Counter")))
    res = m.invoke("tool_pre_invoke", {"tool_name": "x"})
    assert res.context is not None
    with res.context as ctx:
        m.shutdown()  # invalidates the table inside the library
    assert ctx.closed


def test_background_tasks_are_released_when_their_block_ends(library: Library) -> None:
    yaml = config(plugin("rec", "Recorder", mode="fire_and_forget", on_error="ignore", config="{seconds: 0.01}"))
    with started(yaml) as m:
        before = contexts_and_backgrounds(library)[1]
        res = m.invoke("tool_pre_invoke", {"tool_name": "x"})
        assert isinstance(res.background, BackgroundTasks)
        with res.background as bg:
            assert bg.wait() == []
            assert contexts_and_backgrounds(library)[1] == before + 1
        assert bg.closed
        assert contexts_and_backgrounds(library)[1] == before
        with pytest.raises(InvalidHandleError, match="already closed"):
            bg.wait()
        with bg:  # a closed handle enters and leaves without error
            pass


# -- PipelineTimeoutError is a TimeoutError ---------------------------------------------


def test_pipeline_timeout_error_is_a_timeout_error_and_a_cpex_error() -> None:
    assert issubclass(PipelineTimeoutError, TimeoutError) and issubclass(PipelineTimeoutError, CpexError)
    with started(config(plugin("s", "AsyncSleeper", on_error="fail", timeout=0.05, config="{seconds: 30}"))) as m:
        with pytest.raises(TimeoutError, match="'s'") as caught:
            m.invoke("tool_pre_invoke", {"tool_name": "x"})
        assert isinstance(caught.value, PipelineTimeoutError)


# -- a per-call timeout -------------------------------------------------------------------


def test_a_call_past_its_own_timeout_fails_closed_whatever_the_plugins_on_error() -> None:
    # on_error: ignore would let a plugin's own timeout pass; the call's limit does not.
    yaml = config(plugin("s", "AsyncSleeper", on_error="ignore", config="{seconds: 30}"))
    with started(yaml) as m:
        began = time.monotonic()
        with pytest.raises(PipelineTimeoutError, match=r"limit of 0\.1s \(the call's timeout\) in plugin 's'"):
            m.invoke("tool_pre_invoke", {"tool_name": "x"}, timeout=0.1)
        assert time.monotonic() - began < PROMPT
        # A sync handler spinning in Python code is stopped too.
    with started(config(plugin("spin", "Spinner", on_error="ignore"))) as m:
        began = time.monotonic()
        with pytest.raises(PipelineTimeoutError, match="the call's timeout"):
            m.invoke("tool_pre_invoke", {"tool_name": "x"}, timeout=0.1, request={"request_id": "r-1"})
        assert time.monotonic() - began < PROMPT


def test_a_call_within_its_timeout_is_unchanged() -> None:
    yaml = config(plugin("guard", "DenyWhenBlocked"), plugin("c", "Counter"))
    with started(yaml) as m:
        plain = m.invoke("tool_pre_invoke", {"tool_name": "x", "block": True})
        timed = m.invoke("tool_pre_invoke", {"tool_name": "x", "block": True}, timeout=30)
        assert timed.result == plain.result and timed.denied
        ok = m.invoke("tool_pre_invoke", {"tool_name": "x"}, timeout=30, request={"request_id": "r-2"})
        assert not ok.denied and ok.context is not None
        ok.context.close()


def test_the_config_invoke_timeout_still_applies_when_shorter() -> None:
    yaml = config(plugin("s", "AsyncSleeper", on_error="ignore", config="{seconds: 30}")).replace(
        "plugin_settings:\n", "plugin_settings:\n  invoke_timeout: 0.1\n"
    )
    with started(yaml) as m, pytest.raises(PipelineTimeoutError, match=r"0\.1s \(plugin_settings\.invoke_timeout\)"):
        m.invoke("tool_pre_invoke", {"tool_name": "x"}, timeout=60)


def test_ainvoke_takes_a_timeout() -> None:
    with started(config(plugin("s", "AsyncSleeper", on_error="ignore", config="{seconds: 30}"))) as m:
        with pytest.raises(PipelineTimeoutError, match="the call's timeout"):
            asyncio.run(m.ainvoke("tool_pre_invoke", {"tool_name": "x"}, timeout=0.1))


@pytest.mark.parametrize("bad", [0, -1, math.nan, math.inf, True, "1"])
def test_a_timeout_that_is_no_positive_number_is_refused(bad: object) -> None:
    with started(config(plugin("a", "Allow"))) as m:
        with pytest.raises(InvalidInputError, match=r"timeout: expected a positive number of seconds"):
            m.invoke("tool_pre_invoke", {"tool_name": "x"}, timeout=bad)  # type: ignore[call-overload]
        assert not m.invoke("tool_pre_invoke", {"tool_name": "x"}).denied


def test_the_engine_takes_the_same_timeout() -> None:
    engine = Engine()
    engine.load_config(config(plugin("s", "AsyncSleeper", on_error="ignore", config="{seconds: 30}")))
    engine.initialize()
    try:
        with pytest.raises(PipelineTimeoutError, match="the call's timeout"):
            engine.invoke("tool_pre_invoke", 0, {"tool_name": "x"}, timeout=0.1)
        with pytest.raises(InvalidInputError, match="timeout: expected a positive number"):
            engine.invoke("tool_pre_invoke", 0, {"tool_name": "x"}, timeout=0)
    finally:
        engine.shutdown()


# -- cpex_invoke_with's options, at the ABI --------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"timeout_ms": 100, "deadline": 5}, r"options\.deadline: not an option of this library"),
        ({"timeout_ms": "100"}, r"options\.timeout_ms: expected a non-negative integer of milliseconds"),
        ({"timeout_ms": -5}, r"options\.timeout_ms: expected a non-negative integer"),
        ({"timeout_ms": True}, r"options\.timeout_ms: expected a non-negative integer"),
        ([100], r"options: expected a CallOptions map"),
    ],
)
def test_options_the_library_cannot_honour_are_refused(library: Library, options: object, message: str) -> None:
    with started(config(plugin("a", "Allow"))) as m:
        with pytest.raises(InvalidInputError, match=message):
            calls.invoke_with(
                library,
                m._live("t"),
                b"tool_pre_invoke",
                0,
                msgpack.packb({"tool_name": "x"}),
                b"",
                b"",
                msgpack.packb(options),
                library.ffi.NULL,
            )


def test_no_options_and_a_zero_timeout_mean_the_config_alone(library: Library) -> None:
    with started(config(plugin("a", "Allow"))) as m:
        payload = msgpack.packb({"tool_name": "x"})
        for options in (b"", msgpack.packb({}), msgpack.packb({"timeout_ms": 0})):
            raw, ctx, bg = calls.invoke_with(
                library, m._live("t"), b"tool_pre_invoke", 0, payload, b"", b"", options, library.ffi.NULL
            )
            assert msgpack.unpackb(raw)["continue_processing"] is True
            assert ctx == library.ffi.NULL and bg == library.ffi.NULL
