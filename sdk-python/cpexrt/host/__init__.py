"""The Python host client: drives plugins through libcpex.so, like a Go host does."""

from cpexrt.host.library import Library, load_library
from cpexrt.host.manager import BackgroundTasks, ContextTable, InvokeResult, PluginManager

__all__ = ["BackgroundTasks", "ContextTable", "InvokeResult", "Library", "PluginManager", "load_library"]
