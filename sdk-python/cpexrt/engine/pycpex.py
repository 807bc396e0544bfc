"""Runs plugins written for py-cpex, the Python CPEX framework (distribution `cpex`,
plugin API `cpex.framework`), under cpex's executor, through py-cpex's own classes.

py-cpex is imported only when a config names one of its plugins (cpex's package has
it as the optional extra `pycpex`). Each such plugin is constructed with its
`PluginConfig`, its hooks are found and checked by py-cpex's `HookRef`, each call gets
the hook's payload model (built by py-cpex's hook registry from the host's payload),
a `PluginContext` with the request's `GlobalContext` and the plugin's per-request
state, the capability-filtered `Extensions` when the hook takes them, and the
plugin's conditions are matched by py-cpex's `payload_matches`. What it returns is
converted into a cpexrt result, which cpex's executor then checks like any other:
phases, capabilities, on_error, timeouts and the fail-closed rules all hold.
"""

from __future__ import annotations

import importlib
import itertools
import sys
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, RootModel

from cpexrt._generated.records import PluginViolation
from cpexrt.engine.config import Conditions, PluginSpec
from cpexrt.errors import ConfigError
from cpexrt.plugin import Plugin, PluginContext
from cpexrt.results import PluginResult

# The py-cpex hook modules: importing cpex.framework registers 12 hooks, these the rest.
_HOOK_MODULES = ("cpex.framework.hooks.identity", "cpex.framework.hooks.message")
_REQUEST_IDS = itertools.count(1)


def _framework() -> Any:
    """cpex.framework, imported (with all of its hooks registered)."""
    try:
        framework = importlib.import_module("cpex.framework")
        for name in _HOOK_MODULES:
            importlib.import_module(name)
    except ImportError as exc:
        raise ConfigError(
            f"py-cpex (the `cpex` distribution, plugin API cpex.framework) is needed for this plugin but cannot be "
            f"imported: {exc}; install it with `pip install 'cpexrt[pycpex]'` or the plugin's own package"
        ) from None
    return framework


def is_plugin_class(cls: Any) -> bool:
    """Whether cls is a py-cpex Plugin subclass (without importing py-cpex when the
    class's module did not)."""
    if not isinstance(cls, type) or "cpex.framework" not in sys.modules:
        return False
    base = getattr(sys.modules["cpex.framework"], "Plugin", None)
    return isinstance(base, type) and issubclass(cls, base)


_SCALARS = frozenset({str, int, float, bool, bytes, type(None)})


def _plain(value: Any) -> Any:
    """A py-cpex value as plain data for cpex's wire: models dumped by pydantic (types
    kept: ints stay ints, bytes stay bytes; extra fields included), root models
    unwrapped, secrets revealed (the host gets what the plugin returned)."""
    if isinstance(value, RootModel):
        return _plain(value.root)
    if isinstance(value, BaseModel):
        return _fixed(value.model_dump(mode="python", exclude_unset=True))
    return _fixed(value)


