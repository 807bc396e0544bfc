"""Runs the plugins of one hook over a payload: the five phases in order, each with
its authority, plugin failures turned into records or a failed call per on_error."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from cpex._generated.records import PluginError, PluginViolation
from cpex.engine import driver, gating, payloads
from cpex.engine.background import RUNNER, BackgroundTasks, start_inline
from cpex.engine.config import Mode, OnError, PluginSpec
from cpex.engine.gating import Grant
from cpex.errors import PipelineError, PipelineTimeoutError
from cpex.plugin import Plugin, PluginContext
from cpex.results import PluginResult


@dataclass(frozen=True)
class Authority:
    may_deny: bool
    may_modify: bool


# The phases run in this order; fire_and_forget runs after the pipeline.
PHASES: tuple[tuple[Mode, Authority], ...] = (
    (Mode.SEQUENTIAL, Authority(may_deny=True, may_modify=True)),
    (Mode.TRANSFORM, Authority(may_deny=False, may_modify=True)),
    (Mode.AUDIT, Authority(may_deny=False, may_modify=False)),
    (Mode.CONCURRENT, Authority(may_deny=True, may_modify=False)),
)
FIRE_AND_FORGET = Authority(may_deny=False, may_modify=False)


@dataclass
class LoadedPlugin:
    spec: PluginSpec
    index: int
    instance: Plugin
    handlers: dict[str, Callable[[Any, PluginContext], Any]]
    timeout: float
    grant: Grant
    disabled: bool = False

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def active(self) -> bool:
        return not self.disabled and self.spec.mode is not Mode.DISABLED


@dataclass
class PipelineOutcome:
    """The engine's result of one invoke, as Python objects."""

    continue_processing: bool = True
    violation: PluginViolation | None = None
    errors: list[PluginError] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    modified_payload: Any = None
    modified_extensions: dict[str, Any] | None = None
    states: dict[str, dict[str, Any]] = field(default_factory=dict)
    background: BackgroundTasks | None = None


@dataclass
class Invocation:
    hook: str
    payload_type: int
    payload: Any
    extensions: dict[str, Any]
    states: dict[str, dict[str, Any]]
    global_state: dict[str, Any]
    deadline: float
    invoke_timeout: float


class _Refused(Exception):
    """A plugin overstepped its phase's authority or returned garbage."""


def plan_order(plugins: list[LoadedPlugin]) -> list[LoadedPlugin]:
    """The execution order of a hook's plugins, computed once at load: by phase, then
    priority, then config order. Disabled-mode plugins are left out."""
    rank = {mode: i for i, (mode, _) in enumerate(PHASES)}
    rank[Mode.FIRE_AND_FORGET] = len(PHASES)
    runnable = [p for p in plugins if p.spec.mode in rank]
    return sorted(runnable, key=lambda p: (rank[p.spec.mode], p.spec.priority, p.index))


_AUTHORITY = dict(PHASES)


def run_pipeline(plan: list[LoadedPlugin], inv: Invocation) -> PipelineOutcome:
    """Runs plan (in plan_order) over the invocation."""
    out = PipelineOutcome(states=inv.states)
    followers: list[LoadedPlugin] = []
    concurrent: list[LoadedPlugin] = []
    for plugin in plan:
        if not plugin.active:
            continue
        mode = plugin.spec.mode
        if mode is Mode.CONCURRENT:
            concurrent.append(plugin)
            continue
        if mode is Mode.FIRE_AND_FORGET:
            followers.append(plugin)
            continue
        if not out.continue_processing:
            continue
        args = _args(plugin, inv)
        try:
            value = driver.call(plugin.handlers[inv.hook], args, _deadline(plugin, inv))
        except driver.HandlerTimeout:
            _timed_out(plugin, inv, out)
            continue
        except Exception as exc:  # noqa: BLE001 - a plugin's exception is contained
            _failed(plugin, inv, out, f"raised {type(exc).__name__}: {exc}")
            continue
        _apply(plugin, inv, _AUTHORITY[mode], value, out, args[1].extensions)
    if concurrent and out.continue_processing:
        _run_concurrent(concurrent, inv, _AUTHORITY[Mode.CONCURRENT], out)
    if followers:
        out.background = _fire_and_forget(followers, inv, out)
    return out


