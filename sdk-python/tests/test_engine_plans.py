"""The executor's compiled plans and lazy contexts keep every rule: what a plugin never
reads is never copied, what it reads is its own copy, a plain allow changes nothing,
and a plan follows on_error: disable and the route cache."""

from __future__ import annotations

import copy
import threading
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cpexrt import Plugin, PluginContext, allow, modify
from cpexrt.engine import Engine
from cpexrt.engine.executor import Invocation, _copy_state
from cpexrt.errors import InvalidInputError
from cpexrt.results import _ALLOW

PRE = "tool_pre_invoke"
CALL = {"tool_name": "search", "user": "alice"}
SEEN: list[tuple[str, Any]] = []


class Reader(Plugin):
    """Reads its context (and mutates every copy it was given in place)."""

    def tool_pre_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        seen = {"ext": ctx.extensions, "request": ctx.request, "state": ctx.state}
        SEEN.append((self.config["tag"], copy.deepcopy(seen)))
        payload["user"] = "mallory"
        ctx.extensions.setdefault("meta", {})["entity_name"] = "tampered"
        if ctx.request is not None:
            ctx.request["request_id"] = "tampered"
        ctx.state["seen"] = self.config["tag"]
        ctx.request_state["by"] = self.config["tag"]
        return None


class Quiet(Plugin):
    """Reads nothing of its context."""

    def tool_pre_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        return None


class Failing(Plugin):
    def tool_pre_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        raise RuntimeError("boom")


class SharedAllowTamperer(Plugin):
    """Writes metadata into the allow every plugin shares, then returns it."""

    def tool_pre_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        result = allow()
        result.metadata["leak"] = "from tamperer"
        return result


class SharedAllowDenier(Plugin):
    """Forces the frozen allow every plugin shares into a deny, then returns it."""

    def tool_pre_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        result = allow()
        object.__setattr__(result, "continue_processing", False)
        return result


class Modifier(Plugin):
    def tool_pre_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        return modify({**payload, "user": "bob"})


def started(plugins: str, settings: str = "", routes: str = "") -> Engine:
    m = Engine()
    for cls in (Reader, Quiet, Failing, SharedAllowTamperer, SharedAllowDenier, Modifier):
        m.register_factory(cls.__name__, cls)
    settings = settings or "  routing_enabled: false\n"
    m.load_config(f"plugin_settings:\n{settings}plugins:\n{plugins}{routes}")
    m.initialize()
    return m


def stanza(name: str, kind: str, mode: str = "sequential", priority: int = 10, extra: str = "") -> str:
    return (
        f"  - {{name: {name}, kind: {kind}, hooks: [{PRE}], mode: {mode}, priority: {priority}, "
        f"config: {{tag: {name}}}{extra}}}\n"
    )


def test_a_plugin_that_reads_nothing_leaves_no_state() -> None:
    m = started(stanza("quiet", "Quiet"))
    out = m.invoke(PRE, 0, dict(CALL), {"meta": {"entity_type": "tool", "entity_name": "search"}})
    assert out.continue_processing and out.context is None and not out.errors
    m.shutdown()


def test_every_plugin_reads_its_own_copies_in_every_phase_and_on_the_boundary_path() -> None:
    SEEN.clear()
    m = started(
        stanza("r1", "Reader", priority=1)
        + stanza("r2", "Reader", "audit", priority=2)
        + stanza("r3", "Reader", "concurrent", priority=3)
    )
    ext = {"meta": {"entity_type": "tool", "entity_name": "search", "tags": ["t"]}}
    wire, ext_wire = msgpack.packb(CALL), msgpack.packb(ext)
    # As the boundary calls it: owned values decoded from the host's bytes, the
    # extensions rewritten with the resolved tags (encoded only when first read).
    out = m.invoke(
        PRE,
        0,
        msgpack.unpackb(wire),
        msgpack.unpackb(ext_wire),
        payload_wire=wire,
        extensions_wire=ext_wire,
        owned=True,
        request={"request_id": "r-1"},
    )
    assert out.continue_processing and not out.payload_modified and not out.extensions_modified
    assert [tag for tag, _ in SEEN] == ["r1", "r2", "r3"]
    for _, seen in SEEN:
        assert seen["ext"]["meta"]["entity_name"] == "search"  # nobody saw another's edit
        assert seen["request"]["request_id"] == "r-1"
        assert seen["state"] == {}
    states = out.context.hold()  # type: ignore[union-attr]
    assert states["r1"] == {"seen": "r1"} and states["r3"] == {"seen": "r3"}
    assert states[""] == {"by": "r3"}  # the request's shared state: one map for all
    m.shutdown()


