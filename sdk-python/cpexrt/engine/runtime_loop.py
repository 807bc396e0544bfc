"""Event loops of the runtime.

- The runtime loop: one daemon thread, started on first use, where fire-and-forget
  tasks run after the pipeline, outside the caller's latency.
- Caller loops: one per OS thread that calls the engine, never running between calls.
  An async handler is first driven inline (docs/architecture.md, "Threads": a coroutine
  that does not suspend costs ~0.3 µs, a thread hop tens of µs); only when it really
  suspends does its thread's loop run it to the end, still on the caller's thread.

Every loop cpex creates (new_loop) is quiet about what cpex gave up on: a handler
cancelled at its deadline may leave tasks of its own behind, answer the cancellation
with another exception, or keep running. Such a task is abandoned (abandon, bounded):
its late exception is collected when it ends, and what asyncio would report about
tasks nobody awaits any more ("Task exception was never retrieved", "Task was
destroyed but it is pending!") is dropped, counted in DROPPED, and logged at debug
on the 'cpexrt.engine' logger. Any other loop error is logged there at error level,
never printed by asyncio's default handler.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from cpexrt._lazy import LazyModule
from cpexrt.engine.watchdog import PluginDeadline

if TYPE_CHECKING:
    import asyncio
else:
    asyncio = LazyModule("asyncio", globals())  # imported when the first loop is made

log = logging.getLogger("cpexrt.engine")


class DroppedErrors:
    """What the loops' exception handler and abandoned tasks dropped: how many, and
    the last one (for tests and diagnostics)."""

    def __init__(self) -> None:
        self.count = 0
        self.last = ""
        # Reentrant: a garbage collection inside record() may report another task.
        self._lock = threading.RLock()

    def record(self, what: str, exc: BaseException | None) -> None:
        detail = what if exc is None else f"{what}: {type(exc).__name__}: {exc}"
        with self._lock:
            self.count += 1
            self.last = detail
        log.debug("dropped, from a task cpex abandoned: %s", detail)


DROPPED = DroppedErrors()

# asyncio's reports about tasks and futures nobody awaits any more: on a cpex loop,
# only tasks of handlers cpex stopped waiting for (or of their own children).
_ABANDONED_SUFFIXES = ("exception was never retrieved", "was destroyed but it is pending!")


def _exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    message = str(context.get("message") or "unhandled exception in an event loop")
    exc = context.get("exception")
    abandoned = ("future" in context or "task" in context) and message.endswith(_ABANDONED_SUFFIXES)
    if abandoned or isinstance(exc, PluginDeadline):
        # A PluginDeadline here is the watchdog's shot that landed in loop machinery
        # rather than in the handler it was meant for: expected, like the rest.
        DROPPED.record(message, exc if isinstance(exc, BaseException) else None)
        return
    where = "the runtime loop" if loop is RUNTIME_LOOP.current else "a caller loop"
    details = "".join(f", {key}={value!r}" for key, value in context.items() if key not in ("message", "exception"))
    log.error("unexpected error in %s: %s%s", where, message, details, exc_info=exc if isinstance(exc, BaseException) else None)


def new_loop() -> asyncio.AbstractEventLoop:
    """A new event loop with cpex's exception handler."""
    loop = asyncio.new_event_loop()
    loop.set_exception_handler(_exception_handler)
    return loop


def _collect(task: asyncio.Future[Any]) -> None:
    """Done callback of an abandoned task: takes its late exception, so asyncio does
    not report it, and counts it."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        DROPPED.record("late exception of a handler stopped at its deadline", exc)


def abandon(task: asyncio.Future[Any]) -> None:
    """Stops waiting for task: cancels it and collects whatever it ends with."""
    if task.done():
        _collect(task)
        return
    task.cancel()
    task.add_done_callback(_collect)


async def bounded(awaitable: Any, deadline: float) -> Any:
    """awaitable's result, or asyncio.TimeoutError at deadline (a time.monotonic()
    value). Unlike asyncio.wait_for, which waits for the cancelled work to end (for a
    handler that ignores cancellation: unbounded), the work is cancelled, given one
    pass of the loop to take the cancellation, then abandoned: what it raises
    afterwards is collected and dropped, never reported as the handler's outcome."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(awaitable, loop=loop)
    waiter = loop.create_future()

    def wake(_: Any = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    timer = loop.call_later(max(deadline - time.monotonic(), 0.0), wake)
    task.add_done_callback(wake)
    finished = False
    try:
        try:
            await waiter
        finally:
            timer.cancel()
            task.remove_done_callback(wake)
        finished = task.done()
        if not finished:
            task.cancel()
            await asyncio.sleep(0)  # a well-behaved handler ends here, cleaning up
    except asyncio.CancelledError:
        # This wait itself was cancelled (a deny ended the phase): stop the work too,
        # with the same one pass for a well-behaved handler to clean up.
        task.cancel()
        try:
            await asyncio.sleep(0)
        finally:
            abandon(task)
        raise
    except BaseException:
        abandon(task)
        raise
    if finished:
        return task.result()
    abandon(task)
    raise TimeoutError


def run_until_complete(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any]) -> Any:
    """loop.run_until_complete(coro); when the run is interrupted (the watchdog's
    PluginDeadline landing in the loop's own code), the unfinished task is abandoned
    rather than left to fail unobserved the next time the loop runs."""
    task = loop.create_task(coro)
    try:
        return loop.run_until_complete(task)
    except BaseException:
        # An interruption may land before asyncio removed its stop-the-loop callback
        # from the task: left there, it would stop a later run of this loop.
        _stop_callback = getattr(asyncio.base_events, "_run_until_complete_cb", None)
        if _stop_callback is not None:
            task.remove_done_callback(_stop_callback)
        if not task.done():
            abandon(task)
        raise


