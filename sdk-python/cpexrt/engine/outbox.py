"""A bounded queue drained by one daemon thread: how the engine hands records (log
records, decision records) to sinks that may be slow (a Go callback, a file) without
ever blocking the thread that produced them. A full queue drops the newest record and
counts it; nothing produced blocks on a sink."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import Any

# Records waiting for a sink; past this, new records are dropped (and counted).
DEFAULT_CAPACITY = 10_000
# How many records one wake-up hands to the sink before checking for new ones.
_BATCH = 256


class Outbox:
    """Records offered by any thread, delivered in order to deliver(batch) on the
    thread `name`, started on first offer. deliver must not raise (what it raises is
    counted as dropped and the record's batch is lost, never retried)."""

    def __init__(self, name: str, deliver: Callable[[list[Any]], None], capacity: int = DEFAULT_CAPACITY) -> None:
        self.name = name
        self._deliver = deliver
        self._capacity = capacity
        self._queue: collections.deque[Any] = collections.deque()
        self._cond = threading.Condition(threading.Lock())
        self._busy = False
        self._thread: threading.Thread | None = None
        self.dropped = 0
        self.failed = 0

    def offer(self, record: Any) -> bool:
        """Queues record; False (and counted in dropped) when the queue is full."""
        with self._cond:
            if len(self._queue) >= self._capacity:
                self.dropped += 1
                return False
            self._queue.append(record)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            self._cond.notify()
        return True

    def flush(self, timeout: float = 5.0) -> bool:
        """Waits until every queued record has been handed to the sink; False when
        timeout passed first. Called from the delivery thread itself, returns at once."""
        if threading.current_thread() is self._thread:
            return False
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._busy = False
                    self._cond.notify_all()  # flushers
                    self._cond.wait()
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), _BATCH))]
                self._busy = True
            try:
                self._deliver(batch)
            except BaseException:  # noqa: BLE001 - a sink's failure must not end delivery
                # Counted, not logged: the log forwarder is itself an outbox.
                self.failed += len(batch)
