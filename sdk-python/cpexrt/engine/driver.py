"""Runs one handler on the caller's thread within a deadline, sync or async."""

from __future__ import annotations

import types
from collections.abc import Callable, Coroutine, Generator
from types import CoroutineType
from typing import TYPE_CHECKING, Any

from cpexrt._lazy import LazyModule
from cpexrt.engine.runtime_loop import RUNTIME_LOOP, bounded, caller_loop, run_until_complete
from cpexrt.engine.watchdog import WATCHDOG, PluginDeadline

if TYPE_CHECKING:
    import asyncio
else:
    asyncio = LazyModule("asyncio", globals())  # imported by the first async handler


def _bind_running_loop() -> None:
    """asyncio's running-loop functions in place of the two below (asyncio imported)."""
    global _get_running_loop, _set_running_loop
    _get_running_loop = asyncio.events._get_running_loop
    _set_running_loop = asyncio.events._set_running_loop


def _first_get_running_loop() -> Any:
    _bind_running_loop()
    return _get_running_loop()


def _first_set_running_loop(loop: Any) -> None:
    _bind_running_loop()
    _set_running_loop(loop)


# asyncio.events' own functions once a coroutine needed them (only async handlers do).
_get_running_loop: Callable[[], Any] = _first_get_running_loop
_set_running_loop: Callable[[Any], None] = _first_set_running_loop


_arm = WATCHDOG.arm
_disarm_once = WATCHDOG.disarm

# How long after a suspended handler's deadline the watchdog steps in (seconds).
WATCHDOG_GRACE = 0.05


class HandlerTimeout(Exception):
    """The handler ran past its deadline and was stopped."""


class PluginRaised(Exception):
    """A handler raised a BaseException that is not an Exception (SystemExit,
    KeyboardInterrupt, GeneratorExit, CancelledError, a custom subclass): carried as
    an ordinary exception, so it is that plugin's failure and never stops an event
    loop, a thread or the process."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(f"{type(original).__name__}: {original}")
        self.original = original


class Remote:
    """A handler that runs somewhere else (a worker process, a helper thread) and keeps
    its deadline itself: the driver passes it the deadline instead of arming the
    watchdog on the caller's thread, so the caller is released at the deadline
    whatever the plugin does (cpexrt.engine.isolation, cpexrt.engine.offthread)."""

    __slots__ = ()

    def __call__(self, *args: Any) -> Any:
        raise TypeError("a remote handler runs through cpexrt.engine.driver (call, begin, guarded)")

    def call(self, args: tuple[Any, ...], deadline: float) -> Any:
        """The handler's result; HandlerTimeout at the deadline."""
        raise NotImplementedError

    def start(self, args: tuple[Any, ...], deadline: float) -> Coroutine[Any, Any, Any]:
        """A coroutine of the handler's result, for the loops (concurrent and
        fire-and-forget plugins); cancelling it abandons the call."""
        raise NotImplementedError


def wake(future: asyncio.Future[Any]) -> None:
    """Resolves future with None unless it is done (a reader or thread callback)."""
    if not future.done():
        future.set_result(None)


class RemoteFailure(Exception):
    """A plugin's failure as reported from where it ran; its text is the whole
    description ('raised ValueError: ...', 'crashed: ...'), code the PluginError's."""

    def __init__(self, message: str, code: str = "plugin_error") -> None:
        super().__init__(message)
        self.code = code


def code_of(exc: BaseException) -> str:
    """The PluginError code of a plugin's failure."""
    return exc.code if isinstance(exc, RemoteFailure) else "plugin_error"


def describe(exc: BaseException) -> str:
    """How a plugin's exception is reported: 'raised <Type>: <message>'."""
    if isinstance(exc, RemoteFailure):
        return str(exc)
    if isinstance(exc, PluginRaised):
        exc = exc.original
    return f"raised {type(exc).__name__}: {exc}"


