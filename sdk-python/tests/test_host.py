"""The Python host client over libcpex.so: the same calls a Go host makes."""

from __future__ import annotations

import threading
from pathlib import Path

import msgpack
import pytest

from conftest import config, plugin
from cpexrt.errors import (
    ConfigError,
    InvalidHandleError,
    InvalidInputError,
    ParseError,
    PipelineError,
    PipelineTimeoutError,
    Status,
)
from cpexrt.host import Library, PluginManager


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
    with started(
        config(plugin("guard", "DenyWhenBlocked", priority=1), plugin("t", "Trace", priority=2, config="{tag: t}"))
    ) as m:
        allowed = m.invoke("tool_pre_invoke", {"tool_name": "x"})
        assert allowed.result.continue_processing and allowed.result.violation is None
        assert allowed.modified_payload == {"tool_name": "x", "trace": ["t"]}
        assert allowed.result.payload_type == 0
        denied = m.invoke("tool_pre_invoke", {"tool_name": "x", "block": True})
        assert denied.denied
        assert denied.result.violation is not None
        assert (denied.result.violation.plugin_name, denied.result.violation.code) == ("guard", "blocked")
        assert denied.modified_payload is None


def test_an_unchanged_result_reads_as_the_decoded_record_and_each_is_the_callers_own() -> None:
    # The library sends the payload type's unchanged result when nobody objected or
    # changed anything; the host makes it into a record only when it is read.
    from cpexrt._generated.errors import UNCHANGED_RESULTS
    from cpexrt._generated.records import PipelineResult

    decoded = PipelineResult.from_wire(msgpack.unpackb(UNCHANGED_RESULTS[0]))
    with started(config(plugin("guard", "DenyWhenBlocked"))) as m:
        first = m.invoke("tool_pre_invoke", {"tool_name": "x"})
        assert (first.denied, first.payload_modified, first.extensions_modified) == (False, False, False)
        assert (first.violation, first.errors, first.metadata) == (None, [], {})
        assert (first.modified_payload, first.modified_extensions) == (None, None)
        assert first.result == decoded
        assert first.result is first.result  # made once
        first.result.metadata = {"mine": True}
        second = m.invoke("tool_pre_invoke", {"tool_name": "x"})
        assert second.result == decoded and second.metadata == {}
        assert first.metadata == {"mine": True}


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
            m.invoke("tool_pre_invoke", [1])  # type: ignore[call-overload]  # deliberately not a map
    with started(config(plugin("slow", "AsyncSleeper", config="{seconds: 5}"), timeout=0.2)) as m:
        with pytest.raises(PipelineTimeoutError, match="'slow' timed out") as slow:
            m.invoke("tool_pre_invoke", {})
        assert slow.value.status == Status.TIMEOUT


def test_unencodable_modified_payload_fails_the_plugin_not_the_boundary() -> None:
    with started(config(plugin("u", "Unencodable"))) as m:
        with pytest.raises(
            PipelineError,
            match=r"plugin 'u' returned a modified payload that cannot be encoded.*code modified_payload_unencodable",
        ):
            m.invoke("tool_pre_invoke", {})


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
        m.load_config(
            "plugins:\n"
            "  - {name: w, kind: writer, config: {tag: w}}\n"
            "  - {name: e, kind: echo, priority: 200, config: {tag: seen}}\n"
        )
        m.initialize()
        out = m.invoke("tool_pre_invoke", {}, extensions={"meta": {"entity_type": "tool", "entity_name": "x", "tags": ["a"]}})
        assert out.result.modified_extensions is not None
        assert msgpack.unpackb(out.result.modified_extensions)["custom"] == {"w": True}
        assert out.result.metadata == {"seen": ["a"]}


