"""Fire-and-forget tasks of one invoke, running on the runtime loop."""

from __future__ import annotations

import concurrent.futures

from cpex._generated.records import PluginError


class BackgroundTasks:
    """The fire-and-forget plugins started by one invoke. wait() returns the errors of
    those that failed; dropping the object does not stop them."""

    def __init__(self, future: "concurrent.futures.Future[list[PluginError]]", names: list[str]) -> None:
        self._future = future
        self.plugin_names = names

    def wait(self, timeout: float | None = None) -> list[PluginError]:
        return self._future.result(timeout)

    @property
    def done(self) -> bool:
        return self._future.done()
