"""`isolation: thread`: an in-process plugin whose handlers run on helper threads, so
the caller is released at the deadline even when the handler is blocked in C
(time.sleep, a socket read, any call that releases the GIL).

At the deadline the call is abandoned: the caller gets its timeout, the helper
thread keeps running the handler until it returns (a thread cannot be killed), its
late result is discarded, and it counts as stuck in the plugin's stats until then.
A plugin may have at most `workers` calls running (stuck ones included); a call
beyond that waits for a thread until its deadline.

What in-process isolation cannot do (use isolation: process for these):
- stop a handler stuck in C code that holds the GIL (a regex in catastrophic
  backtracking, a C extension's busy loop): the caller needs the GIL to return;
- reclaim a stuck thread, or the memory and locks it holds;
- survive a plugin that exits the process, segfaults, or exhausts memory.
A handler spinning in Python is still stopped by the watchdog on its helper thread.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

from cpexrt.engine import driver

# After the deadline, how long the caller waits for the helper's own timeout (its
# watchdog stops a handler spinning in Python) before it abandons the call.
GRACE = 0.005


class _Call:
    __slots__ = ("fn", "args", "deadline", "done", "ok", "value", "abandoned", "notify")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], deadline: float) -> None:
        self.fn, self.args, self.deadline = fn, args, deadline
        self.done = threading.Event()
        self.ok = False
        self.value: Any = None
        self.abandoned = False
        self.notify: Callable[[], None] | None = None


class ThreadedHandler(driver.Remote):
    """One hook of a thread-isolated plugin."""

    __slots__ = ("pool", "fn")

    def __init__(self, pool: ThreadPool, fn: Callable[..., Any]) -> None:
        self.pool, self.fn = pool, fn

    def call(self, args: tuple[Any, ...], deadline: float) -> Any:
        call = self.pool.submit(self.fn, args, deadline)
        if not call.done.wait(max(deadline + GRACE - time.monotonic(), 0.0)):
            if self.pool.abandon(call):
                raise driver.HandlerTimeout
        return _outcome(call)

    def start(self, args: tuple[Any, ...], deadline: float) -> Coroutine[Any, Any, Any]:
        return self._run(args, deadline)

    async def _run(self, args: tuple[Any, ...], deadline: float) -> Any:
        loop = asyncio.get_running_loop()
        ready = loop.create_future()

        def wake() -> None:
            loop.call_soon_threadsafe(driver.wake, ready)

        call = self.pool.submit(self.fn, args, deadline, wake)
        try:
            await ready
        except BaseException:
            self.pool.abandon(call)
            raise
        return _outcome(call)


def _outcome(call: _Call) -> Any:
    if call.ok:
        return call.value
    raise call.value


class ThreadPool:
    """The helper threads of one plugin."""

    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.size = size
        self._lock = threading.Condition()
        self._queue: list[_Call] = []
        self._threads = 0
        self._idle = 0
        self._running = 0
        self.stuck = 0
        self.calls = 0
        self.abandoned = 0

    def submit(self, fn: Callable[..., Any], args: tuple[Any, ...], deadline: float, notify: Any = None) -> _Call:
        call = _Call(fn, args, deadline)
        call.notify = notify
        with self._lock:
            self.calls += 1
            self._queue.append(call)
            if self._idle:
                self._lock.notify()
            elif self._threads < self.size:
                self._threads += 1
                threading.Thread(target=self._serve, name=f"cpex-plugin-{self.name}", daemon=True).start()
        return call

    def abandon(self, call: _Call) -> bool:
        """Gives up on call; False when it finished meanwhile (take its outcome)."""
        with self._lock:
            if call.done.is_set():
                return False
            call.abandoned = True
            self.abandoned += 1
            if call in self._queue:  # never started: no thread was free in time
                self._queue.remove(call)
            else:
                self.stuck += 1
            return True

    def _serve(self) -> None:
        while True:
            with self._lock:
                while not self._queue:
                    self._idle += 1
                    self._lock.wait()
                    self._idle -= 1
                call = self._queue.pop(0)
                self._running += 1
            try:
                call.value = driver.call(call.fn, call.args, call.deadline)
                call.ok = True
            except BaseException as exc:  # noqa: BLE001 - the caller's to report
                call.value = exc
            with self._lock:
                self._running -= 1
                if call.abandoned:
                    self.stuck -= 1
                    call.value = None  # the late result is discarded
                call.done.set()
            if call.notify is not None and not call.abandoned:
                call.notify()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "workers": self.size,
                "alive": self._threads,
                "busy": self._running,
                "calls": self.calls,
                "timeouts": self.abandoned,
                "stuck": self.stuck,
            }


class ThreadedPlugin:
    """Wraps a LoadedPlugin's handlers (called once at load)."""

    @staticmethod
    def wrap(handlers: dict[str, Callable[..., Any]], name: str, size: int) -> tuple[dict[str, Any], ThreadPool]:
        pool = ThreadPool(name, size)
        return {hook: ThreadedHandler(pool, fn) for hook, fn in handlers.items()}, pool
