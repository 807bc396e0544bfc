"""The plugin manager: the engine's one entry point, called by the boundary (for hosts
over libcpex.so) or directly from Python."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import IO, Any

from cpexrt import payloads
from cpexrt._generated.errors import PAYLOAD_GENERIC
from cpexrt.engine import driver, gating, observe
from cpexrt.engine.background import BackgroundBatch, Tracker
from cpexrt.engine.config import Config, Isolation, check_conditions, parse_config
from cpexrt.engine.context import RequestState
from cpexrt.engine.decisions import DecisionLog, Sink
from cpexrt.engine.executor import Invocation, LoadedPlugin, PipelineOutcome, Plan, plan_order, run_pipeline
from cpexrt.engine.gating import Grant
from cpexrt.engine.registry import FactoryRegistry, add_plugin_dirs, is_pycpex_class
from cpexrt.engine.routing import Resolution, Router
from cpexrt.errors import ConfigError, CpexError, InvalidHandleError, InvalidInputError, PipelineError
from cpexrt.plugin import Plugin

LOG = logging.getLogger("cpexrt.engine")

# How long a reload waits, past the old config's invoke_timeout, for the calls still
# running on the old plugins before it shuts them down anyway.
RETIRE_GRACE = 1.0


def _carry(owner: Engine, states: dict[str, dict[str, Any]], serving: PluginSet) -> RequestState | None:
    """The context table for the request's next hook: the plugins' non-empty states,
    marked with the identities of the plugin set that served the call."""
    if not states:
        return None
    for state in states.values():
        if not state:  # an empty state is not carried (rare: copied only then)
            states = {name: s for name, s in states.items() if s}
            if not states:
                return None
            break
    # The table may share the map with the caller's, consumed, table: neither changes it.
    return RequestState(owner, states, serving.identities)


def _tag(tags: tuple[str, ...], ext: dict[str, Any]) -> None:
    """Puts the route's tags into the extensions' meta (a copy of the meta map)."""
    meta = dict(ext.get("meta") or {})
    meta["tags"] = list(tags)
    ext["meta"] = meta


def _tagged_snapshot(
    ext: dict[str, Any], wire: bytes | None, owned: bool, plain: bool, tags: tuple[str, ...]
) -> payloads.Snapshot:
    """The snapshot of extensions the routes tagged: when the host's bytes are at hand
    and the map is the engine's own, a private copy is those bytes decoded and tagged
    again (no encode of the tagged map unless a reader needs its bytes)."""
    if wire is not None and owned and plain:
        return payloads.derived(ext, wire, _tag, tags)
    return payloads.extensions_snapshot(ext, None, owned, plain)


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
    for key in ("tenant_id", "server_id", "content_type", "traceparent", "tracestate"):
        if wire.get(key) is not None and not isinstance(wire[key], str):
            raise InvalidInputError(f"request.{key}: expected a string, got {type(wire[key]).__name__}")
    traceparent = wire.get("traceparent")
    if traceparent and not observe.valid_traceparent(traceparent):
        raise InvalidInputError(
            f"request.traceparent: {traceparent[:80]!r} is not a W3C traceparent "
            "(00-<32 hex trace id>-<16 hex span id>-<2 hex flags>, ids not all zero)"
        )
    if wire.get("metadata") is not None and not isinstance(wire["metadata"], dict):
        raise InvalidInputError(f"request.metadata: expected a map, got {type(wire['metadata']).__name__}")
    return wire


def _read_config_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"path: cannot read the config file {path!r}: {exc}") from None


def _limits(config: Config) -> payloads.Limits:
    s = config.plugin_settings
    return payloads.Limits(s.max_payload_bytes, s.max_extensions_bytes, s.max_collection_entries)


class PluginSet:
    """One loaded config: its plugins, routes, hook plans and limits. An invoke is
    served by exactly one set, from its first check to its result; a reload builds and
    initializes a new set and swaps the engine's reference to it (one assignment), and
    the old set retires: it takes no new calls, its calls in flight finish on it, and
    its plugins shut down once they and its fire-and-forget tasks are done."""

    def __init__(self, config: Config, plugins: list[LoadedPlugin]) -> None:
        self.config = config
        self.plugins = plugins
        self.router = Router(config)
        plans: dict[str, list[LoadedPlugin]] = {}
        for plugin in plugins:
            for hook_name in plugin.handlers:
                plans.setdefault(hook_name, []).append(plugin)
        # Each hook's plan, compiled once; a route's narrowed plans are compiled when the
        # route is first resolved, and kept with its cached resolution.
        self.plans = {hook_name: Plan(hook_name, plan_order(p)) for hook_name, p in plans.items()}
        self.narrowed: dict[tuple[str, Resolution], Plan] = {}  # for resolutions the router does not cache
        self.conditional = any(p.spec.conditions for p in plugins)
        self.limits = _limits(config)
        # What a context table's state is keyed by, and whether it may carry over to
        # another set: a plugin's name, with its kind and config.
        self.identities: dict[str, tuple[str, dict[str, Any]]] = {p.name: (p.spec.kind, p.spec.config) for p in plugins}
        # The calls in flight, one entry each. Counting in and out is on every call's
        # path, so it takes no lock: list.append / list.pop are atomic, and the order
        # of the steps (Engine.serving: append, then read _retiring; retire: set
        # _retiring, then read the length; leave: pop, then read _retiring) means a
        # retire that finds no call can never be followed by a call running on this
        # set, and one that finds calls is woken by the last to leave.
        self._calls: list[None] = []
        self._drained = threading.Event()
        self._retiring = False
        self._background = Tracker()

    def leave(self) -> None:
        """Counts a call out (each set Engine.serving() returned gets one)."""
        calls = self._calls
        calls.pop()
        if self._retiring and not calls:
            self._drained.set()

    def retire(self, timeout: float) -> bool:
        """Takes no new calls; waits up to timeout for those in flight. True when none
        is left."""
        self._retiring = True
        return not self._calls or self._drained.wait(timeout)

    def track(self, tasks: BackgroundBatch) -> None:
        """Keeps the tasks until they finish, so shutdown and retirement wait for them."""
        self._background.add(tasks)

    def pending_background(self) -> list[BackgroundBatch]:
        return self._background.take_pending()

    def adopt(
        self, states: dict[str, dict[str, Any]], issuer: dict[str, tuple[str, dict[str, Any]]] | None
    ) -> dict[str, dict[str, Any]]:
        """The states of a context table issued by another set (before a reload), for
        this one. A plugin of the same name, kind and config keeps its state; the state
        of a plugin this set no longer has is dropped (no plugin can read it); the
        state of a plugin whose kind or config changed is refused, as the new plugin
        cannot be assumed to read it the way the old one wrote it."""
        kept: dict[str, dict[str, Any]] = {}
        for name, state in states.items():
            mine = self.identities.get(name)
            if mine is None:
                continue
            theirs = issuer.get(name) if issuer is not None else None
            if theirs is None or theirs[0] != mine[0] or theirs[1] != mine[1]:
                changed = "kind" if theirs is not None and theirs[0] != mine[0] else "config"
                raise InvalidInputError(
                    f"context: the context table was issued before a reload, and plugin {name!r} holds state in it but "
                    f"was reloaded with another {changed}; its state cannot carry over. Invoke without the context "
                    "table (the plugin starts the request afresh) or free it"
                )
            kept[name] = state
        return kept


class Engine:
    """Config, plugins, routes and global state. Safe to use from many threads."""

    def __init__(self) -> None:
        self._set = PluginSet(Config(), [])
        self._factories = FactoryRegistry()
        self._initialized = False
        self._shut_down = False
        # Serializes what changes the plugin set or its published view: load_config,
        # initialize, reload_config, shutdown.
        self._change_lock = threading.RLock()
        self._observer: Callable[[Engine, bool], None] | None = None
        self.global_state: dict[str, Any] = {}
        self.decisions = DecisionLog()
        # True in an engine worker (cpexrt._boundary.engine_worker): the config's
        # engine_workers is the pool this engine serves in, not a request to start one.
        self.engine_worker = False

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
        text = _read_config_file(path)
        self.load_config(text, base_dir=os.path.dirname(os.path.abspath(path)))

    def load_config(self, text: str, base_dir: str | None = None) -> None:
        """Loads (replaces) the config from YAML text; relative plugin_dirs are taken
        from base_dir, else from the current working directory."""
        loaded, opened = self._build(text, base_dir)
        with self._change_lock:
            try:
                self._check_alive("load_config")
                if self._initialized:
                    raise PipelineError(
                        "load_config: the manager is already initialized; reload_config swaps the plugins of a running manager"
                    )
            except BaseException:
                if opened is not None:
                    opened[0].close()
                raise
            self._set = loaded
            self._changed(True)
        self._use(loaded, opened)

    def _build(self, text: str, base_dir: str | None) -> tuple[PluginSet, tuple[IO[str], str] | None]:
        """Parses the config, instantiates its plugins (none is initialized) and opens
        its decision_records.file (taken into use by _use)."""
        try:
            config = parse_config(text)
            if config.plugin_settings.engine_workers and not self.engine_worker:
                raise ConfigError(
                    "plugin_settings.engine_workers: engine workers are started by a manager of libcpex (Go, C, "
                    "cpexrt.host) when it loads a config; this engine runs in its own process (cpexrt.engine.Engine, "
                    "or a reload of a manager that started without them)"
                )
            add_plugin_dirs(config.plugin_settings.plugin_dirs, base_dir)
            loaded = PluginSet(config, [self._instantiate(i, config) for i in range(len(config.plugins))])
            opened = self.decisions.open_file(config.decision_records.file, base_dir)
        except CpexError as exc:
            LOG.error("the config was refused: %s", exc, extra={"error": type(exc).__name__})
            raise
        return loaded, opened

    def _use(self, loaded: PluginSet, opened: tuple[IO[str], str] | None) -> None:
        """The decision records of the config now serving, and its log line."""
        self.decisions.use(opened, loaded.config.decision_records.include_values)
        LOG.info(
            "config loaded: %d plugins on %d hooks",
            len(loaded.plugins),
            len(loaded.plans),
            extra={"plugins": [p.name for p in loaded.plugins], "hooks": sorted(loaded.plans)},
        )

    def observe(self, observer: Callable[[Engine, bool], None]) -> None:
        """observer(engine, settled) is told of every change to what hooks_with_plugins,
        limits and is_initialized answer, under the lock that orders those changes:
        settled is False right before a reload swaps the plugin set (an answer kept
        outside the engine must stop being used: every call must reach the engine),
        True once the change is done (read the new answers)."""
        with self._change_lock:
            self._observer = observer

    def _changed(self, settled: bool) -> None:
        if self._observer is not None:
            self._observer(self, settled)

    # -- hot reload -----------------------------------------------------------------

    def reload_config_file(self, path: str) -> None:
        """reload_config with the YAML config file at path; its relative plugin_dirs
        are taken from the file's folder."""
        text = _read_config_file(path)
        self.reload_config(text, base_dir=os.path.dirname(os.path.abspath(path)))

    def reload_config(self, text: str, base_dir: str | None = None) -> None:
        """Swaps the plugin set of the running (initialized) manager for the config
        in text, atomically for every call:

        - the new config is parsed, its plugins instantiated and initialized first. A
          failure (ParseError, ConfigError, a plugin that cannot be imported or built,
          an initialize that fails: PipelineError) shuts down the new plugins already
          initialized, last first, and raises; the old set keeps serving, untouched;
        - then one assignment swaps the sets: a call that began before runs on the old
          set to its end, a call that begins after runs on the new one;
        - the old set takes no new call; once the calls in flight on it finished (at
          most its invoke_timeout, plus RETIRE_GRACE seconds) and its fire-and-forget
          tasks did (up to its plugin_timeout), its plugins are shut down, and only then
          does this return. A failing shutdown of an old plugin is logged on the
          cpexrt.engine logger: the reload itself succeeded.

        Context tables issued before the swap carry a plugin's state over to a plugin
        of the same name, kind and config, drop the state of plugins the new config no
        longer has, and are refused (InvalidInputError, the table left usable) when
        they hold state of a plugin whose kind or config changed. global_state and the
        registered factories are the manager's and stay; plugins that on_error:
        disable switched off are new instances, on again. Reloads run one at a time."""
        with self._change_lock:
            self._check_alive("reload_config")
            if not self._initialized:
                raise PipelineError(
                    "reload_config: the manager is not initialized; load_config and initialize it first "
                    "(a reload replaces the plugins of a running manager)"
                )
            fresh, opened = self._build(text, base_dir)
            try:
                self._start(fresh.plugins, "reload_config: ")
            except BaseException:
                if opened is not None:
                    opened[0].close()
                raise
            old = self._set
            try:
                self._changed(False)
            except BaseException:
                self._roll_back(fresh.plugins)
                if opened is not None:
                    opened[0].close()
                raise
            self._set = fresh
            try:
                self._changed(True)
                self._use(fresh, opened)
            finally:
                self._retire(old)

    def _retire(self, old: PluginSet) -> None:
        """Shuts the plugins of a replaced set down once its calls and tasks are done."""
        settings = old.config.plugin_settings
        if not old.retire(settings.invoke_timeout + RETIRE_GRACE):
            LOG.warning(
                "reload_config: calls still running on the replaced plugins %gs after the reload (invoke_timeout "
                "%gs); shutting those plugins down anyway",
                settings.invoke_timeout + RETIRE_GRACE,
                settings.invoke_timeout,
            )
        self._wait_background(old)
        failures = self._stop(old.plugins)
        if failures:
            LOG.error("reload_config: shutting down the replaced plugins: %s", "; ".join(failures))

    def _instantiate(self, index: int, config: Config) -> LoadedPlugin:
        spec = config.plugins[index]
        if spec.isolation in (Isolation.PROCESS, Isolation.THREAD) or spec.kind == "isolated_venv":
            # imported only when a plugin asks for isolation (start-up cost)
            from cpexrt.engine import isolation

            if isolation.wanted(spec):  # in worker processes, or on helper threads
                return isolation.load(index, config, self._factories, self._instantiate_here)
        return self._instantiate_here(index, config)

    def _instantiate_here(self, index: int, config: Config) -> LoadedPlugin:
        spec = config.plugins[index]
        where = f"plugins[{index}]"
        cls = self._factories.resolve(spec.kind, f"{where}.kind")
        if is_pycpex_class(cls):
            return self._instantiate_pycpex(cls, index, config)
        check_conditions(spec, where, pycpex=False)
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
            reports_unenforced=spec.shadow,
            shadow=spec.shadow,
        )

    def _instantiate_pycpex(self, cls: type, index: int, config: Config) -> LoadedPlugin:
        """A py-cpex plugin: py-cpex's own hooks list (it runs only those), its own
        conditions (matched by py-cpex inside the adapter, not by cpex's router), and
        what its phase cannot enforce reported, as py-cpex does not enforce it."""
        # the adapter, imported only when a config names a py-cpex plugin (start-up cost)
        from cpexrt.engine import pycpex

        spec = config.plugins[index]
        where = f"plugins[{index}]"
        check_conditions(spec, where, pycpex=True)
        if not spec.hooks:
            raise ConfigError(
                f"{where}.hooks: py-cpex plugin {spec.name!r} lists no hooks; "
                "py-cpex runs a plugin only for the hooks its stanza lists"
            )
        adapter = pycpex.PyCpexPlugin(cls, spec, where)
        return LoadedPlugin(
            spec=spec.replace(conditions=[]),
            index=index,
            instance=adapter,
            handlers={h: adapter.handler(h) for h in spec.hooks},
            timeout=spec.timeout or config.plugin_settings.plugin_timeout,
            grant=Grant.of(spec.capabilities),
            reports_unenforced=True,
            shadow=spec.shadow,
        )

    def initialize(self) -> None:
        """Initializes every plugin in config order. When one fails (raises or times
        out), those already initialized are shut down again, in reverse order, and the
        error names the failing plugin (and any rollback shutdown that failed too);
        the manager stays not initialized."""
        with self._change_lock:
            self._check_alive("initialize")
            if self._initialized:
                return
            self._start(self._set.plugins)
            self._initialized = True
            self._changed(True)

    def _start(self, plugins: list[LoadedPlugin], prefix: str = "") -> None:
        """Initializes the plugins in order; rolls back and raises when one fails."""
        for i, plugin in enumerate(plugins):
            try:
                self._lifecycle(plugin, "initialize")
            except PipelineError as exc:
                error = PipelineError(prefix + str(exc) + self._roll_back(plugins[:i]))
                LOG.error("initialize failed: %s", error, extra={"plugin": plugin.name})
                raise error from None
        LOG.info("initialized %d plugins", len(plugins), extra={"plugins": [p.name for p in plugins]})

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
        with self._change_lock:  # after a reload in progress
            if self._shut_down:
                return
            self._shut_down = True
            was_initialized, self._initialized = self._initialized, False
            serving = self._set
        self._wait_background(serving)
        failures = self._stop(serving.plugins) if was_initialized else []
        self.decisions.close()
        if failures:
            LOG.error("shutdown: %s", "; ".join(failures))
            raise PipelineError("shutdown: " + "; ".join(failures))
        LOG.info("shut down")

    @staticmethod
    def _wait_background(plugins: PluginSet) -> None:
        timeout = plugins.config.plugin_settings.plugin_timeout
        for tasks in plugins.pending_background():
            try:
                tasks.wait(timeout)
            except TimeoutError:  # concurrent.futures.TimeoutError is TimeoutError (3.11)
                pass

    def _stop(self, plugins: list[LoadedPlugin]) -> list[str]:
        """Shuts the plugins down in config order; what failed."""
        failures = []
        for plugin in plugins:
            try:
                self._lifecycle(plugin, "shutdown")
            except PipelineError as exc:
                failures.append(str(exc))
        return failures

    def _lifecycle(self, plugin: LoadedPlugin, step: str) -> None:
        method = getattr(plugin.instance, step)
        fields = {"plugin": plugin.name, "step": step}
        try:
            driver.call(method, (), time.monotonic() + plugin.timeout)
        except driver.HandlerTimeout:
            LOG.warning(
                "plugin %r: %s timed out after %gs", plugin.name, step, plugin.timeout, extra={**fields, "code": "plugin_timeout"}
            )
            raise PipelineError(f"plugin {plugin.name!r}: {step} timed out after {plugin.timeout:g}s") from None
        except Exception as exc:  # noqa: BLE001 - plugin code
            LOG.warning(
                "plugin %r: %s raised %s", plugin.name, step, type(exc).__name__, extra={**fields, "code": "plugin_error"}
            )
            raise PipelineError(f"plugin {plugin.name!r}: {step} raised {type(exc).__name__}: {exc}") from None
        LOG.debug("plugin %r: %s done", plugin.name, step, extra=fields)

    def set_decision_sink(self, sink: Sink | None) -> None:
        """Sends a decision record (a map, engine/decisions.py) of every invoke that
        runs plugins to sink, on the cpex-decisions thread; None stops it. Records
        already made go to the sink set when they were made."""
        self._check_alive("set_decision_sink")
        self.decisions.set_sink(sink)

    def _check_alive(self, what: str) -> None:
        if self._shut_down:
            raise InvalidHandleError(f"{what}: the manager was shut down")

    # -- queries --------------------------------------------------------------------

    def has_hooks_for(self, hook: str) -> bool:
        self._check_alive("has_hooks_for")
        return any(p.active and hook in p.handlers for p in self._set.plugins)

    def hooks_with_plugins(self) -> list[str]:
        """Every hook some configured plugin handles (disabled ones included)."""
        self._check_alive("hooks_with_plugins")
        return list(self._set.plans)

    def plugin_count(self) -> int:
        self._check_alive("plugin_count")
        return len(self._set.plugins)

    def plugin_names(self) -> list[str]:
        self._check_alive("plugin_names")
        return [p.name for p in self._set.plugins]

    def plugin_stats(self) -> list[dict[str, Any]]:
        """Per plugin, in config order: its isolation and, for isolated plugins, their
        workers' counters and circuit (cpexrt.engine.isolation.stats_of)."""
        self._check_alive("plugin_stats")
        from cpexrt.engine import isolation

        return [isolation.stats_of(p) for p in self._set.plugins]

    def is_initialized(self) -> bool:
        self._check_alive("is_initialized")
        return self._initialized

    @property
    def config(self) -> Config:
        return self._set.config

    @property
    def limits(self) -> payloads.Limits:
        """The size limits of plugin_settings, for what hosts send and plugins return."""
        return self._set.limits

    @property
    def router(self) -> Router:
        return self._set.router

    def serving(self) -> PluginSet:
        """The plugin set now serving, counted in for one call: pass it to invoke
        (serving=) and call its leave() when the call is over, whatever happens. Its
        limits are those the call's input is checked against."""
        while True:
            current = self._set
            current._calls.append(None)  # counted in (see PluginSet.__init__)
            if not current._retiring:
                return current
            # A reload retired it since it was read: the new set is in place.
            current.leave()

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
        timeout: float | None = None,
        serving: PluginSet | None = None,
    ) -> PipelineOutcome:
        """Runs the hook's plugins over payload (a map; for CMF the MessagePayload
        map) and extensions. A context passed in is consumed when the call succeeds,
        and left valid and unchanged when it raises. payload_wire / extensions_wire:
        the MessagePack the values were decoded from, when the caller has it (spares
        an encode); owned: nobody but the engine holds the values. request: the
        request's global context (a GlobalContext record or its map), which plugins
        read as PluginContext.request. timeout: the call's own time limit in seconds
        (plugin_settings.invoke_timeout applies when it is shorter); past it the call
        fails with PipelineTimeoutError, whatever the plugins' on_error. serving: the
        plugin set the call was counted in with (serving()), which it then runs on; else
        the one serving now."""
        if self._shut_down:
            self._check_alive("invoke")
        if timeout is not None and (
            isinstance(timeout, bool) or not (isinstance(timeout, int | float) and 0 < timeout < float("inf"))
        ):
            raise InvalidInputError(f"timeout: expected a positive number of seconds, got {timeout!r}")
        if not self._initialized:
            raise PipelineError(f"invoke {hook!r}: the manager is not initialized; call initialize first")
        if context is not None and context.owner is not self:
            raise InvalidInputError("context: the context table belongs to another manager")
        pinned = serving if serving is not None else self.serving()
        try:
            states = context.hold() if context is not None else {}
            try:
                if context is not None and context.issuer is not pinned.identities:
                    states = pinned.adopt(states, context.issuer)  # issued before a reload
                outcome = self._invoke(
                    pinned,
                    hook,
                    payload_type,
                    payload,
                    extensions,
                    states,
                    payload_wire,
                    extensions_wire,
                    owned,
                    request,
                    timeout,
                )
            except BaseException:
                if context is not None:
                    context.release()
                raise
        finally:
            if serving is None:
                pinned.leave()
        if context is not None:
            context.consume()
        return outcome

    def _invoke(
        self,
        serving: PluginSet,
        hook: str,
        payload_type: int,
        payload: Any,
        extensions: Any,
        states: dict[str, dict[str, Any]],
        payload_wire: bytes | None,
        extensions_wire: bytes | None,
        owned: bool,
        request: Any,
        timeout: float | None = None,
    ) -> PipelineOutcome:
        if not hook:
            raise InvalidInputError("hook: the hook name is empty")
        if request is not None:
            request = _request(request)
        # A generic payload is taken as it is (the common case, checked inline); a CMF
        # map the caller keeps is taken as a host's bytes are (payloads.held_snapshot).
        held = None
        if payload_type == PAYLOAD_GENERIC and type(payload) is dict:
            body = payload
        elif not owned and payload_wire is None and (held := payloads.held_snapshot(payload_type, payload)) is not None:
            body = None
        else:
            body = payloads.decode(payload_type, payload)
        if extensions is not None and type(extensions) is not dict:
            extensions = gating.as_wire(extensions)
            if extensions is not None and not isinstance(extensions, dict):
                raise InvalidInputError(f"extensions: expected a map, got {type(extensions).__name__}")
        plan = serving.plans.get(hook)
        if plan is None or not plan.plugins:
            # Nothing to run: the fast path of hooks nobody handles.
            outcome = PipelineOutcome(states=states)
            outcome.context = _carry(self, states, serving)
            return outcome
        ext: dict[str, Any] = dict(extensions) if extensions else {}
        # Decoded from MessagePack by the caller (the boundary): the map is plain data.
        plain = extensions_wire is not None
        resolution = serving.router.resolve(ext.get("meta"))
        tags = resolution.tags
        if tags:
            _tag(tags, ext)
        if resolution.plugins is not None or serving.conditional:
            plan = self._routed_plan(serving, hook, plan, resolution)
        settings = serving.config.plugin_settings
        limit, limit_source = settings.invoke_timeout, "plugin_settings.invoke_timeout"
        if timeout is not None and timeout < limit:
            limit, limit_source = timeout, "the call's timeout"
        inv = Invocation(
            hook,
            payload_type,
            held if held is not None else payloads.host_snapshot(payload_type, body, payload_wire, owned),
            payloads.extensions_snapshot(ext, extensions_wire if extensions else None, owned, plain)
            if not tags
            else _tagged_snapshot(ext, extensions_wire, owned, plain, tags),
            bool(ext),
            states,
            self.global_state,
            time.monotonic() + limit,
            limit,
            serving.limits,
            request,
            limit_source,
        )
        obs = observe.start(hook, request, self.decisions)
        if obs is None:
            outcome = run_pipeline(plan, inv)
        else:
            inv.observer = obs
            try:
                outcome = run_pipeline(plan, inv)
            except BaseException as exc:
                obs.finish(None, exc)
                raise
            obs.finish(outcome)
        if outcome.background is not None:
            serving.track(outcome.background)
        outcome.context = _carry(self, outcome.states, serving)
        return outcome

    @staticmethod
    def _routed_plan(serving: PluginSet, hook: str, plan: Plan, resolution: Resolution) -> Plan:
        """The hook's plan narrowed to the plugins the routes and conditions select,
        compiled once per resolution: kept with the resolution when the router caches
        it, else in a bounded table of the plugin set."""
        if resolution.plugins is None and not serving.conditional:
            return plan
        plans = resolution.plans
        if plans is not None:
            narrowed = plans.get(hook)
            if narrowed is None:
                narrowed = plans[hook] = plan.narrowed(lambda p: serving.router.admits(p.name, resolution))
            return narrowed
        key = (hook, resolution)
        narrowed = serving.narrowed.get(key)
        if narrowed is None:
            narrowed = plan.narrowed(lambda p: serving.router.admits(p.name, resolution))
            if len(serving.narrowed) >= max(serving.config.plugin_settings.route_cache_size, 1) * 4:
                serving.narrowed.clear()  # bounded, like the route cache
            serving.narrowed[key] = narrowed
        return narrowed
