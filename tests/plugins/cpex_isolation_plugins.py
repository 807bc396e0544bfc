"""Plugins for the isolation tests (isolation: process / thread): each misbehaves in
one way a worker process must survive, or reports what it sees."""

from __future__ import annotations

import ctypes
import importlib
import os
import time
from typing import Any

from cpexrt import Plugin, PluginContext, allow, deny, modify


class NoOp(Plugin):
    def tool_pre_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        return None


class WhereAmI(Plugin):
    """Reports the process it runs in, the extensions and environment it was given."""

    def tool_pre_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        ctx.state["calls"] = ctx.state.get("calls", 0) + 1
        return allow(
            {
                "pid": os.getpid(),
                "extensions": ctx.extensions,
                "env": sorted(k for k in os.environ if not k.startswith("LC_")),
                "calls": ctx.state["calls"],
                "request": (ctx.request or {}).get("request_id"),
            }
        )


class Sleeper(Plugin):
    """Blocks in C (time.sleep releases the GIL, and no bytecode runs) for the
    payload's `sleep` seconds, in a sync handler."""

    def tool_pre_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        time.sleep(float(payload.get("sleep", 0)))
        return allow({"slept": payload.get("sleep", 0), "pid": os.getpid()})


class Crasher(Plugin):
    """payload `how`: exit (os._exit(3)), segv (a NULL read through ctypes), hog
    (allocates until the memory limit), raise, or nothing (allows)."""

    def tool_pre_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        how = payload.get("how")
        if how == "exit":
            os._exit(3)
        if how == "segv":
            ctypes.string_at(0)
        if how == "hog":
            hoard = []
            while True:
                hoard.append(bytearray(64 * 1024 * 1024))
        if how == "raise":
            raise ValueError("asked to raise")
        return allow({"pid": os.getpid()})


class Editor(Plugin):
    """Modifies the payload, writes an extension, denies when asked."""

    def tool_pre_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        if payload.get("deny"):
            return deny("no", "asked to deny", details={"pid": os.getpid()})
        if payload.get("garbage"):
            return "not a result"
        return modify({**payload, "edited": True})


class SixVersion(Plugin):
    """Reports the version of `six` its environment holds."""

    def tool_pre_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        six = importlib.import_module("six")  # installed into the plugin's own virtualenv only
        return allow({self.config.get("key", "six"): six.__version__})


class CmfReader(Plugin):
    """Reports the CMF message its worker decoded: its role and tool calls."""

    def cmf_tool_pre_invoke(self, message: Any, ctx: PluginContext) -> Any:
        from cpexrt.cmf import MessageView

        calls = [call.name for call in MessageView(message).tool_calls()]
        return allow({"pid": os.getpid(), "role": message.role, "tools": calls, "type": type(message).__name__})
