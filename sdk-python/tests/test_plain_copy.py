"""A generic payload's private copies under libcpex: made in C (ffi/natives.c
copy_plain), equal in every way to a decode of the snapshot's bytes, sharing nothing
mutable with the snapshot or another plugin's copy; anything else is decoded."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped, unused-ignore]
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
    seen = snap.peek()
    last = snap.copy(last=True)
    identical(last, DATA)
    # The source of the clones is what peek() reads (the engine's own, for comparing
    # writes with): never handed out, not even to the last caller.
    assert last is not seen and set(mutables(last)).isdisjoint(mutables(seen))
    if spare:
        assert seen is value
    last["a"]["y"].clear()
    identical(snap.copy(), DATA)
    identical(snap.peek(), DATA)
    identical(payloads._decode_generic(snap.wire), DATA)


def test_the_last_caller_may_have_the_source_when_the_engine_never_read_it() -> None:
    fn = copy_plain()
    wire = payloads._pack(DATA)
    value = payloads._decode_generic(wire)
    snap = payloads.Snapshot(wire, payloads._decode_generic, value, fn)
    first = snap.copy()
    assert first is not value
    assert snap.copy(last=True) is value
    seen = snap.peek()  # decoded: the source was handed out
    assert seen is not value and set(mutables(seen)).isdisjoint(mutables(value))
    value["a"]["y"].clear()
    identical(snap.peek(), DATA)
    identical(snap.copy(), DATA)


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


# -- the extensions under libcpex: the engine's reading is the snapshot's kept value,
# plugins get C copies of it, a modification's private value is the C copy of the map
# the C checker passed -----------------------------------------------------------------

LIMITS = payloads.Limits(1 << 20, 1 << 20, 16)


def test_modified_extensions_are_a_private_copy_equal_to_their_bytes_decoded() -> None:
    copy_plain()
    assert payloads._plain_check is sys.modules["_cpex_natives"].plain_maps
    merged: dict[str, Any] = {"http": {"response_headers": {"x-a": "1"}}, "custom": {"l": [1, {"k": b"\x00"}], "f": 1.5}}
    snap = payloads.accept_extensions(merged, {"http", "custom"}, LIMITS)
    value = snap.peek()
    identical(value, payloads._unpack(snap.wire))
    identical(value, merged)
    assert set(mutables(value)).isdisjoint(mutables(merged))
    plugin_copy = snap.copy()
    assert set(mutables(plugin_copy)).isdisjoint(mutables(value))
    plugin_copy["http"]["response_headers"]["x-a"] = "changed"
    merged["custom"]["l"].append(2)
    identical(snap.peek(), payloads._unpack(snap.wire))
    identical(snap.copy(), payloads._unpack(snap.wire))


@pytest.mark.parametrize(
    "merged",
    [{"custom": {"t": (1, 2)}}, {"custom": {"s": Text("x")}}, {"custom": Mapping(a=1)}, {Text("custom"): {"a": 1}}],
    ids=["tuple", "str-subclass", "dict-subclass", "str-subclass-key"],
)
def test_a_modified_map_the_c_copy_does_not_take_is_decoded(merged: dict[Any, Any]) -> None:
    copy_plain()
    snap = payloads.accept_extensions(merged, {"custom"}, LIMITS)
    value = snap.peek()
    identical(value, payloads._unpack(snap.wire))  # exact types: as the bytes decode
    assert type(next(iter(value))) is str


@pytest.mark.parametrize(
    "merged, found",
    [
        ({"custom": {"l": list(range(17))}}, "17 exceeds max_array_len"),
        ({"custom": {str(i): i for i in range(17)}}, "17 exceeds max_map_len"),
        ({"custom": {1: "int key"}}, "int is not allowed for map key"),
    ],
    ids=["array-over-limit", "map-over-limit", "int-key"],
)
def test_modified_extensions_the_c_checker_refuses_are_refused_as_the_decode_refuses_them(
    merged: dict[str, Any], found: str
) -> None:
    copy_plain()
    with pytest.raises(payloads.Refusal) as refused:
        payloads.accept_extensions(merged, {"custom"}, LIMITS)
    assert refused.value.code == "modified_extensions_invalid" and found in refused.value.why


FULL_EXTENSIONS: dict[str, Any] = {
    "meta": {"entity_type": "tool", "entity_name": "search", "tags": ["a"]},
    "http": {"request_headers": {"host": "gateway.local"}},
    "custom": {"alpha": 1},
}


# The engine called directly in a fresh interpreter (libcpex never loaded: no C copy,
# the extensions decoded for each reader), printing what run_both returns as JSON.
_FRESH_ENGINE = """
import json, sys
from cpexrt import payloads
from cpexrt.engine import Engine
assert payloads._plain_clone is None and payloads._plain_check is None
text, extensions = json.loads(sys.argv[1])
engine = Engine.from_yaml(text)
engine.initialize()
out = engine.invoke("tool_pre_invoke", 0, {}, extensions)
errors = [(e.plugin_name, e.code, e.message) for e in out.errors]
print(json.dumps([out.modified_extensions, errors, out.metadata]))
engine.shutdown()
"""


def run_both(mode: str, text: str, extensions: dict[str, Any]) -> tuple[Any, list[tuple[str, str | None, str]], dict[str, Any]]:
    """(modified extensions as a map or None, errors, metadata) of one invoke, by the
    engine called directly (in this process, where the tests have loaded libcpex and
    its C copies; or in a fresh interpreter without them) or through libcpex."""
    if mode == "fresh-engine":
        import json

        done = subprocess.run(
            [sys.executable, "-c", _FRESH_ENGINE, json.dumps([text, extensions])],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        modified, errors, metadata = json.loads(done.stdout)
        return modified, [tuple(e) for e in errors], metadata
    if mode == "engine":
        from cpexrt.engine import Engine

        engine = Engine.from_yaml(text)
        engine.initialize()
        try:
            out = engine.invoke(PRE, 0, {}, extensions)
            errors = [(e.plugin_name, e.code, e.message) for e in out.errors]
            return out.modified_extensions, errors, out.metadata
        finally:
            engine.shutdown()
    with Host(text) as host:
        host.initialize()
        res = host.invoke(PRE, {}, extensions=extensions)
        raw = res.result.modified_extensions
        errors = [(e.plugin_name, e.code, e.message) for e in res.errors]
        return (payloads._unpack(raw) if raw is not None else None), errors, res.metadata


@pytest.mark.parametrize("mode", ["engine", "fresh-engine", "libcpex"])
def test_a_returned_map_edited_in_place_is_checked_against_what_the_plugin_was_shown(mode: str) -> None:
    import copy
    import json

    given = copy.deepcopy(FULL_EXTENSIONS)
    # Its own view, a guarded slot changed in place without write_headers, returned
    # whole: refused (the engine compares with its own value, not the plugin's); the
    # next plugins see what the host sent.
    text = config(
        plugin(
            "reader",
            "ExtensionReturner",
            priority=1,
            on_error="ignore",
            capabilities='["read_headers"]',
            config=json.dumps({"set": {"http.request_headers.host": "evil"}}),
        ),
        plugin(
            "immutable",
            "ExtensionReturner",
            priority=2,
            on_error="ignore",
            capabilities='["read_headers", "write_headers"]',
            config=json.dumps({"set": {"meta.entity_name": "other", "http.response_headers": {"x": "1"}}}),
        ),
        plugin("unchanged", "ExtensionReturner", priority=3, capabilities='["read_headers"]'),
        plugin("probe", "ExtensionProbe", priority=4, capabilities='["read_headers"]'),
    )
    modified, errors, metadata = run_both(mode, text, given)
    assert given == FULL_EXTENSIONS
    assert modified is None
    assert [(name, code) for name, code, _ in errors] == [
        ("reader", "extension_write_refused"),
        ("immutable", "extension_write_refused"),
    ]
    assert "extensions.http (needs the capability write_headers)" in errors[0][2]
    assert "extensions.meta (immutable)" in errors[1][2] and "extensions.http" not in errors[1][2]
    assert metadata["seen"] == FULL_EXTENSIONS


@pytest.mark.parametrize("mode", ["engine", "fresh-engine", "libcpex"])
def test_an_allowed_write_in_place_is_taken_and_checked_for_its_slots_type(mode: str) -> None:
    import json

    text = config(
        plugin(
            "writer",
            "ExtensionReturner",
            priority=1,
            capabilities='["read_headers", "write_headers"]',
            config=json.dumps({"set": {"http.response_headers": {"x-w": "1"}}}),
        ),
        plugin(
            "wrong-type",
            "ExtensionReturner",
            priority=2,
            on_error="ignore",
            capabilities='["read_headers", "write_headers"]',
            config=json.dumps({"set": {"http.response_headers.x-n": 5}}),
        ),
        plugin(
            "reader",
            "ExtensionReturner",
            priority=3,
            on_error="ignore",
            capabilities='["read_headers"]',
            config=json.dumps({"set": {"http.response_headers.x-w": "2"}}),
        ),
        plugin("probe", "ExtensionProbe", priority=4, capabilities='["read_headers"]'),
    )
    modified, errors, metadata = run_both(mode, text, FULL_EXTENSIONS)
    expected = {**FULL_EXTENSIONS, "http": {**FULL_EXTENSIONS["http"], "response_headers": {"x-w": "1"}}}
    assert modified == expected
    assert [(name, code) for name, code, _ in errors] == [
        ("wrong-type", "modified_extensions_invalid"),
        ("reader", "extension_write_refused"),
    ]
    assert "extensions.http.response_headers.x-n" in errors[0][2]
    assert metadata["seen"] == expected


def decode_map() -> Callable[[bytes], Any]:
    """The boundary's C decode of a map the C checker took (installed with the copy)."""
    copy_plain()
    fn: Callable[[bytes], Any] = sys.modules["_cpex_natives"].decode_map
    return fn


