"""Runs the plugins of one hook over a payload, phase by phase, with each phase's
authority, and turns plugin failures into records or a failed call per on_error."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from cpex._generated.records import PluginError, PluginViolation
from cpex.engine.config import Mode, OnError, PluginSpec
from cpex.engine.runtime_loop import RUNTIME_LOOP
from cpex.errors import ConfigError, PipelineError, PipelineTimeoutError
from cpex.plugin import Plugin, PluginContext
from cpex.results import PluginResult

# Phases in execution order, with whether a plugin of the phase may deny / modify.
PHASES: tuple[tuple[Mode, bool, bool], ...] = (
    (Mode.SEQUENTIAL, True, True),
    (Mode.TRANSFORM, False, True),
    (Mode.AUDIT, False, False),
)
SUPPORTED_MODES = frozenset({Mode.SEQUENTIAL, Mode.TRANSFORM, Mode.AUDIT, Mode.DISABLED})


@dataclass
class LoadedPlugin:
    spec: PluginSpec
    index: int
    instance: Plugin
    handlers: dict[str, Callable[[Any, PluginContext], Any]]
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
    states: dict[str, dict[str, Any]] = field(default_factory=dict)


class _PluginFailure(Exception):
    def __init__(self, plugin: LoadedPlugin, message: str, timeout: bool = False) -> None:
        super().__init__(message)
        self.plugin = plugin
        self.timeout = timeout


def check_supported(spec: PluginSpec, where: str) -> None:
    if spec.mode not in SUPPORTED_MODES:
        raise ConfigError(f"{where}.mode: mode {spec.mode.value!r} is not supported by this engine yet")


def run_pipeline(
    plugins: list[LoadedPlugin],
    hook: str,
    payload: Any,
    extensions: dict[str, Any],
    states: dict[str, dict[str, Any]],
    global_state: dict[str, Any],
    timeout: float,
) -> PipelineOutcome:
    outcome = PipelineOutcome(states=states)
    current = payload
    for mode, may_deny, may_modify in PHASES:
        phase = sorted((p for p in plugins if p.spec.mode is mode and p.active), key=lambda p: (p.spec.priority, p.index))
        for plugin in phase:
            ctx = PluginContext(extensions=extensions, state=states.setdefault(plugin.name, {}), global_state=global_state)
            try:
                result = _call(plugin, hook, current, ctx, timeout)
                if result.metadata:
                    outcome.metadata.update(result.metadata)
                if not result.continue_processing:
                    if not may_deny:
                        raise _PluginFailure(plugin, f"plugin {plugin.name!r} ({mode.value}) may not deny; the deny was refused")
                    violation = result.violation or PluginViolation(code="denied", reason="denied by plugin")
                    outcome.violation = violation.model_copy(update={"plugin_name": plugin.name})
                    outcome.continue_processing = False
                    return outcome
                if result.modified_payload is not None:
                    if not may_modify:
                        raise _PluginFailure(plugin, f"plugin {plugin.name!r} ({mode.value}) may not modify the payload; the change was refused")
                    current = result.modified_payload
                    outcome.modified_payload = current
            except _PluginFailure as failure:
                _handle_failure(plugin, hook, failure, outcome)
    return outcome


def _handle_failure(plugin: LoadedPlugin, hook: str, failure: _PluginFailure, outcome: PipelineOutcome) -> None:
    if plugin.spec.on_error is OnError.FAIL:
        cls = PipelineTimeoutError if failure.timeout else PipelineError
        raise cls(f"hook {hook!r}: {failure}")
    outcome.errors.append(
        PluginError(plugin_name=plugin.name, message=str(failure), code="plugin_timeout" if failure.timeout else "plugin_error")
    )
    if plugin.spec.on_error is OnError.DISABLE:
        plugin.disabled = True


def _call(plugin: LoadedPlugin, hook: str, payload: Any, ctx: PluginContext, timeout: float) -> PluginResult:
    handler = plugin.handlers[hook]
    try:
        result = handler(payload, ctx)
        if inspect.isawaitable(result):
            result = RUNTIME_LOOP.run(result, timeout)
    except TimeoutError:
        raise _PluginFailure(plugin, f"plugin {plugin.name!r} timed out after {timeout:g}s", timeout=True) from None
    except Exception as exc:  # noqa: BLE001 - a plugin's exception is contained
        raise _PluginFailure(plugin, f"plugin {plugin.name!r} raised {type(exc).__name__}: {exc}") from None
    if result is None:
        return PluginResult()
    if not isinstance(result, PluginResult):
        raise _PluginFailure(plugin, f"plugin {plugin.name!r} returned {type(result).__name__}; expected a PluginResult (allow / deny / modify) or None")
    return result
