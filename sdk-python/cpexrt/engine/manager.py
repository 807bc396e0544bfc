"""The plugin manager: the engine's one entry point, called by the boundary (for hosts
over libcpex.so) or directly from Python."""

from __future__ import annotations

import concurrent.futures
import os
import threading
import time
from typing import Any

from cpexrt import payloads
from cpexrt.engine import driver, gating, isolation, pycpex
from cpexrt.engine.background import BackgroundBatch
from cpexrt.engine.config import Config, parse_config
from cpexrt.engine.context import RequestState
from cpexrt.engine.executor import Invocation, LoadedPlugin, PipelineOutcome, plan_order, run_pipeline
from cpexrt.engine.gating import Grant
from cpexrt.engine.registry import FactoryRegistry, add_plugin_dirs
from cpexrt.engine.routing import Resolution, Router
from cpexrt.errors import ConfigError, InvalidHandleError, InvalidInputError, PipelineError
from cpexrt.plugin import Plugin


def _carry(owner: Engine, states: dict[str, dict[str, Any]]) -> RequestState | None:
    """The context table for the request's next hook: the plugins' non-empty states."""
    kept = {name: s for name, s in states.items() if s}
    return RequestState(owner, kept) if kept else None


def _request(request: Any) -> dict[str, Any] | None:
    """The host's global context, checked: a map with a string request_id."""
    if request is None:
        return None
    wire = gating.as_wire(request)
    if not isinstance(wire, dict):
        raise InvalidInputError(f"request: expected a GlobalContext map, got {type(wire).__name__}")
    request_id = wire.get("request_id")
    if not isinstance(request_id, str) or not request_id:
        raise InvalidInputError(f"request.request_id: expected a non-empty string, got {request_id!r}")
    for key in ("tenant_id", "server_id", "content_type"):
        if wire.get(key) is not None and not isinstance(wire[key], str):
            raise InvalidInputError(f"request.{key}: expected a string, got {type(wire[key]).__name__}")
    if wire.get("metadata") is not None and not isinstance(wire["metadata"], dict):
        raise InvalidInputError(f"request.metadata: expected a map, got {type(wire['metadata']).__name__}")
    return wire


def _limits(config: Config) -> payloads.Limits:
    s = config.plugin_settings
    return payloads.Limits(s.max_payload_bytes, s.max_extensions_bytes, s.max_collection_entries)


