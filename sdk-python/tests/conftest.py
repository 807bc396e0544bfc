from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cpexrt.host import Library, load_library

PLUGIN_DIR = str(Path(__file__).resolve().parents[2] / "tests" / "plugins")


def python_prints(code: str, timeout: float = 120, env: dict[str, str] | None = None) -> str:
    """What a fresh interpreter running code prints (it must exit 0; else its stderr
    is the failure's message)."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, check=False, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


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


ISOLATION_WORKER = b"cpexrt.engine.worker"  # isolation: process
ENGINE_WORKER = b"cpexrt._boundary.engine_worker"  # plugin_settings.engine_workers


def workers_of_this_process(kinds: tuple[bytes, ...] = (ISOLATION_WORKER, ENGINE_WORKER)) -> list[tuple[int, str]]:
    """(pid, state) of this process's children that are cpex worker processes of these
    kinds (by their command line), zombies included."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == os.getpid() and any(kind in cmdline for kind in kinds):
            found.append((int(entry), fields[0]))
    return found


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_until(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


@pytest.fixture(autouse=True)
def no_workers_left() -> Iterator[None]:
    """After every test, no worker process of this one is left, alive or zombie: a
    test that starts isolated plugins shuts its managers down."""
    yield
    deadline = time.monotonic() + 10
    while workers_of_this_process() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not workers_of_this_process(), f"workers left behind: {workers_of_this_process()}"
