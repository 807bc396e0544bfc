"""cpex: a plugin runtime for AI gateways and agent hosts.

Plugin authors use Plugin, hook, allow, deny and modify; hosts use cpexrt.host (over
libcpex.so) or cpexrt.engine (in-process).

Logging: the runtime logs through the standard `logging` module under the `cpexrt`
logger (README: Observability). Like any library it only adds a NullHandler, so nothing
is printed until the application configures logging.
"""

import logging as _logging

from cpexrt._generated.records import PipelineResult, PluginError, PluginViolation
from cpexrt.errors import CpexError
from cpexrt.plugin import Plugin, PluginContext, hook
from cpexrt.results import PluginResult, allow, deny, modify

_logging.getLogger("cpexrt").addHandler(_logging.NullHandler())

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
