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

_POLL_SECONDS = 0.005
_HORIZON_SECONDS = 1.0


class PluginDeadline(BaseException):
    """Raised inside a handler whose deadline passed. A BaseException, so a plugin's
    `except Exception` does not swallow it."""


class _Guard:
    __slots__ = ("deadline", "fired")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.fired = False


_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)
_set_async_exc.restype = ctypes.c_int


class Watchdog:
    """One thread that sleeps until the earliest deadline of the guarded calls. A new
    guard wakes it only when its deadline is earlier than the one it sleeps towards,
    so calls that finish in time (nearly all) never wake it: a wake-up per call would
    take the GIL from the host thread between its calls."""

    def __init__(self) -> None:
        self._guards: dict[int, _Guard] = {}
        self._lock = threading.Lock()  # orders arming / firing / disarming
        self._wake = threading.Event()
        self._target = math.inf  # when the thread checks next
        self._thread: threading.Thread | None = None

    def arm(self, deadline: float) -> None:
        """Guards the calling thread until disarm(); deadline is a time.monotonic() value."""
        guard = _Guard(deadline)
        tid = threading.get_ident()
        with self._lock:
            self._guards[tid] = guard
            if deadline < self._target:
                self._target = deadline
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="cpex-watchdog", daemon=True)
                    self._thread.start()
                self._wake.set()

    def disarm(self) -> bool:
        """Ends the guard of the calling thread; True when its deadline fired. Call it in
        a loop that catches PluginDeadline: the one exception may land inside this call."""
        tid = threading.get_ident()
        with self._lock:
            guard = self._guards.pop(tid, None)
            if guard is None or not guard.fired:
                return False
            # Withdraw the exception if it is still pending (a no-op when delivered).
            _set_async_exc(tid, ctypes.py_object())
            return True

    def _run(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                # Never sleep towards "no deadline": the next guard would have to wake
                # the thread; with a horizon, only guards due sooner than it do.
                target = now + _HORIZON_SECONDS
                for tid, guard in self._guards.items():
                    if guard.fired:
                        continue
                    if now >= guard.deadline:
                        guard.fired = True
                        _set_async_exc(tid, ctypes.py_object(PluginDeadline))
                    elif guard.deadline < target:
                        target = guard.deadline
                self._target = target
                self._wake.clear()
            # Past the target by a little, so the check finds the guard expired.
            self._wake.wait(max(target - time.monotonic(), 0.0) + _POLL_SECONDS)


WATCHDOG = Watchdog()
