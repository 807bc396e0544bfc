"""The YAML config, validated; every error names the path of the bad field."""

from __future__ import annotations

import re
import reprlib
from enum import StrEnum
from typing import Annotated, Any, ClassVar

import yaml  # type: ignore[import-untyped, unused-ignore]  # typed only with types-PyYAML installed
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from cpexrt._generated.slots import CAPABILITIES
from cpexrt.engine.patterns import check_pattern
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


# Defaults made by Python functions: pydantic reads a default factory's signature, and
# for a builtin (list, dict) or a model class that parse costs more than the model's
# own field (about 1 ms each, at every start-up).
def _new_list() -> list[Any]:
    return []


def _new_dict() -> dict[str, Any]:
    return {}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PluginSettings(_Strict):
    # py-cpex's templates write keys of the gateway it came from; py-cpex 0.1.4 itself
    # ignores plugin_settings. plugin_timeout is honoured; these load with no effect
    # (README: "Using CPEX plugins"): fail_on_plugin_error (cpex always fails a load
    # on a broken plugin), parallel_execution_within_band, enable_plugin_api,
    # plugin_health_check_interval.
    fail_on_plugin_error: bool | None = None
    parallel_execution_within_band: bool | None = None
    enable_plugin_api: bool | None = None
    plugin_health_check_interval: float | None = None
    routing_enabled: bool = False
    plugin_timeout: float = Field(default=30.0, gt=0, description="seconds a plugin may run")
    invoke_timeout: float = Field(default=60.0, gt=0, description="seconds a whole invoke may run")
    plugin_dirs: list[str] = Field(default_factory=_new_list)
    route_cache_size: int = Field(default=1024, ge=0)
    engine_workers: int = Field(
        default=0,
        ge=0,
        le=64,
        description="processes the engine of a libcpex manager runs in, so that calls run in parallel (0: in the host)",
    )
    max_payload_bytes: int = Field(default=MAX_PAYLOAD_BYTES, ge=1, description="largest payload accepted or returned, encoded")
    max_extensions_bytes: int = Field(
        default=MAX_EXTENSIONS_BYTES, ge=1, description="largest extensions map accepted or returned, encoded"
    )
    max_collection_entries: int = Field(default=MAX_COLLECTION_ENTRIES, ge=1, description="most entries of one map or array")
    venv_cache_dir: str | None = Field(
        default=None,
        description="where isolated plugins' virtualenvs are created (default $CPEX_VENV_CACHE, ~/.cache/cpex/venvs)",
    )


def _route_pattern(text: str) -> str:
    return check_pattern(text, "route")


def _condition_pattern(text: str) -> str:
    return check_pattern(text, "condition")


# Entity names or wildmatch patterns (cpexrt.engine.patterns), refused at load when the
# matcher does not support them; the error's path names the entry.
RoutePattern = Annotated[str, AfterValidator(_route_pattern)]
ConditionPattern = Annotated[str, AfterValidator(_condition_pattern)]


class Conditions(_Strict):
    """The plugin runs only when every listed condition matches (empty = always).
    tags is cpex's; server_ids ... content_types are py-cpex's, for py-cpex plugins
    (matched by py-cpex's own code against the request's global context)."""

    tools: list[ConditionPattern] = Field(default_factory=_new_list)
    resources: list[ConditionPattern] = Field(default_factory=_new_list)
    prompts: list[ConditionPattern] = Field(default_factory=_new_list)
    tags: list[str] = Field(default_factory=_new_list, description="any of these tags")
    server_ids: list[str] | None = None
    tenant_ids: list[str] | None = None
    agents: list[str] | None = None
    user_patterns: list[str] | None = None
    content_types: list[str] | None = None

    PYCPEX_ONLY: ClassVar[tuple[str, ...]] = ("server_ids", "tenant_ids", "agents", "user_patterns", "content_types")

    def given(self) -> list[str]:
        """The names of the fields this entry sets."""
        return [name for name in type(self).model_fields if getattr(self, name)]


_LEGACY_MODES = {"enforce": "sequential", "enforce_ignore_error": "sequential", "permissive": "transform"}


