"""A py-cpex plugin for the gateway's tests: denies the tools its config names, asking
the gateway to answer with an MCP (JSON-RPC) error code, and names the request's user
(from the global context the gateway passes) in the violation."""

from cpex.framework import Plugin, PluginContext, PluginResult, PluginViolation, ToolPreInvokePayload


class ToolBlocklist(Plugin):
    async def tool_pre_invoke(self, payload: ToolPreInvokePayload, context: PluginContext) -> PluginResult:
        settings = self.config.config or {}
        if payload.name not in settings.get("blocked", []):
            return PluginResult()
        return PluginResult(
            continue_processing=False,
            violation=PluginViolation(
                code="TOOL_BLOCKED",
                reason="tool blocked",
                description=f"{payload.name} is on the blocklist (user {context.global_context.user})",
                mcp_error_code=settings.get("mcp_error_code"),
            ),
        )