def _contained(exc: BaseException) -> BaseException:
    """exc as it may travel through the engine's loops: deadlines and cancellations
    by cpex itself stay what they are, any other non-Exception is wrapped."""
    if isinstance(exc, (Exception, PluginDeadline)):
        return exc
    return PluginRaised(exc)


async def contain(coro: Coroutine[Any, Any, Any]) -> Any:
    """Awaits a handler's coroutine as a task may: its BaseExceptions wrapped."""
    try:
        return await coro
    except asyncio.CancelledError:
        raise
    except BaseException as exc:  # re-raised, wrapped if need be: see _contained
        wrapped = _contained(exc)
        if wrapped is exc:
            raise
        raise wrapped from None


def call(fn: Callable[..., Any], args: tuple[Any, ...], deadline: float) -> Any:
    """fn(*args), driven to completion on this thread; HandlerTimeout past deadline.
    A coroutine result is driven inline until it suspends, then finished on this
    thread's caller loop."""
    if isinstance(fn, Remote):
        return fn.call(args, deadline)
    try:
        try:
            _arm(deadline)
            result = fn(*args)
            if type(result) is CoroutineType:  # exact type: an ABC isinstance is slow here
                result = drive(result, deadline)
            return result
        finally:
            try:
                _disarm_once()
            except PluginDeadline:  # landed while disarming
                _disarm()
    except PluginDeadline:
        raise HandlerTimeout from None
    except TimeoutError:
        raise HandlerTimeout from None


def guarded(fn: Callable[..., Any], args: tuple[Any, ...], deadline: float) -> Any:
    """fn(*args) under the watchdog, nothing more; HandlerTimeout past deadline. A
    Remote handler gives its coroutine (the caller drives it on its loop)."""
    if isinstance(fn, Remote):
        return fn.start(args, deadline)
    try:
        try:
            _arm(deadline)
            return fn(*args)
        finally:
            try:
                _disarm_once()
            except PluginDeadline:  # landed while disarming
                _disarm()
    except PluginDeadline:
        raise HandlerTimeout from None


def _disarm() -> None:
    # The watchdog's single exception may land while disarming: absorb it, retry.
    while True:
        try:
            WATCHDOG.disarm()
            return
        except PluginDeadline:
            continue


# call()'s local path, for a caller that writes it out (the executor's steps: one
# Python call less per plugin run): arm(deadline), the handler, drive() for a
# coroutine, then in a finally disarm(), and disarm_retrying() should PluginDeadline
# land in that; PluginDeadline and TimeoutError out of it all are the handler's
# timeout, as call() turns them into HandlerTimeout.
arm = WATCHDOG.arm
disarm = WATCHDOG.disarm
disarm_retrying = _disarm


def use_watchdog() -> None:
    """Takes WATCHDOG's arm and disarm anew, here and in the executor, which hold them
    (after WATCHDOG.use_native, as the boundary loads)."""
    global _arm, _disarm_once, arm, disarm
    from cpexrt.engine import executor  # imports this module

    _arm = arm = WATCHDOG.arm
    _disarm_once = disarm = WATCHDOG.disarm
    executor._arm, executor._disarm = arm, disarm


def start(coro: Coroutine[Any, Any, Any]) -> tuple[bool, Any]:
    """Drives coro inline up to its first real suspension: (True, result) when it
    finished, (False, what it yielded) when it suspended. Raises what it raised."""
    previous = _get_running_loop()
    _set_running_loop(caller_loop())
    try:
        yielded = coro.send(None)
    except StopIteration as stop:
        return True, stop.value
    finally:
        _set_running_loop(previous)
    return False, yielded