def test_typed_invoke_decodes_payload_and_extensions() -> None:
    from cpexrt._generated.records import ContentPart, Extensions, Message, MessagePayload, MetaExtension

    hooks = "[cmf.tool_pre_invoke]"
    text = config(plugin("append", "CmfAppendText", hooks=hooks, config="{text: done}"))
    with started(text) as m:
        payload = MessagePayload(message=Message(schema_version="1.0", role="user", content=[ContentPart.new_text("hi")]))
        out = m.invoke("cmf.tool_pre_invoke", payload, extensions=Extensions(meta=MetaExtension(entity_name="x")))
        modified = out.modified_payload
        assert isinstance(modified, MessagePayload)
        assert [p.value for p in modified.message.content] == ["hi", "done"]
        assert out.modified_extensions is None
    with started(config(plugin("w", "ExtensionWriter", config="{tag: w}"))) as m:
        res = m.invoke("tool_pre_invoke", {"a": 1}, extensions={"custom": {"seed": 1}})
        assert res.modified_payload is None
        ext = res.modified_extensions
        assert isinstance(ext, Extensions) and ext.custom == {"seed": 1, "w": True}


def test_asyncio_friendly_calls() -> None:
    import asyncio

    async def main() -> tuple[list[bool], list[object]]:
        with started(config(plugin("guard", "DenyWhenBlocked"), plugin("rec", "Recorder", mode="fire_and_forget"))) as m:
            results = await asyncio.gather(*(m.ainvoke("tool_pre_invoke", {"block": i % 2 == 0}) for i in range(10)))
            bg = results[0].background
            assert bg is not None
            errors = await bg.wait_async()
            return [r.denied for r in results], list(errors)

    denied, errors = asyncio.run(main())
    assert denied == [i % 2 == 0 for i in range(10)] and errors == []


def test_load_config_file(tmp_path: Path) -> None:
    path = tmp_path / "cpex.yaml"
    path.write_text(config(plugin("a", "Allow")))
    with PluginManager() as m:
        m.load_config_file(path)
        assert m.plugin_names() == ["a"]
        with pytest.raises(InvalidInputError, match="No such file"):
            m.load_config_file(tmp_path / "missing.yaml")


def test_every_call_fails_cleanly_after_shutdown() -> None:
    m = started(config(plugin("count", "Counter"), plugin("rec", "SyncRecorder", mode="fire_and_forget")))
    out = m.invoke("tool_pre_invoke", {})
    assert out.context is not None and out.background is not None
    m.shutdown()
    calls = {
        "register_factory": lambda: m.register_factory("k", "a:B"),
        "load_config": lambda: m.load_config("plugins: []"),
        "initialize": m.initialize,
        "has_hooks_for": lambda: m.has_hooks_for("x"),
        "plugin_count": m.plugin_count,
        "plugin_names": m.plugin_names,
        "is_initialized": m.is_initialized,
        "invoke": lambda: m.invoke("tool_pre_invoke", {}),
        "wait": out.background.wait if out.background else None,
    }
    for call in calls.values():
        assert call is not None
        with pytest.raises(InvalidHandleError):
            call()
    for _ in range(2):
        out.context.close()
        out.background.close()
        m.shutdown()
    assert out.context.closed and out.background.closed


def test_a_dropped_manager_is_shut_down() -> None:
    import gc

    from cpexrt._boundary.handles import HANDLES

    before = len(HANDLES)
    m = started(config(plugin("a", "Allow")))
    assert len(HANDLES) == before + 1
    del m
    gc.collect()
    assert len(HANDLES) == before