def _fixed(value: Any) -> Any:
    """value with what pydantic's dump leaves as objects made plain; the same object
    when nothing needed it (the common case: no copy)."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is dict:
        out = None
        for key, item in value.items():
            fixed = _fixed(item)
            if fixed is not item:
                if out is None:
                    out = dict(value)
                out[key] = fixed
        return value if out is None else out
    if kind is list or kind is tuple:
        items = [_fixed(item) for item in value]
        return items if kind is tuple or any(a is not b for a, b in zip(items, value, strict=True)) else value
    if isinstance(value, BaseModel):
        return _plain(value)
    secret = getattr(value, "get_secret_value", None)
    if callable(secret):
        return secret()
    return value


# GlobalContext fields of cpex's own, left out of py-cpex's GlobalContext.
_CPEX_ONLY = frozenset({"traceparent", "tracestate"})


class PyCpexPlugin(Plugin):
    """One py-cpex plugin, as cpex's executor runs it. handler(hook) gives the async
    handler of each of its hooks."""

    def __init__(self, cls: type, spec: PluginSpec, where: str) -> None:
        super().__init__(dict(spec.config))
        fw = _framework()
        self._fw = fw
        self._name = spec.name
        try:
            self.pycpex_config = fw.PluginConfig(**_config_fields(spec))
        except Exception as exc:  # noqa: BLE001 - py-cpex's own validation of the stanza
            raise ConfigError(f"{where}: py-cpex refuses the stanza of plugin {spec.name!r}: {exc}") from None
        try:
            self.plugin = cls(self.pycpex_config)
        except Exception as exc:  # noqa: BLE001 - the plugin rejecting its config is a config error
            raise ConfigError(
                f"{where}: plugin {spec.name!r} ({spec.kind}) rejected its config: {type(exc).__name__}: {exc}"
            ) from None
        self._ref = fw.base.PluginRef(self.plugin)
        self._conditions = list(self.pycpex_config.conditions or [])
        self._hooks: dict[str, Any] = {}
        registry = fw.get_hook_registry()
        for j, hook_name in enumerate(spec.hooks):
            try:
                ref = fw.base.HookRef(hook_name, self._ref)
            except Exception as exc:  # noqa: BLE001 - py-cpex's check of the hook method
                raise ConfigError(f"{where}.hooks[{j}]: plugin {spec.name!r}: {exc}") from None
            payload_type = registry.get_payload_type(hook_name)
            if payload_type is None:
                raise ConfigError(f"{where}.hooks[{j}]: py-cpex knows no hook {hook_name!r} (plugin {spec.name!r})")
            self._hooks[hook_name] = (ref, payload_type)

    async def initialize(self) -> None:
        await self.plugin.initialize()

    async def shutdown(self) -> None:
        await self.plugin.shutdown()

    def handler(self, hook_name: str) -> Callable[[Any, PluginContext], Any]:
        ref, payload_type = self._hooks[hook_name]
        run = self._run

        async def handle(payload: Any, ctx: PluginContext) -> Any:
            return await run(hook_name, ref, payload_type, payload, ctx)

        handle.__name__ = hook_name
        return handle

    async def _run(self, hook_name: str, ref: Any, payload_type: Any, payload: Any, ctx: PluginContext) -> PluginResult | None:
        fw = self._fw
        model = self._payload(hook_name, payload_type, payload)
        global_context = self._global_context(ctx)
        if self._conditions and not fw.utils.payload_matches(model, hook_name, self._conditions, global_context):
            return None
        # Built by py-cpex's own validation, which is cheaper than copying a blank
        # context (pydantic's model_copy) and copies the state maps it is given.
        context = fw.PluginContext(state=ctx.state, global_context=global_context)
        if ref.accepts_extensions:
            extensions = fw.extensions.extensions.Extensions.model_validate(ctx.extensions) if ctx.extensions else None
            result = await ref.hook(model, context, extensions)
        else:
            result = await ref.hook(model, context)
        # What the plugin kept, for the request's next hook (cpex's context table).
        _keep(ctx.state, context.state)
        _keep(ctx.request_state, context.global_context.state)
        return self._result(result)

    def _payload(self, hook_name: str, payload_type: Any, payload: Any) -> Any:
        """The hook's py-cpex payload model, built from the host's payload."""
        if isinstance(payload, payload_type):
            return payload
        if hook_name.startswith("cmf.") or hook_name == "evaluate":
            data = {"message": payload.to_wire()}
            if hook_name != "evaluate":
                # py-cpex's MessagePayload says which point of the call it is (its hook field).
                data["hook"] = hook_name.removeprefix("cmf.")
            return payload_type.model_validate(data)
        if hook_name == "resource_post_fetch" and isinstance(payload, dict):
            content = payload.get("content")
            # py-cpex plugins read content.text as an attribute: a map must not slip past them.
            if isinstance(content, str):
                payload = {**payload, "content": self._fw.utils.coerce_nested({"text": content})}
            elif isinstance(content, dict):
                payload = {**payload, "content": self._fw.utils.coerce_nested(content)}
        return payload_type.model_validate(payload)

    def _global_context(self, ctx: PluginContext) -> Any:
        """py-cpex's GlobalContext of the request: what the host passed (checked by the
        engine), the request's shared state, and a request id of cpex's own when the
        host gave none."""
        request = ctx.request
        # traceparent / tracestate are cpex's (the engine's spans), not py-cpex's.
        fields = {k: v for k, v in request.items() if v is not None and k not in _CPEX_ONLY} if request else {}
        if "request_id" not in fields:
            fields["request_id"] = f"cpex-{next(_REQUEST_IDS)}"
        fields["state"] = ctx.request_state  # copied by the validation
        return self._fw.GlobalContext(**fields)

    def _result(self, result: Any) -> PluginResult | None:
        fw = self._fw
        if result is None:
            return None
        if not isinstance(result, fw.PluginResult):
            raise TypeError(f"returned {type(result).__name__}; expected a py-cpex PluginResult")
        if (
            result.continue_processing is True
            and result.violation is None
            and result.modified_payload is None
            and result.modified_extensions is None
            and not result.metadata
            and not result.retry_delay_ms
            and not result.http_headers
        ):
            return None  # a plain allow
        violation = None
        if result.violation is not None:
            v = result.violation
            violation = PluginViolation(
                code=v.code,
                reason=v.reason,
                description=v.description,
                details=_plain(v.details) or None,
                http_status_code=v.http_status_code,
                http_headers=v.http_headers,
                mcp_error_code=v.mcp_error_code,
            )
        modified = result.modified_payload
        return PluginResult(
            continue_processing=result.continue_processing,
            violation=violation,
            modified_payload=None if modified is None else self._modified(modified),
            modified_extensions=None if result.modified_extensions is None else _plain(result.modified_extensions),
            metadata=_plain(result.metadata or {}),
            retry_delay_ms=int(result.retry_delay_ms or 0),
            http_headers=dict(result.http_headers) if result.http_headers else None,
        )

    def _modified(self, payload: Any) -> Any:
        """A modified payload model as cpex takes it: the payload map (for CMF hooks
        the MessagePayload map, its message checked by cpex like any other)."""
        return _plain(payload)


def _keep(into: dict[str, Any], kept: dict[str, Any]) -> None:
    """into (cpex's copy of a state map) made what the plugin left in its own copy."""
    if kept is not into:
        into.clear()
        into.update(kept)


def _config_fields(spec: PluginSpec) -> dict[str, Any]:
    """The stanza as py-cpex's PluginConfig takes it."""
    fields: dict[str, Any] = {
        "name": spec.name,
        "kind": spec.kind,
        "description": spec.description,
        "author": spec.author,
        "version": spec.version,
        "namespace": spec.namespace,
        "hooks": list(spec.hooks),
        "tags": list(spec.tags),
        "mode": spec.mode.value,
        "on_error": spec.on_error.value,
        "priority": spec.priority,
        "conditions": [_condition(c) for c in spec.conditions],
        "applied_to": spec.applied_to,
        "capabilities": list(spec.capabilities),
        "config": dict(spec.config),
    }
    if spec.max_content_size is not None:
        fields["max_content_size"] = spec.max_content_size
    return {k: v for k, v in fields.items() if v is not None}


def _condition(c: Conditions) -> dict[str, Any]:
    return {name: getattr(c, name) for name in c.given()}


def check_conditions(spec: PluginSpec, where: str, pycpex: bool) -> None:
    """Each dialect's condition fields on its own plugins only: a field the plugin's
    matcher would not look at is refused, never ignored."""
    for i, c in enumerate(spec.conditions):
        for name in c.given():
            if pycpex and name == "tags":
                raise ConfigError(
                    f"{where}.conditions[{i}].tags: py-cpex plugins match conditions with py-cpex's own rules, which have no tags"
                )
            if not pycpex and name in Conditions.PYCPEX_ONLY:
                raise ConfigError(
                    f"{where}.conditions[{i}].{name}: a py-cpex condition; cpex plugins match tools, resources, prompts and tags"
                )