class PluginSpec(_Strict):
    name: str = Field(min_length=1)
    kind: str = Field(min_length=1)
    description: str | None = None
    author: str | None = None
    version: str | None = None
    namespace: str | None = None
    tags: list[str] = Field(default_factory=_new_list)
    applied_to: dict[str, Any] | None = Field(default=None, description="py-cpex: recorded, no effect (as in py-cpex 0.1.4)")
    max_content_size: int | None = Field(default=None, ge=1, description="py-cpex: for isolated_venv workers only")
    hooks: list[str] = Field(default_factory=_new_list)
    mode: Mode = Mode.SEQUENTIAL
    priority: int = 100
    on_error: OnError = OnError.FAIL
    timeout: float | None = Field(default=None, gt=0, description="overrides plugin_settings.plugin_timeout")
    capabilities: list[str] = Field(default_factory=_new_list)
    config: dict[str, Any] = Field(default_factory=_new_dict)
    conditions: list[Conditions] = Field(default_factory=_new_list, description="any entry matching enables the plugin")
    isolation: Isolation | None = Field(default=None, description="none (default), thread or process")
    workers: int = Field(default=1, ge=1, le=64, description="isolation process: worker processes; thread: helper threads")
    python: str | None = Field(default=None, min_length=1, description="isolation process: the workers' interpreter")
    requirements: list[str] = Field(
        default_factory=_new_list, description="isolation process: pip requirements of its virtualenv"
    )
    max_memory_mb: int | None = Field(default=None, ge=16, description="isolation process: each worker's address-space limit")
    env: list[str] = Field(default_factory=_new_list, description="isolation process: environment variables the workers get")

    _PROCESS_ONLY: ClassVar[tuple[str, ...]] = ("python", "requirements", "max_memory_mb", "env")

    @model_validator(mode="after")
    def _isolation_fields(self) -> PluginSpec:
        process = self.isolation is Isolation.PROCESS or self.kind == "isolated_venv"
        if self.kind == "isolated_venv" and self.isolation not in (None, Isolation.PROCESS):
            raise ValueError(
                f"a py-cpex isolated_venv plugin runs in worker processes; isolation {self.isolation.value} is not possible"
            )
        for name in self._PROCESS_ONLY:
            if name in self.model_fields_set and not process:
                raise ValueError(f"{name} applies to isolation: process only")
        if "workers" in self.model_fields_set and not process and self.isolation is not Isolation.THREAD:
            raise ValueError("workers applies to isolation: process or thread only")
        for i, name in enumerate(self.env):
            if not name or "=" in name:
                raise ValueError(f"env[{i}]: {name!r} is not an environment variable name")
        return self

    _shadow: bool = PrivateAttr(default=False)

    @model_validator(mode="wrap")
    @classmethod
    def _legacy_mode(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        """py-cpex's legacy modes: enforce -> sequential, enforce_ignore_error ->
        sequential with on_error ignore (unless given), permissive -> transform in
        shadow: its denies are recorded, not enforced (see `shadow`)."""
        legacy = None
        if isinstance(data, dict) and isinstance(data.get("mode"), str) and data["mode"] in _LEGACY_MODES:
            legacy = data["mode"]
            data = {**data, "mode": _LEGACY_MODES[legacy]}
            if legacy == "enforce_ignore_error":
                data.setdefault("on_error", "ignore")
        spec = handler(data)
        if legacy == "permissive":
            spec._shadow = True
        return spec

    @property
    def shadow(self) -> bool:
        """mode: permissive (shadow mode): the plugin runs in the transform phase and
        its denies are recorded (PluginError code not_enforced, decision records, spans,
        metrics) but not enforced, for cpex and py-cpex plugins alike."""
        return self._shadow

    @field_validator("config", mode="before")
    @classmethod
    def _config_may_be_null(cls, value: Any) -> Any:
        return {} if value is None else value  # py-cpex writes `config:` with nothing under it

    @field_validator("hooks")
    @classmethod
    def _hooks_named(cls, hooks: list[str]) -> list[str]:
        for i, h in enumerate(hooks):
            if not h:
                raise ValueError(f"hooks[{i}] is empty")
        return hooks


class PolicyGroup(_Strict):
    plugins: list[str] = Field(default_factory=_new_list)


class GlobalPolicies(_Strict):
    policies: dict[str, PolicyGroup] = Field(default_factory=_new_dict)


class RouteMeta(_Strict):
    tags: list[str] = Field(default_factory=_new_list)


class Route(_Strict):
    tool: RoutePattern | None = None
    resource: RoutePattern | None = None
    prompt: RoutePattern | None = None
    meta: RouteMeta = Field(default_factory=lambda: RouteMeta())
    plugins: list[str] = Field(default_factory=_new_list)

    @model_validator(mode="after")
    def _one_entity(self) -> Route:
        given = [k for k in ("tool", "resource", "prompt") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"a route names exactly one of tool, resource, prompt (got {', '.join(given) or 'none'})")
        return self

    @property
    def entity(self) -> tuple[str, str]:
        for kind in ("tool", "resource", "prompt"):
            name = getattr(self, kind)
            if name is not None:
                return kind, name
        raise AssertionError("validated: one entity")


class DecisionRecords(_Strict):
    """Decision records (engine/decisions.py): the JSON-lines file they are appended to
    (relative paths from the config file's folder), and whether they carry the values
    of modified fields (never by default: names only)."""

    file: str | None = Field(default=None, min_length=1)
    include_values: bool = False


class Config(_Strict):
    decision_records: DecisionRecords = Field(default_factory=lambda: DecisionRecords())
    plugin_dirs: list[str] = Field(default_factory=_new_list, description="py-cpex's place for plugin_settings.plugin_dirs")
    plugin_settings: PluginSettings = Field(default_factory=lambda: PluginSettings())
    global_: GlobalPolicies = Field(default_factory=lambda: GlobalPolicies(), alias="global")
    plugins: list[PluginSpec] = Field(default_factory=_new_list)
    routes: list[Route] = Field(default_factory=_new_list)


def _path(loc: tuple[int | str, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


# A bad value is shown, but briefly: YAML aliases can make a small file hold a value
# whose full repr is exponentially large.
_SHOWN = reprlib.Repr()
_SHOWN.maxstring = _SHOWN.maxother = 60
_SHOWN.maxlist = _SHOWN.maxdict = _SHOWN.maxtuple = _SHOWN.maxset = 4
_SHOWN.maxlevel = 2
# At most this many problems are listed in one error; the rest are counted.
_MAX_PROBLEMS = 10


def _message(err: Any) -> str:
    if err["type"] == "enum":
        return f"expected one of {err['ctx']['expected']}, got {_SHOWN.repr(err['input'])}"
    if err["type"] == "extra_forbidden":
        return "unknown field"
    msg: str = err["msg"].removeprefix("Value error, ")
    if err["type"].endswith("_type") or err["type"].endswith("_parsing"):
        msg += f", got {_SHOWN.repr(err['input'])}"  # e.g. YAML read `name: no` as False
    return msg


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
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        problems = [f"{_path(e['loc']) or 'config'}: {_message(e)}" for e in errors[:_MAX_PROBLEMS]]
        if len(errors) > _MAX_PROBLEMS:
            problems.append(f"and {len(errors) - _MAX_PROBLEMS} more problems")
        raise ConfigError("invalid config: " + "; ".join(problems)) from None
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
