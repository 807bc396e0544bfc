"""Per-request context tables: each plugin's local state, threaded from one hook of a
request to the next by the host."""

from __future__ import annotations

import threading
from typing import Any

from cpex.errors import InvalidInputError


class ContextTable:
    """Local state of each plugin for one request. Consumed by the invoke it is passed
    to; the invoke returns a fresh table."""

    def __init__(self, owner: object, states: dict[str, dict[str, Any]]) -> None:
        self.owner = owner
        self._states = states
        self._consumed = False
        self._lock = threading.Lock()

    def consume(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            if self._consumed:
                raise InvalidInputError("context: this context table was already consumed by an earlier invoke")
            self._consumed = True
            return self._states

    @property
    def consumed(self) -> bool:
        return self._consumed
