"""Plugins the Go and Python test suites share (configured by `kind`)."""

from __future__ import annotations

import asyncio
import copy
import time
from typing import Any

from cpexrt import Plugin, PluginContext, allow, deny, hook, modify
from cpexrt._generated.records import ContentPart, Message
from cpexrt.cmf import MessageView
from cpexrt.results import PluginResult


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


class CountThenFail(Plugin):
    """Counts calls in its local state (nested, to catch shallow copies), then raises
    when the payload says fail: true; the post hook reports the count."""

    def tool_pre_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        counts = ctx.state.setdefault("counts", {"calls": 0})
        counts["calls"] += 1
        if payload.get("fail"):
            raise RuntimeError("asked to fail")
        return allow()

    def tool_post_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        return allow(metadata={"calls": ctx.state.get("counts", {}).get("calls", 0)})


class Adversary(Plugin):
    """Returns what config.returns names, to try the engine's checks of results:
    set / object / int_keys / tuple_ok (a modified payload), bad_extensions (a valid
    payload change with unencodable extensions), refused_write (a payload change with
    a write to the immutable meta slot), big (a payload of config.size bytes),
    metadata (unencodable metadata), deny_bad_details, not_bool (continue_processing
    is a string), violation_dict."""

    def tool_pre_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        kind = self.config["returns"]
        changed = {**payload, "changed_by": self.config.get("tag", "adversary")}
        if kind == "set":
            return modify({**changed, "bad": {1, 2}})
        if kind == "object":
            return modify({**changed, "bad": object()})
        if kind == "int_keys":
            return modify({**changed, "bad": {1: "one"}})
        if kind == "tuple_ok":
            return modify({**changed, "pair": (1, 2)})
        if kind == "bad_extensions":
            return modify(changed, extensions={**ctx.extensions, "custom": {"bad": object()}})
        if kind == "refused_write":
            meta = {**ctx.extensions.get("meta", {}), "entity_name": "forged"}
            return modify(changed, extensions={**ctx.extensions, "meta": meta})
        if kind == "big":
            return modify({**changed, "blob": "x" * int(self.config["size"])})
        if kind == "metadata":
            return allow(metadata={"bad": object()})
        if kind == "deny_bad_details":
            return deny("nope", "denied with details that cannot travel", details={"bad": {1, 2}})
        if kind == "not_bool":
            return PluginResult(continue_processing="no")  # type: ignore[arg-type]
        if kind == "violation_dict":
            return PluginResult(continue_processing=False, violation={"code": "as_dict", "reason": "a dict, not a record"})  # type: ignore[arg-type]
        raise ValueError(f"unknown returns {kind!r}")

    def cmf_tool_pre_invoke(self, message: Message, ctx: PluginContext) -> Any:
        kind = self.config["returns"]
        if kind == "cmf_dict":
            return modify({"message": {"role": 5}})
        if kind == "cmf_unvalidated":  # a model built without validation: anything goes in
            return modify(Message.model_construct(schema_version="2.0", role=5, content="not a list"))
        if kind == "cmf_wrong_type":
            return modify(["not", "a", "message"])
        raise ValueError(f"unknown returns {kind!r}")


class CustomBaseException(BaseException):
    """Neither an Exception nor one of Python's own BaseExceptions."""


_BASE_EXCEPTIONS: dict[str, type[BaseException]] = {
    "SystemExit": SystemExit,
    "KeyboardInterrupt": KeyboardInterrupt,
    "GeneratorExit": GeneratorExit,
    "CancelledError": asyncio.CancelledError,
    "CustomBaseException": CustomBaseException,
}


class RaisesBase(Plugin):
    """Raises the BaseException named by config.raise (sync, or with config.after_await
    from a coroutine after it really suspended)."""

    def tool_pre_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        error = _BASE_EXCEPTIONS[self.config["raise"]]
        if self.config.get("after_await"):
            return self._later(error)
        raise error("raised by a plugin")

    async def _later(self, error: type[BaseException]) -> Any:
        await asyncio.sleep(0.001)
        raise error("raised by a plugin after suspending")


