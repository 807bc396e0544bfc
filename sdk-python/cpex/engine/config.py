"""The YAML config, validated; every error names the path of the bad field."""

from __future__ import annotations

from enum import Enum
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cpex.errors import ConfigError, ParseError


class Mode(str, Enum):
    SEQUENTIAL = "sequential"
    TRANSFORM = "transform"
    AUDIT = "audit"
    CONCURRENT = "concurrent"
    FIRE_AND_FORGET = "fire_and_forget"
    DISABLED = "disabled"


class OnError(str, Enum):
    FAIL = "fail"
    IGNORE = "ignore"
    DISABLE = "disable"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PluginSettings(_Strict):
    plugin_timeout: float = Field(default=30.0, gt=0)
    plugin_dirs: list[str] = Field(default_factory=list)


class PluginSpec(_Strict):
    name: str = Field(min_length=1)
    kind: str = Field(min_length=1)
    hooks: list[str] = Field(default_factory=list)
    mode: Mode = Mode.SEQUENTIAL
    priority: int = 100
    on_error: OnError = OnError.FAIL
    config: dict[str, Any] = Field(default_factory=dict)

    @field_validator("hooks")
    @classmethod
    def _hooks_named(cls, hooks: list[str]) -> list[str]:
        for h in hooks:
            if not h:
                raise ValueError("hook names must not be empty")
        return hooks


class Config(_Strict):
    plugin_settings: PluginSettings = Field(default_factory=PluginSettings)
    plugins: list[PluginSpec] = Field(default_factory=list)


def _path(loc: tuple[int | str, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


def parse_config(text: str) -> Config:
    """YAML text -> Config. ParseError for bad YAML, ConfigError for a bad shape."""
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
        problems = [f"{_path(e['loc']) or 'config'}: {e['msg']}" for e in exc.errors()]
        raise ConfigError("invalid config: " + "; ".join(problems)) from None
    seen: dict[str, int] = {}
    for i, spec in enumerate(config.plugins):
        if spec.name in seen:
            raise ConfigError(f"plugins[{i}].name: duplicate plugin name {spec.name!r} (also plugins[{seen[spec.name]}])")
        seen[spec.name] = i
    return config
