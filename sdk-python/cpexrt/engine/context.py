"""Per-request context tables: each plugin's local state, threaded from one hook of a
request to the next by the host."""

from __future__ import annotations

import threading
from typing import Any

from cpexrt.errors import InvalidInputError

_LOCK = threading.Lock()


class RequestState:
    """Local state of each plugin for one request. An invoke it is passed to holds it
    while it runs (a second invoke with the same table is refused meanwhile); the
    invoke consumes it when it succeeds and returns a fresh table, and leaves it valid
    and unchanged when it fails: plugins work on copies of their state.

    issuer: the identities (plugin name -> kind and config) of the plugin set that
    issued the table; an invoke served by another set (after a reload) carries the
    states over only to plugins whose identity did not change (PluginSet.adopt)."""

    __slots__ = ("owner", "issuer", "_states", "_consumed", "_held", "_lock", "__weakref__")

    def __init__(self, owner: object, states: dict[str, dict[str, Any]], issuer: Any = None) -> None:
        self.owner = owner
        self.issuer = issuer
        self._states = states
        self._consumed = False
        self._held = False
        # One lock for every table: its sections are a few assignments, and a table is
        # made per request (a lock of its own each would cost more than it saves).
        self._lock = _LOCK

    def hold(self) -> dict[str, dict[str, Any]]:
        """Reserves the table for one invoke; its states, which the invoke only reads."""
        with self._lock:
            if self._consumed:
                raise InvalidInputError("context: this context table was already consumed by an earlier invoke")
            if self._held:
                raise InvalidInputError("context: this context table is in use by another invoke of the same request")
            self._held = True
            return self._states

    def release(self) -> None:
        """The invoke failed: the table is usable again, as it was."""
        with self._lock:
            self._held = False

    def consume(self) -> None:
        """The invoke succeeded: the table is spent."""
        with self._lock:
            self._held = False
            self._consumed = True

    def revive(self) -> None:
        """Undoes consume() when the invoke failed after all (its result could not be
        delivered): the states were never changed."""
        with self._lock:
            self._consumed = False

    @property
    def consumed(self) -> bool:
        return self._consumed
