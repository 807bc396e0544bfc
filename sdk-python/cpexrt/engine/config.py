"""The YAML config, validated; every error names the path of the bad field.

The classes are cpexrt.engine.shape's (a small validator of plain data of cpex's own):
pydantic's import cost half a cold start, and msgspec reports only a config's first
problem where cpex lists every one (up to ten) with its path.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, ClassVar

import yaml  # type: ignore[import-untyped, unused-ignore]  # typed only with types-PyYAML installed

from cpexrt._generated.slots import CAPABILITIES
from cpexrt.engine.patterns import check_pattern
from cpexrt.engine.shape import (
    BAD,
    Shape,
    anything,
    at,
    boolean,
    choice,
    dict_of,
    error,
    field,
    integer,
    list_of,
    model,
    number,
    optional,
    problem,
    string,
)
from cpexrt.errors import ConfigError, ParseError


class Mode(StrEnum):
    SEQUENTIAL = "sequential"
    TRANSFORM = "transform"
    AUDIT = "audit"
    CONCURRENT = "concurrent"
    FIRE_AND_FORGET = "fire_and_forget"
    DISABLED = "disabled"


class Isolation(StrEnum):
    NONE = "none"  # in the host, on the caller's thread (the default)
    THREAD = "thread"  # in the host, on a helper thread: the caller is released at the deadline
    PROCESS = "process"  # in worker processes (cpexrt.engine.isolation)


class OnError(StrEnum):
    FAIL = "fail"
    IGNORE = "ignore"
    DISABLE = "disable"


# The size limits' defaults: 10 MiB as upstream CPEX's isolated host uses for a
# payload, 1 MiB for extensions (headers, tokens, labels), 100k entries per map / array.
MAX_PAYLOAD_BYTES = 10 * 1024 * 1024
MAX_EXTENSIONS_BYTES = 1024 * 1024
MAX_COLLECTION_ENTRIES = 100_000

_STRS = list_of(string())
_MAYBE_STRS = optional(_STRS)
_MAYBE_STR = optional(string())
_MAYBE_BOOL = optional(boolean)


class PluginSettings(Shape):
    # py-cpex's templates write keys of the gateway it came from; py-cpex 0.1.4 itself
    # ignores plugin_settings. plugin_timeout is honoured; these load with no effect
    # (README: "Using CPEX plugins"): fail_on_plugin_error (cpex always fails a load
    # on a broken plugin), parallel_execution_within_band, enable_plugin_api,
    # plugin_health_check_interval.
    fail_on_plugin_error: bool | None = field(_MAYBE_BOOL, None)
    parallel_execution_within_band: bool | None = field(_MAYBE_BOOL, None)
    enable_plugin_api: bool | None = field(_MAYBE_BOOL, None)
    plugin_health_check_interval: float | None = field(optional(number()), None)
    routing_enabled: bool = field(boolean, False)
    plugin_timeout: float = field(number(gt=0), 30.0)  # seconds a plugin may run
    invoke_timeout: float = field(number(gt=0), 60.0)  # seconds a whole invoke may run
    plugin_dirs: list[str] = field(_STRS, factory=list)
    route_cache_size: int = field(integer(ge=0), 1024)
    # processes the engine of a libcpex manager runs in, so that calls run in parallel (0: in the host)
    engine_workers: int = field(integer(ge=0, le=64), 0)
    max_payload_bytes: int = field(integer(ge=1), MAX_PAYLOAD_BYTES)  # largest payload accepted or returned, encoded
    max_extensions_bytes: int = field(integer(ge=1), MAX_EXTENSIONS_BYTES)  # largest extensions map, encoded
    max_collection_entries: int = field(integer(ge=1), MAX_COLLECTION_ENTRIES)  # most entries of one map or array
    # where isolated plugins' virtualenvs are created (default $CPEX_VENV_CACHE, ~/.cache/cpex/venvs)
    venv_cache_dir: str | None = field(_MAYBE_STR, None)


def _route_pattern(text: str) -> str:
    return check_pattern(text, "route")


def _condition_pattern(text: str) -> str:
    return check_pattern(text, "condition")


# Entity names or wildmatch patterns (cpexrt.engine.patterns), refused at load when the
# matcher does not support them; the error's path names the entry.
_ROUTE_PATTERN = optional(string(then=_route_pattern))
_CONDITION_PATTERNS = list_of(string(then=_condition_pattern))


class Conditions(Shape):
    """The plugin runs only when every listed condition matches (empty = always).
    tags is cpex's; server_ids ... content_types are py-cpex's, for py-cpex plugins
    (matched by py-cpex's own code against the request's global context)."""

    tools: list[str] = field(_CONDITION_PATTERNS, factory=list)
    resources: list[str] = field(_CONDITION_PATTERNS, factory=list)
    prompts: list[str] = field(_CONDITION_PATTERNS, factory=list)
    tags: list[str] = field(_STRS, factory=list)  # any of these tags
    server_ids: list[str] | None = field(_MAYBE_STRS, None)
    tenant_ids: list[str] | None = field(_MAYBE_STRS, None)
    agents: list[str] | None = field(_MAYBE_STRS, None)
    user_patterns: list[str] | None = field(_MAYBE_STRS, None)
    content_types: list[str] | None = field(_MAYBE_STRS, None)

    PYCPEX_ONLY: ClassVar[tuple[str, ...]] = ("server_ids", "tenant_ids", "agents", "user_patterns", "content_types")

    def given(self) -> list[str]:
        """The names of the fields this entry sets."""
        return [f.name for f in self.fields if getattr(self, f.name)]


_LEGACY_MODES = {"enforce": "sequential", "enforce_ignore_error": "sequential", "permissive": "transform"}


def _hook_name(name: str) -> str:
    if not name:
        raise ValueError("expected a hook name, got ''")
    return name


def _config(value: Any, path: str, problems: list[str]) -> Any:
    return {} if value is None else _CONFIG(value, path, problems)  # py-cpex writes `config:` with nothing under it


_CONFIG = dict_of(anything)


class PluginSpec(Shape):
    name: str = field(string(min_length=1))
    kind: str = field(string(min_length=1))
    description: str | None = field(_MAYBE_STR, None)
    author: str | None = field(_MAYBE_STR, None)
    version: str | None = field(_MAYBE_STR, None)
    namespace: str | None = field(_MAYBE_STR, None)
    tags: list[str] = field(_STRS, factory=list)
    applied_to: dict[str, Any] | None = field(optional(_CONFIG), None)  # py-cpex: recorded, no effect (as in py-cpex 0.1.4)
    max_content_size: int | None = field(optional(integer(ge=1)), None)  # py-cpex: for isolated_venv workers only
    hooks: list[str] = field(list_of(string(then=_hook_name)), factory=list)
    mode: Mode = field(choice(Mode), Mode.SEQUENTIAL)
    priority: int = field(integer(), 100)
    on_error: OnError = field(choice(OnError), OnError.FAIL)
    timeout: float | None = field(optional(number(gt=0)), None)  # overrides plugin_settings.plugin_timeout
    capabilities: list[str] = field(_STRS, factory=list)
    config: dict[str, Any] = field(_config, factory=dict)
    # any entry matching enables the plugin
    conditions: list[Conditions] = field(list_of(model(Conditions)), factory=list)
    isolation: Isolation | None = field(optional(choice(Isolation)), None)  # none (default), thread or process
    workers: int = field(integer(ge=1, le=64), 1)  # isolation process: worker processes; thread: helper threads
    python: str | None = field(optional(string(min_length=1)), None)  # isolation process: the workers' interpreter
    requirements: list[str] = field(_STRS, factory=list)  # isolation process: pip requirements of its virtualenv
    max_memory_mb: int | None = field(optional(integer(ge=16)), None)  # isolation process: each worker's address-space limit
    env: list[str] = field(_STRS, factory=list)  # isolation process: environment variables the workers get

    _PROCESS_ONLY: ClassVar[tuple[str, ...]] = ("python", "requirements", "max_memory_mb", "env")

    _shadow = False

    def prepare(self, data: dict[Any, Any]) -> dict[Any, Any]:
        """py-cpex's legacy modes: enforce -> sequential, enforce_ignore_error ->
        sequential with on_error ignore (unless given), permissive -> transform in
        shadow: its denies are recorded, not enforced (see `shadow`)."""
        legacy = data.get("mode")
        if type(legacy) is not str or legacy not in _LEGACY_MODES:
            return data
        data = {**data, "mode": _LEGACY_MODES[legacy]}
        if legacy == "enforce_ignore_error":
            data.setdefault("on_error", "ignore")
        self._shadow = legacy == "permissive"
        return data

    def verify(self, path: str, problems: list[str]) -> None:
        process = self.isolation is Isolation.PROCESS or self.kind == "isolated_venv"
        if self.kind == "isolated_venv" and self.isolation not in (None, Isolation.PROCESS):
            problem(
                problems,
                path,
                f"a py-cpex isolated_venv plugin runs in worker processes; isolation {self.isolation.value} is not possible",
            )
        for name in self._PROCESS_ONLY:
            if name in self.fields_set and not process:
                problem(problems, path, f"{name} applies to isolation: process only")
        if "workers" in self.fields_set and not process and self.isolation is not Isolation.THREAD:
            problem(problems, path, "workers applies to isolation: process or thread only")
        for i, name in enumerate(self.env):
            if not name or "=" in name:
                problem(problems, f"{at(path, 'env')}[{i}]", f"{name!r} is not an environment variable name")

    def __eq__(self, other: object) -> bool:
        same = super().__eq__(other)
        # shadow (mode: permissive) is no field's value, but tells two specs apart
        return same if same is NotImplemented or not same else self._shadow == other._shadow  # type: ignore[attr-defined]

    @property
    def shadow(self) -> bool:
        """mode: permissive (shadow mode): the plugin runs in the transform phase and
        its denies are recorded (PluginError code not_enforced, decision records, spans,
        metrics) but not enforced, for cpex and py-cpex plugins alike."""
        return self._shadow


class PolicyGroup(Shape):
    plugins: list[str] = field(_STRS, factory=list)


class GlobalPolicies(Shape):
    policies: dict[str, PolicyGroup] = field(dict_of(model(PolicyGroup)), factory=dict)


class RouteMeta(Shape):
    tags: list[str] = field(_STRS, factory=list)


class Route(Shape):
    tool: str | None = field(_ROUTE_PATTERN, None)
    resource: str | None = field(_ROUTE_PATTERN, None)
    prompt: str | None = field(_ROUTE_PATTERN, None)
    meta: RouteMeta = field(model(RouteMeta), factory=RouteMeta)
    plugins: list[str] = field(_STRS, factory=list)

    def verify(self, path: str, problems: list[str]) -> None:
        given = [k for k in ("tool", "resource", "prompt") if getattr(self, k) is not None]
        if len(given) != 1:
            problem(problems, path, f"a route names exactly one of tool, resource, prompt (got {', '.join(given) or 'none'})")

    @property
    def entity(self) -> tuple[str, str]:
        for kind in ("tool", "resource", "prompt"):
            name = getattr(self, kind)
            if name is not None:
                return kind, name
        raise AssertionError("validated: one entity")


class DecisionRecords(Shape):
    """Decision records (engine/decisions.py): the JSON-lines file they are appended to
    (relative paths from the config file's folder), and whether they carry the values
    of modified fields (never by default: names only)."""

    file: str | None = field(optional(string(min_length=1)), None)
    include_values: bool = field(boolean, False)


class Config(Shape):
    decision_records: DecisionRecords = field(model(DecisionRecords), factory=DecisionRecords)
    plugin_dirs: list[str] = field(_STRS, factory=list)  # py-cpex's place for plugin_settings.plugin_dirs
    plugin_settings: PluginSettings = field(model(PluginSettings), factory=PluginSettings)
    global_: GlobalPolicies = field(model(GlobalPolicies), factory=GlobalPolicies, alias="global")
    plugins: list[PluginSpec] = field(list_of(model(PluginSpec)), factory=list)
    routes: list[Route] = field(list_of(model(Route)), factory=list)


# Deeper flow collections ([ and { inside each other) than any config has: refused
# before the YAML parser, whose pure-Python composer takes seconds to recurse into them.
_MAX_FLOW_DEPTH = 64
_FLOW = re.compile(r"""[][{}"']""")


def _flow_too_deep(text: str) -> bool:
    """Whether the flow brackets outside quoted scalars nest deeper than _MAX_FLOW_DEPTH
    (an approximation of YAML's lexing that can only over-count brackets in plain
    scalars, which no config nests this deep)."""
    if text.count("[") + text.count("{") <= _MAX_FLOW_DEPTH:
        return False
    depth, quote = 0, ""
    for m in _FLOW.finditer(text):
        ch = m.group()
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
            if depth > _MAX_FLOW_DEPTH:
                return True
        elif depth:
            depth -= 1
    return False


def parse_config(text: str) -> Config:
    """YAML text -> Config. ParseError for bad YAML, ConfigError for a bad shape or
    inconsistent references."""
    if _flow_too_deep(text):
        raise ParseError("config: nested too deeply to be a config (maps and lists inside each other)")
    try:
        return _parse_config(text)
    except RecursionError:
        raise ParseError("config: nested too deeply to be a config (maps and lists inside each other)") from None


def _parse_config(text: str) -> Config:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ParseError(f"config: YAML syntax error{where}: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config: expected a mapping at the top level, got {type(data).__name__}")
    problems: list[str] = []
    config: Config = Config.build(data, "", problems)
    if config is BAD:
        raise error(problems)
    if config.plugin_dirs:  # py-cpex's top-level plugin_dirs joins cpex's
        dirs = [
            *config.plugin_settings.plugin_dirs,
            *(d for d in config.plugin_dirs if d not in config.plugin_settings.plugin_dirs),
        ]
        config.plugin_settings.plugin_dirs = dirs
    _check_references(config)
    return config


def _check_references(config: Config) -> None:
    seen: dict[str, int] = {}
    for i, spec in enumerate(config.plugins):
        for j, cap in enumerate(spec.capabilities):
            if cap not in CAPABILITIES:
                raise ConfigError(
                    f"plugins[{i}].capabilities[{j}]: unknown capability {cap!r}; "
                    f"expected one of {', '.join(sorted(CAPABILITIES))}"
                )
        if spec.name in seen:
            raise ConfigError(f"plugins[{i}].name: duplicate plugin name {spec.name!r} (also plugins[{seen[spec.name]}])")
        seen[spec.name] = i
    for group, policy in config.global_.policies.items():
        for j, name in enumerate(policy.plugins):
            if name not in seen:
                raise ConfigError(f"global.policies.{group}.plugins[{j}]: no plugin named {name!r}")
    for i, route in enumerate(config.routes):
        for j, name in enumerate(route.plugins):
            if name not in seen:
                raise ConfigError(f"routes[{i}].plugins[{j}]: no plugin named {name!r}")


def check_conditions(spec: PluginSpec, where: str, pycpex: bool) -> None:
    """Each dialect's condition fields on its own plugins only (pycpex: the plugin is a
    py-cpex one): a field the plugin's matcher would not look at is refused, never
    ignored."""
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
