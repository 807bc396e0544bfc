"""The host's record sinks (cpex_set_log_sink, cpex_set_decision_sink): records are
packed as MessagePack (LogRecord, DecisionRecord of records.yaml) and handed to the C
callback on a library thread, with the GIL released for the call (cffi releases it
around every C call), so a host callback may take its time or call the library."""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable
from typing import Any

import msgpack  # type: ignore[import-untyped, unused-ignore]  # untyped: the package passes mypy wherever it is installed

from cpexrt.engine.outbox import Outbox

# The attributes every logging.LogRecord has; the others are the `extra` fields.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}
ROOT = "cpexrt"


def _packed(record: dict[str, Any]) -> bytes:
    try:
        data: bytes = msgpack.packb(record, use_bin_type=True, default=repr)
    except (TypeError, ValueError, OverflowError):  # e.g. non-string keys in a field
        plain = {k: (v if isinstance(v, (str, int, float, bool)) or v is None else repr(v)) for k, v in record.items()}
        data = msgpack.packb(plain, use_bin_type=True, default=repr)
    return data


class CallbackSink:
    """A C record callback and its user data, called with a packed record."""

    def __init__(self, ffi: Any, callback: Any, user_data: Any) -> None:
        self.ffi, self.callback, self.user_data = ffi, callback, user_data

    def __call__(self, record: dict[str, Any]) -> None:
        data = _packed(record)
        self.callback(self.user_data, self.ffi.from_buffer("uint8_t[]", data), len(data))


class LogForwarder(logging.Handler):
    """Attached to the `cpexrt` logger while a host's log sink is set: each record
    becomes a LogRecord map, queued (never blocking the thread that logged) and
    handed to the sink on the `cpex-logs` thread."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self._sink: Callable[[dict[str, Any]], None] | None = None
        self._outbox = Outbox("cpex-logs", self._deliver)
        self._lock = threading.Lock()
        self._saved_level: int | None = None

    def set_sink(self, sink: Callable[[dict[str, Any]], None] | None, min_level: int) -> None:
        """Replaces the sink; the records queued for the old one reach it first."""
        logger = logging.getLogger(ROOT)
        self._outbox.flush()
        with self._lock:
            self._sink = sink
            if sink is None:
                logger.removeHandler(self)
                if self._saved_level is not None:
                    logger.setLevel(self._saved_level)
                    self._saved_level = None
                return
            self.setLevel(min_level)
            if self._saved_level is None:
                self._saved_level = logger.level
            # The logger must make the records the sink asked for (an embedded
            # interpreter's root logger stays at WARNING).
            logger.setLevel(min_level)
            if self not in logger.handlers:
                logger.addHandler(self)

    @property
    def dropped(self) -> int:
        return self._outbox.dropped + self._outbox.failed

    def emit(self, record: logging.LogRecord) -> None:
        sink = self._sink
        if sink is None:
            return
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string still gets through
            message = str(record.msg)
        fields = {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
        if record.exc_info and record.exc_info[1] is not None:
            fields["exception"] = "".join(traceback.format_exception(*record.exc_info))
        entry: dict[str, Any] = {
            "level": record.levelno,
            "level_name": record.levelname,
            "logger": record.name,
            "message": message,
            "time": record.created,
        }
        if fields:
            entry["fields"] = fields
        self._outbox.offer((entry, sink))

    def _deliver(self, batch: list[Any]) -> None:
        for entry, sink in batch:
            try:
                sink(entry)
            except Exception:  # noqa: BLE001 - never logged: that would feed this sink
                self._outbox.failed += 1


LOG_FORWARDER = LogForwarder()