class Vandal(Plugin):
    """Edits what it was given in place (payload user -> config.user, meta.entity_name,
    a CMF message's first text part) and returns nothing."""

    def tool_pre_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        payload["user"] = self.config.get("user", "mallory")
        payload.setdefault("nested", {})["flag"] = "set in place"
        meta = ctx.extensions.get("meta")
        if isinstance(meta, dict):
            meta["entity_name"] = "vandalised"
        ctx.extensions.setdefault("custom", {})["vandal"] = True
        return None

    def cmf_tool_pre_invoke(self, message: Message, ctx: PluginContext) -> Any:
        message.content[0].text = "vandalised"
        message.role = "system"
        return None


class UserGate(Plugin):
    """Denies unless payload.user is config.allowed; reports what it saw in metadata
    (payload user and nested, extensions meta.entity_name and custom)."""

    def tool_pre_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        seen = {
            "user": payload.get("user"),
            "nested": payload.get("nested"),
            "entity_name": (ctx.extensions.get("meta") or {}).get("entity_name"),
            "custom": ctx.extensions.get("custom"),
        }
        if self.config.get("record_global"):
            ctx.global_state.setdefault("seen", []).append(seen)
        if payload.get("user") != self.config.get("allowed", "alice"):
            return deny("wrong_user", f"user {payload.get('user')!r} is not allowed", details=seen)
        return allow(metadata={f"seen_by_{self.config.get('tag', 'gate')}": seen})

    def cmf_tool_pre_invoke(self, message: Message, ctx: PluginContext) -> Any:
        return allow(metadata={"role": message.role, "text": MessageView(message).text()})


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
        except TimeoutError:
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


class ExtensionRecorder(Plugin):
    """Fire-and-forget: records a copy of the extensions it was given in the global
    state (extensions_seen), then edits its own view in place."""

    def tool_pre_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        ctx.global_state.setdefault("extensions_seen", []).append(copy.deepcopy(ctx.extensions))
        ctx.extensions.setdefault("custom", {})["recorder"] = True
        return None


class FinalRecorder(Plugin):
    """Fire-and-forget: records the payload and the extensions it was given (final_seen
    in the global state), then edits both in place; for a CMF message, its text parts."""

    def tool_pre_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        ctx.global_state.setdefault("final_seen", []).append((copy.deepcopy(payload), copy.deepcopy(ctx.extensions)))
        payload["user"] = "edited in place"
        ctx.extensions.setdefault("custom", {})["final"] = True
        return None

    def cmf_tool_pre_invoke(self, message: Message, ctx: PluginContext) -> Any:
        texts = [part.text for part in message.content if part.content_type == "text"]
        ctx.global_state.setdefault("final_seen", []).append((texts, copy.deepcopy(ctx.extensions)))
        return None


class ExtensionEditor(Plugin):
    """Proposes its view of the extensions with config.set {dotted.path: value} applied
    ("__remove__" deletes); with config.in_place it edits its view in place and
    returns nothing."""

    def tool_pre_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        target = ctx.extensions if self.config.get("in_place") else copy.deepcopy(ctx.extensions)
        for dotted, value in self.config.get("set", {}).items():
            _walk_set(target, dotted, value)
        return None if self.config.get("in_place") else modify(extensions=target)


class ExtensionReturner(Plugin):
    """Edits its view of the extensions in place with config.set applied (as
    ExtensionEditor) and returns that very map: a proposal whose slots are the objects
    it was handed, changed or not."""

    def tool_pre_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        for dotted, value in self.config.get("set", {}).items():
            _walk_set(ctx.extensions, dotted, value)
        return modify(extensions=ctx.extensions)


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


class LifecycleLog(Allow):
    """Appends "<step> <config.tag>" lines to the file config.log when initialized and
    shut down. initialize (async) sleeps config.initialize_seconds, then raises when
    config.fail_initialize; shutdown raises when config.fail_shutdown."""

    async def initialize(self) -> None:
        self._record("initialize")
        await asyncio.sleep(float(self.config.get("initialize_seconds", 0)))
        if self.config.get("fail_initialize"):
            raise ValueError(f"{self.config['tag']} cannot start")

    def shutdown(self) -> None:
        self._record("shutdown")
        if self.config.get("fail_shutdown"):
            raise RuntimeError(f"{self.config['tag']} cannot stop")

    def _record(self, step: str) -> None:
        with open(self.config["log"], "a", encoding="utf-8") as log:
            log.write(f"{step} {self.config['tag']}\n")


async def _fail_later(seconds: float, what: str) -> None:
    await asyncio.sleep(seconds)
    raise RuntimeError(f"late failure of {what}")


