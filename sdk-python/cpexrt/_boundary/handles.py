"""Handles are checked tokens, never addresses: a value the C side can hold as an
opaque pointer, looked up here on every call.

A token is TAG << 48 | kind << 40 | serial. TAG puts it outside any canonical x86-64 /
arm64 user address, so a Go GC or checkptr never mistakes it for memory; the kind makes
a context passed as a manager fail; the serial is never reused, so a freed token stays
invalid forever and can be told apart from garbage in the error message.

The table takes no lock: issue, take and discard are on every invoke's path, and each
is a few operations the GIL makes atomic (next() of an itertools.count, one dict store,
one dict pop), so two threads can never both take one token, and a token is issued once.

Context and background handles are also tracked in C (ffi/handles.c): the generated
shims check every such handle against their own set before Python is entered (a dead
one is refused there with _why's message), and free one without entering Python: the
handle leaves the C set at once and its token is queued; Exports.drain_freed drops the
queued tokens from this table when the queue is full, in cpex_live_handles, and at a
manager's shutdown (which also takes the manager's handles out of the C set).
"""

from __future__ import annotations

import itertools
from enum import IntEnum
from typing import Any, Generic, TypeVar

from cpexrt.errors import InvalidHandleError

T = TypeVar("T")

TAG = 0x4350  # "CP"
_SERIAL_BITS = 40


class Kind(IntEnum):
    MANAGER = 1
    CONTEXT = 2
    BACKGROUND = 3


class HandleTable(Generic[T]):
    def __init__(self) -> None:
        self._entries: dict[int, tuple[Kind, Any, Any]] = {}
        self._serials = itertools.count(1)
        self._prefix = {kind: TAG << 48 | int(kind) << _SERIAL_BITS for kind in Kind}
        self._context_prefix = self._prefix[Kind.CONTEXT]
        self._background_prefix = self._prefix[Kind.BACKGROUND]

    def issue(self, kind: Kind, obj: Any, owner: Any = None) -> int:
        # next() of a count is atomic under the GIL: a serial is never issued twice.
        token = self._prefix[kind] | next(self._serials)
        self._entries[token] = (kind, obj, owner)
        return token

    def get(self, kind: Kind, token: int, what: str) -> Any:
        entry = self._entries.get(token)
        if entry is None or entry[0] is not kind:
            raise InvalidHandleError(self._why(kind, token, what))
        return entry[1]

    def take(self, kind: Kind, token: int, what: str) -> Any:
        """Removes and returns the object: the token is dead from now on."""
        entries = self._entries
        entry = entries.get(token)
        # The pop is the one atomic step that takes it: of two threads taking the same
        # token, one gets the entry, the other None (the handle was freed meanwhile).
        if entry is None or entry[0] is not kind or entries.pop(token, None) is None:
            raise InvalidHandleError(self._why(kind, token, what))
        return entry[1]

    def replace(self, kind: Kind, token: int, obj: Any) -> None:
        """Puts obj behind a live token (its owner too): a manager whose engine moved
        into engine workers (cpexrt._boundary.remote)."""
        entry = self._entries.get(token)
        if entry is None or entry[0] is not kind:
            raise InvalidHandleError(self._why(kind, token, "replace"))
        self._entries[token] = (kind, obj, obj)

    def discard(self, kind: Kind, token: int) -> None:
        """Removes the handle if it is still there (it may have been freed meanwhile)."""
        entry = self._entries.get(token)
        if entry is not None and entry[0] is kind:
            self._entries.pop(token, None)

    def drop(self, token: int) -> None:
        """Removes the handle if it is still there, whatever its kind (a handle the C
        shims freed: ffi/handles.c)."""
        self._entries.pop(token, None)

    def drop_all(self, tokens: tuple[int, ...]) -> None:
        """drop() of each token (the handles the C shims freed since the last drain)."""
        pop = self._entries.pop
        for token in tokens:
            pop(token, None)

    def issue_outputs(self, context: Any, background: Any, owner: Any) -> tuple[int, int]:
        """The tokens of an invoke's context table and background tasks (0 for None),
        issued as issue() does."""
        entries, serials = self._entries, self._serials
        ctx = bg = 0
        if context is not None:
            ctx = self._context_prefix | next(serials)
            entries[ctx] = (Kind.CONTEXT, context, owner)
        if background is not None:
            bg = self._background_prefix | next(serials)
            entries[bg] = (Kind.BACKGROUND, background, owner)
        return ctx, bg

    def release_owned_by(self, owner: Any) -> list[int]:
        """Removes every handle issued on behalf of owner (a manager being shut down);
        returns the tokens removed."""
        # dict.copy() is one atomic step under the GIL (iterating the live table could
        # race an issue on another thread).
        dead = [t for t, (_, _, o) in self._entries.copy().items() if o is owner]
        released = []
        for t in dead:
            if self._entries.pop(t, None) is not None:
                released.append(t)
        return released

    def __len__(self) -> int:
        return len(self._entries)

    def counts(self) -> dict[Kind, int]:
        kinds = [kind for kind, _, _ in self._entries.copy().values()]
        return {k: kinds.count(k) for k in Kind}

    def _why(self, kind: Kind, token: int, what: str) -> str:
        name = kind.name.lower()
        if token == 0:
            return f"{what}: the {name} handle is NULL"
        if token >> 48 != TAG:
            return f"{what}: {token:#x} is not a cpex handle"
        actual = (token >> _SERIAL_BITS) & 0xFF
        if actual != kind:
            label = Kind(actual).name.lower() if actual in Kind._value2member_map_ else f"kind {actual}"
            return f"{what}: expected a {name} handle, got a {label} handle"
        return f"{what}: the {name} handle {token:#x} was freed, consumed or shut down"


HANDLES: HandleTable[Any] = HandleTable()
