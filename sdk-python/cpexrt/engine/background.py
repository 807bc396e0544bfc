"""Fire-and-forget tasks: run after the pipeline on the runtime loop's thread, outside
the caller's latency, with as little per-invoke overhead as possible.

An invoke hands its batch to the loop in one call_soon_threadsafe only when the loop
is not already draining (so a busy loop is not woken per invoke); each task is driven
inline (sync handlers under the watchdog, coroutines until they suspend) and only a
coroutine that really suspends becomes an asyncio task, bounded by its timeout.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from cpexrt._generated.records import PluginError
from cpexrt.engine import driver
from cpexrt.engine.runtime_loop import RUNTIME_LOOP, bounded

# A task: () -> the PluginError it produced, or None; may instead return a coroutine
# that finishes the work (when a handler suspended).
Task = Callable[[], Any]


class BackgroundBatch:
    """The fire-and-forget plugins started by one invoke. wait() returns the errors of
    those that failed; dropping the object does not stop them."""

    def __init__(self, names: list[str], count: int) -> None:
        self.plugin_names = names
        self._pending = count
        self._errors: list[PluginError] = []
        self._lock = threading.Lock()
        self._event: threading.Event | None = None
        self._callbacks: list[Callable[[BackgroundBatch], None]] = []

    def wait(self, timeout: float | None = None) -> list[PluginError]:
        """Blocks until every task finished; TimeoutError after timeout seconds."""
        with self._lock:
            if self._pending == 0:
                return list(self._errors)
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        if not event.wait(timeout):
            raise TimeoutError(f"fire-and-forget tasks of {', '.join(self.plugin_names)} still running")
        return list(self._errors)

    @property
    def done(self) -> bool:
        return self._pending == 0

    def on_done(self, callback: Callable[[BackgroundBatch], None]) -> None:
        """Calls callback(self) once the tasks finished (at once if they have)."""
        with self._lock:
            if self._pending:
                self._callbacks.append(callback)
                return
        callback(self)

    def _finish_one(self, error: PluginError | None) -> None:
        with self._lock:
            if error is not None:
                self._errors.append(error)
            self._pending -= 1
            if self._pending:
                return
            event, callbacks, self._callbacks = self._event, self._callbacks, []
        if event is not None:
            event.set()
        for cb in callbacks:
            cb(self)


class _Runner:
    """The queue of fire-and-forget tasks, drained on the runtime loop in batches.

    Every wake-up of the loop thread takes the GIL from the host threads between their
    calls, so tasks are collected for BATCH_SECONDS and run in slices of SLICE tasks,
    the loop going through its selector (releasing the GIL) between slices."""

    BATCH_SECONDS = 0.005
    SLICE = 64

    def __init__(self) -> None:
        self._queue: deque[tuple[BackgroundBatch, Task]] = deque()
        self._scheduled = False
        self._lock = threading.Lock()

    def submit(self, tasks: BackgroundBatch, work: list[Task]) -> None:
        with self._lock:
            self._queue.extend((tasks, w) for w in work)
            if self._scheduled:
                return
            self._scheduled = True
        loop = RUNTIME_LOOP.loop
        loop.call_soon_threadsafe(loop.call_later, self.BATCH_SECONDS, self._drain)

    def _drain(self) -> None:
        for _ in range(self.SLICE):
            with self._lock:
                if not self._queue:
                    self._scheduled = False
                    return
                tasks, work = self._queue.popleft()
            try:
                outcome = work()
            except BaseException as exc:  # noqa: BLE001 - a task never breaks the loop
                outcome = PluginError(plugin_name="<engine>", message=f"fire-and-forget task failed: {exc!r}")
            if asyncio.iscoroutine(outcome):
                RUNTIME_LOOP.loop.create_task(self._finish(tasks, outcome))
            else:
                tasks._finish_one(outcome)
        RUNTIME_LOOP.loop.call_soon(self._drain)

    @staticmethod
    async def _finish(tasks: BackgroundBatch, rest: Any) -> None:
        tasks._finish_one(await rest)


RUNNER = _Runner()


def start_inline(fn: Callable[..., Any], args: tuple[Any, ...], timeout: float) -> tuple[bool, Any]:
    """On the runtime loop's thread (its loop running): fn(*args) under the watchdog, a
    coroutine driven until it suspends. (True, result) when finished, else (False, an
    awaitable of the rest, bounded by timeout)."""
    deadline = time.monotonic() + timeout
    result = driver.guarded(fn, args, deadline)
    if not asyncio.iscoroutine(result):
        return True, result
    try:
        yielded = driver.guarded(result.send, (None,), deadline)
    except StopIteration as stop:
        return True, stop.value
    except BaseException:
        result.close()
        raise
    return False, bounded(driver.resume(result, yielded), deadline)
