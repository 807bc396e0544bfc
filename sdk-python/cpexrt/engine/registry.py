"""Resolves a plugin `kind` to its class: a name the host registered, or an import
path, `package.module:ClassName` or py-cpex's dotted `package.module.ClassName`. The
class is a cpexrt.Plugin, or a py-cpex `cpex.framework.Plugin` (run through
cpexrt.engine.pycpex)."""

from __future__ import annotations

import importlib
import os
import sys
import threading
from typing import Any

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

    def registered(self, kind: str) -> type[Plugin] | str | None:
        """What kind was registered as, or None."""
        return self._kinds.get(kind)

    @property
    def kinds(self) -> list[str]:
        return sorted(self._kinds)

    def resolve(self, kind: str, where: str) -> type:
        """The class of kind: a cpexrt.Plugin subclass, or a py-cpex Plugin subclass."""
        target = self._kinds.get(kind, kind)
        if not isinstance(target, str):
            return target
        if target == "external":
            raise ConfigError(
                f"{where}: py-cpex's kind 'external' (a plugin served over MCP, gRPC or a socket) is not supported; "
                "run the plugin's class in cpex's worker processes instead (isolation: process, or kind: isolated_venv)"
            )
        if ":" not in target:
            module, dot, name = target.rpartition(".")
            if dot and module and name and kind not in self._kinds:
                return import_plugin(f"{module}:{name}", where, shown=target)
            known = ", ".join(self.kinds) or "none registered"
            raise ConfigError(
                f"{where}: unknown plugin kind {kind!r}; expected a registered kind ({known}), 'package.module:ClassName' "
                "or py-cpex's 'package.module.ClassName'"
            )
        return import_plugin(target, where)


def _split(path: str, where: str) -> tuple[str, str]:
    module_name, sep, class_name = path.partition(":")
    if not sep or not module_name or not class_name:
        raise InvalidInputError(f"{where}: {path!r} is not an import path 'package.module:ClassName'")
    return module_name, class_name


def import_plugin(path: str, where: str, shown: str | None = None) -> type:
    module_name, _, class_name = path.partition(":")
    shown = shown or path
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is the config's fault
        hint = ""
        if isinstance(exc, ModuleNotFoundError) and exc.name == module_name.split(".")[0]:
            hint = " (is the plugin's package installed into the Python the library runs?)"
        raise ConfigError(
            f"{where}: cannot import module {module_name!r} of kind {shown!r}: {type(exc).__name__}: {exc}{hint}"
        ) from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ConfigError(f"{where}: module {module_name!r} has no class {class_name!r}")
    if isinstance(cls, type) and issubclass(cls, Plugin):
        return cls
    if is_pycpex_class(cls):
        found: type = cls
        return found
    raise ConfigError(f"{where}: {shown!r} is neither a cpexrt.Plugin subclass nor a py-cpex cpex.framework.Plugin subclass")


def is_pycpex_class(cls: Any) -> bool:
    """Whether cls is a py-cpex Plugin subclass (without importing py-cpex, or cpex's
    adapter for it, when the class's module did not import py-cpex)."""
    if not isinstance(cls, type) or "cpex.framework" not in sys.modules:
        return False
    base = getattr(sys.modules["cpex.framework"], "Plugin", None)
    return isinstance(base, type) and issubclass(cls, base)


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
