"""Plugins the Go and Python test suites share (configured by `kind`)."""

from __future__ import annotations

import asyncio
from typing import Any

from cpex import Plugin, PluginContext, allow, deny, hook, modify


class Allow(Plugin):
    def tool_pre_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        return allow(metadata={"seen_by": self.config.get("tag", "allow")})

    def tool_post_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        return None


class DenyWhenBlocked(Plugin):
    """Denies when the payload has block: true."""

    def tool_pre_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        if payload.get("block"):
            return deny("blocked", "the payload asked to be blocked", details={"tool": payload.get("tool_name")})
        return allow()


class Trace(Plugin):
    """Appends its configured tag to payload["trace"], to observe ordering."""

    def tool_pre_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        return modify({**payload, "trace": [*payload.get("trace", []), self.config["tag"]]})


class Raises(Plugin):
    def tool_pre_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        raise RuntimeError("kaboom")


class Garbage(Plugin):
    def tool_pre_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        return 42


class Unencodable(Plugin):
    """Returns a payload MessagePack cannot carry."""

    def tool_pre_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        return modify({"value": object()})


class Counter(Plugin):
    """Counts the hooks it saw for one request in its local state."""

    def tool_pre_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        ctx.state["calls"] = ctx.state.get("calls", 0) + 1
        return allow()

    def tool_post_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        ctx.state["calls"] = ctx.state.get("calls", 0) + 1
        return allow(metadata={"calls": ctx.state["calls"]})


class AsyncDeny(Plugin):
    async def tool_pre_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        await asyncio.sleep(0)
        return deny("async_no", "denied from a coroutine")


class AsyncSleeper(Plugin):
    async def tool_pre_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        await asyncio.sleep(float(self.config.get("seconds", 5)))
        return allow()


class Custom(Plugin):
    @hook("my.custom-hook")
    def custom(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        return modify({**payload, "custom": True})


class BrokenInit(Allow):
    def initialize(self) -> None:
        raise ValueError("no database")
