"""Fire-and-forget tasks: run after the pipeline on the runtime loop's thread, outside
the caller's latency, with as little per-invoke overhead as possible.

An invoke hands its batch to the loop in one call_soon_threadsafe only when the loop
is not already draining (so a busy loop is not woken per invoke); each task is driven
inline (sync handlers under the watchdog, coroutines until they suspend) and only a
coroutine that really suspends becomes an asyncio task, bounded by its timeout.
"""

from __future__ import annotations

import functools
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

if TYPE_CHECKING:
    import asyncio
else:
    asyncio = LazyModule("asyncio", globals())  # imported with the runtime loop

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

    Lock-free: only the runtime loop's thread finishes tasks (_finish_one), so the
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
        """One task finished (on the runtime loop's thread only)."""
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


class _Runner:
    """The queue of fire-and-forget tasks, drained on the runtime loop in batches.

    Every wake-up of the loop thread takes the GIL from the host threads between their
    calls, so tasks are collected for BATCH_SECONDS and run in slices of SLICE tasks,
    the loop going through its selector (releasing the GIL) between slices.

    While tasks keep coming, the drain keeps looking every BATCH_SECONDS (for up to
    IDLE_LOOKS looks that find nothing), so a busy host's submits never wake the loop
    themselves: a wake-up is a write to the loop's socket on the invoking thread, a
    system call that hands the GIL and the core to the loop thread in the middle of
    the invoke. Only a submit after the drain stopped wakes it.

    Lock-free hand-off: deque.append / popleft are atomic under the GIL. A submitter
    appends, then reads _scheduled; the drain clears _scheduled (when it stops), then
    looks at the queue again. So a task appended while the drain was stopping is
    either seen by that last look or finds _scheduled cleared and schedules a drain
    itself. The drain scheduled last is the live one (its token is _chain); an older
    one still scheduled (it found the task in its last look) ends at its next turn, so
    one drain keeps looking and two never both re-arm for long."""

    BATCH_SECONDS = 0.005
    SLICE = 64
    IDLE_LOOKS = 40  # 0.2 s without tasks, then the drain stops

    def __init__(self) -> None:
        # Queued work: objects with the batch they finish (`batch`) that are called
        # to run (see Work).
        self._queue: deque[Work] = deque()
        self._scheduled = False
        self._chain: object = None  # the live drain's token
        self._idle = 0  # its looks in a row that found nothing

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
        token = self._chain = object()
        RUNTIME_LOOP.schedule(self.BATCH_SECONDS, functools.partial(self._drain, token), self._fail_queued)

    def _fail_queued(self, why: BaseException) -> None:
        """The runtime loop could not be made: every queued task ends as an error of
        its batch (never left pending), and the next submit tries again (and raises)."""
        queue = self._queue
        self._scheduled = False
        message = f"fire-and-forget task not run: the runtime loop could not be started: {why!r}"
        while True:
            try:
                work = queue.popleft()
            except IndexError:
                return
            work.batch._finish_one(PluginError(plugin_name="<engine>", message=message))

    def _drain(self, token: object) -> None:
        if token is not self._chain:
            return  # a newer drain was scheduled (while this one was stopping): it goes on
        queue = self._queue
        loop = RUNTIME_LOOP.loop
        if not queue:
            self._idle += 1
            if self._idle < self.IDLE_LOOKS:
                loop.call_later(self.BATCH_SECONDS, self._drain, token)
                return
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
                loop.call_later(self.BATCH_SECONDS, self._drain, token)  # the next look
                return
            try:
                outcome = work()
            except BaseException as exc:  # noqa: BLE001 - a task never breaks the loop
                outcome = PluginError(plugin_name="<engine>", message=f"fire-and-forget task failed: {exc!r}")
            if outcome is not None and _is_coroutine(outcome):
                loop.create_task(self._finish(work.batch, outcome))
            else:
                work.batch._finish_one(outcome)
        loop.call_soon(self._drain, token)  # the rest after the selector's turn

    @staticmethod
    async def _finish(tasks: BackgroundBatch, rest: Any) -> None:
        tasks._finish_one(await rest)


def _is_coroutine(value: Any) -> bool:
    # The exact type first: asyncio.iscoroutine's ABC check is slow for what it rejects.
    return type(value) is CoroutineType or asyncio.iscoroutine(value)


RUNNER = _Runner()


def start_inline(fn: Callable[..., Any], args: tuple[Any, ...], timeout: float) -> tuple[bool, Any]:
    """On the runtime loop's thread (its loop running): fn(*args) under the watchdog, a
    coroutine driven until it suspends. (True, result) when finished, else (False, an
    awaitable of the rest, bounded by timeout)."""
    deadline = time.monotonic() + timeout
    result = driver.guarded(fn, args, deadline)
    if result is None or not _is_coroutine(result):
        return True, result
    try:
        yielded = driver.guarded(result.send, (None,), deadline)
    except StopIteration as stop:
        return True, stop.value
    except BaseException:
        result.close()
        raise
    return False, bounded(driver.resume(result, yielded), deadline)