def test_state_is_copied_for_the_invoke_and_a_failed_invoke_keeps_the_table() -> None:
    SEEN.clear()
    m = started(stanza("r1", "Reader", priority=1) + stanza("bad", "Failing", priority=2, extra=", on_error: fail"))
    quiet = m.invoke("tool_post_invoke", 0, dict(CALL))  # no plugin on this hook
    assert quiet.context is None
    ok = started(stanza("r1", "Reader", priority=1))
    table = ok.invoke(PRE, 0, dict(CALL)).context
    assert table is not None
    second = ok.invoke(PRE, 0, dict(CALL), context=table)
    assert SEEN[-1][1]["state"] == {"seen": "r1"}  # the state the first invoke left
    assert second.context is not None and second.context is not table
    ok.shutdown()
    m.shutdown()


def test_copy_state_copies_exactly_as_deepcopy() -> None:
    flat = {"user": "alice", "n": 1, "ok": True, "none": None, "x": 1.5, "b": b"x"}
    copied = _copy_state(flat)
    assert copied == flat and copied is not flat
    nested = {"users": ["alice"], "seen": {"a": 1}}
    deep = _copy_state(nested)
    deep["users"].append("bob")
    deep["seen"]["b"] = 2
    assert nested == {"users": ["alice"], "seen": {"a": 1}}
    shared: list[str] = []
    aliased = _copy_state({"a": shared, "b": shared})
    assert aliased["a"] is aliased["b"] and aliased["a"] is not shared  # deepcopy's aliasing kept


def test_first_reads_of_state_on_two_threads_share_one_copy() -> None:
    inv = Invocation.__new__(Invocation)
    inv.states_in, inv.states = {"p": {"k": "v"}}, {}
    got: list[dict[str, Any]] = []
    barrier = threading.Barrier(8)

    def read() -> None:
        barrier.wait()
        got.append(inv.state_for("p"))

    threads = [threading.Thread(target=read) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(s is got[0] for s in got) and got[0] == {"k": "v"} and got[0] is not inv.states_in["p"]


def test_the_shared_allow_tampered_with_is_taken_as_that_plugins_result_only() -> None:
    m = started(stanza("tamperer", "SharedAllowTamperer", priority=1) + stanza("quiet", "Quiet", priority=2))
    try:
        out = m.invoke(PRE, 0, dict(CALL))
        assert out.continue_processing and out.metadata == {"leak": "from tamperer"}
        assert not out.payload_modified
    finally:
        _ALLOW.metadata.clear()
        m.shutdown()


def test_a_shared_allow_forced_into_a_deny_is_not_taken_for_a_plain_allow() -> None:
    # The plain-allow fast path compares every field of the shared allow, not only its
    # metadata: whatever a plugin made of it, the engine reads it as that plugin's result.
    m = started(stanza("denier", "SharedAllowDenier", priority=1) + stanza("quiet", "Quiet", priority=2))
    try:
        assert not m.invoke(PRE, 0, dict(CALL)).continue_processing
    finally:
        object.__setattr__(_ALLOW, "continue_processing", True)
        m.shutdown()


def test_a_disabled_plugin_leaves_every_cached_plan() -> None:
    m = started(
        stanza("bad", "Failing", priority=1, extra=", on_error: disable") + stanza("mod", "Modifier", priority=2),
        "  routing_enabled: true\n  route_cache_size: 4\n",
        "routes:\n  - {tool: search, plugins: [bad, mod]}\n",
    )
    meta = {"meta": {"entity_type": "tool", "entity_name": "search"}}
    first = m.invoke(PRE, 0, dict(CALL), meta)
    assert [e.code for e in first.errors] == ["plugin_error"] and first.modified_payload["user"] == "bob"
    for extensions in (meta, None):
        again = m.invoke(PRE, 0, dict(CALL), extensions)
        assert not again.errors and again.modified_payload["user"] == "bob"
    assert m.router.cached <= 4
    m.shutdown()


def test_a_payload_that_encodes_but_does_not_decode_is_the_callers_error() -> None:
    # An int map key packs but is no wire payload: the call is refused naming the
    # payload, before any plugin runs (it was a bare msgpack ValueError from inside
    # the first plugin's copy), whatever the plugins' on_error.
    m = started(stanza("r", "Reader", extra=", on_error: ignore"))
    SEEN.clear()
    for bad in ({1: "x"}, {"arguments": {2: "y"}}):
        with pytest.raises(InvalidInputError, match=r"payload: .*map key.*must be strings"):
            m.invoke(PRE, 0, bad)
    assert SEEN == []
    assert m.invoke(PRE, 0, {"arguments": {"2": "y"}}).continue_processing


_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=5), st.binary(max_size=4)
)
_PLAIN = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=4), inner, max_size=4),
        st.tuples(inner, inner),
        st.sets(st.integers(), max_size=3),
    ),
    max_leaves=20,
)