def _args(plugin: LoadedPlugin, inv: Invocation) -> tuple[Any, PluginContext]:
    """The handler's arguments: the payload and a context holding the plugin's own,
    capability-filtered copy of the extensions."""
    view = gating.view_for(inv.extensions, plugin.grant)
    ctx = PluginContext(extensions=view, state=inv.states.setdefault(plugin.name, {}), global_state=inv.global_state)
    return inv.payload, ctx


def _deadline(plugin: LoadedPlugin, inv: Invocation) -> float:
    return min(time.monotonic() + plugin.timeout, inv.deadline)


def _apply(
    plugin: LoadedPlugin, inv: Invocation, authority: Authority, value: Any, out: PipelineOutcome, view: dict[str, Any]
) -> None:
    """Takes a handler's return value into the outcome, within the phase's authority
    and (for extensions) the plugin's capabilities."""
    try:
        result = _as_result(plugin, value)
        mode = plugin.spec.mode.value
        if not result.continue_processing and not authority.may_deny:
            raise _Refused(f"a {mode} plugin may not deny; its deny was refused")
        modifies = result.modified_payload is not None or result.modified_extensions is not None
        if modifies and not authority.may_modify:
            raise _Refused(f"a {mode} plugin may not modify the payload or extensions; the change was refused")
        proposed = gating.as_wire(result.modified_extensions)
        if proposed is not None and not isinstance(proposed, dict):
            raise _Refused(f"modified extensions must be a map or Extensions, got {type(proposed).__name__}")
    except _Refused as refused:
        _failed(plugin, inv, out, str(refused))
        return
    if result.metadata:
        out.metadata.update(result.metadata)
    if not result.continue_processing:
        violation = result.violation or PluginViolation(code="denied", reason=f"denied by plugin {plugin.name!r}")
        out.violation = violation.model_copy(update={"plugin_name": plugin.name})
        out.continue_processing = False
        return
    if result.modified_payload is not None:
        try:
            inv.payload = out.modified_payload = payloads.accept(inv.payload_type, result.modified_payload)
        except ValueError as exc:
            _failed(plugin, inv, out, f"returned an invalid modified payload: {exc}")
            return
    if proposed is not None:
        merged, refusals = gating.accept(inv.extensions, view, proposed, plugin.grant)
        for r in refusals:
            out.errors.append(
                PluginError(
                    plugin_name=plugin.name,
                    code="extension_write_refused",
                    message=f"plugin {plugin.name!r} may not write {r.field}: {r.why}",
                    details={"field": r.field},
                )
            )
        if merged != inv.extensions:
            inv.extensions = out.modified_extensions = merged


def _as_result(plugin: LoadedPlugin, value: Any) -> PluginResult:
    if value is None:
        return PluginResult()
    if not isinstance(value, PluginResult):
        raise _Refused(f"returned {type(value).__name__}; expected a PluginResult (allow / deny / modify) or None")
    return value


def _timed_out(plugin: LoadedPlugin, inv: Invocation, out: PipelineOutcome) -> None:
    if time.monotonic() >= inv.deadline:
        raise PipelineTimeoutError(
            f"hook {inv.hook!r}: the invoke ran past its limit of {inv.invoke_timeout:g}s (plugin_settings.invoke_timeout) "
            f"in plugin {plugin.name!r}"
        )
    _failed(plugin, inv, out, f"timed out after {plugin.timeout:g}s", timeout=True)


def _failed(plugin: LoadedPlugin, inv: Invocation, out: PipelineOutcome, why: str, timeout: bool = False) -> None:
    """on_error: fail raises (naming the plugin), ignore records, disable records and
    switches the plugin off for the rest of the manager's life."""
    message = f"plugin {plugin.name!r} {why}"
    if plugin.spec.on_error is OnError.FAIL:
        raise (PipelineTimeoutError if timeout else PipelineError)(f"hook {inv.hook!r}: {message}")
    out.errors.append(PluginError(plugin_name=plugin.name, message=message, code="plugin_timeout" if timeout else "plugin_error"))
    if plugin.spec.on_error is OnError.DISABLE:
        plugin.disabled = True


