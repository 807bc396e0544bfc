"""Decision records: per invoke, the request id, the hook, each plugin's verdict and
timing, violation codes and the names of the fields a plugin modified (their values
only with `decision_records.include_values`). Opt-in per manager: a sink set by the
host (a callback) and/or a JSON-lines file named by the config. Records are handed
over on the `cpex-decisions` thread, never on the invoking one (engine/outbox.py)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from cpexrt._lazy import LazyModule
from cpexrt.engine.outbox import Outbox
from cpexrt.errors import ConfigError

if TYPE_CHECKING:
    import json
else:
    json = LazyModule("json", globals())  # imported by the first record written to a file

LOG = logging.getLogger("cpexrt.engine.decisions")

Sink = Callable[[dict[str, Any]], None]


class DecisionLog:
    """A manager's decision records. `active` is read on every invoke: True while a
    sink or a file takes records."""

    def __init__(self) -> None:
        self.active = False
        self.include_values = False
        self._sink: Sink | None = None
        self._file: IO[str] | None = None
        self._path: str | None = None
        self._lock = threading.Lock()
        self._outbox = Outbox("cpex-decisions", self._deliver)

    @property
    def dropped(self) -> int:
        """Records lost because the queue was full or a sink raised."""
        return self._outbox.dropped + self._outbox.failed

    def open_file(self, file: str | None, base_dir: str | None) -> tuple[IO[str], str] | None:
        """The config's decision_records.file, opened for appending (relative paths from
        base_dir, else the working directory); ConfigError naming the field when it
        cannot be opened. Nothing changes until use()."""
        if not file:
            return None
        path = file if os.path.isabs(file) else os.path.join(base_dir or os.getcwd(), file)
        try:
            return open(path, "a", encoding="utf-8"), path
        except OSError as exc:
            raise ConfigError(f"decision_records.file: cannot open {path!r} for appending: {exc}") from None

    def use(self, opened: tuple[IO[str], str] | None, include_values: bool) -> None:
        """Takes a loaded config's decision_records: the file from open_file (or none;
        the one open before is closed once its records are written)."""
        self._outbox.flush()
        with self._lock:
            old = self._file
            self._file, self._path = opened if opened is not None else (None, None)
            self.include_values = include_values
            self._update()
        if old is not None:
            old.close()
        if self._path is not None:
            LOG.info("decision records are appended to %s", self._path, extra={"path": self._path})

    def set_sink(self, sink: Sink | None) -> None:
        """Sets (or with None removes) the callback that receives every record, as a
        map. Records already queued go to the sink that was set when they were made."""
        self._outbox.flush()
        with self._lock:
            self._sink = sink
            self._update()

    def _update(self) -> None:
        self.active = self._sink is not None or self._file is not None

    def emit(self, record: dict[str, Any]) -> None:
        sink, file = self._sink, self._file
        if not self._outbox.offer((record, sink, file)):
            if self._outbox.dropped in (1, 100, 10_000) or self._outbox.dropped % 100_000 == 0:
                LOG.warning(
                    "decision records are produced faster than the sink takes them; %d dropped so far",
                    self._outbox.dropped,
                    extra={"dropped": self._outbox.dropped},
                )

    def flush(self, timeout: float = 5.0) -> bool:
        """Waits until every record made so far reached its sink."""
        return self._outbox.flush(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Delivers what is queued (up to timeout) and closes the file."""
        self._outbox.flush(timeout)
        with self._lock:
            file, self._file, self._sink = self._file, None, None
            self._update()
        if file is not None:
            file.close()

    def _deliver(self, batch: list[Any]) -> None:
        written: set[Any] = set()
        for record, sink, file in batch:
            if file is not None:
                try:
                    file.write(json.dumps(record, separators=(",", ":"), default=str) + "\n")
                    written.add(file)
                except (OSError, ValueError):  # a full disk, or closed by a reload
                    self._outbox.failed += 1
            if sink is not None:
                try:
                    sink(record)
                except Exception:
                    self._outbox.failed += 1
                    LOG.warning("the decision sink raised; the record was dropped", exc_info=True)
        for file in written:
            try:
                file.flush()
            except (OSError, ValueError):
                pass
