"""Async plugins cancelled at their timeout stay quiet: what they leave behind (tasks of
their own that fail later, an exception raised instead of the cancellation, code that
keeps running) never reaches stderr as asyncio's "Task exception was never retrieved"
or any other event-loop noise; the late exceptions are collected, counted and dropped,
and the manager keeps serving. Run through the engine and through the Python host (the
library's embedded interpreter writes to the same fd 2, which capfd captures)."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from conftest import config, plugin
from cpexrt.engine import Engine
from cpexrt.engine.runtime_loop import DROPPED, new_loop
from cpexrt.host import PluginManager as HostManager

PRE = "tool_pre_invoke"
MODES = ("sequential", "concurrent", "fire_and_forget")
HOWS = ("spawn", "replace", "stubborn")
TIMEOUT = 0.2


def _config(mode: str, how: str) -> str:
    return config(
        plugin(
            "late", "LateFailures", mode=mode, on_error="ignore", timeout=TIMEOUT, config=f"{{how: {how}, child_seconds: 0.15}}"
        ),
        plugin("ok", "LateFailures", priority=1, config="{how: quick}"),
    )


def _late_errors(errors: list[Any]) -> list[tuple[str, str]]:
    return [(e.plugin_name, e.code) for e in errors]


def _engine_round(m: Engine) -> list[tuple[str, str]]:
    out = m.invoke(PRE, 0, {})
    assert out.continue_processing
    errors = list(out.errors)
    if out.background is not None:
        errors += out.background.wait(5)
    return _late_errors(errors)


def _host_round(m: HostManager) -> list[tuple[str, str]]:
    out = m.invoke(PRE, {})
    assert not out.denied
    errors = list(out.errors)
    if out.background is not None:
        errors += out.background.wait()
        out.background.close()
    return _late_errors(errors)


def _scenario(run_round: Callable[[], list[tuple[str, str]]]) -> None:
    """Two invokes: each times the misbehaving plugin out, and the second (like the
    final one of the test) runs the caller's loop again (the quick plugin suspends),
    where what the earlier one left behind wakes up and fails."""
    for _ in range(2):
        assert run_round() == [("late", "plugin_timeout")]
        time.sleep(0.3)  # the leftovers' own timers expire meanwhile
        gc.collect()


@pytest.fixture
def quiet(capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> Any:
    """Asserts the test printed nothing on fd 2 and logged nothing at warning or above
    (pytest's log capture would otherwise hide asyncio's logger from stderr)."""
    caplog.set_level(logging.DEBUG)
    capfd.readouterr()
    yield
    gc.collect()
    time.sleep(0.05)  # the runtime loop's thread finishes what it was doing
    gc.collect()
    err = capfd.readouterr().err
    assert err == ""
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("mode", MODES)
def test_engine_plugins_cancelled_at_their_timeout_make_no_noise(mode: str, how: str, quiet: None) -> None:
    before = DROPPED.count
    m = Engine.from_yaml(_config(mode, how))
    m.initialize()
    _scenario(lambda: _engine_round(m))
    assert m.invoke(PRE, 0, {}).continue_processing  # still serving
    m.shutdown()
    gc.collect()
    assert DROPPED.count > before  # what was left behind was collected and counted, not printed


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("mode", MODES)
def test_host_plugins_cancelled_at_their_timeout_make_no_noise(mode: str, how: str, quiet: None) -> None:
    before = DROPPED.count  # the library's engine runs in this process's interpreter
    with HostManager(_config(mode, how)) as m:
        m.initialize()
        _scenario(lambda: _host_round(m))
        assert not m.invoke(PRE, {}).denied  # still serving
    gc.collect()
    assert DROPPED.count > before


def test_engine_called_from_a_running_loop_makes_no_noise(quiet: None) -> None:
    """Called from inside the caller's own event loop, the engine runs a suspending
    handler on the runtime loop: the same scenarios stay quiet there, and a timeout is
    reported as one."""
    before = DROPPED.count

    async def scenario(m: Engine) -> None:
        for _ in range(2):
            assert _engine_round(m) == [("late", "plugin_timeout")]
            await asyncio.sleep(0.3)

    for mode in ("sequential", "concurrent"):
        for how in HOWS:
            m = Engine.from_yaml(_config(mode, how))
            m.initialize()
            asyncio.run(scenario(m))
            m.shutdown()
    gc.collect()
    assert DROPPED.count > before


def test_unexpected_loop_errors_are_logged_not_printed(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """A failing callback is no abandoned task: it goes to the 'cpexrt.engine' logger at
    error level, not through asyncio's default handler."""
    loop = new_loop()
    try:

        def broken() -> None:
            raise KeyError("a bug")

        loop.call_soon(broken)
        loop.run_until_complete(asyncio.sleep(0))
    finally:
        loop.close()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.name for r in errors] == ["cpexrt.engine"]
    assert "Exception in callback" in errors[0].getMessage()
    assert errors[0].exc_info is not None and isinstance(errors[0].exc_info[1], KeyError)
    assert not [r for r in caplog.records if r.name == "asyncio"]
    assert capfd.readouterr().err == ""  # pytest's log capture holds it; unconfigured, logging's last resort prints it
