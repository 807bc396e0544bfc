"""A failed initialize rolls back: the plugins already initialized are shut down again,
last first; the error names the failing plugin and any rollback shutdown that failed;
the manager stays not initialized. Through the engine and through the Python host."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import config, plugin
from cpexrt.engine import Engine
from cpexrt.errors import PipelineError
from cpexrt.host import PluginManager as HostManager


def lifecycle_config(log: Path, third: str, *, second: str = "", timeout: float | None = None) -> str:
    """Three LifecycleLog plugins writing to log; third / second: extra config of those."""

    def entry(tag: str, extra: str) -> str:
        return plugin(tag, "LifecycleLog", config=f"{{tag: {tag}, log: {str(log)!r}{', ' + extra if extra else ''}}}")

    return config(entry("p1", ""), entry("p2", second), entry("p3", third), timeout=timeout)


def steps(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


FAILS = "fail_initialize: true"


def test_engine_rolls_back_in_reverse_order(tmp_path: Path) -> None:
    log = tmp_path / "lifecycle.log"
    m = Engine.from_yaml(lifecycle_config(log, FAILS))
    with pytest.raises(PipelineError, match=r"^plugin 'p3': initialize raised ValueError: p3 cannot start$"):
        m.initialize()
    assert steps(log) == ["initialize p1", "initialize p2", "initialize p3", "shutdown p2", "shutdown p1"]
    assert not m.is_initialized()
    with pytest.raises(PipelineError, match="not initialized"):
        m.invoke("tool_pre_invoke", 0, {})
    m.shutdown()  # nothing initialized: no second shutdown
    assert steps(log)[-1] == "shutdown p1"


def test_engine_rolls_back_after_an_initialize_timeout(tmp_path: Path) -> None:
    log = tmp_path / "lifecycle.log"
    m = Engine.from_yaml(lifecycle_config(log, "initialize_seconds: 5", timeout=0.2))
    with pytest.raises(PipelineError, match=r"plugin 'p3': initialize timed out after 0.2s"):
        m.initialize()
    assert steps(log) == ["initialize p1", "initialize p2", "initialize p3", "shutdown p2", "shutdown p1"]
    assert not m.is_initialized()


def test_a_failing_rollback_shutdown_is_reported_and_the_rest_still_shut_down(tmp_path: Path) -> None:
    log = tmp_path / "lifecycle.log"
    m = Engine.from_yaml(lifecycle_config(log, FAILS, second="fail_shutdown: true"))
    with pytest.raises(PipelineError) as raised:
        m.initialize()
    assert str(raised.value) == (
        "plugin 'p3': initialize raised ValueError: p3 cannot start; "
        "rollback shutdown failed: plugin 'p2': shutdown raised RuntimeError: p2 cannot stop"
    )
    assert steps(log) == ["initialize p1", "initialize p2", "initialize p3", "shutdown p2", "shutdown p1"]
    assert not m.is_initialized()


def test_the_first_plugin_failing_has_nothing_to_roll_back(tmp_path: Path) -> None:
    log = tmp_path / "lifecycle.log"
    m = Engine.from_yaml(config(plugin("p1", "LifecycleLog", config=f"{{tag: p1, log: {str(log)!r}, {FAILS}}}")))
    with pytest.raises(PipelineError, match=r"^plugin 'p1': initialize raised ValueError: p1 cannot start$"):
        m.initialize()
    assert steps(log) == ["initialize p1"]


def test_host_rolls_back_in_reverse_order(tmp_path: Path) -> None:
    log = tmp_path / "lifecycle.log"
    with HostManager(lifecycle_config(log, FAILS)) as m:
        with pytest.raises(PipelineError, match=r"plugin 'p3': initialize raised ValueError: p3 cannot start"):
            m.initialize()
        assert not m.is_initialized()
    assert steps(log) == ["initialize p1", "initialize p2", "initialize p3", "shutdown p2", "shutdown p1"]
