"""Which plugins apply to an invocation: routes, policy groups, tags, conditions."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from cpex.engine.config import Conditions, Config

ALL_GROUP = "all"


@dataclass(frozen=True)
class Resolution:
    """The entity's tags (its own plus the matched route's) and the names of the
    plugins that apply; plugins None means every plugin (routing disabled)."""

    entity_type: str
    entity_name: str
    tags: tuple[str, ...]
    plugins: frozenset[str] | None


class Router:
    def __init__(self, config: Config) -> None:
        self._enabled = config.plugin_settings.routing_enabled
        self._routes = config.routes
        self._groups = {name: tuple(group.plugins) for name, group in config.global_.policies.items()}
        self._cache: OrderedDict[tuple[str, str, tuple[str, ...]], Resolution] = OrderedDict()
        self._cache_size = config.plugin_settings.route_cache_size
        self._lock = threading.Lock()

    def resolve(self, meta: Any) -> Resolution:
        entity_type, entity_name, tags = _entity(meta)
        if not self._enabled:
            return Resolution(entity_type, entity_name, tags, None)
        key = (entity_type, entity_name, tags)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        resolution = self._resolve(entity_type, entity_name, tags)
        if self._cache_size:
            with self._lock:
                self._cache[key] = resolution
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return resolution

    def _resolve(self, entity_type: str, entity_name: str, tags: tuple[str, ...]) -> Resolution:
        names: list[str] = list(self._groups.get(ALL_GROUP, ()))
        route = next((r for r in self._routes if _matches(r.entity, entity_type, entity_name)), None)
        if route is not None:
            tags = tuple(dict.fromkeys((*tags, *route.meta.tags)))
            names += route.plugins
        for tag in tags:
            if tag != ALL_GROUP:
                names += self._groups.get(tag, ())
        return Resolution(entity_type, entity_name, tags, frozenset(names))

    @property
    def cached(self) -> int:
        return len(self._cache)


def _matches(route_entity: tuple[str, str], entity_type: str, entity_name: str) -> bool:
    kind, name = route_entity
    return bool(entity_type) and kind == entity_type and (name == "*" or name == entity_name)


def _entity(meta: Any) -> tuple[str, str, tuple[str, ...]]:
    if not isinstance(meta, dict):
        return "", "", ()
    tags = meta.get("tags") or ()
    return (
        str(meta.get("entity_type") or ""),
        str(meta.get("entity_name") or ""),
        tuple(str(t) for t in tags) if isinstance(tags, (list, tuple)) else (),
    )


def conditions_match(conditions: list[Conditions], resolution: Resolution) -> bool:
    """No conditions: always. Otherwise any entry whose every non-empty list matches."""
    if not conditions:
        return True
    return any(_condition_matches(c, resolution) for c in conditions)


def _condition_matches(c: Conditions, r: Resolution) -> bool:
    for kind, names in (("tool", c.tools), ("resource", c.resources), ("prompt", c.prompts)):
        if names and not (r.entity_type == kind and r.entity_name in names):
            return False
    return not c.tags or any(t in r.tags for t in c.tags)
