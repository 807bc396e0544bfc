"""The Python host client over libcpex.so: the same calls a Go host makes."""

from __future__ import annotations

import threading

import msgpack
import pytest
from conftest import config, plugin

from cpex.errors import (
    ConfigError,
    InvalidHandleError,
    InvalidInputError,
    ParseError,
    PipelineError,
    PipelineTimeoutError,
    Status,
)
from cpex.host import Library, PluginManager


def started(text: str) -> PluginManager:
    m = PluginManager(text)
    m.initialize()
    return m


def test_lifecycle_and_queries(library: Library) -> None:
    m = PluginManager(library=library)
    assert m.plugin_count() == 0 and m.plugin_names() == [] and not m.is_initialized()
    m.load_config(config(plugin("b", "DenyWhenBlocked"), plugin("a", "Allow", hooks="[tool_pre_invoke, tool_post_invoke]")))
    assert m.plugin_count() == 2
    assert m.plugin_names() == ["b", "a"]
    assert m.has_hooks_for("tool_post_invoke") and not m.has_hooks_for("prompt_pre_fetch")
    m.initialize()
    assert m.is_initialized()
    m.shutdown()
    m.shutdown()  # harmless
    with pytest.raises(InvalidHandleError, match="shut down"):
        m.plugin_count()


def test_allow_deny_and_modified_payload() -> None:
    with started(config(plugin("guard", "DenyWhenBlocked", priority=1), plugin("t", "Trace", priority=2, config="{tag: t}"))) as m:
        allowed = m.invoke("tool_pre_invoke", {"tool_name": "x"})
        assert allowed.result.continue_processing and allowed.result.violation is None
        assert allowed.modified_payload == {"tool_name": "x", "trace": ["t"]}
        assert allowed.result.payload_type == 0
        denied = m.invoke("tool_pre_invoke", {"tool_name": "x", "block": True})
        assert denied.denied
        assert denied.result.violation is not None
        assert (denied.result.violation.plugin_name, denied.result.violation.code) == ("guard", "blocked")
        assert denied.modified_payload is None


def test_context_threads_state_and_is_consumed() -> None:
    with started(config(plugin("count", "Counter", hooks="[tool_pre_invoke, tool_post_invoke]"))) as m:
        pre = m.invoke("tool_pre_invoke", {})
        assert pre.context is not None and pre.background is None
        post = m.invoke("tool_post_invoke", {}, context=pre.context)
        assert post.result.metadata == {"calls": 2}
        assert pre.context.closed
        with pytest.raises(InvalidHandleError, match="already consumed"):
            m.invoke("tool_post_invoke", {}, context=pre.context)
        assert post.context is not None
        post.context.close()
        post.context.close()  # harmless


def test_each_failure_reaches_the_caller_with_its_class_and_message() -> None:
    with pytest.raises(ParseError, match="YAML syntax error") as parse:
        PluginManager("plugins: [")
    assert parse.value.status == Status.PARSE
    with pytest.raises(ConfigError, match=r"plugins\[0\]\.mode") as conf:
        PluginManager("plugins: [{name: a, kind: 'x:Y', mode: sideways}]")
    assert conf.value.status == Status.CONFIG
    with started(config(plugin("bad", "Raises"))) as m:
        with pytest.raises(PipelineError, match="'bad' raised RuntimeError: kaboom"):
            m.invoke("tool_pre_invoke", {})
        with pytest.raises(InvalidInputError, match="unknown payload type 9"):
            m.invoke("tool_pre_invoke", {}, payload_type=9)
        with pytest.raises(InvalidInputError, match="must be a map"):
            m.invoke("tool_pre_invoke", [1])
    with started(config(plugin("slow", "AsyncSleeper", config="{seconds: 5}"), timeout=0.2)) as m:
        with pytest.raises(PipelineTimeoutError, match="'slow' timed out") as slow:
            m.invoke("tool_pre_invoke", {})
        assert slow.value.status == Status.TIMEOUT


def test_unencodable_modified_payload_is_a_soft_error() -> None:
    with started(config(plugin("u", "Unencodable"))) as m:
        out = m.invoke("tool_pre_invoke", {})
    assert out.result.continue_processing and out.result.modified_payload is None
    assert out.result.errors is not None
    assert [(e.plugin_name, e.code) for e in out.result.errors] == [("<ffi>", "ffi_serialize_error")]


def test_many_threads_invoke_at_once() -> None:
    with started(config(plugin("guard", "DenyWhenBlocked"), plugin("t", "Trace", priority=200, config="{tag: t}"))) as m:
        failures: list[str] = []

        def worker(i: int) -> None:
            for j in range(50):
                out = m.invoke("tool_pre_invoke", {"n": i * 1000 + j, "block": j % 3 == 0})
                if out.denied != (j % 3 == 0):
                    failures.append(f"{i}/{j}: denied={out.denied}")
                elif not out.denied and out.modified_payload != {"n": i * 1000 + j, "block": False, "trace": ["t"]}:
                    failures.append(f"{i}/{j}: {out.modified_payload}")

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert failures == []


def test_fire_and_forget_through_the_library() -> None:
    with started(config(plugin("rec", "Recorder", mode="fire_and_forget", on_error="ignore", config="{seconds: 0.01}"))) as m:
        ok = m.invoke("tool_pre_invoke", {"id": 1})
        assert ok.background is not None and ok.context is None
        assert ok.background.wait() == []
        assert ok.background.wait() == []  # waiting twice is fine
        ok.background.close()
        ok.background.close()
        with pytest.raises(InvalidHandleError, match="closed"):
            ok.background.wait()
        failing = m.invoke("tool_pre_invoke", {"id": 2, "fail": True})
        assert failing.background is not None
        errors = failing.background.wait()
        assert [(e.plugin_name, e.code) for e in errors] == [("rec", "plugin_error")]
        pending = m.invoke("tool_pre_invoke", {"id": 3})
    assert pending.background is not None
    with pytest.raises(InvalidHandleError):
        pending.background.wait()  # after shutdown


def test_registered_factories_and_modified_extensions_through_the_library() -> None:
    import cpex_test_plugins as tp

    with PluginManager() as m:
        m.register_factory("writer", tp.ExtensionWriter)
        m.register_factory("echo", "cpex_test_plugins:TagEcho")
        with pytest.raises(InvalidInputError, match="already registered"):
            m.register_factory("echo", tp.Allow)
        m.load_config("plugins:\n  - {name: w, kind: writer, config: {tag: w}}\n  - {name: e, kind: echo, priority: 200, config: {tag: seen}}\n")
        m.initialize()
        out = m.invoke("tool_pre_invoke", {}, extensions={"meta": {"entity_type": "tool", "entity_name": "x", "tags": ["a"]}})
        assert out.result.modified_extensions is not None
        assert msgpack.unpackb(out.result.modified_extensions)["custom"] == {"w": True}
        assert out.result.metadata == {"seen": ["a"]}
