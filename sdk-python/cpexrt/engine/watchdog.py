"""Bounds the time a sync handler may spin in Python code on the caller's thread.

A handler runs inline, so nothing but the handler's own thread can stop it; the
watchdog thread raises PluginDeadline in that thread (PyThreadState_SetAsyncExc) once
its deadline passed. The exception is raised between two bytecodes, so a handler
blocked inside C (time.sleep, a socket read) is interrupted only when it returns to
Python code. Exactly one exception is delivered per guarded call, and one that was
scheduled but not yet raised when the call ended is withdrawn, so it can never
surface in engine code.
"""

from __future__ import annotations

import ctypes
import math
import threading
import time
from threading import get_ident
from typing import Any

_POLL_SECONDS = 0.005
_HORIZON_SECONDS = 1.0


class PluginDeadline(BaseException):
    """Raised inside a handler whose deadline passed. A BaseException, so a plugin's
    `except Exception` does not swallow it."""


_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)
_set_async_exc.restype = ctypes.c_int


class Watchdog:
    """One thread that sleeps until the earliest deadline of the guarded calls. A new
    guard wakes it only when its deadline is earlier than the one it sleeps towards,
    so calls that finish in time (nearly all) never wake it: a wake-up per call would
    take the GIL from the host thread between their calls.

    No lock on a call's path. Each arming is a new guard (a bare object(), the key of
    its (deadline, thread id) in _armed), claimed exactly once by an atomic
    dict.pop(guard) on _armed: by disarm (the call ended in time: nothing fires) or by
    the watchdog (it schedules the exception, then marks the guard in _fired; a
    disarm that lost the claim waits for that mark, then withdraws the exception if
    it is still pending). _current maps a thread to its guard only while the thread is
    inside a guarded call (disarm removes it), so it never outgrows the threads in
    calls, whoever created them (threads of a Go host come and go)."""

    def __init__(self) -> None:
        self._armed: dict[object, tuple[float, int]] = {}
        self._fired: dict[object, None] = {}
        self._current: dict[int, object] = {}
        self._lock = threading.Lock()  # only to start the thread
        self._wake = threading.Event()
        self._target = math.inf  # when the thread checks next; inf while it scans
        self._thread: threading.Thread | None = None

    def arm(self, deadline: float) -> None:
        """Guards the calling thread until disarm(); deadline is a time.monotonic() value.
        Arming again before disarm replaces the guard (its deadline), unless the
        previous one already fired: then that exception stands for this call."""
        tid = get_ident()
        current = self._current
        previous = current.get(tid)
        if previous is not None and self._armed.pop(previous, None) is None:
            return
        guard = object()
        current[tid] = guard
        self._armed[guard] = (deadline, tid)
        if deadline < self._target:
            self._alert(deadline)

    def _alert(self, deadline: float) -> None:
        self._target = deadline
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="cpex-watchdog", daemon=True)
                    self._thread.start()
        self._wake.set()

    def disarm(self) -> bool:
        """Ends the guard of the calling thread; True when its deadline fired. Call it in
        a loop that catches PluginDeadline: the one exception may land inside this call."""
        tid = get_ident()
        guard = self._current.pop(tid, None)
        if guard is None or self._armed.pop(guard, None) is not None:
            return False
        return self._claimed(tid, guard)

    def _claimed(self, tid: int, guard: object) -> bool:
        """disarm's end when the watchdog claimed the guard: wait until it scheduled the
        exception (a few bytecodes on its side), then withdraw it if still pending (a
        no-op when it was delivered)."""
        fired = self._fired
        while guard not in fired:
            time.sleep(0)
        del fired[guard]
        _set_async_exc(tid, ctypes.py_object())
        return True

    def use_native(self, natives: Any) -> None:
        """Makes arm and disarm the boundary's builtins (ffi/natives.c watch_arm and
        watch_disarm: the same steps on the same tables, cheaper per plugin run); the
        rare paths (_alert, _claimed) stay here. Callers that hold arm or disarm take
        them anew (driver.use_watchdog)."""
        natives.watch_setup(self, self._current, self._armed, self._alert, self._claimed)
        self.arm = natives.watch_arm  # type: ignore[method-assign]
        self.disarm = natives.watch_disarm  # type: ignore[method-assign]

    def armed(self) -> int:
        """How many calls are guarded now (for tests)."""
        return len(self._armed)

    def _run(self) -> None:
        armed = self._armed
        while True:
            # Cleared first, then _target = inf: an arm that reads inf sets the event
            # after this clear, so a guard added after the snapshot below makes the
            # wait return at once.
            self._wake.clear()
            self._target = math.inf
            now = time.monotonic()
            # Never sleep towards "no deadline": the next guard would have to wake
            # the thread; with a horizon, only guards due sooner than it do.
            target = now + _HORIZON_SECONDS
            for guard, (deadline, tid) in list(armed.items()):
                if now >= deadline:
                    if armed.pop(guard, None) is not None:
                        _set_async_exc(tid, ctypes.py_object(PluginDeadline))
                        self._fired[guard] = None
                elif deadline < target:
                    target = deadline
            self._target = target
            # Past the target by a little, so the check finds the guard expired.
            self._wake.wait(max(target - time.monotonic(), 0.0) + _POLL_SECONDS)


WATCHDOG = Watchdog()
