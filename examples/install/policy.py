"""The install check's plugin: denies one tool, and tells which Python runs it."""

from __future__ import annotations

import sys
from typing import Any

from cpexrt import Plugin, PluginContext, allow, deny


class ToolPolicy(Plugin):
    def tool_pre_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        tool = payload.get("tool_name")
        if tool in self.config.get("forbidden", []):
            return deny("tool_forbidden", f"tool {tool!r} is forbidden")
        # The environment the plugin runs in: the venv cpexrt is installed in.
        return allow(metadata={"python_prefix": sys.prefix})
