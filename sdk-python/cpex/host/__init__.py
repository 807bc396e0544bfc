"""The Python host client: drives plugins through libcpex.so, like a Go host does."""

from cpex.host.library import Library, load_library
from cpex.host.manager import BackgroundTasks, ContextTable, InvokeResult, PluginManager

__all__ = ["BackgroundTasks", "ContextTable", "InvokeResult", "Library", "PluginManager", "load_library"]