class Engine:
    """Config, plugins, routes and global state. Safe to use from many threads."""

    def __init__(self) -> None:
        self._config = Config()
        self._plugins: list[LoadedPlugin] = []
        self._router = Router(self._config)
        self._plans: dict[str, list[LoadedPlugin]] = {}
        self._narrowed: dict[tuple[str, Resolution], list[LoadedPlugin]] = {}
        self._conditional = False
        self._limits = _limits(self._config)
        self._factories = FactoryRegistry()
        self._initialized = False
        self._shut_down = False
        self._lock = threading.RLock()
        self._background: set[BackgroundBatch] = set()
        self.global_state: dict[str, Any] = {}

    @classmethod
    def from_yaml(cls, text: str) -> Engine:
        manager = cls()
        manager.load_config(text)
        return manager

    # -- lifecycle ------------------------------------------------------------------

    def register_factory(self, kind: str, target: type[Plugin] | str) -> None:
        """Registers a plugin kind (a Plugin subclass or 'package.module:ClassName')
        that configs loaded afterwards may name."""
        self._check_alive("register_factory")
        self._factories.register(kind, target)

    def load_config_file(self, path: str) -> None:
        """Loads the YAML config file at path; its relative plugin_dirs are taken from
        the file's folder."""
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInputError(f"path: cannot read the config file {path!r}: {exc}") from None
        self.load_config(text, base_dir=os.path.dirname(os.path.abspath(path)))

    def load_config(self, text: str, base_dir: str | None = None) -> None:
        """Loads (replaces) the config from YAML text; relative plugin_dirs are taken
        from base_dir, else from the current working directory."""
        config = parse_config(text)
        add_plugin_dirs(config.plugin_settings.plugin_dirs, base_dir)
        plugins = [self._instantiate(i, config) for i in range(len(config.plugins))]
        plans: dict[str, list[LoadedPlugin]] = {}
        for plugin in plugins:
            for hook_name in plugin.handlers:
                plans.setdefault(hook_name, []).append(plugin)
        with self._lock:
            self._check_alive("load_config")
            if self._initialized:
                raise PipelineError("load_config: the manager is already initialized; create a new manager for a new config")
            self._config, self._plugins, self._router = config, plugins, Router(config)
            self._plans = {hook_name: plan_order(p) for hook_name, p in plans.items()}
            self._conditional = any(p.spec.conditions for p in plugins)
            self._limits = _limits(config)
            self._narrowed.clear()

    def _instantiate(self, index: int, config: Config) -> LoadedPlugin:
        if isolation.wanted(config.plugins[index]):  # in worker processes, or on helper threads
            return isolation.load(index, config, self._factories, self._instantiate_here)
        return self._instantiate_here(index, config)

    def _instantiate_here(self, index: int, config: Config) -> LoadedPlugin:
        spec = config.plugins[index]
        where = f"plugins[{index}]"
        cls = self._factories.resolve(spec.kind, f"{where}.kind")
        if pycpex.is_plugin_class(cls):
            return self._instantiate_pycpex(cls, index, config)
        pycpex.check_conditions(spec, where, pycpex=False)
        assert issubclass(cls, Plugin)  # the registry returns one or the other
        hooks = spec.hooks or cls.declared_hooks()
        if not hooks:
            raise ConfigError(f"{where}.hooks: plugin {spec.name!r} lists no hooks and its class {cls.__name__} handles none")
        handlers: dict[str, str] = {}
        for j, hook_name in enumerate(hooks):
            method = cls.handler_for(hook_name)
            if method is None:
                raise ConfigError(
                    f"{where}.hooks[{j}]: plugin {spec.name!r} ({spec.kind}) has no handler for hook {hook_name!r}; "
                    f"define a method {hook_name.replace('.', '_')!r} or decorate one with @hook({hook_name!r})"
                )
            handlers[hook_name] = method
        try:
            instance = cls(dict(spec.config))
        except Exception as exc:  # noqa: BLE001 - the plugin's constructor is plugin code
            raise PipelineError(f"plugin {spec.name!r}: constructor raised {type(exc).__name__}: {exc}") from None
        return LoadedPlugin(
            spec=spec,
            index=index,
            instance=instance,
            handlers={h: getattr(instance, m) for h, m in handlers.items()},
            timeout=spec.timeout or config.plugin_settings.plugin_timeout,
            grant=Grant.of(spec.capabilities),
        )

    def _instantiate_pycpex(self, cls: type, index: int, config: Config) -> LoadedPlugin:
        """A py-cpex plugin: py-cpex's own hooks list (it runs only those), its own
        conditions (matched by py-cpex inside the adapter, not by cpex's router), and
        what its phase cannot enforce reported, as py-cpex does not enforce it."""
        spec = config.plugins[index]
        where = f"plugins[{index}]"
        pycpex.check_conditions(spec, where, pycpex=True)
        if not spec.hooks:
            raise ConfigError(
                f"{where}.hooks: py-cpex plugin {spec.name!r} lists no hooks; "
                "py-cpex runs a plugin only for the hooks its stanza lists"
            )
        adapter = pycpex.PyCpexPlugin(cls, spec, where)
        return LoadedPlugin(
            spec=spec.model_copy(update={"conditions": []}),
            index=index,
            instance=adapter,
            handlers={h: adapter.handler(h) for h in spec.hooks},
            timeout=spec.timeout or config.plugin_settings.plugin_timeout,
            grant=Grant.of(spec.capabilities),
            reports_unenforced=True,
        )

    def initialize(self) -> None:
        """Initializes every plugin in config order. When one fails (raises or times
        out), those already initialized are shut down again, in reverse order, and the
        error names the failing plugin (and any rollback shutdown that failed too);
        the manager stays not initialized."""
        with self._lock:
            self._check_alive("initialize")
            if self._initialized:
                return
            for i, plugin in enumerate(self._plugins):
                try:
                    self._lifecycle(plugin, "initialize")
                except PipelineError as exc:
                    raise PipelineError(str(exc) + self._roll_back(self._plugins[:i])) from None
            self._initialized = True

    def _roll_back(self, initialized: list[LoadedPlugin]) -> str:
        """Shuts the plugins down, last first; what failed, as a suffix for the error."""
        failures = []
        for plugin in reversed(initialized):
            try:
                self._lifecycle(plugin, "shutdown")
            except PipelineError as exc:
                failures.append(str(exc))
        return f"; rollback shutdown failed: {'; '.join(failures)}" if failures else ""

    def shutdown(self) -> None:
        """Shuts every plugin down; the manager is unusable afterwards. Idempotent.
        Fire-and-forget tasks still running get up to plugin_timeout to finish first."""
        with self._lock:
            if self._shut_down:
                return
            self._shut_down = True
            was_initialized, self._initialized = self._initialized, False
            pending = [b for b in self._background if not b.done]
            self._background.clear()
        for tasks in pending:
            try:
                tasks.wait(self._config.plugin_settings.plugin_timeout)
            except concurrent.futures.TimeoutError:
                pass
        failures = []
        if was_initialized:
            for plugin in self._plugins:
                try:
                    self._lifecycle(plugin, "shutdown")
                except PipelineError as exc:
                    failures.append(str(exc))
        if failures:
            raise PipelineError("shutdown: " + "; ".join(failures))

    def _lifecycle(self, plugin: LoadedPlugin, step: str) -> None:
        method = getattr(plugin.instance, step)
        try:
            driver.call(method, (), time.monotonic() + plugin.timeout)
        except driver.HandlerTimeout:
            raise PipelineError(f"plugin {plugin.name!r}: {step} timed out after {plugin.timeout:g}s") from None
        except Exception as exc:  # noqa: BLE001 - plugin code
            raise PipelineError(f"plugin {plugin.name!r}: {step} raised {type(exc).__name__}: {exc}") from None

    def _check_alive(self, what: str) -> None:
        if self._shut_down:
            raise InvalidHandleError(f"{what}: the manager was shut down")

    # -- queries --------------------------------------------------------------------

    def has_hooks_for(self, hook: str) -> bool:
        self._check_alive("has_hooks_for")
        return any(p.active and hook in p.handlers for p in self._plugins)

    def hooks_with_plugins(self) -> list[str]:
        """Every hook some configured plugin handles (disabled ones included)."""
        self._check_alive("hooks_with_plugins")
        return list(self._plans)

    def plugin_count(self) -> int:
        self._check_alive("plugin_count")
        return len(self._plugins)

    def plugin_names(self) -> list[str]:
        self._check_alive("plugin_names")
        return [p.name for p in self._plugins]

    def plugin_stats(self) -> list[dict[str, Any]]:
        """Per plugin, in config order: its isolation and, for isolated plugins, their
        workers' counters and circuit (cpexrt.engine.isolation.stats_of)."""
        self._check_alive("plugin_stats")
        return [isolation.stats_of(p) for p in self._plugins]

    def is_initialized(self) -> bool:
        self._check_alive("is_initialized")
        return self._initialized

    @property
    def config(self) -> Config:
        return self._config

    @property
    def limits(self) -> payloads.Limits:
        """The size limits of plugin_settings, for what hosts send and plugins return."""
        return self._limits

    @property
    def router(self) -> Router:
        return self._router

    # -- invoke ---------------------------------------------------------------------

    def invoke(
        self,
        hook: str,
        payload_type: int,
        payload: Any,
        extensions: dict[str, Any] | None = None,
        context: RequestState | None = None,
        *,
        payload_wire: bytes | None = None,
        extensions_wire: bytes | None = None,
        owned: bool = False,
        request: Any = None,
    ) -> PipelineOutcome:
        """Runs the hook's plugins over payload (a map; for CMF the MessagePayload
        map) and extensions. A context passed in is consumed when the call succeeds,
        and left valid and unchanged when it raises. payload_wire / extensions_wire:
        the MessagePack the values were decoded from, when the caller has it (spares
        an encode); owned: nobody but the engine holds the values. request: the
        request's global context (a GlobalContext record or its map), which plugins
        read as PluginContext.request."""
        self._check_alive("invoke")
        if not self._initialized:
            raise PipelineError(f"invoke {hook!r}: the manager is not initialized; call initialize first")
        if context is not None and context.owner is not self:
            raise InvalidInputError("context: the context table belongs to another manager")
        states = context.hold() if context is not None else {}
        try:
            outcome = self._invoke(hook, payload_type, payload, extensions, states, payload_wire, extensions_wire, owned, request)
        except BaseException:
            if context is not None:
                context.release()
            raise
        if context is not None:
            context.consume()
        return outcome

    def _invoke(
        self,
        hook: str,
        payload_type: int,
        payload: Any,
        extensions: Any,
        states: dict[str, dict[str, Any]],
        payload_wire: bytes | None,
        extensions_wire: bytes | None,
        owned: bool,
        request: Any,
    ) -> PipelineOutcome:
        if not hook:
            raise InvalidInputError("hook: the hook name is empty")
        request = _request(request)
        body = payloads.decode(payload_type, payload)
        extensions = gating.as_wire(extensions)
        if extensions is not None and not isinstance(extensions, dict):
            raise InvalidInputError(f"extensions: expected a map, got {type(extensions).__name__}")
        plan = self._plans.get(hook)
        if not plan:
            # Nothing to run: the fast path of hooks nobody handles.
            outcome = PipelineOutcome(states=states)
            outcome.context = _carry(self, states)
            return outcome
        ext: dict[str, Any] = dict(extensions) if extensions else {}
        resolution = self._router.resolve(ext.get("meta"))
        if resolution.tags:
            meta = dict(ext.get("meta") or {})
            meta["tags"] = list(resolution.tags)
            ext["meta"] = meta
            extensions_wire = None
        plan = self._routed_plan(hook, plan, resolution)
        settings = self._config.plugin_settings
        inv = Invocation(
            hook=hook,
            payload_type=payload_type,
            payload=payloads.host_snapshot(payload_type, body, payload_wire, owned),
            extensions=payloads.extensions_snapshot(ext, extensions_wire if extensions else None, owned),
            has_extensions=bool(ext),
            states_in=states,
            global_state=self.global_state,
            deadline=time.monotonic() + settings.invoke_timeout,
            invoke_timeout=settings.invoke_timeout,
            limits=self._limits,
            request=request,
        )
        outcome = run_pipeline(plan, inv)
        if outcome.background is not None:
            self._track(outcome.background)
        outcome.context = _carry(self, outcome.states)
        return outcome

    def _routed_plan(self, hook: str, plan: list[LoadedPlugin], resolution: Resolution) -> list[LoadedPlugin]:
        """The hook's plan narrowed to the plugins the routes and conditions select; the
        router caches resolutions, so the narrowed plan is cached per resolution."""
        if resolution.plugins is None and not self._conditional:
            return plan
        key = (hook, resolution)
        narrowed = self._narrowed.get(key)
        if narrowed is None:
            narrowed = [p for p in plan if self._router.admits(p.name, resolution)]
            if len(self._narrowed) >= max(self._config.plugin_settings.route_cache_size, 1) * 4:
                self._narrowed.clear()  # bounded, like the route cache
            self._narrowed[key] = narrowed
        return narrowed

    def _track(self, tasks: BackgroundBatch) -> None:
        """Keeps the tasks until they finish, so shutdown can wait for them."""
        with self._lock:
            self._background.add(tasks)
        tasks.on_done(self._untrack)

    def _untrack(self, tasks: BackgroundBatch) -> None:
        with self._lock:
            self._background.discard(tasks)
