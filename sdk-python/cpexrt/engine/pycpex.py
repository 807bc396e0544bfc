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
from asyncio.events import _get_running_loop
from collections.abc import Callable
from types import CoroutineType
from typing import Any

# py-cpex's models are pydantic's: installed with py-cpex (the `pycpex` extra), not with
# cpexrt, so the package type-checks without it (the models are then read as Any).
from pydantic import BaseModel, RootModel  # type: ignore[import-not-found, unused-ignore]

from cpexrt._generated.records import PluginViolation
from cpexrt.engine.config import Conditions, PluginSpec
from cpexrt.engine.driver import resume, start
from cpexrt.errors import ConfigError
from cpexrt.plugin import Plugin, PluginContext
from cpexrt.results import PluginResult, built

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


# Hooks whose payload the adapter reshapes before py-cpex's validation (_payload_builder).
_SHAPED = frozenset({"resource_post_fetch", "evaluate"})

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
        # pydantic's validators of the contexts, called directly (model_validate and
        # the constructors add only Python-level overhead around them).
        self._validate_global_context = fw.GlobalContext.__pydantic_validator__.validate_python
        self._validate_plugin_context = fw.PluginContext.__pydantic_validator__.validate_python
        self._extensions_type = fw.extensions.extensions.Extensions
        self._result_types: set[type] = set()  # classes seen to be py-cpex PluginResults

    async def initialize(self) -> None:
        await self.plugin.initialize()

    async def shutdown(self) -> None:
        await self.plugin.shutdown()

    def handler(self, hook_name: str) -> Callable[[Any, PluginContext], Any]:
        """The handler of one hook: everything it needs looked up here, once."""
        ref, payload_type = self._hooks[hook_name]
        func = ref.hook
        accepts_extensions = ref.accepts_extensions
        payload_of = self._payload_builder(hook_name, payload_type)
        # A map of a plain hook's payload goes straight to the model's validation.
        shaped = hook_name in _SHAPED or hook_name.startswith("cmf.")
        validate_map = None if shaped else payload_type.__pydantic_validator__.validate_python
        global_context_fields = _global_context_fields
        validate_global_context = self._validate_global_context
        validate_plugin_context = self._validate_plugin_context
        conditions, matches = self._conditions, self._fw.utils.payload_matches
        validate_extensions = self._extensions_type.__pydantic_validator__.validate_python
        result_of = self._result
        dump = _dumper(payload_type)
        request_ids = _REQUEST_IDS

        def handle(payload: Any, ctx: PluginContext) -> Any:
            model = validate_map(payload) if validate_map is not None and type(payload) is dict else payload_of(payload)
            request, has_state, has_request_state = ctx.adapter_view()
            # Copies of the plugin's state and of the request's shared state (py-cpex's
            # validation copies the maps), kept only when the plugin returns. Empty ones
            # (the common case) are not copied out of cpex's context table at all: the
            # plugin gets new empty maps, as py-cpex gives a new context.
            if request is not None:
                fields = global_context_fields(request, ctx.request_state if has_request_state else {})
            elif has_request_state:
                fields = {"request_id": f"cpex-{next(request_ids)}", "state": ctx.request_state}
            else:
                fields = {"request_id": f"cpex-{next(request_ids)}"}
            if conditions:
                global_context = validate_global_context(fields)
                if not matches(model, hook_name, conditions, global_context):
                    return None
                context = validate_plugin_context(
                    {"state": ctx.state, "global_context": global_context} if has_state else {"global_context": global_context}
                )
            else:
                # The GlobalContext validated as part of the PluginContext: one call less.
                context = validate_plugin_context(
                    {"state": ctx.state, "global_context": fields} if has_state else {"global_context": fields}
                )
            if accepts_extensions:
                extensions = ctx.extensions
                call = func(model, context, validate_extensions(extensions) if extensions else None)
            else:
                call = func(model, context)
            if type(call) is not CoroutineType or _get_running_loop() is not None:
                # Under a running loop (or not a coroutine: then awaiting it fails, the
                # plugin's failure), the driver runs all of it.
                return rest(call, context, ctx, has_state, has_request_state)
            # Driven here up to its first suspension (driver.start): a hook that never
            # waits (the common case) finishes without a coroutine of the adapter's own
            # around it.
            done, value = start(call)
            if not done:
                # It waits: the driver runs the rest on this thread's loop, in the deadline.
                return rest(resume(call, value), context, ctx, has_state, has_request_state)
            return finish(value, context, ctx, has_state, has_request_state)

        async def rest(call: Any, context: Any, ctx: PluginContext, has_state: bool, has_request_state: bool) -> Any:
            return finish(await call, context, ctx, has_state, has_request_state)

        def finish(result: Any, context: Any, ctx: PluginContext, has_state: bool, has_request_state: bool) -> Any:
            # What the plugin kept, for the request's next hook (cpex's context table).
            kept = context.state
            if kept or has_state:
                _keep(ctx.state, kept)
            kept = context.global_context.state
            if kept or has_request_state:
                _keep(ctx.request_state, kept)
            return None if result is None else result_of(result, dump)

        handle.__name__ = hook_name
        return handle

    def _payload_builder(self, hook_name: str, payload_type: Any) -> Callable[[Any], Any]:
        """The function making the hook's py-cpex payload model from the host's payload,
        by the model's own validation: a wrong shape is refused before the plugin runs
        (the plugin's failure under its on_error, never an allow)."""
        if hook_name.startswith("cmf.") or hook_name == "evaluate":
            point = None if hook_name == "evaluate" else hook_name.removeprefix("cmf.")

            def message(payload: Any) -> Any:
                if isinstance(payload, payload_type):
                    return payload
                data = {"message": payload.to_wire()}
                if point is not None:
                    # py-cpex's MessagePayload says which point of the call it is (its hook field).
                    data["hook"] = point
                return payload_type.model_validate(data)

            return message
        make = payload_type.__pydantic_validator__.validate_python
        if hook_name == "resource_post_fetch":
            coerce = self._fw.utils.coerce_nested

            def resource(payload: Any) -> Any:
                if isinstance(payload, payload_type):
                    return payload
                if isinstance(payload, dict):
                    content = payload.get("content")
                    # py-cpex plugins read content.text as an attribute: a map must not slip past them.
                    if isinstance(content, str):
                        payload = {**payload, "content": coerce({"text": content})}
                    elif isinstance(content, dict):
                        payload = {**payload, "content": coerce(content)}
                return make(payload)

            return resource

        def generic(payload: Any) -> Any:
            if type(payload) is not dict and isinstance(payload, payload_type):
                return payload
            return make(payload)

        return generic

    def _result(self, result: Any, dump: Callable[[Any], Any] = _plain) -> PluginResult | None:
        kind = result.__class__
        if kind not in self._result_types:
            if not isinstance(result, self._fw.PluginResult):  # pydantic's isinstance is slow: once per class
                raise TypeError(f"returned {kind.__name__}; expected a py-cpex PluginResult")
            self._result_types.add(kind)
        fields = result.__dict__  # the model's fields (read here without its attribute hook)
        if (
            fields["continue_processing"] is True
            and fields["violation"] is None
            and fields["modified_payload"] is None
            and fields["modified_extensions"] is None
            and not fields["metadata"]
            and not fields["retry_delay_ms"]
            and not fields["http_headers"]
        ):
            return None  # a plain allow
        violation = None
        v = fields["violation"]
        if v is not None:
            violation = PluginViolation(
                code=v.code,
                reason=v.reason,
                description=v.description,
                details=_plain(v.details) or None,
                http_status_code=v.http_status_code,
                http_headers=v.http_headers,
                mcp_error_code=v.mcp_error_code,
            )
        modified = fields["modified_payload"]
        modified_extensions = fields["modified_extensions"]
        metadata = fields["metadata"]
        headers = fields["http_headers"]
        return built(
            continue_processing=fields["continue_processing"],
            violation=violation,
            # A modified payload model as cpex takes it: the payload map (for CMF hooks
            # the MessagePayload map, its message checked by cpex like any other).
            modified_payload=None if modified is None else dump(modified),
            modified_extensions=None if modified_extensions is None else _plain(modified_extensions),
            metadata=_plain(metadata) if metadata else {},
            retry_delay_ms=int(fields["retry_delay_ms"] or 0),
            http_headers=dict(headers) if headers else None,
        )


