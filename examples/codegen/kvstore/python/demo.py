"""Uses libkv, a key-value store written in Python, from a Python host through the
bindings cpex_codegen generated (kvstore._generated). Build the library first:
`make example-codegen`. Run from the repository root:

    .venv/bin/python examples/codegen/kvstore/python/demo.py
"""

from __future__ import annotations

from pathlib import Path

from kvstore._generated import calls
from kvstore._generated.errors import InvalidHandleError, InvalidInputError, KeyNotFoundError
from kvstore._generated.library import load_library
from kvstore._generated.records import KvStats

LIBRARY = Path(__file__).resolve().parents[4] / "build" / "examples" / "kvstore" / "libkv.so.1"


def main() -> None:
    lib = load_library(LIBRARY)
    store = calls.store_new(lib)
    calls.put(lib, store, b"greeting", b"hello from Python")
    print("get greeting:", calls.get(lib, store, b"greeting").decode())
    print("count:", calls.count(lib, store))
    # A record: kv_stats returns a KvStats as MessagePack; unpack makes it the model.
    stats = KvStats.unpack(calls.stats(lib, store))
    print("stats:", stats.count, stats.keys, stats.sizes, stats.total_bytes, stats.first_value)
    try:
        calls.get(lib, store, b"missing")
    except KeyNotFoundError as exc:
        print("get missing:", type(exc).__name__, exc.message)
    try:
        calls.put(lib, store, b"", b"x")
    except InvalidInputError as exc:
        print("put empty key:", type(exc).__name__, exc.message)
    calls.store_free(lib, store)
    try:
        calls.put(lib, store, b"greeting", b"")
    except InvalidHandleError:
        print("put after free: InvalidHandleError")


if __name__ == "__main__":
    main()
