"""The runtime's event loop, on its own daemon thread, started on first use. Async
handlers run there for now (the inline driving of DESIGN.md comes with the full
executor)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any, Awaitable


class RuntimeLoop:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="cpex-runtime-loop", daemon=True)
                thread.start()
                self._loop = loop
            return self._loop

    def run(self, awaitable: Awaitable[Any], timeout: float) -> Any:
        """Runs awaitable on the loop; TimeoutError after timeout seconds (it is cancelled)."""

        async def wrap() -> Any:
            return await awaitable

        future = asyncio.run_coroutine_threadsafe(wrap(), self._ensure())
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError from None


RUNTIME_LOOP = RuntimeLoop()
