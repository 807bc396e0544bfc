"""Engine workers (plugin_settings.engine_workers; issue 12 item 4), through libcpex.so
from the Python host: the same answers as in-process, request state threaded to the
worker that holds it, handles issued and freed in C, calls from many threads at once,
a worker that dies or hangs failing only its call (never allowing it) and being
replaced, lifecycle and config rules, and no worker left behind (conftest).
sdk-go/engine_workers_test.go covers the Go host."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import ENGINE_WORKER, alive, config, plugin, wait_until, workers_of_this_process
from cpexrt._generated import calls
from cpexrt.engine.manager import Engine
from cpexrt.errors import ConfigError, InternalError, InvalidHandleError, InvalidInputError, PipelineError, PipelineTimeoutError
from cpexrt.host import load_library
from cpexrt.host.manager import PluginManager


def workers_config(*plugins: str, workers: int = 2, **settings: Any) -> str:
    extra = "".join(f"  {k}: {v}\n" for k, v in settings.items())
    return config(*plugins).replace("plugin_settings:\n", f"plugin_settings:\n  engine_workers: {workers}\n{extra}", 1)


def iso(name: str, cls: str, **extra: str) -> str:
    return plugin(name, cls, **extra).replace("cpex_test_plugins:", "cpex_isolation_plugins:")


@pytest.fixture
def managers() -> Iterator[list[PluginManager]]:
    made: list[PluginManager] = []
    yield made
    for m in made:
        m.shutdown()


def start(managers: list[PluginManager], yaml: str) -> PluginManager:
    m = PluginManager(yaml)
    managers.append(m)
    m.initialize()
    return m


def engine_worker_pids() -> list[int]:
    return sorted(pid for pid, state in workers_of_this_process((ENGINE_WORKER,)) if state != "Z")


def live_handles() -> tuple[int, int, int]:
    counts: tuple[int, int, int] = calls.live_handles(load_library())
    return counts


def test_answers_as_in_process(managers: list[PluginManager]) -> None:
    plugins = (plugin("deny", "DenyWhenBlocked"), plugin("stamp", "Stamp", config="{gen: 7}"))
    remote = start(managers, workers_config(*plugins))
    local = start(managers, config(*plugins))
    assert remote.plugin_names() == local.plugin_names() == ["deny", "stamp"]
    assert remote.plugin_count() == 2 and remote.is_initialized()
    assert (remote.engine_workers(), local.engine_workers()) == (2, 0)
    assert remote.has_hooks_for("tool_pre_invoke") and not remote.has_hooks_for("resource_pre_fetch")
    for payload in ({"tool_name": "t", "a": 1}, {"block": True, "tool_name": "t"}):
        got = remote.invoke("tool_pre_invoke", payload)
        want = local.invoke("tool_pre_invoke", payload)
        assert got.result.to_wire() == want.result.to_wire(), payload
    assert len(engine_worker_pids()) == 2
    # A hook nobody handles is still answered by the C fast path, in the host.
    assert not remote.invoke("resource_pre_fetch", {"x": 1}).denied


@pytest.mark.parametrize("on_error", ["fail", "ignore"])
@pytest.mark.parametrize("cls", ["Unencodable", "Garbage", "Raises", "RaisesBase"])
def test_plugin_failures_as_in_process(managers: list[PluginManager], cls: str, on_error: str) -> None:
    plugins = (plugin("bad", cls, on_error=on_error), plugin("deny", "DenyWhenBlocked"))
    remote = start(managers, workers_config(*plugins, workers=1))
    local = start(managers, config(*plugins))
    for payload in ({"a": 1}, {"block": True}):
        try:
            want: Any = local.invoke("tool_pre_invoke", payload).result.to_wire()
        except PipelineError as exc:
            want = str(exc)
        try:
            got: Any = remote.invoke("tool_pre_invoke", payload).result.to_wire()
        except PipelineError as exc:
            got = str(exc)
        assert got == want


def test_bad_input_is_refused_with_the_in_process_words(managers: list[PluginManager]) -> None:
    remote = start(managers, workers_config(plugin("deny", "DenyWhenBlocked"), max_payload_bytes=64))
    local = start(
        managers,
        config(plugin("deny", "DenyWhenBlocked")).replace("plugin_settings:\n", "plugin_settings:\n  max_payload_bytes: 64\n"),
    )
    payloads: list[Any] = [{"big": "x" * 100}, [1, 2]]
    for payload in payloads:
        with pytest.raises(InvalidInputError) as got:
            remote.invoke("tool_pre_invoke", payload)
        with pytest.raises(InvalidInputError) as want:
            local.invoke("tool_pre_invoke", payload)
        assert str(got.value) == str(want.value)


def test_request_state_follows_its_context(managers: list[PluginManager]) -> None:
    m = start(managers, workers_config(plugin("count", "Counter", hooks="[tool_pre_invoke, tool_post_invoke]")))
    first = m.invoke("tool_pre_invoke", {"n": 1})
    assert first.context is not None
    assert live_handles()[1] >= 1
    post = m.invoke("tool_post_invoke", {"n": 1}, context=first.context)
    assert post.result.metadata == {"calls": 2}  # the pre call's state, in the worker that holds it
    # The consumed context is dead: a second use is refused in C.
    with pytest.raises(InvalidHandleError, match=r"consumed|freed"):
        m.invoke("tool_post_invoke", {"n": 1}, context=first.context)
    assert post.context is not None
    post.context.close()


def test_handles_issued_in_c_die_when_freed(managers: list[PluginManager]) -> None:
    m = start(managers, workers_config(plugin("count", "Counter", hooks="[tool_pre_invoke, tool_post_invoke]")))
    before = live_handles()
    result = m.invoke("tool_pre_invoke", {"n": 1})
    assert live_handles()[1] == before[1] + 1
    assert result.context is not None
    result.context.close()
    assert live_handles()[1] == before[1]
    # Requests whose contexts were freed and new requests, many times over: nothing leaks.
    for _ in range(200):
        r = m.invoke("tool_pre_invoke", {"n": 1})
        assert r.context is not None
        r.context.close()
    assert live_handles() == before


def test_many_threads_at_once(managers: list[PluginManager]) -> None:
    m = start(managers, workers_config(plugin("deny", "DenyWhenBlocked"), plugin("count", "Counter")))
    errors: list[BaseException] = []
    denied = [0]
    lock = threading.Lock()

    def run(k: int) -> None:
        try:
            for i in range(100):
                r = m.invoke("tool_pre_invoke", {"block": (i + k) % 3 == 0})
                if r.denied:
                    with lock:
                        denied[0] += 1
                if r.context is not None:
                    r.context.close()
        except BaseException as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert denied[0] == sum(1 for k in range(8) for i in range(100) if (i + k) % 3 == 0)


def _in_thread(fn: Any) -> tuple[threading.Thread, list[Any]]:
    """fn() on a thread of its own; its answer or its exception in the list."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            out.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def test_a_call_queued_behind_another_gets_its_own_answer(managers: list[PluginManager]) -> None:
    # One worker: the second call is sent while the first is still running there
    # (ffi/remote.c queues up to two calls per worker), and answers are read in order.
    m = start(managers, workers_config(iso("sleep", "Sleeper"), workers=1))
    first, first_out = _in_thread(lambda: m.invoke("tool_pre_invoke", {"sleep": 0.5}))
    time.sleep(0.2)
    second = m.invoke("tool_pre_invoke", {"sleep": 0})
    first.join()
    assert second.metadata["slept"] == 0
    assert not isinstance(first_out[0], BaseException) and first_out[0].metadata["slept"] == 0.5


