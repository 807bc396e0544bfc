"""The demo pipeline's plugins written for the Python framework cpex 0.1.x (PyPI), the
baseline of bench/run.py: an identity checker, a PII guard and a fire-and-forget audit
logger doing the same work as examples/plugins/demo_plugins.py."""

from cpex.framework import Plugin
from cpex.framework.hooks.tools import ToolPreInvokeResult
from cpex.framework.models import PluginViolation


class IdentityChecker(Plugin):
    async def tool_pre_invoke(self, payload, context):  # type: ignore[no-untyped-def]
        user = context.global_context.user
        if not user:
            return ToolPreInvokeResult(
                continue_processing=False,
                violation=PluginViolation(
                    reason="tool calls need an authenticated user", description="", code="missing_identity", details={}
                ),
            )
        context.state["user"] = user
        return ToolPreInvokeResult(continue_processing=True)


class PIIGuard(Plugin):
    async def tool_pre_invoke(self, payload, context):  # type: ignore[no-untyped-def]
        if (payload.args or {}).get("pii_clearance") is not True:
            return ToolPreInvokeResult(
                continue_processing=False,
                violation=PluginViolation(
                    reason="PII access requires clearance", description="", code="pii_clearance_required", details={}
                ),
            )
        return ToolPreInvokeResult(continue_processing=True)


class AuditLogger(Plugin):
    async def tool_pre_invoke(self, payload, context):  # type: ignore[no-untyped-def]
        return ToolPreInvokeResult(continue_processing=True)
