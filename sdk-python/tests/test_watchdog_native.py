"""The watchdog's arm and disarm as the boundary's builtins (ffi/natives.c watch_arm,
watch_disarm), taken when libcpex loads: the same guarantees as the Python ones
(test_background_races.py runs its own checks against whichever is installed)."""

from __future__ import annotations

import sys
import threading
import time

import pytest

import test_background_races as races
from conftest import python_prints
from cpexrt.engine import driver, executor
from cpexrt.engine.watchdog import WATCHDOG, PluginDeadline
from cpexrt.host import PluginManager as Host


@pytest.fixture(autouse=True)
def native() -> None:
    with Host("plugins: []\n"):  # loads libcpex into this process
        pass
    natives = sys.modules["_cpex_natives"]
    assert WATCHDOG.arm is natives.watch_arm and WATCHDOG.disarm is natives.watch_disarm
    assert driver.arm is driver._arm is executor._arm is natives.watch_arm
    assert driver.disarm is driver._disarm_once is executor._disarm is natives.watch_disarm


def test_a_call_past_its_deadline_is_interrupted_and_its_thread_let_go() -> None:
    before, current = WATCHDOG.armed(), dict(WATCHDOG._current)
    with pytest.raises(driver.HandlerTimeout):
        driver.call(races.spin, (), time.monotonic() + 0.05)
    assert driver.call(lambda x: x + 1, (1,), time.monotonic() + 30) == 2
    assert WATCHDOG.armed() == before and WATCHDOG._current == current


def test_a_disarm_after_the_deadline_fired_withdraws_a_pending_exception() -> None:
    # The deadline fires while the thread sits in C (time.sleep): the exception is
    # scheduled, maybe raised; disarm reports it fired and withdraws it if pending.
    WATCHDOG.arm(time.monotonic() + 0.02)
    guard = WATCHDOG._current[threading.get_ident()]
    try:
        deadline = time.monotonic() + 5
        while guard in WATCHDOG._armed and time.monotonic() < deadline:
            time.sleep(0.01)
    except PluginDeadline:
        pass  # delivered between two sleeps: nothing left to withdraw
    assert races.disarm_all()
    for _ in range(1000):
        pass  # no PluginDeadline lands after disarm
    assert threading.get_ident() not in WATCHDOG._current


def test_arming_again_after_a_fired_deadline_keeps_that_exception_for_the_call() -> None:
    WATCHDOG.arm(time.monotonic() + 0.02)
    guard = WATCHDOG._current[threading.get_ident()]
    try:
        deadline = time.monotonic() + 5
        while guard in WATCHDOG._armed and time.monotonic() < deadline:
            time.sleep(0.005)
        # Claimed by the watchdog: a new arm does not replace the fired guard.
        WATCHDOG.arm(time.monotonic() + 30)
        assert WATCHDOG._current[threading.get_ident()] is guard
    except PluginDeadline:
        pass
    assert races.disarm_all()


def test_guards_from_many_threads_under_the_builtins() -> None:
    races.test_guards_arm_and_disarm_from_many_threads_and_none_is_left_behind()
    races.test_a_stuck_call_times_out_while_other_threads_calls_are_never_hit()


def test_the_python_arm_and_disarm_still_serve_the_engine_without_libcpex() -> None:
    """In a process that never loads libcpex (the engine called directly) the
    watchdog keeps its Python arm and disarm: the same many-thread checks, run there
    (this process has the builtins installed by the fixture)."""
    from pathlib import Path

    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\n"
        "import test_background_races as races\n"
        "from cpexrt.engine.watchdog import WATCHDOG, Watchdog\n"
        "assert WATCHDOG.arm.__func__ is Watchdog.arm and WATCHDOG.disarm.__func__ is Watchdog.disarm\n"
        "races.test_guards_arm_and_disarm_from_many_threads_and_none_is_left_behind()\n"
        "races.test_a_stuck_call_times_out_while_other_threads_calls_are_never_hit()\n"
        "assert '_cpex_natives' not in sys.modules\n"
        "print('python watchdog ok')\n"
    )
    out = python_prints(code, timeout=300)
    assert out.strip() == "python watchdog ok"