# Every width of every MessagePack type the checker passes, at its bounds.
WIDTHS: dict[str, Any] = {
    "ints": [0, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000, 2**32 - 1, 2**32, 2**64 - 1, -1, -32, -33, -128, -129],
    "negative": [-(2**15), -(2**15) - 1, -(2**31), -(2**31) - 1, -(2**63)],
    "strs": ["", "x" * 31, "x" * 32, "é" * 200, "y" * 70_000],
    "bins": [b"", b"\x00" * 300, b"\xff" * 70_000],
    "floats": [0.0, -0.0, 1.5, 0.1, 3e38, float("inf")],
    "map16": {f"k{i}": i for i in range(20)},
    "array16": list(range(20)),
    "map32": {f"m{i}": None for i in range(70_000)},
    "array32": [True] * 70_000,
}


def test_the_c_decode_is_what_msgpack_decodes() -> None:
    import msgpack

    from cpexrt._boundary import exports

    decode = decode_map()
    assert exports._decode_map is decode  # what the boundary decodes an exact map with
    plain = {k: v for k, v in DATA.items() if isinstance(k, str)}
    for value, single in ((plain, False), (WIDTHS, False), (WIDTHS, True), ({}, False), ({"k": {"n": {}}}, False)):
        data = msgpack.packb(value, use_bin_type=True, use_single_float=single)  # single: floats as float32
        got = decode(data)
        identical(got, msgpack.unpackb(data, raw=False))
        assert all(sys.intern(k) is k for k in got)  # keys interned, as msgpack's
    # Keys are kept in a table by their bytes: met again, evicted by others (more keys
    # than the table's slots), non-ASCII, longer than the table takes: the same keys.
    many = {f"key-{i}": i for i in range(2000)} | {"é": 1, "日本": 2, "k" * 48: 3, "l" * 49: 4, "x" * 300: 5}
    for _ in range(3):
        for value in (many, {"key-7": {"key-7": "key-7"}}, plain):
            data = msgpack.packb(value, use_bin_type=True)
            got = decode(data)
            identical(got, msgpack.unpackb(data, raw=False))
            assert all(sys.intern(k) is k for k in got)
    twice = b"\x82\xa1k\x01\xa1k\x02"  # a key twice: the last value, as a dict has it
    assert decode(twice) == msgpack.unpackb(twice) == {"k": 2}


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x91\x01",  # an array
        b"\x01",
        b"\x81\xc4\x01k\x01",  # a bytes key
        b"\x81\xa1k\xd4\x01\x00",  # an extension type (fixext 1)
        b"\x81\xa1k\xd6\xff\x00\x00\x00\x00",  # a timestamp
        b"\x81\xa1k\xc1",  # never used
        b"\x81\xa1k\x01\x00",  # bytes left over
        b"\x81\xa1k\xa2x",  # cut short
        b"\x82\xa1k\x01",  # fewer entries than the map says
        b"\xdf\xff\xff\xff\xff",  # more entries than bytes
        b"\x81\xa1k\xa2\xff\xfe",  # invalid UTF-8
        b"\x81\xa2\xff\xfe\x01",  # an invalid UTF-8 key
        b"\x81\xa1k" + b"\x91" * 80 + b"\x01",  # nested past the checker's depth
    ],
)
def test_the_c_decode_leaves_anything_else_to_msgpack(data: bytes) -> None:
    # None: msgpack then decodes it as it always did (or raises, naming the problem).
    assert decode_map()(data) is None
    with pytest.raises(TypeError):
        decode_map()("text")  # type: ignore[arg-type]


