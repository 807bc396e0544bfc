"""Resolves a plugin `kind` to its class: a name the host registered, or an import
path `package.module:ClassName`."""

from __future__ import annotations

import importlib
import os
import sys
import threading

from cpexrt.errors import ConfigError, InvalidInputError
from cpexrt.plugin import Plugin


class FactoryRegistry:
    """The kinds a host registered on one manager, before loading its config."""

    def __init__(self) -> None:
        self._kinds: dict[str, type[Plugin] | str] = {}
        self._lock = threading.Lock()

    def register(self, kind: str, target: type[Plugin] | str) -> None:
        """kind -> a Plugin subclass, or the import path 'package.module:ClassName' of one."""
        if not kind:
            raise InvalidInputError("kind: empty; a factory needs a name")
        if ":" in kind:
            raise InvalidInputError(f"kind: {kind!r} contains ':', which is reserved for import paths")
        if isinstance(target, str):
            _split(target, "target")
        elif not (isinstance(target, type) and issubclass(target, Plugin)):
            raise InvalidInputError(f"target: {target!r} is not a cpexrt.Plugin subclass or an import path")
        with self._lock:
            if kind in self._kinds:
                raise InvalidInputError(f"kind: {kind!r} is already registered")
            self._kinds[kind] = target

    @property
    def kinds(self) -> list[str]:
        return sorted(self._kinds)

    def resolve(self, kind: str, where: str) -> type[Plugin]:
        target = self._kinds.get(kind, kind)
        if not isinstance(target, str):
            return target
        if ":" not in target:
            known = ", ".join(self.kinds) or "none registered"
            raise ConfigError(
                f"{where}: unknown plugin kind {kind!r}; expected a registered kind ({known}) or 'package.module:ClassName'"
            )
        return import_plugin(target, where)


def _split(path: str, where: str) -> tuple[str, str]:
    module_name, sep, class_name = path.partition(":")
    if not sep or not module_name or not class_name:
        raise InvalidInputError(f"{where}: {path!r} is not an import path 'package.module:ClassName'")
    return module_name, class_name


def import_plugin(path: str, where: str) -> type[Plugin]:
    module_name, _, class_name = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is the config's fault
        raise ConfigError(f"{where}: cannot import module {module_name!r} of kind {path!r}: {type(exc).__name__}: {exc}") from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ConfigError(f"{where}: module {module_name!r} has no class {class_name!r}")
    if not (isinstance(cls, type) and issubclass(cls, Plugin)):
        raise ConfigError(f"{where}: {path!r} is not a subclass of cpexrt.Plugin")
    return cls


def add_plugin_dirs(dirs: list[str], base: str | None = None) -> None:
    """Makes the config's plugin directories importable. Relative paths are taken
    from base (the folder of the config file it was loaded from), else from the
    current working directory."""
    for i, d in enumerate(dirs):
        path = os.path.abspath(os.path.join(base, d) if base is not None else d)
        if not os.path.isdir(path):
            raise ConfigError(f"plugin_settings.plugin_dirs[{i}]: {d!r} is not a directory (resolved to {path})")
        if path not in sys.path:
            sys.path.append(path)