def test_a_call_queued_behind_one_that_ends_the_worker_fails(managers: list[PluginManager]) -> None:
    m = start(managers, workers_config(iso("sleep", "Sleeper"), iso("crash", "Crasher", on_error="ignore"), workers=1))
    first, first_out = _in_thread(lambda: m.invoke("tool_pre_invoke", {"sleep": 0.5, "how": "exit"}))
    time.sleep(0.2)
    # Never an allow: it was sent to a worker that died before serving it.
    with pytest.raises(InternalError, match=r"engine worker \(pid \d+\) stopped before this call ran"):
        m.invoke("tool_pre_invoke", {})
    first.join()
    assert isinstance(first_out[0], InternalError) and "stopped during the call" in str(first_out[0])
    assert wait_until(lambda: _answers(m), 15.0)


def test_a_call_queued_behind_a_stuck_one_fails_when_that_one_times_out(managers: list[PluginManager]) -> None:
    m = start(managers, workers_config(iso("sleep", "Sleeper", on_error="ignore"), workers=1, invoke_timeout=0.5))
    began = time.monotonic()
    stuck, stuck_out = _in_thread(lambda: m.invoke("tool_pre_invoke", {"sleep": 30}))
    time.sleep(0.2)
    with pytest.raises(InternalError, match="stopped before this call ran"):
        m.invoke("tool_pre_invoke", {"sleep": 0})
    # Released with the stuck call, at its limit: not held for a limit of its own after it.
    assert time.monotonic() - began < 0.5 + 0.25 + 2.0
    stuck.join()
    assert isinstance(stuck_out[0], PipelineTimeoutError)
    assert wait_until(lambda: _answers(m), 15.0)


