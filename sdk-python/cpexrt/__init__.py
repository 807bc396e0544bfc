"""cpex: a plugin runtime for AI gateways and agent hosts.

Plugin authors use Plugin, hook, allow, deny and modify; hosts use cpexrt.host (over
libcpex.so) or cpexrt.engine (in-process).
"""

from cpexrt._generated.records import PipelineResult, PluginError, PluginViolation
from cpexrt.errors import CpexError
from cpexrt.plugin import Plugin, PluginContext, hook
from cpexrt.results import PluginResult, allow, deny, modify

__all__ = [
    "CpexError",
    "PipelineResult",
    "Plugin",
    "PluginContext",
    "PluginError",
    "PluginResult",
    "PluginViolation",
    "allow",
    "deny",
    "hook",
    "modify",
]
