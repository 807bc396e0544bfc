"""Races on the lock-free paths of fire-and-forget tasks and of the watchdog
(cpexrt.engine.background, cpexrt.engine.watchdog): many threads submitting, waiting,
registering callbacks and tracking batches while the runtime loop drains them, and
guarded calls arming and disarming while others time out. Nothing may be lost, run
twice, or fire into a call it was not meant for."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter, deque
from functools import partial
from typing import Any

import pytest

from conftest import config, plugin
from cpexrt._generated.records import PluginError
from cpexrt.engine import Engine, driver
from cpexrt.engine.background import RUNNER, BackgroundBatch, Tracker, _Work
from cpexrt.engine.watchdog import WATCHDOG, PluginDeadline
from cpexrt.errors import PipelineTimeoutError

THREADS = 16
HANG = {"meta": {"entity_type": "tool", "entity_name": "hang"}}
OK = {"meta": {"entity_type": "tool", "entity_name": "ok"}}


async def until(event: threading.Event) -> None:
    """Suspends until another thread sets event."""
    while not event.is_set():  # noqa: ASYNC110 - a threading.Event, set from another thread
        await asyncio.sleep(0.001)


def hammer(worker: Any, threads: int = THREADS) -> list[BaseException]:
    """Runs worker(i) on `threads` threads released together; what they raised."""
    go = threading.Event()
    raised: list[BaseException] = []

    def run(i: int) -> None:
        go.wait()
        try:
            worker(i)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            raised.append(exc)

    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    go.set()
    for t in pool:
        t.join(60)
    assert not any(t.is_alive() for t in pool), "a worker hung"
    return raised


def test_every_submitted_task_runs_exactly_once_and_every_batch_reports_its_errors() -> None:
    runs: Counter[tuple[int, int, int]] = Counter()
    batches: dict[tuple[int, int], tuple[BackgroundBatch, int]] = {}

    def task(key: tuple[int, int, int], fail: bool, suspend: bool) -> Any:
        def run() -> Any:
            runs[key] += 1  # on the runtime loop's thread only
            error = PluginError(plugin_name=f"p{key[2]}", message=f"failed {key}") if fail else None
            if not suspend:
                return error

            async def rest() -> PluginError | None:
                await asyncio.sleep(0)
                return error

            return rest()

        return run

    def worker(t: int) -> None:
        for b in range(150):
            width = 1 + (t + b) % 3
            fails = [(t + b + k) % 4 == 0 for k in range(width)]
            work = [task((t, b, k), fails[k], (b + k) % 5 == 0) for k in range(width)]
            batch = BackgroundBatch([f"p{k}" for k in range(width)], width)
            RUNNER.submit(batch, work)
            batches[(t, b)] = (batch, sum(fails))
            if b % 7 == 0:
                assert len(batch.wait(30)) == sum(fails)

    assert hammer(worker) == []
    for (t, b), (batch, failed) in batches.items():
        errors = batch.wait(30)
        assert batch.done
        assert len(errors) == failed, (t, b)
        assert all(e.message.startswith(f"failed ({t}, {b},") for e in errors)
    assert len(runs) == sum(1 + (t + b) % 3 for t in range(THREADS) for b in range(150))
    assert set(runs.values()) == {1}


def test_tasks_submitted_while_the_drain_stops_and_starts_again_all_run(monkeypatch: pytest.MonkeyPatch) -> None:
    # The drain stops after one look that finds nothing, every 0.2 ms: submits keep
    # landing while it stops (its last look, or a new drain; the older one then ends).
    monkeypatch.setattr(RUNNER, "IDLE_LOOKS", 1)
    monkeypatch.setattr(RUNNER, "BATCH_SECONDS", 0.0002)
    runs: Counter[tuple[int, int]] = Counter()
    batches: list[BackgroundBatch] = []

    def task(key: tuple[int, int]) -> Any:
        def run() -> None:
            runs[key] += 1  # on the runtime loop's thread only

        return run

    def worker(t: int) -> None:
        for b in range(200):
            batch = BackgroundBatch(["p"], 1)
            RUNNER.submit(batch, [task((t, b))])
            batches.append(batch)
            if (t + b) % 10 == 0:
                time.sleep(0.0005 * ((t + b) % 3))  # the drain may stop meanwhile

    assert hammer(worker, 8) == []
    for batch in batches:
        assert batch.wait(30) == []
    assert len(runs) == 8 * 200 and set(runs.values()) == {1}
    # Idle again: the drain stopped, and a submit now starts one that runs it.
    deadline = time.monotonic() + 5
    while RUNNER._scheduled and time.monotonic() < deadline:
        time.sleep(0.001)
    assert not RUNNER._scheduled
    late = BackgroundBatch(["late"], 1)
    RUNNER.submit(late, [lambda: None])
    assert late.wait(30) == []


def test_a_task_queued_just_after_the_drain_found_nothing_is_run_by_it() -> None:
    # The submitter appended right after the drain's look found nothing, and read
    # _scheduled while it was still set (so it woke nobody): the drain, stopping, must
    # look once more and run it.
    idle = time.monotonic() + 5
    while (RUNNER._scheduled or RUNNER._queue) and time.monotonic() < idle:
        time.sleep(0.001)
    assert not RUNNER._scheduled and not RUNNER._queue
    late = BackgroundBatch(["late"], 1)

    class JustAfterTheLook(deque[Any]):
        armed = True

        def __len__(self) -> int:
            n = super().__len__()
            if n == 0 and self.armed and RUNNER._scheduled and RUNNER._idle + 1 >= RUNNER.IDLE_LOOKS:
                self.armed = False
                self.append(_Work(late, lambda: None))
            return n

    first = BackgroundBatch(["first"], 1)
    saved, saved_looks = RUNNER._queue, RUNNER.IDLE_LOOKS
    RUNNER._queue, RUNNER.IDLE_LOOKS = JustAfterTheLook(), 1
    try:
        RUNNER.submit(first, [lambda: None])
        assert first.wait(10) == []
        assert late.wait(2) == []
    finally:
        RUNNER.IDLE_LOOKS = saved_looks
        deadline = time.monotonic() + 5
        while RUNNER._queue and time.monotonic() < deadline:
            time.sleep(0.001)
        RUNNER._queue = saved


def count(calls: Counter[int], key: int, _batch: BackgroundBatch) -> None:
    calls[key] += 1


def callbacks_racing_the_end() -> None:
    release = threading.Event()
    calls: Counter[int] = Counter()
    batch = BackgroundBatch(["slow"], 1)
    RUNNER.submit(batch, [lambda: until(release)])

    def worker(i: int) -> None:
        for j in range(50):
            batch.on_done(partial(count, calls, i * 1000 + j))
            if i == 0 and j == 25:
                release.set()
        assert batch.wait(30) == []

    assert hammer(worker) == []
    assert batch.done
    assert len(calls) == THREADS * 50 and set(calls.values()) == {1}
    # After the end, a callback runs at once, in the caller's thread.
    late: list[BackgroundBatch] = []
    batch.on_done(late.append)
    assert late == [batch]


def test_callbacks_and_waits_racing_the_end_of_a_batch_each_happen_once() -> None:
    for _ in range(5):
        callbacks_racing_the_end()


def test_wait_times_out_while_a_task_is_pending_then_returns_its_errors() -> None:
    release = threading.Event()
    batch = BackgroundBatch(["held"], 1)

    async def held() -> PluginError:
        await until(release)
        return PluginError(plugin_name="held", message="late failure")

    RUNNER.submit(batch, [held])
    with pytest.raises(TimeoutError, match="held"):
        batch.wait(0.05)
    assert not batch.done
    release.set()
    assert [e.message for e in batch.wait(30)] == ["late failure"]
    assert [e.message for e in batch.wait(0)] == ["late failure"]


def test_a_task_that_raises_is_an_error_of_its_batch_and_the_runner_goes_on() -> None:
    def broken() -> Any:
        raise RuntimeError("task broke")

    batch = BackgroundBatch(["b"], 2)
    RUNNER.submit(batch, [broken, lambda: None])
    errors = batch.wait(30)
    assert len(errors) == 1 and "task broke" in errors[0].message
    after = BackgroundBatch(["a"], 1)
    RUNNER.submit(after, [lambda: None])
    assert after.wait(30) == []


def test_a_tracker_holds_exactly_the_unfinished_batches() -> None:
    tracker = Tracker()
    gates: dict[int, threading.Event] = {}
    batches: list[BackgroundBatch] = []

    def gated(gate: threading.Event) -> Any:
        return lambda: until(gate)

    def worker(i: int) -> None:
        for j in range(100):
            batch = BackgroundBatch(["t"], 1)
            if j % 10 == 0:
                gate = gates[i * 1000 + j] = threading.Event()
                RUNNER.submit(batch, [gated(gate)])
            else:
                RUNNER.submit(batch, [lambda: None])
            tracker.add(batch)
            batches.append(batch)

    assert hammer(worker) == []
    # Once the ungated batches ended, only the gated ones are left.
    deadline = time.monotonic() + 30
    while len(tracker) > len(gates) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(tracker) == len(gates)
    pending = tracker.take_pending()
    assert len(pending) == len(gates) and all(not b.done for b in pending)
    assert len(tracker) == 0
    for gate in gates.values():
        gate.set()
    for batch in pending:
        assert batch.wait(30) == []
    assert len(tracker) == 0 and tracker.take_pending() == []


def test_engine_fire_and_forget_from_many_threads_loses_nothing() -> None:
    m = Engine.from_yaml(config(plugin("count", "Counter"), plugin("rec", "SyncRecorder", mode="fire_and_forget")))
    m.initialize()
    handles: list[Any] = []

    def worker(i: int) -> None:
        for j in range(100):
            out = m.invoke("tool_pre_invoke", 0, {"id": i * 1000 + j})
            assert out.background is not None
            handles.append(out.background)

    assert hammer(worker) == []
    m.shutdown()  # waits for the fire-and-forget tasks still running
    assert all(h.done for h in handles)
    recorded = m.global_state["sync_recorded"]
    assert sorted(recorded) == sorted(i * 1000 + j for i in range(THREADS) for j in range(100))


def disarm_all() -> bool:
    """WATCHDOG.disarm() as the driver calls it: retried when the deadline lands in it."""
    fired = False
    while True:
        try:
            return WATCHDOG.disarm() or fired
        except PluginDeadline:
            fired = True


def test_guards_arm_and_disarm_from_many_threads_and_none_is_left_behind() -> None:
    before, current = WATCHDOG.armed(), dict(WATCHDOG._current)
    late: list[int] = []

    def worker(i: int) -> None:
        for j in range(2000):
            # Far deadlines, and now and then one earlier than the watchdog sleeps
            # towards (it wakes for those; on a stalled machine one may even fire).
            early = j % 100 == 0
            try:
                WATCHDOG.arm(time.monotonic() + (0.5 if early else 30))
                if j % 3 == 0:
                    WATCHDOG.arm(time.monotonic() + 30)  # re-armed, as a suspended handler is
                    early = False
            except PluginDeadline:
                pass
            if disarm_all() and not early:
                late.append(j)

    assert hammer(worker) == []
    assert late == [], "a guard with a 30 s deadline fired"
    assert WATCHDOG.armed() == before and WATCHDOG._current == current


def spin() -> None:
    while True:
        pass


def test_a_stuck_call_times_out_while_other_threads_calls_are_never_hit() -> None:
    timed_out: Counter[int] = Counter()
    before, current = WATCHDOG.armed(), dict(WATCHDOG._current)

    def worker(i: int) -> None:
        for j in range(3 if i % 4 == 0 else 3000):
            if i % 4 == 0:
                with pytest.raises(driver.HandlerTimeout):
                    driver.call(spin, (), time.monotonic() + 0.05)
                timed_out[i] += 1
            else:
                # A PluginDeadline meant for another thread would surface here.
                assert driver.call(lambda x: x + 1, (j,), time.monotonic() + 30) == j + 1

    assert hammer(worker, 8) == []
    assert timed_out == {0: 3, 4: 3}
    # Every guard was claimed (by its disarm or by the watchdog) and its thread let go.
    assert WATCHDOG.armed() == before and WATCHDOG._current == current


def test_stuck_plugins_fail_their_calls_naming_the_plugin_from_many_threads() -> None:
    m = Engine.from_yaml(
        config(
            plugin("spinner", "Spinner", conditions="[{tools: [hang]}]", timeout=0.2),
            plugin("count", "Counter"),
            plugin("late", "Spinner", mode="fire_and_forget", conditions="[{tools: [hang]}]", on_error="ignore", timeout=0.2),
        )
    )
    m.initialize()
    backgrounds: list[Any] = []

    def worker(i: int) -> None:
        for _ in range(4 if i % 2 == 0 else 300):
            if i % 2 == 0:
                with pytest.raises(PipelineTimeoutError, match="'spinner' timed out"):
                    m.invoke("tool_pre_invoke", 0, {}, HANG)
            else:
                out = m.invoke("tool_pre_invoke", 0, {}, OK)
                assert out.continue_processing and out.errors == []

    assert hammer(worker, 6) == []
    # The fire-and-forget spinner is stopped at its timeout too, and reported by name.
    m2 = Engine.from_yaml(config(plugin("late", "Spinner", mode="fire_and_forget", on_error="ignore", timeout=0.1)))
    m2.initialize()
    for _ in range(3):
        out = m2.invoke("tool_pre_invoke", 0, {})
        assert out.continue_processing
        backgrounds.append(out.background)
    for bg in backgrounds:
        errors = bg.wait(30)
        assert [(e.plugin_name, e.code) for e in errors] == [("late", "plugin_timeout")]
    m.shutdown()
    m2.shutdown()
    # The watchdog's shots at the stuck followers did not stop the thread running them.
    assert RUNNER._thread is not None and RUNNER._thread.is_alive()
    after = BackgroundBatch(["after"], 1)
    RUNNER.submit(after, [lambda: None])
    assert after.wait(30) == []