class RuntimeLoop:
    """The runtime loop, made and run on its own thread when first needed. A caller
    that only hands it work (schedule) does not wait for it to be made: the first
    fire-and-forget plugin of a process costs its invoke no asyncio import (about
    25 ms of CPU, docs/architecture.md, Start-up); the work runs once the loop is up.
    A caller that needs the loop object (loop, submit) waits until it is made."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._made: threading.Event | None = None  # set when the thread made the loop, or failed to
        self._failed: BaseException | None = None
        # Scheduled before the loop was made: (delay, callback, failed).
        self._early: list[tuple[float, Callable[[], Any], Callable[[BaseException], Any]]] = []

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None:
            self._start().wait()
            loop = self._loop
            if loop is None:
                raise RuntimeError(f"the runtime loop could not be started: {self._failed!r}")
        return loop

    @property
    def failure(self) -> BaseException | None:
        """Why the runtime loop could not be made, if it could not."""
        return self._failed

    @property
    def current(self) -> asyncio.AbstractEventLoop | None:
        """The runtime loop if it was made, without starting it."""
        return self._loop

    def submit(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Future[Any]:
        """Schedules coro on the runtime loop; returns a concurrent future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[return-value]

    def schedule(self, delay: float, callback: Callable[[], Any], failed: Callable[[BaseException], Any]) -> None:
        """Runs callback() on the runtime loop's thread after delay seconds (from any
        thread); when the loop is not made yet, from when it is, without waiting. If the
        loop cannot be made, failed(the error) runs instead (on the thread that tried),
        so the work is answered, not dropped; once that is known, schedule raises."""
        loop = self._loop
        if loop is None:
            with self._lock:
                loop = self._loop
                if loop is None:
                    if self._failed is not None:
                        raise RuntimeError(f"the runtime loop could not be started: {self._failed!r}")
                    self._early.append((delay, callback, failed))
                    self._start_locked()
                    return
        loop.call_soon_threadsafe(loop.call_later, delay, callback)

    def _start(self) -> threading.Event:
        with self._lock:
            return self._start_locked()

    def _start_locked(self) -> threading.Event:
        made = self._made
        if made is None:
            made = self._made = threading.Event()
            threading.Thread(target=self._run, name="cpex-runtime-loop", daemon=True).start()
        return made

    def _run(self) -> None:
        assert self._made is not None
        try:
            loop = new_loop()
        except BaseException as exc:  # noqa: BLE001 - reported to every caller (loop, schedule)
            log.error("the runtime loop could not be started: %r", exc)
            with self._lock:
                self._failed = exc
                early, self._early = self._early, []
            self._made.set()
            for _, _, failed in early:
                try:
                    failed(exc)
                except BaseException:  # one failure answer does not stop the others
                    log.exception("answering work the runtime loop could not run")
            return
        with self._lock:
            for delay, callback, _ in self._early:
                loop.call_later(delay, callback)
            self._early.clear()
            self._loop = loop
        self._made.set()
        loop.run_forever()


class _CallerLoops(threading.local):
    loop: asyncio.AbstractEventLoop | None = None


_caller = _CallerLoops()


def caller_loop() -> asyncio.AbstractEventLoop:
    """This thread's loop for async handlers that suspend."""
    loop = _caller.loop
    if loop is None:
        loop = _caller.loop = new_loop()
    return loop


RUNTIME_LOOP = RuntimeLoop()
