"""The engine: config, plugin loading, the executor. It knows nothing of C or MessagePack."""

from cpexrt.engine.manager import InvokeOutcome, PluginManager

__all__ = ["InvokeOutcome", "PluginManager"]