class LateFailures(Plugin):
    """Async, misbehaving at its timeout, per config.how:
    - spawn: starts tasks of its own (create_task and an unawaited gather) that raise
      after config.child_seconds, then sleeps past its timeout;
    - replace: answers the cancellation by raising another exception;
    - stubborn: ignores the cancellation, keeps running, raises at last;
    - quick: allows after a short sleep (a well-behaved plugin)."""

    async def tool_pre_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        how = self.config.get("how", "quick")
        child = float(self.config.get("child_seconds", 0.05))
        if how == "spawn":
            asyncio.create_task(_fail_later(child, "a child task"))  # noqa: RUF006 - left dangling on purpose (the docstring)
            asyncio.gather(_fail_later(child, "a gathered task"), _fail_later(child * 2, "another gathered task"))
            await asyncio.sleep(30)
        elif how == "replace":
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                raise RuntimeError("raised instead of being cancelled") from None
        elif how == "stubborn":
            for _ in range(4):
                try:
                    await asyncio.sleep(child)
                except asyncio.CancelledError:
                    pass
            raise RuntimeError("stubborn plugin failed at last")
        else:
            await asyncio.sleep(0.001)
        return allow()


class PayloadKeys(Plugin):
    """Reports what a generic payload looked like when it reached the plugin: its keys
    (sorted) under metadata["payload_keys"] and the Python type name of each value, and
    of each value of its `args` map, under metadata["payload_types"] / ["arg_types"]."""

    def _report(self, payload: dict[str, Any]) -> Any:
        args = payload.get("args")
        return allow(
            metadata={
                "payload_keys": sorted(payload),
                "payload_types": {k: type(v).__name__ for k, v in payload.items()},
                "arg_types": {k: type(v).__name__ for k, v in args.items()} if isinstance(args, dict) else {},
            }
        )

    def tool_pre_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        return self._report(payload)

    def identity_resolve(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        return self._report(payload)

    def http_auth_check_permission(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        return self._report(payload)


class RequestEcho(Plugin):
    """Echoes the request's global context the host passed (PluginContext.request: the
    GlobalContext map, or None) under metadata["request"], and counts the hooks of the
    request it saw in its per-request state under metadata["calls"]."""

    def _echo(self, ctx: PluginContext) -> Any:
        ctx.state["calls"] = ctx.state.get("calls", 0) + 1
        return allow(metadata={"request": ctx.request, "calls": ctx.state["calls"]})

    def tool_pre_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        return self._echo(ctx)

    def tool_post_invoke(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        return self._echo(ctx)


class Stamp(Plugin):
    """Hot-reload probe: appends config.gen to payload["stamps"] on each of its hooks, so
    a result shows which plugin set served it (two Stamps in one pipeline stamp the
    same gen unless a call was mixed). Sleeps config.seconds first (time.sleep, so the
    GIL is free meanwhile). Counts the request's calls in its state and reports them as
    metadata["calls"]. With config.log, appends "<step> <gen>" lines to that file:
    initialize, shutdown, "entered" and "served" at the start and end of each call;
    initialize raises when config.fail_initialize. A call after its shutdown raises."""

    def initialize(self) -> None:
        self._record("initialize")
        if self.config.get("fail_initialize"):
            raise ValueError(f"gen {self.config['gen']} cannot start")

    def shutdown(self) -> None:
        self._record("shutdown")
        self.down = True

    def _record(self, step: str) -> None:
        if getattr(self, "down", False):
            raise RuntimeError(f"gen {self.config['gen']}: {step} after shutdown")
        if self.config.get("log"):
            with open(self.config["log"], "a", encoding="utf-8") as log:
                log.write(f"{step} {self.config['gen']}\n")

    @hook("tool_pre_invoke", "tool_post_invoke", "reload.a", "reload.b")
    def stamp(self, payload: dict[str, Any], ctx: PluginContext) -> Any:
        self._record("entered")
        seconds = float(self.config.get("seconds", 0))
        if seconds:
            time.sleep(seconds)
        ctx.state["calls"] = ctx.state.get("calls", 0) + 1
        self._record("served")
        return modify(
            {**payload, "stamps": [*(payload.get("stamps") or []), self.config["gen"]]}, metadata={"calls": ctx.state["calls"]}
        )