def _global_context_fields(request: dict[str, Any], request_state: dict[str, Any]) -> dict[str, Any]:
    """py-cpex's GlobalContext of the request, as the map its validation takes: what the
    host passed (checked by the engine, and by py-cpex's model where the engine's check
    is not the model's), the request's shared state, and a request id of cpex's own
    when the host gave none."""
    # traceparent / tracestate are cpex's (the engine's spans), not py-cpex's.
    fields = {k: v for k, v in request.items() if v is not None and k not in _CPEX_ONLY}
    if "request_id" not in fields:
        fields["request_id"] = f"cpex-{next(_REQUEST_IDS)}"
    fields["state"] = request_state  # copied by the validation
    return fields


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


# -- converting results without pydantic's dump ----------------------------------------


def _dumpable(cls: Any) -> bool:
    """Whether model_dump of cls's instances is their set fields' values, made plain:
    no serializers, no computed fields, no extras kept."""
    if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
        return False
    model: Any = cls  # pydantic's class attributes (typed only where pydantic is installed)
    if model.__pydantic_root_model__:
        return False
    decorators = model.__pydantic_decorators__
    if decorators.field_serializers or decorators.model_serializers or decorators.computed_fields:
        return False
    return model.model_config.get("extra") != "allow" and not any(
        info.alias not in (None, name) or info.serialization_alias not in (None, name) or info.exclude or info.exclude_if
        for name, info in model.model_fields.items()
    )


def _dumper(cls: type) -> Callable[[Any], Any]:
    """The function giving a modified payload of model cls as plain data: its set
    fields as they are when they hold plain data only (what model_dump then gives),
    else _plain (pydantic's model_dump, made plain)."""
    if not _dumpable(cls):
        return _plain

    def dump(model: Any) -> Any:
        kind = model.__class__  # compared apart from model: an `is` on model.__class__ narrows model for mypy
        if kind is not cls or model.__pydantic_extra__:
            return _plain(model)
        fields_set = model.__pydantic_fields_set__
        out = {name: value for name, value in model.__dict__.items() if name in fields_set}
        scalars = _SCALARS
        for value in out.values():
            if type(value) not in scalars and not _is_plain(value):
                return _plain(model)
        return out

    return dump


def _is_plain(value: Any) -> bool:
    """Whether value is plain data all through (what pydantic's dump keeps as it is)."""
    kind = type(value)
    if kind in _SCALARS:
        return True
    if kind is dict:
        items: Any = value.values()
    elif kind is list:
        items = value
    else:
        return False
    scalars = _SCALARS
    for item in items:  # a loop, not all() over a generator: half the cost on a small map
        if type(item) not in scalars and not _is_plain(item):
            return False
    return True