# -- the C packer (ffi/natives.c pack): msgpack's bytes for exact types, None else ------

VECTORS = Path(__file__).resolve().parents[2] / "tests" / "vectors"


def c_pack() -> Callable[[Any], bytes | None]:
    copy_plain()
    fn: Callable[[Any], bytes | None] = sys.modules["_cpex_natives"].pack
    from cpexrt import wire

    assert wire._c_pack is fn  # every pack tries it first once the boundary loaded
    return fn


def msgpack_bytes(value: Any) -> bytes:
    out: bytes = msgpack.Packer(use_bin_type=True).pack(value)
    return out


def test_the_c_packer_gives_msgpacks_bytes_for_every_shared_vector() -> None:
    pack = c_pack()
    packed = 0
    for path in sorted(VECTORS.glob("*.msgpack")):
        value = msgpack.unpackb(path.read_bytes(), strict_map_key=False)
        got = pack(value)
        if got is None:  # a vector the C packer leaves to msgpack (a non-exact type): packed there
            continue
        assert got == msgpack_bytes(value), path.name
        packed += 1
    assert packed > 100


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        1,
        127,
        128,
        255,
        256,
        65535,
        65536,
        2**32 - 1,
        2**32,
        2**63 - 1,
        2**63,
        2**64 - 1,
        -1,
        -32,
        -33,
        -128,
        -129,
        -32768,
        -32769,
        -(2**31),
        -(2**31) - 1,
        -(2**63),
        0.0,
        -1.5,
        1e300,
        float("inf"),
        float("nan"),
        "",
        "a" * 31,
        "a" * 32,
        "a" * 255,
        "a" * 256,
        "é" * 200,
        "a" * 65535,
        "a" * 65536,
        "\U0001f600",
        b"",
        b"x" * 255,
        b"x" * 256,
        b"x" * 65536,
        [],
        list(range(15)),
        list(range(16)),
        list(range(65536)),
        (1, "t"),
        {},
        {str(i): i for i in range(15)},
        {str(i): i for i in range(16)},
        {1: "int key", b"k": [None]},
        {"z": 1, "a": {"n": [1.5, {"d": b"\x00"}]}},
    ],
    ids=repr,
)
def test_the_c_packer_gives_msgpacks_bytes_for_each_form(value: Any) -> None:
    got = c_pack()(value)
    assert got == msgpack_bytes(value)


class Big(int):
    """An int subclass: not an exact type."""


def test_the_c_packer_leaves_what_is_not_of_its_exact_types_to_msgpack() -> None:
    # None (not taken) for a subclass, an int past 64 bits, a str not UTF-8 encodable,
    # another type or too deep a nesting; wire.pack then packs it as msgpack does or
    # says why it cannot, as before.
    from cpexrt import wire
    from cpexrt.errors import SerializeError

    pack = c_pack()
    nested: list[Any] = []
    for _ in range(300):
        nested = [nested]
    for value in (Text("s"), Big(1), Mapping(a=1), [Text("s")], {"k": Big(2)}, nested, bytearray(b"x"), {"k": 1.5j}):
        assert pack(value) is None, repr(value)[:40]
    assert wire.pack(Text("s"), "x") == msgpack_bytes("s") and wire.pack(nested, "x") == msgpack_bytes(nested)
    for refused in (2**64, -(2**63) - 1, "\ud800", {"k": object()}, {"k": [1, 2**70]}):
        assert pack(refused) is None
        with pytest.raises(SerializeError, match="cannot encode as MessagePack"):
            wire.pack(refused, "x")
    with pytest.raises(TypeError):
        pack()  # type: ignore[call-arg]
