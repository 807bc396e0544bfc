"""The demo's plugins: written in Python, driven by a Go host through libcpex.so."""

from __future__ import annotations

from typing import Any

from cpex import Plugin, PluginContext, allow, deny


class IdentityChecker(Plugin):
    """Denies a tool call that carries no user."""

    def tool_pre_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        user = payload.get("user")
        if not user:
            return deny(
                "missing_identity",
                "tool calls need an authenticated user",
                description=f"tool {payload.get('tool_name')!r} was called anonymously",
            )
        return allow(metadata={"checked_user": user})