def test_background_tasks_are_waited_in_their_worker(managers: list[PluginManager]) -> None:
    m = start(managers, workers_config(plugin("rec", "Recorder", mode="fire_and_forget", config="{seconds: 0.05}")))
    ok = m.invoke("tool_pre_invoke", {"id": 1})
    assert ok.background is not None
    assert ok.background.wait() == []
    failing = m.invoke("tool_pre_invoke", {"id": 2, "fail": True})
    assert failing.background is not None
    errors = failing.background.wait()
    assert [e.plugin_name for e in errors] == ["rec"] and "recorder told to fail" in errors[0].message
    for r in (ok, failing):
        background = r.background
        assert background is not None
        background.close()
        with pytest.raises(InvalidHandleError):
            background.wait()


def test_a_worker_that_dies_fails_its_call_and_is_replaced(managers: list[PluginManager]) -> None:
    m = start(managers, workers_config(plugin("count", "Counter"), iso("crash", "Crasher", on_error="ignore"), workers=1))
    pid = engine_worker_pids()[0]
    kept = m.invoke("tool_pre_invoke", {})
    assert kept.context is not None
    # on_error: ignore cannot turn the death of the whole engine into an allow.
    with pytest.raises(InternalError, match=r"engine worker .* stopped during the call"):
        m.invoke("tool_pre_invoke", {"how": "exit"})
    assert wait_until(lambda: engine_worker_pids() not in ([], [pid]), 15.0)
    assert wait_until(lambda: _answers(m), 15.0)
    # The request state of the dead worker went with it: its context is refused.
    with pytest.raises(InvalidHandleError, match="stopped"):
        m.invoke("tool_pre_invoke", {}, context=kept.context)
    kept.context.close()


def test_a_worker_killed_from_outside_is_replaced(managers: list[PluginManager]) -> None:
    m = start(managers, workers_config(plugin("deny", "DenyWhenBlocked"), workers=2))
    first = engine_worker_pids()
    os.kill(first[0], signal.SIGKILL)
    # Calls keep being answered (by the other worker, or the call that found the dead
    # one fails with an error, never an allow), and the dead one is replaced.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            assert m.invoke("tool_pre_invoke", {"block": True}).denied
        except InternalError:
            pass
        pids = engine_worker_pids()
        if len(pids) == 2 and first[0] not in pids:
            break
        time.sleep(0.02)
    assert len(engine_worker_pids()) == 2 and first[0] not in engine_worker_pids()
    assert m.invoke("tool_pre_invoke", {"block": True}).denied


def test_a_worker_stuck_in_c_releases_the_caller_at_the_deadline(managers: list[PluginManager]) -> None:
    m = start(managers, workers_config(iso("sleep", "Sleeper", on_error="ignore"), workers=1, invoke_timeout=0.5))
    began = time.monotonic()
    with pytest.raises(PipelineTimeoutError, match="did not answer"):
        m.invoke("tool_pre_invoke", {"sleep": 30})
    assert time.monotonic() - began < 0.5 + 0.25 + 2.0  # the limit, the grace, a loaded machine
    assert wait_until(lambda: _answers(m), 15.0)


def _answers(m: PluginManager) -> bool:
    try:
        m.invoke("tool_pre_invoke", {})
        return True
    except (InternalError, PipelineError):
        return False


def test_config_rules(managers: list[PluginManager]) -> None:
    with pytest.raises(ConfigError, match="engine_workers"):
        Engine.from_yaml(workers_config(plugin("a", "Allow")))
    m = start(managers, workers_config(plugin("a", "Allow")))
    with pytest.raises(ConfigError, match="cannot change the number of engine workers"):
        m.reload_config(workers_config(plugin("a", "Allow"), workers=3))
    m.reload_config(workers_config(plugin("deny", "DenyWhenBlocked")))
    assert m.plugin_names() == ["deny"]
    assert m.invoke("tool_pre_invoke", {"block": True}).denied
    local = start(managers, config(plugin("a", "Allow")))
    with pytest.raises(ConfigError, match="engine_workers"):
        local.reload_config(workers_config(plugin("a", "Allow")))