def _shape(value: Any, seen: dict[int, int]) -> Any:
    """value's structure with its aliasing: each container numbered by first visit."""
    if isinstance(value, dict | list | tuple | set):
        if id(value) in seen:
            return ("alias", seen[id(value)])
        seen[id(value)] = len(seen)
        items = value.items() if isinstance(value, dict) else enumerate(value) if not isinstance(value, set) else []
        return (
            type(value).__name__,
            sorted(map(repr, value)) if isinstance(value, set) else [(k, _shape(v, seen)) for k, v in items],
        )
    return (type(value).__name__, value)


def _mutables(value: Any) -> list[int]:
    """The ids of the mutable containers in value (tuples looked into, not counted)."""
    if isinstance(value, dict):
        return [id(value), *(i for v in value.values() for i in _mutables(v))]
    if isinstance(value, list | set):
        return [id(value), *(i for v in value for i in _mutables(v))]
    if isinstance(value, tuple):
        return [i for v in value for i in _mutables(v)]
    return []


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=4), _PLAIN, max_size=5), st.data())
def test_plain_copies_equal_deepcopy_aliasing_included(state: dict[str, Any], data: st.DataObject) -> None:
    if state:  # the same value under a second key, as a plugin may store it
        state["alias"] = state[data.draw(st.sampled_from(sorted(state)))]
    ours, theirs = _copy_state(state), copy.deepcopy(state)
    assert ours == theirs
    assert _shape(ours, {}) == _shape(theirs, {})
    assert not set(_mutables(ours)) & set(_mutables(state))  # nothing mutable shared with the source


def test_extensions_that_encode_but_do_not_decode_are_the_callers_error() -> None:
    # Before: the first plugin reading its extensions failed with msgpack's ValueError,
    # and under on_error: ignore the call was allowed.
    m = started(stanza("r", "Reader", extra=", on_error: ignore"))
    SEEN.clear()
    bads: list[Any] = [{1: "x"}, {"meta": {2: "y"}}]
    for bad in bads:
        with pytest.raises(InvalidInputError, match=r"extensions: .*map key.*must be strings"):
            m.invoke(PRE, 0, dict(CALL), bad)
    assert SEEN == []
    out = m.invoke(PRE, 0, dict(CALL), {"meta": {"entity_name": "x"}})
    assert out.continue_processing and not out.errors
    assert SEEN[0][1]["ext"] == {"meta": {"entity_name": "x"}}
