"""Fire-and-forget tasks: run after the pipeline on a plain background thread
(cpex-background), outside the caller's latency, with as little per-invoke overhead
as possible.

An invoke queues its tasks and wakes the thread only when it is not already draining
(so a busy drain is not woken per invoke); sync handlers run there under the
watchdog, with no asyncio imported. Only a handler that gives a coroutine goes to
the runtime loop (cpexrt.engine.runtime_loop, made then): driven inline until it
suspends, then an asyncio task bounded by its timeout; its outcome comes back to
the drain thread, the one thread that finishes tasks.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from types import CoroutineType
from typing import TYPE_CHECKING, Any, Protocol

from cpexrt._generated.records import PluginError
from cpexrt._lazy import LazyModule
from cpexrt.engine import driver
from cpexrt.engine.runtime_loop import RUNTIME_LOOP, bounded

log = logging.getLogger("cpexrt.engine")

if TYPE_CHECKING:
    import asyncio
else:
    asyncio = LazyModule("asyncio", globals())  # imported with the runtime loop

# Releases the GIL for one system call that returns at once (select.select with no
# file and no timeout).
_release_gil = select.select

# A task: () -> the PluginError it produced, or None; may instead return a coroutine
# that finishes the work (when a handler suspended).
Task = Callable[[], Any]


class Work(Protocol):
    """A queued task that knows its batch: called like a Task."""

    batch: BackgroundBatch

    def __call__(self) -> Any: ...


class _Work:
    """A Task queued with its batch."""

    __slots__ = ("batch", "task")

    def __init__(self, batch: BackgroundBatch, task: Task) -> None:
        self.batch, self.task = batch, task

    def __call__(self) -> Any:
        return self.task()


class BackgroundBatch:
    """The fire-and-forget plugins started by one invoke. wait() returns the errors of
    those that failed; dropping the object does not stop them.

    Lock-free: only the drain thread finishes tasks (_finish_one), so the
    count has one writer; a reader (wait, on_done, Tracker.add) first registers what
    must happen at the end, then reads the count again, and the finishing thread first
    writes the count, then reads the registrations. Under the GIL each of those steps
    is atomic and ordered, so either side sees the other: nothing is missed, and a
    callback is claimed (token.pop()) by exactly one of them."""

    __slots__ = ("plugin_names", "_pending", "_errors", "_waiters", "_tracker")

    def __init__(self, names: Sequence[str], count: int) -> None:
        self.plugin_names = names
        self._pending = count
        # Both made when first needed (most batches finish with no error and nobody
        # waiting): a batch lives until its tasks ran, and what every invoke leaves
        # alive that long is what the cyclic GC traverses again and again.
        self._errors: list[PluginError] | None = None
        # One-element lists, each a callback to run once the tasks finished.
        self._waiters: list[list[Callable[[BackgroundBatch], None]]] | None = None
        self._tracker: dict[BackgroundBatch, None] | None = None

    def wait(self, timeout: float | None = None) -> list[PluginError]:
        """Blocks until every task finished; TimeoutError after timeout seconds."""
        if self._pending == 0:
            return list(self._errors or ())
        event = threading.Event()
        self.on_done(lambda _: event.set())
        if not event.wait(timeout):
            raise TimeoutError(f"fire-and-forget tasks of {', '.join(self.plugin_names)} still running")
        return list(self._errors or ())

    @property
    def done(self) -> bool:
        return self._pending == 0

    def on_done(self, callback: Callable[[BackgroundBatch], None]) -> None:
        """Calls callback(self) once the tasks finished (at once if they have)."""
        if self._pending:
            token = [callback]
            waiters = self._waiters
            if waiters is None:
                with _MAKING:  # two first waiters make one list
                    waiters = self._waiters
                    if waiters is None:
                        waiters = self._waiters = []
            waiters.append(token)
            if self._pending:
                return
            # Finished meanwhile: the finishing thread may or may not have seen the
            # token; whoever takes it runs the callback.
            try:
                token.pop()
            except IndexError:
                return
        callback(self)

    def _finish_one(self, error: PluginError | None) -> None:
        """One task finished (on the drain thread only)."""
        if error is not None:
            if self._errors is None:
                self._errors = []  # only this thread writes it
            self._errors.append(error)
        self._pending -= 1
        if self._pending:
            return
        tracker = self._tracker
        if tracker is not None:
            tracker.pop(self, None)
        waiters = self._waiters
        while waiters:  # None: nobody registered (a waiter that does now sees the count)
            token = waiters.pop()
            try:
                callback = token.pop()
            except IndexError:
                continue
            callback(self)


# Guards only the making of a batch's waiter list (rare: a host waiting on a batch).
_MAKING = threading.Lock()


class Tracker:
    """The batches of one plugin set not finished yet, so shutdown and retirement can
    wait for them. Lock-free: a dict of the batches, each batch removing itself when it
    finishes (see BackgroundBatch)."""

    __slots__ = ("_live",)

    def __init__(self) -> None:
        self._live: dict[BackgroundBatch, None] = {}

    def add(self, tasks: BackgroundBatch) -> None:
        live = self._live
        tasks._tracker = live
        live[tasks] = None
        if not tasks._pending:
            live.pop(tasks, None)

    def take_pending(self) -> list[BackgroundBatch]:
        """The batches still running, no longer tracked."""
        live = self._live
        batches = list(live.copy())
        for tasks in batches:
            live.pop(tasks, None)
        return [b for b in batches if b._pending]

    def __len__(self) -> int:
        return len(self._live)


class _Done:
    """A coroutine task's outcome, handed back from the runtime loop to the drain
    thread, which finishes its batch (one thread finishes tasks: see BackgroundBatch)."""

    __slots__ = ("batch", "outcome")

    def __init__(self, batch: BackgroundBatch, outcome: PluginError | None) -> None:
        self.batch, self.outcome = batch, outcome

    def __call__(self) -> PluginError | None:
        return self.outcome


class _Runner:
    """The queue of fire-and-forget tasks, drained in batches on one plain daemon
    thread (cpex-background), started on the first submit: no asyncio unless a task
    is a coroutine.

    Every wake-up of the drain thread takes the GIL from the host threads between
    their calls, so tasks are collected for BATCH_SECONDS and run in slices of SLICE
    tasks, the thread releasing the GIL between slices (a select with no wait).

    While tasks keep coming, the drain keeps looking every BATCH_SECONDS (for up to
    IDLE_LOOKS looks that find nothing), so a busy host's submits never wake the
    thread themselves: a wake-up hands the GIL and the core to the drain thread in the
    middle of the invoke. Only a submit after the drain stopped wakes it.

    Sync tasks (and a handler's sync part) run on the drain thread, under the
    watchdog. A task that gives a coroutine (an async handler) is handed to the
    runtime loop (made then, asyncio imported then), which drives it as before:
    inline until it suspends, then as an asyncio task bounded by its timeout; its
    outcome comes back through the queue (_Done), so only the drain thread finishes
    tasks.

    Lock-free hand-off: deque.append / popleft are atomic under the GIL. A submitter
    appends, then reads _scheduled; the drain clears _scheduled (when it stops), then
    looks at the queue again. So a task appended while the drain was stopping is
    either seen by that last look or finds _scheduled cleared and wakes the thread
    itself."""

    BATCH_SECONDS = 0.005
    SLICE = 64
    IDLE_LOOKS = 40  # 0.2 s without tasks, then the drain stops

    def __init__(self) -> None:
        # Queued work: objects with the batch they finish (`batch`) that are called
        # to run (see Work).
        self._queue: deque[Work] = deque()
        self._scheduled = False
        self._idle = 0  # the drain's looks in a row that found nothing
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()  # only for starting the thread

    def submit(self, tasks: BackgroundBatch, work: list[Task]) -> None:
        """Queues the tasks of a batch (each a Task)."""
        append = self._queue.append
        for w in work:
            append(_Work(tasks, w))
        if not self._scheduled:
            self._schedule()

    def put(self, work: Work) -> None:
        """Queues one task that carries its batch itself (an invoke's followers: no
        wrapper per task)."""
        self._queue.append(work)
        if not self._scheduled:
            self._schedule()

    def _schedule(self) -> None:
        self._scheduled = True
        if self._thread is None:
            with self._starting:
                if self._thread is None:
                    thread = threading.Thread(target=self._run, name="cpex-background", daemon=True)
                    try:
                        thread.start()
                    except BaseException as exc:  # noqa: BLE001 - answered: the queued tasks fail
                        self._fail_queued(exc)
                        return
                    self._thread = thread
        self._wake.set()

    def _fail_queued(self, why: BaseException) -> None:
        """The drain thread could not be started: every queued task ends as an error
        of its batch (never left pending); the next submit tries again."""
        queue = self._queue
        self._scheduled = False
        message = f"fire-and-forget task not run: the background thread could not be started: {why!r}"
        while True:
            try:
                work = queue.popleft()
            except IndexError:
                return
            work.batch._finish_one(PluginError(plugin_name="<engine>", message=message))

    def _run(self) -> None:
        wake = self._wake
        while True:
            wake.wait()
            wake.clear()
            try:
                self._drain()
            except BaseException:  # the thread goes on (a shot landing between tasks)
                log.exception("fire-and-forget drain interrupted; it goes on")
                self._scheduled = True
                wake.set()

    def _drain(self) -> None:
        """Runs the queue until IDLE_LOOKS looks in a row found nothing."""
        sleep = time.sleep
        while True:
            sleep(self.BATCH_SECONDS)
            while True:
                queue = self._queue
                if not queue:
                    self._idle += 1
                    if self._idle < self.IDLE_LOOKS:
                        break  # the next look
                    self._idle = 0
                    self._scheduled = False
                    if not queue:
                        return
                    self._scheduled = True
                self._idle = 0
                for _ in range(self.SLICE):
                    try:
                        work = queue.popleft()
                    except IndexError:
                        break
                    self._run_one(work)
                else:
                    # The rest after a turn without the GIL, as an event loop's selector
                    # gives: a host thread waiting for it may take it. Not a sleep: even
                    # sleep(0) stops this thread for the timer slack (~50 us), and each time
                    # it then waits a whole switch interval (5 ms) for the GIL, so a busy
                    # host outruns the drain and the queue grows.
                    _release_gil([], [], [], 0)
                    continue
                break  # queue emptied: the next look after BATCH_SECONDS

    def _run_one(self, work: Work) -> None:
        try:
            outcome = work()
        except BaseException as exc:  # noqa: BLE001 - a task never stops the drain
            outcome = PluginError(plugin_name="<engine>", message=f"fire-and-forget task failed: {exc!r}")
        if outcome is not None and _is_coroutine(outcome):
            self._on_loop(work.batch, outcome)
        else:
            work.batch._finish_one(outcome)

    def _on_loop(self, batch: BackgroundBatch, coro: Any) -> None:
        """Runs coro (a task's rest) on the runtime loop; its outcome comes back to
        the drain thread. A runtime loop that cannot be made fails the task."""

        def start() -> None:
            RUNTIME_LOOP.loop.create_task(self._finish(batch, coro))

        def failed(why: BaseException) -> None:
            coro.close()
            message = f"fire-and-forget task not run: the runtime loop could not be started: {why!r}"
            self.put(_Done(batch, PluginError(plugin_name="<engine>", message=message)))

        try:
            RUNTIME_LOOP.schedule(0.0, start, failed)
        except BaseException as exc:  # noqa: BLE001 - known: the loop cannot be made
            failed(RUNTIME_LOOP.failure or exc)

    async def _finish(self, tasks: BackgroundBatch, rest: Any) -> None:
        try:
            outcome = await rest
        except BaseException as exc:  # noqa: BLE001 - answered, never lost
            outcome = PluginError(plugin_name="<engine>", message=f"fire-and-forget task failed: {exc!r}")
        self.put(_Done(tasks, outcome))


def _is_coroutine(value: Any) -> bool:
    # The exact type first: asyncio.iscoroutine's ABC check is slow for what it rejects.
    return type(value) is CoroutineType or asyncio.iscoroutine(value)


RUNNER = _Runner()


def start_inline(fn: Callable[..., Any], args: tuple[Any, ...], timeout: float) -> tuple[bool, Any]:
    """On the drain thread: fn(*args) under the watchdog. (True, result) when
    finished, else (False, a coroutine finishing the work on the runtime loop: the
    handler's coroutine driven inline there until it suspends, under the watchdog,
    then awaited bounded by the deadline)."""
    deadline = time.monotonic() + timeout
    result = driver.guarded(fn, args, deadline)
    if result is None or not _is_coroutine(result):
        return True, result
    return False, _rest_on_loop(result, timeout)


async def _rest_on_loop(coro: Any, seconds: float) -> Any:
    """coro run on the runtime loop (a task there): its first step inline under the
    watchdog, the rest bounded by its timeout (seconds), counted from that first step (not from
    the drain thread, which may have waited for the loop to be made). What it raises
    comes out contained (a SystemExit or KeyboardInterrupt wrapped, see
    driver.PluginRaised)."""
    deadline = time.monotonic() + seconds
    try:
        yielded = driver.guarded(coro.send, (None,), deadline)
    except StopIteration as stop:
        return stop.value
    except BaseException as exc:  # noqa: BLE001 - contained
        coro.close()
        driver._raise_contained(exc)
    return await bounded(driver.resume(coro, yielded), deadline)
