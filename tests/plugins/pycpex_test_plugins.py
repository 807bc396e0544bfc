"""Plugins written for py-cpex (cpex.framework), as its users write them: the suites
run them through cpexrt.engine.pycpex and compare with py-cpex's own PluginManager."""

from __future__ import annotations

import asyncio
from typing import Any

from cpex.framework import (
    Plugin,
    PluginConfig,
    PluginContext,
    PluginViolation,
    ToolPostInvokePayload,
    ToolPostInvokeResult,
    ToolPreInvokePayload,
    ToolPreInvokeResult,
    hook,
)


class StateKeeper(Plugin):
    """Keeps the user in its per-request state and the request's global state in
    tool_pre_invoke; tool_post_invoke reports both, and the global context it saw."""

    async def tool_pre_invoke(self, payload: ToolPreInvokePayload, context: PluginContext) -> ToolPreInvokeResult:
        gc = context.global_context
        context.state["seen_user"] = gc.user
        gc.state["pre_ran"] = self.name
        return ToolPreInvokeResult(metadata={"request_id": gc.request_id, "tenant_id": gc.tenant_id, "server_id": gc.server_id})

    async def tool_post_invoke(self, payload: ToolPostInvokePayload, context: PluginContext) -> ToolPostInvokeResult:
        return ToolPostInvokeResult(
            metadata={"seen_user": context.state.get("seen_user"), "pre_ran": context.global_context.state.get("pre_ran")}
        )


class Verdict(Plugin):
    """Denies when args.block is set (violation with http status and headers, a retry
    delay), rewrites args.rewrite into the payload, raises on args.explode, sleeps
    args.sleep seconds, returns an unencodable payload on args.garbage."""

    def __init__(self, config: PluginConfig) -> None:
        super().__init__(config)
        self.code = (config.config or {}).get("code", "BLOCKED")

    async def tool_pre_invoke(
        self, payload: ToolPreInvokePayload, context: PluginContext, extensions: Any = None
    ) -> ToolPreInvokeResult:
        args = dict(payload.args or {})
        if args.get("sleep"):
            await asyncio.sleep(float(args["sleep"]))
        if args.get("explode"):
            raise RuntimeError("exploded on purpose")
        if args.get("garbage"):
            return ToolPreInvokeResult(modified_payload=payload.model_copy(update={"args": {"bad": {1, 2}}}))
        if args.get("block"):
            violation = PluginViolation(
                reason="blocked by policy",
                description="the call asked to be blocked",
                code=self.code,
                details={"tool": payload.name, "count": 3},
                http_status_code=429,
                http_headers={"Retry-After": "2"},
            )
            return ToolPreInvokeResult(continue_processing=False, violation=violation, retry_delay_ms=2000)
        if "rewrite" in args:
            args["rewritten"] = True
            return ToolPreInvokeResult(
                modified_payload=payload.model_copy(update={"args": args}), http_headers={"X-Rewritten": "yes"}, retry_delay_ms=5
            )
        return ToolPreInvokeResult(metadata={"extensions_seen": extensions is not None})


class NotAPlugin:
    """A class that is no py-cpex Plugin."""


class RejectsConfig(Plugin):
    def __init__(self, config: PluginConfig) -> None:
        super().__init__(config)
        if (config.config or {}).get("threshold", 0) < 0:
            raise ValueError("threshold must be >= 0")

    async def tool_pre_invoke(self, payload: ToolPreInvokePayload, context: PluginContext) -> ToolPreInvokeResult:
        return ToolPreInvokeResult()


class CmfWatcher(Plugin):
    """A CMF plugin: reports the message payload's hook and role, and appends a text
    part when the message asks for it."""

    @hook("cmf.tool_pre_invoke")
    async def on_tool_call(self, payload: Any, context: PluginContext) -> Any:
        from cpex.framework.hooks.message import MessageResult

        message = payload.message
        metadata = {
            "hook": str(getattr(payload.hook, "value", payload.hook)),
            "role": str(getattr(message.role, "value", message.role)),
        }
        texts = [part.text for part in message.content if getattr(part, "content_type", None) == "text"]
        if "append" in texts:
            extra = type(message.content[0])(content_type="text", text="appended by py-cpex")
            changed = message.model_copy(update={"content": [*message.content, extra]})
            return MessageResult(modified_payload=payload.model_copy(update={"message": changed}), metadata=metadata)
        return MessageResult(metadata=metadata)


class SeesDefaults(Plugin):
    """Reports what py-cpex's payload models made of what the host sent: the agent's
    messages (a required list) and the credential's source (a field with a default)."""

    async def agent_pre_invoke(self, payload: Any, context: PluginContext) -> Any:
        from cpex.framework.hooks.agents import AgentPreInvokeResult

        return AgentPreInvokeResult(metadata={"messages": list(payload.messages)})

    async def identity_resolve(self, payload: Any, context: PluginContext) -> Any:
        from cpex.framework.hooks.identity import IdentityResolveResult

        return IdentityResolveResult(metadata={"source": payload.source})


class Reshapes(Plugin):
    """Returns a modified payload whose args hold what is not plain data (a tuple, a
    pydantic model, a secret) when args.reshape is set; writes its state and the
    request's shared state, then raises, when args.fail_after_writing is set."""

    async def tool_pre_invoke(self, payload: ToolPreInvokePayload, context: PluginContext) -> ToolPreInvokeResult:
        from pydantic import BaseModel, SecretStr

        class Point(BaseModel):
            x: int
            y: int = 0

        args = payload.args or {}
        if args.get("fail_after_writing"):
            context.state["written"] = True
            context.global_context.state["written"] = True
            raise RuntimeError("failed after writing its state")
        if args.get("reshape"):
            reshaped = {"pair": (1, 2), "point": Point(x=3), "secret": SecretStr("s3cret"), "nested": [{"t": (4,)}]}
            return ToolPreInvokeResult(modified_payload=payload.model_copy(update={"args": reshaped}))
        return ToolPreInvokeResult(metadata={"state": dict(context.state), "request_state": dict(context.global_context.state)})