def drive(coro: Coroutine[Any, Any, Any], deadline: float) -> Any:
    if _get_running_loop() is not None:
        # The host called us from inside a running loop (its own): this thread's loop
        # cannot run, so the whole coroutine goes to the runtime loop.
        return RUNTIME_LOOP.submit(bounded(contain(coro), deadline)).result()
    # start(coro), inlined (every async handler's path); no loop runs here (checked above).
    _set_running_loop(caller_loop())
    try:
        value = coro.send(None)
    except StopIteration as stop:
        return stop.value
    finally:
        _set_running_loop(None)
    loop = caller_loop()
    # The loop's own timer (bounded) ends a handler that waits; the watchdog stays
    # armed only for one that spins, a little later, so the two never race: its
    # exception landing in the loop's code at the same instant could leave the loop
    # half-stopped.
    WATCHDOG.arm(deadline + WATCHDOG_GRACE)
    return run_until_complete(loop, bounded(resume(coro, value), deadline))


@types.coroutine
def resume(coro: Coroutine[Any, Any, Any], yielded: Any) -> Generator[Any, Any, Any]:
    """An awaitable that continues coro from a suspension reached by start(): it
    re-yields what coro yielded, then relays every send / throw, like `yield from`.
    What coro raises comes out contained (see PluginRaised): a SystemExit or
    KeyboardInterrupt in a task would otherwise stop the loop running it."""
    while True:
        try:
            sent = yield yielded
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # noqa: BLE001 - relayed into the coroutine
            try:
                yielded = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
            except asyncio.CancelledError:
                raise
            except BaseException as raised:  # noqa: BLE001 - contained
                _raise_contained(raised)
        else:
            try:
                yielded = coro.send(sent)
            except StopIteration as stop:
                return stop.value
            except asyncio.CancelledError:
                raise
            except BaseException as raised:  # noqa: BLE001 - contained
                _raise_contained(raised)


def _raise_contained(exc: BaseException) -> None:
    wrapped = _contained(exc)
    if wrapped is exc:
        raise exc
    raise wrapped from None


def begin(fn: Callable[..., Any], args: tuple[Any, ...], deadline: float) -> tuple[bool, Any, Any]:
    """Starts fn(*args) like call(), but leaves a suspended coroutine for finish_all():
    (True, result, None) when done, (False, yielded, coroutine) when suspended."""
    if isinstance(fn, Remote):
        coro = fn.start(args, deadline)
        try:
            done, value = start(coro)
        except TimeoutError:
            raise HandlerTimeout from None
        return (True, value, None) if done else (False, value, coro)
    try:
        try:
            _arm(deadline)
            result = fn(*args)
            if type(result) is not CoroutineType:
                return True, result, None
            if _get_running_loop() is not None:
                return True, drive(result, deadline), None
            done, value = start(result)
            return (True, value, None) if done else (False, value, result)
        finally:
            try:
                _disarm_once()
            except PluginDeadline:  # landed while disarming
                _disarm()
    except PluginDeadline:
        raise HandlerTimeout from None
    except TimeoutError:  # drive's, as in call()
        raise HandlerTimeout from None


class Suspended:
    """A handler that suspended in begin(): what finish_all() continues."""

    def __init__(self, key: Any, coro: Coroutine[Any, Any, Any], yielded: Any, deadline: float) -> None:
        self.key, self.coro, self.yielded, self.deadline = key, coro, yielded, deadline


def finish_all(suspended: list[Suspended], settle: Callable[[Any, bool, Any], bool]) -> None:
    """Runs the suspended handlers together on this thread's loop. settle(key, ok,
    value) gets each outcome as it comes (ok False: value is the exception, a
    HandlerTimeout for a deadline); when it returns True the others are cancelled."""

    async def run() -> None:
        tasks = {asyncio.ensure_future(bounded(resume(s.coro, s.yielded), s.deadline)): s.key for s in suspended}
        pending = set(tasks)
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    # A handler that raised CancelledError itself ends its task cancelled.
                    exc = PluginRaised(asyncio.CancelledError()) if task.cancelled() else task.exception()
                    if isinstance(exc, (asyncio.TimeoutError, PluginDeadline)):
                        exc = HandlerTimeout()
                    if settle(tasks[task], exc is None, task.result() if exc is None else exc):
                        return
        finally:
            # A deny, or settle raising (on_error fail), ends the phase: cancel the rest.
            for other in pending:
                other.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    run_until_complete(caller_loop(), run())