def _run_concurrent(phase: list[LoadedPlugin], inv: Invocation, authority: Authority, out: PipelineOutcome) -> None:
    """The plugins run together: each is started inline, those that suspend finish
    together on the caller's loop. The first deny halts the rest."""
    suspended: list[driver.Suspended] = []
    views: dict[str, dict[str, Any]] = {}

    def settle(plugin: LoadedPlugin, ok: bool, value: Any) -> bool:
        if not ok:
            if isinstance(value, driver.HandlerTimeout):
                _timed_out(plugin, inv, out)
            else:
                _failed(plugin, inv, out, f"raised {type(value).__name__}: {value}")
            return False
        _apply(plugin, inv, authority, value, out, views[plugin.name])
        return not out.continue_processing

    try:
        for plugin in phase:
            deadline = _deadline(plugin, inv)
            args = _args(plugin, inv)
            views[plugin.name] = args[1].extensions
            try:
                done, value, coro = driver.begin(plugin.handlers[inv.hook], args, deadline)
            except driver.HandlerTimeout:
                _timed_out(plugin, inv, out)
                continue
            except Exception as exc:  # noqa: BLE001 - contained
                _failed(plugin, inv, out, f"raised {type(exc).__name__}: {exc}")
                continue
            if not done:
                suspended.append(driver.Suspended(plugin, coro, value, deadline))
            elif settle(plugin, True, value):
                break
        else:
            if suspended:
                driver.finish_all(suspended, settle)
            return
    except BaseException:
        for s in suspended:
            s.coro.close()
        raise
    for s in suspended:  # halted by a deny before they finished
        s.coro.close()


def _fire_and_forget(followers: list[LoadedPlugin], inv: Invocation, out: PipelineOutcome) -> BackgroundTasks:
    """Queues the fire-and-forget plugins for the runtime loop with the pipeline's final
    payload and extensions; their failures come back through the handle."""
    tasks = BackgroundTasks([p.name for p in followers], len(followers))
    RUNNER.submit(tasks, [_Follower(p, inv.hook, inv.payload, inv.extensions, inv.global_state) for p in followers])
    return tasks


class _Follower:
    """One fire-and-forget plugin's run, called on the runtime loop: returns its
    PluginError (or None), or a coroutine finishing a handler that suspended."""

    __slots__ = ("plugin", "hook", "payload", "extensions", "global_state")

    def __init__(self, plugin: LoadedPlugin, hook: str, payload: Any, extensions: dict[str, Any], global_state: dict[str, Any]) -> None:
        self.plugin, self.hook, self.payload = plugin, hook, payload
        self.extensions, self.global_state = extensions, global_state

    def __call__(self) -> Any:
        plugin = self.plugin
        ctx = PluginContext(extensions=gating.view_for(self.extensions, plugin.grant), state={}, global_state=self.global_state)
        try:
            done, value = start_inline(plugin.handlers[self.hook], (self.payload, ctx), plugin.timeout)
        except Exception as exc:  # noqa: BLE001 - contained
            return self.settle(exc)
        return self.settle(value) if done else self.rest(value)

    async def rest(self, awaitable: Any) -> PluginError | None:
        try:
            return self.settle(await awaitable)
        except Exception as exc:  # noqa: BLE001 - contained
            return self.settle(exc)

    def settle(self, value: Any) -> PluginError | None:
        plugin = self.plugin
        if isinstance(value, BaseException):
            if isinstance(value, (asyncio.TimeoutError, driver.HandlerTimeout)):
                return self.failed(f"timed out after {plugin.timeout:g}s", "plugin_timeout")
            return self.failed(f"raised {type(value).__name__}: {value}", "plugin_error")
        try:
            result = _as_result(plugin, value)
        except _Refused as refused:
            return self.failed(str(refused), "plugin_error")
        if not result.continue_processing or result.modified_payload is not None or result.modified_extensions is not None:
            return self.failed("may neither deny nor modify (fire_and_forget); its result was refused", "plugin_error")
        return None

    def failed(self, message: str, code: str) -> PluginError:
        plugin = self.plugin
        if plugin.spec.on_error is OnError.DISABLE:
            plugin.disabled = True
        return PluginError(plugin_name=plugin.name, message=f"plugin {plugin.name!r} {message}", code=code)
