"""The demos' plugins, written in Python and driven by Go and Python hosts alike."""

from __future__ import annotations

from typing import Any

from cpexrt import Plugin, PluginContext, allow, deny, modify
from cpexrt._generated.records import Message
from cpexrt.cmf import MessageView


class IdentityChecker(Plugin):
    """Denies a tool call that carries no user. Remembers the user in its per-request
    state, so the post-invoke hook of the same request can check it came through the
    pre-invoke one."""

    def tool_pre_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        user = payload.get("user")
        if not user:
            return deny("missing_identity", "tool calls need an authenticated user")
        ctx.state["user"] = user
        return allow()

    def tool_post_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        if ctx.state.get("user") != payload.get("user"):
            return deny("identity_mismatch", "the result is for another user than the call")
        return allow()


class PIIGuard(Plugin):
    """Runs for entities tagged pii (policy group `pii`): denies unless the payload
    carries PII clearance."""

    def tool_pre_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        if payload.get("pii_clearance") is not True:
            tags = (ctx.extensions.get("meta") or {}).get("tags", [])
            return deny("pii_clearance_required", "PII access requires clearance", details={"tags": tags})
        return allow()


class AuditLogger(Plugin):
    """Fire-and-forget: appends one line per call to the file config.path (when set)."""

    def tool_pre_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        path = self.config.get("path")
        if path:
            with open(path, "a", encoding="utf-8") as log:
                log.write(f"{payload.get('tool_name')} by {payload.get('user') or '-'}\n")
        return None


class ToolPolicy(Plugin):
    """Denies a CMF message that calls a forbidden tool."""

    def cmf_tool_pre_invoke(self, message: Message, ctx: PluginContext) -> Any:
        for call in MessageView(message).tool_calls():
            if call.name in self.config.get("forbidden", []):
                return deny("forbidden_tool", f"tool {call.name} is not allowed", details={"tool": call.name})
        return allow()


class HeaderInjector(Plugin):
    """Adds response headers <config.prefix>-tool (the tools called) and
    <config.prefix>-processed: a write the engine accepts only from a plugin holding
    write_headers."""

    def cmf_tool_pre_invoke(self, message: Message, ctx: PluginContext) -> Any:
        prefix = self.config.get("prefix", "x-cpex")
        tools = [call.name for call in MessageView(message).tool_calls()]
        http = dict(ctx.extensions.get("http") or {})
        added = {f"{prefix}-processed": "true", f"{prefix}-tool": ",".join(tools)}
        http["response_headers"] = {**http.get("response_headers", {}), **added}
        return modify(extensions={**ctx.extensions, "http": http})