@pytest.mark.parametrize("size", [1, 255, 256, 65535, 65536])
@pytest.mark.parametrize("payload_type", [0, 1])
def test_a_result_with_only_a_modified_payload_is_encoded_as_the_generic_encoder_does(size: int, payload_type: int) -> None:
    # The boundary writes such a result from fixed bytes and the payload's own (no map
    # to pack): byte for byte what packing the whole PipelineResult gives, for every
    # MessagePack bin header (bin 8 / 16 / 32).
    from cpexrt._boundary.exports import _packed_result, _result_bytes
    from cpexrt._generated.records import PluginError, PluginViolation
    from cpexrt.engine.executor import PipelineOutcome
    from cpexrt.payloads import Snapshot

    wire = b"\xc0" * size  # opaque to the result's encoding: only its length matters here
    outcome = PipelineOutcome()
    outcome.payload = Snapshot(wire, msgpack.unpackb)
    data = _result_bytes(outcome, payload_type)
    assert data == _packed_result(outcome, payload_type)
    decoded = msgpack.unpackb(data)
    assert decoded["modified_payload"] == wire and decoded["payload_modified"] is True
    assert decoded["payload_type"] == payload_type
    # Anything besides the payload goes through the generic encoder, nothing dropped.
    for extra in (
        {"metadata": {"k": 1}},
        {"errors": [PluginError(plugin_name="p", code="c", message="m")]},
        {"retry_delay_ms": 5},
        {"http_headers": {"x-a": "b"}},
        {"continue_processing": False, "violation": PluginViolation(code="c", reason="r")},
        {"extensions": Snapshot(msgpack.packb({"meta": {}}), msgpack.unpackb)},
    ):
        other = PipelineOutcome()
        other.payload = outcome.payload
        for key, value in extra.items():
            setattr(other, key, value)
        assert _result_bytes(other, payload_type) == _packed_result(other, payload_type)
        assert set(msgpack.unpackb(_result_bytes(other, payload_type))) > {"modified_payload"}


@pytest.mark.parametrize("payload_type", [0, 1])
def test_the_packed_result_is_what_the_pipeline_results_generic_encoder_gives(payload_type: int) -> None:
    # _packed_result spells out PipelineResult.wire_from for the outcome's fields:
    # byte for byte the same, every field present or absent, alone and together.
    import itertools

    from cpexrt._boundary.exports import _packed_result
    from cpexrt._generated.records import PipelineResult, PluginError, PluginViolation
    from cpexrt.engine.executor import PipelineOutcome
    from cpexrt.payloads import Snapshot
    from cpexrt.wire import pack

    def generic(result: PipelineOutcome, payload_type: int) -> bytes:
        """The pipeline result by the record's generic encoder (PipelineResult.wire_from)."""
        wire = PipelineResult.wire_from(
            continue_processing=result.continue_processing,
            payload_modified=result.payload_modified,
            extensions_modified=result.extensions_modified,
            violation=result.violation,
            errors=result.errors,
            metadata=result.metadata,
            payload_type=payload_type,
            modified_payload=result.modified_payload_wire,
            modified_extensions=result.modified_extensions_wire,
            retry_delay_ms=result.retry_delay_ms,
            http_headers=result.http_headers,
        )
        return pack(wire, "pipeline result")

    fields: dict[str, object] = {
        "continue_processing": False,
        "violation": PluginViolation(code="c", reason="r", details={"k": [1, {"n": None}]}),
        "errors": [PluginError(plugin_name="p", code="c", message="m"), PluginError(plugin_name="q", message="n", details={})],
        "metadata": {"k": 1, "nested": {"a": [b"x", 2.5]}},
        "payload": Snapshot(msgpack.packb({"a": 1}), msgpack.unpackb),
        "extensions": Snapshot(msgpack.packb({"meta": {}}), msgpack.unpackb),
        "retry_delay_ms": 5,
        "http_headers": {"x-a": "b"},
    }
    empty = {"errors": [], "metadata": {}, "retry_delay_ms": 0, "http_headers": {}}
    for n in range(len(fields) + 1):
        for chosen in itertools.combinations(fields, n):
            for values in (fields, {**fields, **empty}):
                outcome = PipelineOutcome()
                for key in chosen:
                    setattr(outcome, key, values[key])
                assert _packed_result(outcome, payload_type) == generic(outcome, payload_type), chosen
