"""Two plugins that do nothing, one written for cpex and one for py-cpex: the
difference of their invokes is the py-cpex adapter's own cost (bench/run.py)."""

from __future__ import annotations

from typing import Any

from cpex.framework import Plugin as PyCpexPlugin
from cpex.framework import PluginContext as PyCpexContext
from cpex.framework import ToolPreInvokePayload, ToolPreInvokeResult

from cpexrt import Plugin, PluginContext


class NativeNoop(Plugin):
    def tool_pre_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        return None


class PyCpexNoop(PyCpexPlugin):  # type: ignore[misc]
    async def tool_pre_invoke(self, payload: ToolPreInvokePayload, context: PyCpexContext) -> ToolPreInvokeResult:
        return ToolPreInvokeResult()
