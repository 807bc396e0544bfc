"""Plugins the Go and Python test suites share (configured by `kind`)."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from cpex import Plugin, PluginContext, allow, deny, hook, modify
from cpex._generated.records import ContentPart, Message
from cpex.cmf import MessageView


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


class Spinner(Plugin):
    """A sync handler that never returns, spinning in Python code."""

    def tool_pre_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        while True:
            pass


class AsyncVerdict(Plugin):
    """Async: sleeps config.seconds, then denies when config.deny is true, else allows
    with metadata {config.tag: true}."""

    async def tool_pre_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        await asyncio.sleep(float(self.config.get("seconds", 0)))
        if self.config.get("deny"):
            return deny("async_verdict", f"denied by {self.config.get('tag')}")
        return allow(metadata={str(self.config.get("tag")): True})


class ExtensionWriter(Plugin):
    """Adds custom.<tag> = true to the extensions."""

    def tool_pre_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        custom = {**ctx.extensions.get("custom", {}), str(self.config["tag"]): True}
        return modify(extensions={**ctx.extensions, "custom": custom})


class TagEcho(Plugin):
    """Reports the entity tags it saw, under metadata[config.tag]."""

    def tool_pre_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        meta = ctx.extensions.get("meta") or {}
        return allow(metadata={str(self.config["tag"]): list(meta.get("tags", []))})


class GlobalCounter(Plugin):
    """Counts invokes in the manager-wide global state."""

    def tool_pre_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        ctx.global_state["count"] = ctx.global_state.get("count", 0) + 1
        return allow(metadata={"global_count": ctx.global_state["count"]})


class Recorder(Plugin):
    """Fire-and-forget: records the payload it saw in the global state, after
    config.seconds; raises when the payload says fail."""

    async def tool_pre_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        await asyncio.sleep(float(self.config.get("seconds", 0)))
        if payload.get("fail"):
            raise ValueError("recorder told to fail")
        ctx.global_state.setdefault("recorded", []).append(payload.get("id"))
        return None


class SyncRecorder(Plugin):
    """Fire-and-forget, sync: records payload ids in the global state."""

    def tool_pre_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        ctx.global_state.setdefault("sync_recorded", []).append(payload.get("id"))
        return None


class AsyncLifecycle(Allow):
    """Async initialize / shutdown."""

    async def initialize(self) -> None:
        await asyncio.sleep(0.01)
        self.ready = True

    async def shutdown(self) -> None:
        await asyncio.sleep(0)


class Rendezvous(Plugin):
    """Concurrent-phase probe: role wait waits for role set, which only happens when
    both run together."""

    async def tool_pre_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        event = ctx.global_state.setdefault("rendezvous", asyncio.Event())
        if self.config["role"] == "set":
            await asyncio.sleep(0.01)
            event.set()
            return allow(metadata={"setter": "set"})
        try:
            await asyncio.wait_for(event.wait(), 2)
        except asyncio.TimeoutError:
            return deny("alone", "the setter never ran alongside")
        return allow(metadata={"waiter": "met"})


class ExtensionProbe(Plugin):
    """Reports the extensions it was given, under metadata[config.tag or "seen"]."""

    def tool_pre_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        return allow(metadata={str(self.config.get("tag", "seen")): ctx.extensions})


def _walk_set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
    if value == "__remove__":
        tree.pop(last, None)
    else:
        tree[last] = value


class ExtensionEditor(Plugin):
    """Proposes its view of the extensions with config.set {dotted.path: value} applied
    ("__remove__" deletes); with config.in_place it edits its view in place and
    returns nothing."""

    def tool_pre_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        target = ctx.extensions if self.config.get("in_place") else copy.deepcopy(ctx.extensions)
        for dotted, value in self.config.get("set", {}).items():
            _walk_set(target, dotted, value)
        return None if self.config.get("in_place") else modify(extensions=target)


class CmfToolPolicy(Plugin):
    """Denies a CMF message that calls a tool in config.forbidden."""

    def cmf_tool_pre_invoke(self, message: Message, ctx: PluginContext) -> Any:
        view = MessageView(message)
        for call in view.tool_calls():
            if call.name in self.config.get("forbidden", []):
                return deny("forbidden_tool", f"tool {call.name!r} is forbidden", details={"tool_call_id": call.tool_call_id})
        return allow(metadata={"tool_calls": [c.name for c in view.tool_calls()], "text": view.text()})


class CmfAppendText(Plugin):
    """Appends a text part to the CMF message."""

    def cmf_tool_pre_invoke(self, message: Message, ctx: PluginContext) -> Any:
        extra = ContentPart.new_text(str(self.config.get("text", "appended")))
        return modify(message.model_copy(update={"content": [*message.content, extra]}))


class SignalGrabber(Allow):
    """Tries to take SIGTERM from the host when initialized."""

    def initialize(self) -> None:
        import signal

        signal.signal(signal.SIGTERM, lambda *_: None)
