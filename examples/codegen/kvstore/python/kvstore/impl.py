"""The implementation of libkv: one function per Python-backed function of
schema/kv.yaml, with the same name and parameters (the out-parameters are the return
value). It runs inside libkv.so; the generated boundary (_generated/exports.py) calls
it from any host thread, so the store guards its dict with a lock.

Raise a KvError subclass (_generated/errors.py) to fail with its status; any other
exception fails with KV_ERR_INTERNAL. The message always reaches the caller. A record
output (stats) is returned as its MessagePack bytes: record.pack()."""

from __future__ import annotations

import threading

from kvstore._generated.errors import InvalidInputError, KeyNotFoundError
from kvstore._generated.records import KvBlob, KvStats, KvValue


class Store:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: dict[str, bytes] = {}


def store_new() -> Store:
    return Store()


def store_free(store: Store) -> None:
    with store.lock:
        store.items.clear()


def put(store: Store, key: str, value: bytes) -> None:
    if not key:
        raise InvalidInputError("key: must not be empty")
    with store.lock:
        store.items[key] = value


def get(store: Store, key: str) -> bytes:
    with store.lock:
        value = store.items.get(key)
    if value is None:
        raise KeyNotFoundError(f"key {key!r}")
    return value


def count(store: Store) -> int:
    with store.lock:
        return len(store.items)


def stats(store: Store) -> bytes:
    with store.lock:
        items = sorted(store.items.items())
    record = KvStats(
        count=len(items),
        keys=[k for k, _ in items],
        sizes={k: len(v) for k, v in items},
        total_bytes=sum(len(v) for _, v in items),
        first_value=items[0][1] if items else None,
        largest=_value(max((v for _, v in items), key=len)) if items else None,
    )
    return record.pack()


def _value(data: bytes) -> KvValue:
    try:
        return KvValue.new_text(data.decode("utf-8"))
    except UnicodeDecodeError:
        return KvValue.new_blob(KvBlob(data=data))