def test_initialize_failure_undoes_every_worker(managers: list[PluginManager]) -> None:
    m = PluginManager(workers_config(plugin("a", "Allow"), plugin("broken", "BrokenInit")))
    managers.append(m)
    with pytest.raises(PipelineError, match="broken"):
        m.initialize()
    assert not m.is_initialized()


def test_shutdown_stops_every_worker() -> None:
    m = PluginManager(workers_config(plugin("a", "Allow"), workers=2))
    m.initialize()
    pids = engine_worker_pids()
    assert len(pids) == 2
    result = m.invoke("tool_pre_invoke", {})
    m.shutdown()
    assert engine_worker_pids() == []
    with pytest.raises(InvalidHandleError):
        m.invoke("tool_pre_invoke", {})
    # The handles of a manager shut down died with it.
    if result.context is not None:
        result.context.close()  # harmless


def test_workers_die_with_a_host_killed_by_sigkill(tmp_path: Any) -> None:
    script = tmp_path / "host.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, sys, time
            sys.path.insert(0, {os.path.dirname(__file__)!r})
            from test_engine_workers import workers_config, engine_worker_pids
            from conftest import plugin
            from cpexrt.host.manager import PluginManager
            m = PluginManager(workers_config(plugin("a", "Allow"), workers=2))
            m.initialize()
            print(" ".join(map(str, engine_worker_pids())), flush=True)
            time.sleep(60)
            """
        )
    )
    host = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert host.stdout is not None
        pids = [int(p) for p in host.stdout.readline().split()]
        assert len(pids) == 2
    finally:
        host.kill()
        host.wait()

    def gone() -> bool:
        return not any(alive(pid) for pid in pids)

    assert wait_until(gone, 10.0)


def test_decision_records_reach_the_host_sink_and_file(managers: list[PluginManager], tmp_path: Any) -> None:
    path = tmp_path / "decisions.jsonl"
    yaml = f"decision_records: {{file: {str(path)!r}}}\n" + workers_config(plugin("deny", "DenyWhenBlocked"))
    m = start(managers, yaml)
    got: list[Any] = []
    m.set_decision_sink(got.append)
    for i in range(20):
        m.invoke("tool_pre_invoke", {"block": i % 2 == 0}, request={"request_id": f"r{i}"})
    assert wait_until(lambda: len(got) == 20, 15.0)
    assert sorted(r.request_id for r in got) == sorted(f"r{i}" for i in range(20))
    assert {r.request_id: r.decision for r in got}["r0"] == "deny"
    m.set_decision_sink(None)
    m.invoke("tool_pre_invoke", {}, request={"request_id": "after"})
    m.shutdown()
    managers.remove(m)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(r["request_id"] for r in lines) == sorted([f"r{i}" for i in range(20)] + ["after"])
    assert len(got) == 20  # none after the sink was removed


def test_worker_log_records_reach_the_host_logging(managers: list[PluginManager], caplog: Any) -> None:
    m = start(managers, workers_config(plugin("boom", "Raises", on_error="ignore")))
    with caplog.at_level(logging.WARNING, logger="cpexrt"):
        assert not m.invoke("tool_pre_invoke", {}).denied
        assert wait_until(lambda: any("boom" in r.getMessage() and hasattr(r, "engine_worker_pid") for r in caplog.records), 15.0)


def test_shutdown_lets_calls_in_flight_finish() -> None:
    m = PluginManager(workers_config(iso("sleep", "Sleeper"), workers=2))
    m.initialize()
    results: list[Any] = []

    def slow() -> None:
        try:
            results.append(m.invoke("tool_pre_invoke", {"sleep": 0.5}).result.to_wire())
        except BaseException as exc:  # noqa: BLE001 - asserted below
            results.append(exc)

    threads = [threading.Thread(target=slow) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.2)  # both calls are in their workers
    m.shutdown()
    for t in threads:
        t.join()
    assert len(results) == 2 and all(isinstance(r, dict) and r["continue_processing"] for r in results), results
    assert engine_worker_pids() == []
