from __future__ import annotations

from pathlib import Path

import pytest

from cpexrt.host import Library, load_library

PLUGIN_DIR = str(Path(__file__).resolve().parents[2] / "tests" / "plugins")


def config(*plugins: str, timeout: float | None = None) -> str:
    """A YAML config with the shared test plugins directory and the given plugin entries."""
    settings = f"plugin_settings:\n  plugin_dirs: [{PLUGIN_DIR!r}]\n"
    if timeout is not None:
        settings += f"  plugin_timeout: {timeout}\n"
    return settings + "plugins:\n" + "".join(plugins)


def plugin(name: str, cls: str, hooks: str = "[tool_pre_invoke]", **extra: object) -> str:
    lines = [f"  - name: {name}", f"    kind: cpex_test_plugins:{cls}", f"    hooks: {hooks}"]
    lines += [f"    {k}: {v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def library() -> Library:
    return load_library()
