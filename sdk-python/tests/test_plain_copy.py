"""A generic payload's private copies under libcpex: made in C (ffi/natives.c
copy_plain), equal in every way to a decode of the snapshot's bytes, sharing nothing
mutable with the snapshot or another plugin's copy; anything else is decoded."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import pytest

from conftest import config, plugin, python_prints
from cpexrt import payloads
from cpexrt.host import PluginManager as Host

PRE = "tool_pre_invoke"
META = {"meta": {"entity_type": "tool", "entity_name": "search"}}

# Every shape the boundary's C checker passes: string and bytes keys in a given
# order, nested maps and arrays, the scalars (bool apart from int, big ints, floats,
# empty and non-ASCII strings, bytes).
DATA: dict[Any, Any] = {
    "z": 1,
    "a": {"y": [1, 2, {"x": None}], "b": {}, "c": []},
    b"raw": b"\x00\xff",
    "flags": [True, False, 0, 1],
    "numbers": [2**63 - 1, -(2**63), 2**64 - 1, 1.5, -0.0, 1e300],
    "text": ["", "é", "日本"],
    "deep": [[[[{"k": [{"v": "leaf"}]}]]]],
}


def copy_plain() -> Callable[[Any], Any]:
    """The boundary's C copy, installed when libcpex loads into this process (a host
    made here loads it)."""
    with Host("plugins: []\n"):
        pass
    fn: Callable[[Any], Any] = sys.modules["_cpex_natives"].copy_plain
    return fn


def identical(a: object, b: object, path: str = "$") -> None:
    """a and b are equal with the same exact types and map keys in the same order,
    all the way down."""
    assert type(a) is type(b), path
    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), path
        for k in a:
            identical(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            identical(x, y, f"{path}[{i}]")
    else:
        assert a == b or (a != a and b != b), path


def mutables(value: object) -> list[int]:
    """The ids of every dict and list inside value (value included)."""
    found: list[int] = []
    if isinstance(value, dict):
        found.append(id(value))
        for v in value.values():
            found += mutables(v)
    elif isinstance(value, list):
        found.append(id(value))
        for v in value:
            found += mutables(v)
    return found


def test_the_c_copy_is_what_a_decode_gives() -> None:
    fn = copy_plain()
    wire = payloads._pack(DATA)
    decoded = payloads._decode_generic(wire)
    copied = fn(decoded)
    identical(copied, payloads._decode_generic(wire))
    identical(copied, DATA)
    assert set(mutables(copied)).isdisjoint(mutables(decoded))
    # A tuple becomes a list, as a MessagePack round trip has it.
    identical(fn({"t": (1, ("x", {"k": b""}))}), payloads._unpack(payloads._pack({"t": (1, ("x", {"k": b""}))})))


def test_the_c_copy_is_the_generic_snapshots_copy_only_under_libcpex() -> None:
    fn = copy_plain()
    assert payloads._cloner(0) is fn
    assert payloads._cloner(1) is sys.modules["_cpex_natives"].clone
    # The engine called directly (libcpex not loaded) decodes each copy.
    code = "from cpexrt.engine import Engine; from cpexrt import payloads; print(payloads._cloner(0))"
    assert python_prints(code).strip() == "None"


@pytest.mark.parametrize("spare", [True, False])
def test_copies_are_private_from_the_snapshot_and_each_other(spare: bool) -> None:
    fn = copy_plain()
    wire = payloads._pack(DATA)
    value = payloads._decode_generic(wire)
    snap = payloads.Snapshot(wire, payloads._decode_generic, value if spare else payloads._NOTHING, fn)
    first, second = snap.copy(), snap.copy()
    assert first is not second and first is not value and second is not value
    assert set(mutables(first)).isdisjoint(mutables(second))
    # Everything mutable in one copy edited in place: the other copy, the snapshot's
    # later copies and its own reading stay as the bytes say.
    first["z"] = 2
    first["a"]["y"][2]["x"] = "changed"
    first["a"]["b"]["new"] = 1
    first["a"]["c"].append(1)
    first["deep"][0][0][0][0]["k"][0]["v"] = "changed"
    first["flags"].clear()
    del first[b"raw"]
    identical(second, DATA)
    identical(snap.copy(), DATA)
    identical(snap.peek(), DATA)
    last = snap.copy(last=True)
    identical(last, DATA)
    if spare:
        assert last is value  # the last caller may have the source itself
    last["a"]["y"].clear()
    identical(snap.copy(), DATA)  # decoded: the source was handed out
    identical(payloads._decode_generic(snap.wire), DATA)


class Mapping(dict):  # type: ignore[type-arg]
    pass


class Text(str):
    __slots__ = ()


UNSUPPORTED: list[Any] = [
    {"s": {1, 2}},
    {"o": object()},
    {"b": bytearray(b"x")},
    {1: "int key"},
    {"m": Mapping(a=1)},
    Mapping(a=1),
    {"t": Text("x")},
    {Text("k"): 1},
    {"f": frozenset()},
]


@pytest.mark.parametrize("bad", UNSUPPORTED, ids=range(len(UNSUPPORTED)))
def test_anything_else_is_refused_by_the_c_copy(bad: Any) -> None:
    with pytest.raises(TypeError):
        copy_plain()(bad)


def test_a_record_or_a_nesting_too_deep_is_refused_by_the_c_copy() -> None:
    # clone copies wire records (a CMF message); copy_plain takes none.
    from cpexrt._generated.records import Message

    fn = copy_plain()
    message = Message.from_wire({"role": "user", "content": []}, "m")
    with pytest.raises(TypeError):
        fn({"m": message})
    nested: list[Any] = []
    for _ in range(1000):
        nested = [nested]
    with pytest.raises(TypeError):
        fn(nested)


def test_a_snapshot_whose_value_the_c_copy_refuses_decodes_each_copy() -> None:
    fn = copy_plain()
    wire = payloads._pack({"a": {"b": 1}})
    source = Mapping(a=Mapping(b=1))  # equal data, types the copy does not take
    snap = payloads.Snapshot(wire, payloads._decode_generic, source, fn)
    first, second = snap.copy(), snap.copy()
    identical(first, {"a": {"b": 1}})
    identical(second, {"a": {"b": 1}})
    assert first is not second and first["a"] is not second["a"]


def test_through_libcpex_in_place_edits_reach_no_later_plugin_nor_the_host() -> None:
    # Two vandals edit their copies in place (a nested map too); the last step, the
    # gate, gets the snapshot's own value: what the host sent, untouched.
    m = Host(
        config(
            plugin("vandal1", "Vandal", priority=1, config="{user: alice}"),
            plugin("vandal2", "Vandal", priority=2, config="{user: alice}"),
            plugin("gate", "UserGate", priority=99, config="{allowed: alice}"),
        )
    )
    m.initialize()
    try:
        payload = {"tool_name": "search", "user": "mallory", "nested": {"flag": "original"}}
        for _ in range(3):
            result = m.invoke(PRE, payload, extensions=META).result
            violation = result.violation
            assert not result.continue_processing and violation is not None and violation.plugin_name == "gate"
            assert violation.details is not None
            assert violation.details["user"] == "mallory"
            assert violation.details["nested"] == {"flag": "original"}
            assert result.payload_modified is False
        assert payload == {"tool_name": "search", "user": "mallory", "nested": {"flag": "original"}}
    finally:
        m.shutdown()
