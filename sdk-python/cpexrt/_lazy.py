"""A module imported when first used: a start-up (docs/architecture.md, Start-up) need
not pay for a module that only some features use (asyncio, for async handlers and
fire-and-forget plugins).

    if TYPE_CHECKING:
        import asyncio
    else:
        asyncio = LazyModule("asyncio", globals())

The first attribute read imports the module and puts it in the namespace in place of
the stand-in, so later reads cost what they cost before. Not importlib.util.LazyLoader:
on Python 3.11 its module is not safe to first touch from two threads at once (fixed in
3.12), and it replaces the module in sys.modules for every other importer too; this
stand-in only changes the names of the module that made it, and the import itself runs
under the import system's own lock.
"""

from __future__ import annotations

import importlib
from typing import Any


class LazyModule:
    __slots__ = ("_name", "_namespace", "_binding")

    def __init__(self, name: str, namespace: dict[str, Any], binding: str | None = None) -> None:
        self._name = name
        self._namespace = namespace
        self._binding = binding or name

    def __getattr__(self, attr: str) -> Any:
        module = importlib.import_module(self._name)
        self._namespace[self._binding] = module
        return getattr(module, attr)

    def __repr__(self) -> str:
        return f"<module {self._name!r}, imported when first used>"
