"""Which plugins apply to an invocation: routes, policy groups, tags, conditions.

Route and condition names are exact names or wildmatch patterns (cpexrt.engine.patterns),
compiled once when the config loads. When several routes match an entity, the most
specific wins, as in the Rust cpex: an exact name, then a pattern, then the catch-all
`*`; within one of these tiers, the first route in config order.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from cpexrt.engine.config import Conditions, Config, Route
from cpexrt.engine.patterns import Pattern

ALL_GROUP = "all"
KINDS = ("tool", "resource", "prompt")


class Resolution:
    """The entity's tags (its own plus the matched route's) and the names of the
    plugins that apply; plugins None means every plugin of the hook (routing disabled,
    or a call without an entity). plans: the hooks' plans narrowed to it (compiled by
    the manager when first needed), for a resolution the router caches; else None.
    Read-only once made; equal (and hashed) by what it resolved to."""

    __slots__ = ("entity_type", "entity_name", "tags", "plugins", "plans")

    def __init__(
        self,
        entity_type: str,
        entity_name: str,
        tags: tuple[str, ...],
        plugins: frozenset[str] | None,
        plans: dict[str, Any] | None = None,
    ) -> None:
        self.entity_type, self.entity_name, self.tags, self.plugins = entity_type, entity_name, tags, plugins
        self.plans = plans

    def _key(self) -> tuple[Any, ...]:
        return (self.entity_type, self.entity_name, self.tags, self.plugins)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Resolution) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"Resolution(entity_type={self.entity_type!r}, entity_name={self.entity_name!r}, "
            f"tags={self.tags!r}, plugins={self.plugins!r})"
        )

    @property
    def has_entity(self) -> bool:
        """The call named an entity: meta carried both entity_type and entity_name."""
        return bool(self.entity_type and self.entity_name)


class Names:
    """A compiled list of names and patterns: exact names in a set, patterns in order."""

    __slots__ = ("exact", "patterns")

    def __init__(self, texts: list[str]) -> None:
        compiled = [Pattern(t) for t in texts]
        self.exact = frozenset(p.text for p in compiled if p.exact)
        self.patterns = tuple(p for p in compiled if not p.exact)

    def matches(self, name: str) -> bool:
        return name in self.exact or any(p.matches(name) for p in self.patterns)


class _Condition:
    """One compiled `conditions` entry: every non-empty list must match."""

    __slots__ = ("entities", "tags")

    def __init__(self, c: Conditions) -> None:
        self.entities = tuple(
            (kind, Names(names)) for kind, names in zip(KINDS, (c.tools, c.resources, c.prompts), strict=True) if names
        )
        self.tags = frozenset(c.tags)

    def matches(self, r: Resolution) -> bool:
        for kind, names in self.entities:
            # No entity (no meta, or one without a type or name): names never match.
            if not (r.has_entity and r.entity_type == kind and names.matches(r.entity_name)):
                return False
        return not self.tags or any(t in self.tags for t in r.tags)


class Router:
    def __init__(self, config: Config) -> None:
        self._enabled = config.plugin_settings.routing_enabled
        self._groups = {name: tuple(group.plugins) for name, group in config.global_.policies.items()}
        # The routes by tier: exact names (first per entity), patterns in config order,
        # the catch-all `*` (first per kind).
        self._exact: dict[tuple[str, str], Route] = {}
        self._patterns: list[tuple[str, Pattern, Route]] = []
        self._catch_all: dict[str, Route] = {}
        for route in config.routes:
            kind, text = route.entity
            pattern = Pattern(text)
            if pattern.exact:
                self._exact.setdefault((kind, text), route)
            elif pattern.catch_all:
                self._catch_all.setdefault(kind, route)
            else:
                self._patterns.append((kind, pattern, route))
        self._conditions = {
            spec.name: tuple(_Condition(c) for c in spec.conditions) for spec in config.plugins if spec.conditions
        }
        self._cache: OrderedDict[tuple[str, str, tuple[str, ...]], Resolution] = OrderedDict()
        self._cache_size = config.plugin_settings.route_cache_size
        self._lock = threading.Lock()

    def resolve(self, meta: Any) -> Resolution:
        """The call's resolution. Cached resolutions are read without a lock (a dict
        read is atomic); the cache is changed under the lock, and bounded by
        route_cache_size, least recently used out first."""
        key = _entity(meta)
        cache = self._cache
        hit = cache.get(key)
        if hit is not None:
            try:
                cache.move_to_end(key)
            except KeyError:  # evicted by another thread meanwhile: it is still this call's
                pass
            return hit
        entity_type, entity_name, tags = key
        if self._enabled:
            resolution = self._resolve(entity_type, entity_name, tags)
        else:
            resolution = Resolution(entity_type, entity_name, tags, None)
        if self._cache_size:
            resolution.plans = {}
            with self._lock:
                cache[key] = resolution
                while len(cache) > self._cache_size:
                    cache.popitem(last=False)
        return resolution

    def _resolve(self, entity_type: str, entity_name: str, tags: tuple[str, ...]) -> Resolution:
        if not (entity_type and entity_name):
            # No entity to route on: every plugin of the hook runs (subject to its
            # conditions), so a host that forgets meta never silently skips policies.
            return Resolution(entity_type, entity_name, tags, None)
        names: list[str] = list(self._groups.get(ALL_GROUP, ()))
        route = self.route_for(entity_type, entity_name)
        if route is not None:
            tags = tuple(dict.fromkeys((*tags, *route.meta.tags)))
            names += route.plugins
        for tag in tags:
            if tag != ALL_GROUP:
                names += self._groups.get(tag, ())
        return Resolution(entity_type, entity_name, tags, frozenset(names))

    def route_for(self, entity_type: str, entity_name: str) -> Route | None:
        """The route of an entity: the most specific match, ties to config order."""
        route = self._exact.get((entity_type, entity_name))
        if route is not None:
            return route
        for kind, pattern, candidate in self._patterns:
            if kind == entity_type and pattern.matches(entity_name):
                return candidate
        return self._catch_all.get(entity_type)

    def admits(self, plugin: str, resolution: Resolution) -> bool:
        """The plugin runs for this resolution: it is selected (or every plugin is) and
        any of its conditions entries matches (no conditions: always)."""
        if resolution.plugins is not None and plugin not in resolution.plugins:
            return False
        conditions = self._conditions.get(plugin)
        return conditions is None or any(c.matches(resolution) for c in conditions)

    @property
    def cached(self) -> int:
        return len(self._cache)


_NO_ENTITY: tuple[str, str, tuple[str, ...]] = ("", "", ())


def _entity(meta: Any) -> tuple[str, str, tuple[str, ...]]:
    """(entity_type, entity_name, tags) of a call's meta, as strings."""
    if type(meta) is not dict:
        if not isinstance(meta, dict):
            return _NO_ENTITY
    entity_type = meta.get("entity_type")
    entity_name = meta.get("entity_name")
    tags = meta.get("tags")
    if type(entity_type) is not str:
        entity_type = str(entity_type or "")
    if type(entity_name) is not str:
        entity_name = str(entity_name or "")
    return (
        entity_type,
        entity_name,
        (tuple(str(t) for t in tags) if isinstance(tags, (list, tuple)) else ()) if tags else (),
    )
