"""Resolves a plugin `kind` to its class: `package.module:ClassName`."""

from __future__ import annotations

import importlib
import os
import sys

from cpex.errors import ConfigError
from cpex.plugin import Plugin


def resolve_kind(kind: str, where: str) -> type[Plugin]:
    module_name, sep, class_name = kind.partition(":")
    if not sep or not module_name or not class_name:
        raise ConfigError(f"{where}: unknown plugin kind {kind!r}; expected 'package.module:ClassName'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is the config's fault
        raise ConfigError(f"{where}: cannot import module {module_name!r} of kind {kind!r}: {type(exc).__name__}: {exc}") from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ConfigError(f"{where}: module {module_name!r} has no class {class_name!r}")
    if not (isinstance(cls, type) and issubclass(cls, Plugin)):
        raise ConfigError(f"{where}: {kind!r} is not a subclass of cpex.Plugin")
    return cls


def add_plugin_dirs(dirs: list[str]) -> None:
    """Makes the config's plugin directories importable (relative paths are taken
    from the current working directory)."""
    for i, d in enumerate(dirs):
        path = os.path.abspath(d)
        if not os.path.isdir(path):
            raise ConfigError(f"plugin_settings.plugin_dirs[{i}]: {d!r} is not a directory (resolved to {path})")
        if path not in sys.path:
            sys.path.append(path)
