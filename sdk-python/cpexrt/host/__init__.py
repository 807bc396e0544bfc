"""The Python host client: drives plugins through libcpex.so, like a Go host does.

The library runs the engine in this process's interpreter, so its log records go to
the standard `logging` configuration: loggers `cpexrt.engine` (lifecycle, config),
`cpexrt.engine.executor` (plugin failures, timeouts, verdicts not enforced),
`cpexrt.engine.decisions` and `cpexrt.host` (README: Observability)."""

from cpexrt.host.library import Library, load_library
from cpexrt.host.manager import BackgroundTasks, ContextTable, InvokeResult, PluginManager

__all__ = ["BackgroundTasks", "ContextTable", "InvokeResult", "Library", "PluginManager", "load_library"]
