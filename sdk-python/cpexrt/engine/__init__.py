"""The engine: config, plugin loading, routing, the executor. It takes and returns
Python objects (the generated records, dicts) and never sees C pointers; the payload
codec it uses to isolate plugins and check what they return lives beside the wire
format (cpexrt.payloads), and everything about embedding in cpexrt._boundary."""

from cpexrt.engine.executor import PipelineOutcome
from cpexrt.engine.manager import Engine, PluginSet

__all__ = ["Engine", "PipelineOutcome", "PluginSet"]
