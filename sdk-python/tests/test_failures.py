"""The failure suite (docs/architecture.md, "Errors") from a Python host: every bad
input gets its own error class and a message naming the culprit, and the manager keeps
working afterwards."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import msgpack
import pytest

from conftest import config, plugin
from cpexrt.errors import (
    ConfigError,
    CpexError,
    InvalidHandleError,
    InvalidInputError,
    ParseError,
    PipelineError,
    PipelineTimeoutError,
)
from cpexrt.host import Library, PluginManager

PRE = "tool_pre_invoke"


def entity(tool: str) -> dict[str, Any]:
    return {"meta": {"entity_type": "tool", "entity_name": tool}}


@pytest.fixture(scope="module")
def manager() -> Any:
    with PluginManager(
        config(
            plugin("guard", "DenyWhenBlocked"),
            plugin("raiser", "Raises", conditions="[{tools: [boom]}]"),
            plugin("spinner", "Spinner", conditions="[{tools: [hang]}]"),
            plugin("garbage", "Garbage", conditions="[{tools: [junk]}]"),
            plugin("vandal", "ExtensionEditor", conditions="[{tools: [vandal]}]", config='{set: {"meta.entity_name": forged}}'),
            plugin("policy", "CmfToolPolicy", hooks="[cmf.tool_pre_invoke]"),
            timeout=0.3,
        )
    ) as m:
        m.initialize()
        yield m


def still_works(m: PluginManager) -> None:
    assert not m.invoke(PRE, {"tool_name": "ok"}).denied
    assert m.invoke(PRE, {"tool_name": "no", "block": True}).denied


def raw_invoke(library: Library, m: PluginManager, payload: Any, length: int, extensions: bytes = b"") -> None:
    ffi = library.ffi
    out, out_len = ffi.new("uint8_t **"), ffi.new("size_t *")
    oc, ob, err = ffi.new("cpex_context **"), ffi.new("cpex_background **"), ffi.new("char **")
    status = library.lib.cpex_invoke(
        m._handle,
        PRE.encode(),
        len(PRE),
        0,
        payload,
        length,
        extensions or ffi.NULL,
        len(extensions),
        ffi.NULL,
        out,
        out_len,
        oc,
        ob,
        err,
    )
    library.check(status, err)
    library.lib.cpex_free_buffer(out[0])


VALID = msgpack.packb({"tool_name": "x", "arguments": {"q": "long enough to be cut short"}})

CASES: list[tuple[str, Callable[[Library, PluginManager], Any], type[CpexError], str]] = [
    (
        "null payload with a length",
        lambda lib, m: raw_invoke(lib, m, lib.ffi.NULL, 12),
        InvalidInputError,
        "payload is NULL but payload_len is 12",
    ),
    ("zero-length payload", lambda lib, m: raw_invoke(lib, m, b"", 0), InvalidInputError, "payload: empty"),
    ("truncated MessagePack", lambda lib, m: raw_invoke(lib, m, VALID[:-5], len(VALID) - 5), ParseError, "payload"),
    ("random bytes", lambda lib, m: raw_invoke(lib, m, b"\xc1\x00\xff", 3), ParseError, "payload"),
    ("random extensions", lambda lib, m: raw_invoke(lib, m, VALID, len(VALID), b"\x92"), ParseError, "extensions"),
    ("non-UTF-8 hook", lambda lib, m: m.invoke("tool\udcff", {}), InvalidInputError, "not valid UTF-8"),
    ("unknown payload type", lambda lib, m: m.invoke(PRE, {}, payload_type=42), InvalidInputError, "unknown payload type 42"),
    ("payload not a map", lambda lib, m: m.invoke(PRE, ["x"]), InvalidInputError, "must be a map"),
    (
        "CMF payload of the wrong shape",
        lambda lib, m: m.invoke("cmf.tool_pre_invoke", {"message": {"schema_version": "1", "content": []}}, payload_type=1),
        InvalidInputError,
        "payload.message.role",
    ),
    (
        "plugin raises",
        lambda lib, m: m.invoke(PRE, {}, extensions=entity("boom")),
        PipelineError,
        "plugin 'raiser' raised RuntimeError",
    ),
    (
        "plugin hangs",
        lambda lib, m: m.invoke(PRE, {}, extensions=entity("hang")),
        PipelineTimeoutError,
        "plugin 'spinner' timed out",
    ),
    (
        "plugin returns garbage",
        lambda lib, m: m.invoke(PRE, {}, extensions=entity("junk")),
        PipelineError,
        "plugin 'garbage' returned int",
    ),
]


@pytest.mark.parametrize(("name", "call", "error", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input(library: Library, manager: PluginManager, name: str, call: Any, error: type[CpexError], message: str) -> None:
    with pytest.raises(error, match=message.replace("(", r"\(").replace(".", r"\.")):
        call(library, manager)
    still_works(manager)


def test_a_forbidden_write_fails_the_plugin(manager: PluginManager) -> None:
    with pytest.raises(
        PipelineError, match=r"plugin 'vandal' may not write extensions\.meta \(immutable\).*code extension_write_refused"
    ):
        manager.invoke(PRE, {}, extensions=entity("vandal"))
    still_works(manager)


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ("plugins: [", ParseError, "YAML syntax error"),
        # Refused before the YAML parser, which would take seconds to recurse into it.
        ("[" * 2000 + "plugins: {}", ParseError, "nested too deeply"),
        ("plugins:\n" + "  - " * 500 + "x", ParseError, "nested too deeply"),
        # Brackets inside quoted scalars are not nesting.
        ("description: '" + "[" * 100 + "'\nplugins: []", ConfigError, "description: unknown field"),
        ("plugins: [{name: a, kind: 'x:Y', shade: blue}]", ConfigError, r"plugins\[0\]\.shade: unknown field"),
        ("plugins: [{name: a, kind: 'x:Y', mode: maybe}]", ConfigError, r"plugins\[0\]\.mode: expected one of"),
        ("plugins: [{name: a, kind: 'x:Y'}, {name: a, kind: 'x:Y'}]", ConfigError, "duplicate plugin name 'a'"),
        ("plugins: [{name: a, kind: 'no_such_mod_zz:A'}]", ConfigError, "cannot import module 'no_such_mod_zz'"),
        (config(plugin("a", "Allow", hooks="[prompt_pre_fetch]")), ConfigError, r"plugins\[0\]\.hooks\[0\]: plugin 'a'"),
    ],
)
def test_bad_configs_fail_the_load_not_the_manager(text: str, error: type[CpexError], message: str) -> None:
    with PluginManager() as m:
        with pytest.raises(error, match=message):
            m.load_config(text)
        m.load_config(config(plugin("guard", "DenyWhenBlocked")))
        m.initialize()
        still_works(m)


def test_context_reuse_and_use_after_shutdown() -> None:
    m = PluginManager(config(plugin("count", "Counter", hooks="[tool_pre_invoke, tool_post_invoke]")))
    m.initialize()
    pre = m.invoke(PRE, {})
    m.invoke("tool_post_invoke", {}, context=pre.context)
    with pytest.raises(InvalidHandleError, match="consumed"):
        m.invoke("tool_post_invoke", {}, context=pre.context)
    m.shutdown()
    with pytest.raises(InvalidHandleError, match="shut down"):
        m.invoke(PRE, {})


def test_shutdown_racing_threads_that_invoke_and_wait() -> None:
    m = PluginManager(config(plugin("count", "Counter"), plugin("rec", "SyncRecorder", mode="fire_and_forget")))
    m.initialize()
    unexpected: list[BaseException] = []
    go = threading.Event()

    def worker() -> None:
        go.wait()
        for i in range(100):
            try:
                out = m.invoke(PRE, {"id": i})
                if out.background is not None:
                    out.background.wait()
                if out.context is not None:
                    out.context.close()
            except InvalidHandleError:
                pass
            except BaseException as exc:  # noqa: BLE001
                unexpected.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    go.set()
    m.shutdown()
    for t in threads:
        t.join(30)
        assert not t.is_alive()
    assert unexpected == []
