"""cpex: a plugin runtime for AI gateways and agent hosts.

Plugin authors use Plugin, hook, allow, deny and modify; hosts use cpex.host (over
libcpex.so) or cpex.engine (in-process).
"""

from cpex._generated.records import PipelineResult, PluginError, PluginViolation
from cpex.errors import CpexError
from cpex.plugin import Plugin, PluginContext, hook
from cpex.results import PluginResult, allow, deny, modify

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
