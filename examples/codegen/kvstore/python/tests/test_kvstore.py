"""libkv from a Python host, through its generated bindings (kvstore._generated)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kvstore._generated import calls
from kvstore._generated.errors import (
    ERROR_CLASSES,
    InternalError,
    InvalidHandleError,
    InvalidInputError,
    KeyNotFoundError,
    KvError,
    Status,
)
from kvstore._generated.library import Library, load_library
from kvstore._generated.records import KvBlob, KvStats, KvValue
from kvstore._generated.wire import pack, unpack

LIBRARY = Path(__file__).resolve().parents[5] / "build" / "examples" / "kvstore" / "libkv.so.1"


@pytest.fixture(scope="module")
def lib() -> Library:
    return load_library(LIBRARY)


def test_put_get_count(lib: Library) -> None:
    store = calls.store_new(lib)
    calls.put(lib, store, b"a", b"1")
    calls.put(lib, store, b"b", b"")
    calls.put(lib, store, b"a", b"2")
    assert calls.get(lib, store, b"a") == b"2"
    assert calls.get(lib, store, b"b") == b""
    assert calls.count(lib, store) == 2
    calls.store_free(lib, store)


def test_failures_carry_class_and_message(lib: Library) -> None:
    store = calls.store_new(lib)
    with pytest.raises(KeyNotFoundError, match=r"^kv_get: key 'missing'$"):
        calls.get(lib, store, b"missing")
    with pytest.raises(InvalidInputError, match="kv_put: key: must not be empty"):
        calls.put(lib, store, b"", b"x")
    with pytest.raises(InvalidInputError, match="kv_put: key: not valid UTF-8"):
        calls.put(lib, store, b"\xff", b"x")
    with pytest.raises(InvalidHandleError, match="kv_count: store handle is NULL"):
        calls.count(lib, lib.ffi.NULL)
    calls.store_free(lib, store)
    with pytest.raises(InvalidHandleError, match="was freed or consumed"):
        calls.store_free(lib, store)
    with pytest.raises(InvalidHandleError, match="is not a kv handle"):
        calls.count(lib, lib.ffi.cast("kv_store *", 0x1234))


def test_stats_is_a_record(lib: Library) -> None:
    store = calls.store_new(lib)
    empty = KvStats.unpack(calls.stats(lib, store))
    assert empty == KvStats(count=0, keys=[], sizes={}, total_bytes=0)
    assert empty.first_value is None and empty.model_extra == {}
    calls.put(lib, store, b"b", b"\x00\xff")
    calls.put(lib, store, b"a", b"xyz")
    data = calls.stats(lib, store)
    stats = KvStats.unpack(data)
    assert stats == KvStats(
        count=2, keys=["a", "b"], sizes={"a": 3, "b": 2}, total_bytes=5, first_value=b"xyz", largest=KvValue.new_text("xyz")
    )
    # Bytes stay bytes and ints stay ints, on the wire and in the model.
    assert type(stats.first_value) is bytes and type(stats.count) is int
    assert unpack(data, "stats") == {
        "count": 2,
        "keys": ["a", "b"],
        "sizes": {"a": 3, "b": 2},
        "total_bytes": 5,
        "first_value": b"xyz",
        "largest": {"kind": "text", "text": "xyz"},
    }
    assert stats.pack() == data  # schema order, the same encodings
    calls.store_free(lib, store)


def test_a_record_keeps_unknown_fields() -> None:
    newer = {"count": 1, "keys": ["k"], "sizes": {"k": 1}, "total_bytes": 1, "added_later": [1, b"\x02"]}
    data = pack(newer, "newer")
    stats = KvStats.unpack(data)
    assert stats.model_extra == {"added_later": [1, b"\x02"]}
    assert stats.pack() == data  # re-emitted unchanged, after the known fields


def test_a_union_gives_the_variant_its_tag_names(lib: Library) -> None:
    store = calls.store_new(lib)
    assert KvStats.unpack(calls.stats(lib, store)).largest is None
    calls.put(lib, store, b"a", "héllo".encode())
    largest = KvStats.unpack(calls.stats(lib, store)).largest
    assert largest == KvValue.new_text("héllo") and largest.known and largest.value == "héllo"
    calls.put(lib, store, b"b", b"\xff\xfe\x00\x01\x02\x03\x04")
    largest = KvStats.unpack(calls.stats(lib, store)).largest
    assert largest is not None and largest.kind == "blob"
    assert isinstance(largest.value, KvBlob) and largest.value.data == b"\xff\xfe\x00\x01\x02\x03\x04"
    calls.store_free(lib, store)


def test_a_union_keeps_an_unknown_variant() -> None:
    newer = pack({"kind": "number", "number": 7}, "newer")
    value = KvValue.unpack(newer)
    assert not value.known and value.value is None
    assert value.pack() == newer
    assert KvValue.new_text("hi").pack() == b"\x82\xa4kind\xa4text\xa4text\xa2hi"  # as the Go binding encodes it
    with pytest.raises(InvalidInputError, match=r"KvValue\.blob\.data: expected bytes, got 5"):
        KvValue.unpack(pack({"kind": "blob", "blob": {"data": 5}}, "bad"))


def test_record_decode_failures_name_the_field() -> None:
    with pytest.raises(InvalidInputError, match=r"KvStats\.count: expected an integer \(int64\), got 'three'"):
        KvStats.unpack(pack({"count": "three", "keys": [], "sizes": {}, "total_bytes": 0}, "bad"))
    with pytest.raises(InvalidInputError, match=r"KvStats\.keys: required, missing \(expected a list\)"):
        KvStats.unpack(pack({"count": 1, "sizes": {}, "total_bytes": 0}, "bad"))
    with pytest.raises(InvalidInputError, match="KvStats: trailing bytes after the MessagePack value"):
        KvStats.unpack(KvStats(count=0, keys=[], sizes={}, total_bytes=0).pack() + b"\xc0")
    with pytest.raises(InvalidInputError, match="KvStats: invalid MessagePack"):
        KvStats.unpack(b"\xc1")
    with pytest.raises(InternalError, match="KvStats: cannot encode as MessagePack"):
        KvStats(count=0, keys=[], sizes={}, total_bytes=0, added_later={1, 2}).pack()  # type: ignore[call-arg]  # an unknown field


def test_every_error_status_has_its_class() -> None:
    assert {cls.status for cls in ERROR_CLASSES.values()} == {s for s in Status if s != Status.OK}
    assert all(issubclass(cls, KvError) for cls in ERROR_CLASSES.values())


def test_concurrent_use(lib: Library) -> None:
    store = calls.store_new(lib)

    def writer(i: int) -> None:
        for j in range(20):
            calls.put(lib, store, f"{i}/{j}".encode(), b"x")

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls.count(lib, store) == 160
    calls.store_free(lib, store)


def _exported(path: Path) -> set[str]:
    out = subprocess.run(["nm", "-D", "--defined-only", str(path)], capture_output=True, text=True, check=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


def test_libkv_and_libcpex_export_disjoint_prefixed_symbols() -> None:
    """What lets both load into one process: each exports its own prefix and nothing
    else (no cffi module init, no glue helper)."""
    kv = _exported(LIBRARY)
    cpex = _exported(LIBRARY.parents[2] / "lib" / "libcpex.so.1")
    assert kv and all(s.startswith("kv_") for s in kv), sorted(kv)
    assert cpex and all(s.startswith("cpex_") for s in cpex), sorted(cpex)
    assert not kv & cpex
    header = (Path(__file__).resolve().parents[2] / "include" / "kv.h").read_text()
    assert {s for s in kv if f" {s}(" in header or f"*{s}(" in header} == kv
