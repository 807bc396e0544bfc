"""An example plugin: only allow-listed tools may run, and secrets never leave a tool."""

from __future__ import annotations

from typing import Any

from cpexrt import Plugin, PluginContext, allow, deny, hook, modify


class ToolAllowlist(Plugin):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.allowed = set(config.get("allowed", []))

    # Handles the built-in hook of the same name; sync handlers run inline.
    def tool_pre_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        tool = payload.get("tool_name")
        if tool not in self.allowed:
            return deny("tool_not_allowed", f"tool {tool!r} is not on the allow-list", details={"tool": tool})
        ctx.state["tool"] = tool  # visible again in tool_post_invoke of the same request
        return allow(metadata={"allowlist": "passed"})

    # Async handlers work the same way.
    async def tool_post_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        result = payload.get("result", {})
        if "secret" in result:
            return modify({**payload, "result": {**result, "secret": "***"}})
        return None

    # Any other hook name binds through the decorator.
    @hook("gateway.health")
    def health(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        return allow(metadata={"allowlist_size": len(self.allowed)})
