"""Event loops of the runtime.

- The runtime loop: one daemon thread, started on first use, where fire-and-forget
  tasks run after the pipeline, outside the caller's latency.
- Caller loops: one per OS thread that calls the engine, never running between calls.
  An async handler is first driven inline (DESIGN.md: a coroutine that does not
  suspend costs ~0.3 µs, a thread hop ~70-100 µs); only when it really suspends does
  its thread's loop run it to the end, still on the caller's thread.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Coroutine


class RuntimeLoop:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="cpex-runtime-loop", daemon=True)
                thread.start()
                self._loop = loop
            return self._loop

    def submit(self, coro: Coroutine[Any, Any, Any]) -> "asyncio.Future[Any]":
        """Schedules coro on the runtime loop; returns a concurrent future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[return-value]


class _CallerLoops(threading.local):
    loop: asyncio.AbstractEventLoop | None = None


_caller = _CallerLoops()


def caller_loop() -> asyncio.AbstractEventLoop:
    """This thread's loop for async handlers that suspend."""
    loop = _caller.loop
    if loop is None:
        loop = _caller.loop = asyncio.new_event_loop()
    return loop


RUNTIME_LOOP = RuntimeLoop()
