"""Isolated plugins (isolation: process, py-cpex's isolated_venv, isolation: thread):
hard deadlines, crash survival, restarts and the circuit, least privilege, lifecycle,
and two plugins pinning different versions of one package. Engine-level tests and,
through libcpex.so, the Python host; sdk-go/isolation_test.go covers the Go host."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import PLUGIN_DIR, alive, wait_until
from cpexrt.engine import isolation
from cpexrt.engine.manager import Engine
from cpexrt.errors import ConfigError, PipelineError, PipelineTimeoutError
from cpexrt.host.manager import PluginManager

ROOT = Path(__file__).resolve().parents[2]
VENV_CACHE = str(ROOT / "build" / "venv-cache")
# Deadline bound for the tests: the feature's is timeout + 50 ms (measured in bench/);
# the suite allows more, as the machine running it may be loaded.
SLACK = 1.0


def yaml_config(*plugins: str, timeout: float = 0.5) -> str:
    return (
        f"plugin_settings:\n  plugin_dirs: [{PLUGIN_DIR!r}]\n  plugin_timeout: {timeout}\n"
        f"  venv_cache_dir: {VENV_CACHE!r}\nplugins:\n" + "".join(plugins)
    )


def isolated(name: str, cls: str, **extra: Any) -> str:
    fields = {"isolation": "process", "on_error": "ignore", **extra}
    lines = [f"  - name: {name}", f"    kind: cpex_isolation_plugins:{cls}", "    hooks: [tool_pre_invoke]"]
    lines += [f"    {k}: {v}" for k, v in fields.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture
def engines() -> Iterator[list[Engine]]:
    made: list[Engine] = []
    yield made
    for engine in made:
        engine.shutdown()


def start(engines: list[Engine], *plugins: str, timeout: float = 0.5) -> Engine:
    engine = Engine.from_yaml(yaml_config(*plugins, timeout=timeout))
    engines.append(engine)
    engine.initialize()
    return engine


def invoke(engine: Engine, payload: dict[str, Any], extensions: dict[str, Any] | None = None) -> Any:
    return engine.invoke("tool_pre_invoke", 0, payload, extensions)


def stats(engine: Engine, name: str) -> dict[str, Any]:
    return next(s for s in engine.plugin_stats() if s["name"] == name)


def ready(engine: Engine, name: str) -> bool:
    s = stats(engine, name)
    return bool(s["alive"] == s["workers"] and not s["busy"])


# -- the plugin runs elsewhere, under the executor's rules -------------------------


def test_an_isolated_plugin_runs_in_its_own_process_and_gets_only_what_it_may_see(engines: list[Engine]) -> None:
    os.environ["CPEX_TEST_ALLOWED"], os.environ["CPEX_TEST_SECRET"] = "yes", "no"
    engine = start(engines, isolated("who", "WhereAmI", env="[CPEX_TEST_ALLOWED]", capabilities="[read_headers]"))
    extensions = {
        "meta": {"entity_type": "tool", "entity_name": "t"},
        "security": {"labels": ["x"]},
        "http": {"headers": {"a": "b"}},
    }
    out = invoke(engine, {"a": 1}, extensions)
    assert out.errors == []
    seen = out.metadata
    assert seen["pid"] != os.getpid() and seen["pid"] in stats(engine, "who")["pids"]
    assert seen["env"] == ["CPEX_TEST_ALLOWED"]  # the allowlist, nothing of the host's environment else
    assert "labels" not in seen["extensions"].get("security", {})  # no read_labels: never sent to the worker
    assert seen["extensions"]["http"] == {"headers": {"a": "b"}}  # read_headers: sent
    assert seen["extensions"]["meta"]["entity_name"] == "t"


def test_per_request_state_travels_to_the_worker_and_back(engines: list[Engine]) -> None:
    engine = start(engines, isolated("who", "WhereAmI"))
    first = invoke(engine, {})
    assert first.metadata["calls"] == 1
    second = engine.invoke("tool_pre_invoke", 0, {}, None, first.context)
    assert second.metadata["calls"] == 2  # the state the worker kept came back in the context table


def test_results_are_checked_by_the_host_as_for_in_process_plugins(engines: list[Engine]) -> None:
    engine = start(
        engines,
        isolated("ed", "Editor", on_error="ignore"),
        isolated("audit", "Editor", mode="audit"),
    )
    out = invoke(engine, {"x": 1})
    assert out.modified_payload == {"x": 1, "edited": True}
    assert [(e.plugin_name, e.code) for e in out.errors] == [("audit", "modify_refused")]
    out = invoke(engine, {"garbage": True})
    assert {(e.plugin_name, e.code) for e in out.errors} == {("ed", "invalid_result"), ("audit", "invalid_result")}
    out = invoke(engine, {"deny": True})
    assert not out.continue_processing
    assert out.violation.code == "no" and out.violation.plugin_name == "ed"  # the engine names the plugin


def test_an_isolated_plugin_gets_the_payloads_bytes_decoded_in_its_worker(engines: list[Engine]) -> None:
    # The executor hands an isolated plugin the payload's canonical bytes (no decoded
    # copy in the host); its worker decodes them: a generic map, and a CMF Message.
    stanza = isolated("cmf", "CmfReader").replace("hooks: [tool_pre_invoke]", "hooks: [cmf.tool_pre_invoke]")
    engine = start(engines, stanza, isolated("ed", "Editor"))
    message = {
        "message": {
            "schema_version": "2.0",
            "role": "assistant",
            "content": [
                {"content_type": "text", "text": "Calling search_docs."},
                {"content_type": "tool_call", "content": {"tool_call_id": "c1", "name": "search_docs", "arguments": {}}},
            ],
        }
    }
    out = engine.invoke("cmf.tool_pre_invoke", 1, message)
    assert out.errors == []
    seen = out.metadata
    assert seen["pid"] != os.getpid() and seen["type"] == "Message"
    assert (seen["role"], seen["tools"]) == ("assistant", ["search_docs"])
    out = invoke(engine, {"x": [1, {"y": b"z"}]})
    assert out.modified_payload == {"x": [1, {"y": b"z"}], "edited": True}


def test_a_plugin_failure_under_on_error_fail_fails_the_call(engines: list[Engine]) -> None:
    engine = start(engines, isolated("c", "Crasher", on_error="fail"))
    with pytest.raises(PipelineError, match=r"plugin 'c' raised ValueError: asked to raise \(code plugin_error\)"):
        invoke(engine, {"how": "raise"})
    with pytest.raises(PipelineError, match=r"plugin 'c' crashed: its worker \(pid \d+\) exited with status 3"):
        invoke(engine, {"how": "exit"})


def test_concurrent_and_fire_and_forget_plugins_run_isolated_too(engines: list[Engine]) -> None:
    engine = start(
        engines,
        isolated("deny", "Editor", mode="concurrent"),
        isolated("slow", "Sleeper", mode="concurrent"),
        isolated("after", "Crasher", mode="fire_and_forget"),
    )
    out = invoke(engine, {"deny": True, "sleep": 0.05})
    assert out.violation.plugin_name == "deny"
    out = invoke(engine, {"how": "exit"})
    assert out.background is not None
    [error] = out.background.wait(5)
    assert error.plugin_name == "after" and "exited with status 3" in error.message


# -- hard deadlines -----------------------------------------------------------------


def test_a_plugin_blocked_in_c_releases_the_caller_at_its_deadline(engines: list[Engine]) -> None:
    engine = start(engines, isolated("sl", "Sleeper", on_error="fail"))
    before = stats(engine, "sl")["pids"]
    began = time.monotonic()
    with pytest.raises(PipelineTimeoutError, match=r"plugin 'sl' timed out after 0.5s \(code plugin_timeout\)"):
        invoke(engine, {"sleep": 30})
    assert time.monotonic() - began < 0.5 + SLACK
    assert wait_until(lambda: not alive(before[0]), 5)  # the stuck worker was killed
    assert wait_until(lambda: ready(engine, "sl"))  # and replaced in the background
    assert invoke(engine, {"sleep": 0}).metadata["pid"] not in before


def test_in_process_a_sync_plugin_blocked_in_c_releases_the_caller(engines: list[Engine]) -> None:
    engine = start(
        engines,
        "  - name: th\n    kind: cpex_isolation_plugins:Sleeper\n    hooks: [tool_pre_invoke]\n"
        "    isolation: thread\n    on_error: ignore\n",
    )
    began = time.monotonic()
    out = invoke(engine, {"sleep": 4})
    assert time.monotonic() - began < 0.5 + SLACK
    assert [e.code for e in out.errors] == ["plugin_timeout"]
    assert out.metadata == {}  # the late result is discarded
    assert stats(engine, "th")["stuck"] == 1
    assert wait_until(lambda: stats(engine, "th")["stuck"] == 0, 10)
    assert invoke(engine, {"sleep": 0}).metadata["slept"] == 0


# -- crashes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("how", "extra", "expected"),
    [
        ("exit", {}, r"crashed: its worker \(pid \d+\) exited with status 3"),
        ("segv", {}, r"crashed: its worker \(pid \d+\) was killed by SIGSEGV"),
        ("hog", {"max_memory_mb": 512}, r"passed its memory limit.*max_memory_mb 512"),
    ],
)
def test_a_crashing_worker_is_the_plugins_error_and_is_replaced(
    engines: list[Engine], how: str, extra: dict[str, Any], expected: str
) -> None:
    engine = start(engines, isolated("c", "Crasher", **extra), isolated("ok", "NoOp"), timeout=5)
    out = invoke(engine, {"how": how})
    [error] = out.errors
    assert error.plugin_name == "c" and error.code == "worker_crashed"
    assert __import__("re").search(expected, error.message), error.message
    assert wait_until(lambda: ready(engine, "c"))
    s = stats(engine, "c")
    assert s["crashes"] == 1 and s["restarts"] == 1 and s["circuit"] == "closed"
    assert invoke(engine, {}).errors == []


def test_a_worker_killed_from_outside_mid_call(engines: list[Engine]) -> None:
    engine = start(engines, isolated("sl", "Sleeper"), timeout=10)
    [pid] = stats(engine, "sl")["pids"]
    threading.Timer(0.3, os.kill, (pid, signal.SIGKILL)).start()
    out = invoke(engine, {"sleep": 5})
    [error] = out.errors
    assert f"its worker (pid {pid}) was killed by SIGKILL" in error.message


def test_an_idle_worker_killed_from_outside_fails_the_next_call_not_the_host(engines: list[Engine]) -> None:
    engine = start(engines, isolated("n", "NoOp"))
    [pid] = stats(engine, "n")["pids"]
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.1)
    [error] = invoke(engine, {}).errors  # the request is written to a dead worker: an error, no SIGPIPE
    assert error.code == "worker_crashed" and f"its worker (pid {pid}) was killed by SIGKILL" in error.message
    assert wait_until(lambda: ready(engine, "n"))
    assert invoke(engine, {}).errors == []


def test_repeated_crashes_open_the_circuit_until_a_probe_succeeds(engines: list[Engine], monkeypatch: Any) -> None:
    monkeypatch.setattr(isolation, "CIRCUIT_AFTER", 3)
    monkeypatch.setattr(isolation, "CIRCUIT_RESET", 0.5)
    monkeypatch.setattr(isolation, "BACKOFF_FIRST", 0.01)
    engine = start(engines, isolated("c", "Crasher"), timeout=10)
    for _ in range(3):
        assert wait_until(lambda: ready(engine, "c"))
        assert "exited with status 3" in invoke(engine, {"how": "exit"}).errors[0].message
    assert stats(engine, "c")["circuit"] == "open"
    began = time.monotonic()
    [error] = invoke(engine, {}).errors
    assert time.monotonic() - began < 0.1  # fails fast
    assert "circuit open" in error.message and "crashed 3 times in a row" in error.message
    time.sleep(0.5)
    assert wait_until(lambda: ready(engine, "c"))
    assert invoke(engine, {}).errors == []  # the probe
    assert stats(engine, "c")["circuit"] == "closed"


# -- lifecycle ----------------------------------------------------------------------


def test_shutdown_drains_calls_in_flight_then_stops_the_workers() -> None:
    engine = Engine.from_yaml(yaml_config(isolated("sl", "Sleeper", on_error="fail"), timeout=5))
    engine.initialize()
    pids = stats(engine, "sl")["pids"]
    results: list[Any] = []
    caller = threading.Thread(target=lambda: results.append(invoke(engine, {"sleep": 0.5})))
    caller.start()
    time.sleep(0.2)
    engine.shutdown()
    caller.join()
    assert results[0].metadata["slept"] == 0.5  # the call in flight finished
    assert not any(alive(p) for p in pids)


def test_workers_die_with_a_host_killed_by_sigkill(tmp_path: Path) -> None:
    script = tmp_path / "host.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys, time
            from cpexrt.host.manager import PluginManager
            m = PluginManager({yaml_config(isolated("sl", "Sleeper"), isolated("n", "NoOp", workers=2))!r})
            m.initialize()
            pids = [p for s in m.plugin_stats() for p in (s.pids or [])]
            print(" ".join(map(str, pids)), flush=True)
            m.invoke("tool_pre_invoke", {{"sleep": 60}})
            """
        )
    )
    host = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert host.stdout is not None
    pids = [int(p) for p in host.stdout.readline().split()]
    assert len(pids) == 3
    time.sleep(0.3)  # one worker is mid-call
    host.kill()
    host.wait()
    assert wait_until(lambda: not any(alive(p) for p in pids), 5), [p for p in pids if alive(p)]


# -- environments -------------------------------------------------------------------


def test_two_plugins_pin_different_versions_of_one_package(engines: list[Engine]) -> None:
    engine = start(
        engines,
        isolated("new", "SixVersion", requirements="['six==1.16.0']", on_error="fail", config="{key: six_new}"),
        isolated("old", "SixVersion", requirements="['six==1.15.0']", on_error="fail", config="{key: six_old}"),
        timeout=30,
    )
    assert invoke(engine, {}).metadata == {"six_new": "1.16.0", "six_old": "1.15.0"}
    with pytest.raises(ModuleNotFoundError):
        __import__("six")  # the host has neither


def test_py_cpex_isolated_venv_stanza_runs_unchanged(engines: list[Engine]) -> None:
    engine = start(
        engines,
        textwrap.dedent(
            """\
              - name: verdict
                kind: isolated_venv
                hooks: [tool_pre_invoke]
                mode: sequential
                config:
                  class_name: pycpex_test_plugins.Verdict
                  code: STOP
            """
        ),
        timeout=5,
    )
    out = engine.invoke("tool_pre_invoke", 0, {"name": "t", "args": {"block": True}})
    assert not out.continue_processing and out.violation is not None
    assert out.violation.code == "STOP" and out.violation.http_status_code == 429
    out = engine.invoke("tool_pre_invoke", 0, {"name": "t", "args": {"rewrite": 1}})
    assert out.modified_payload["args"]["rewritten"] is True
    assert stats(engine, "verdict")["isolation"] == "process"


def test_a_py_cpex_plugin_with_isolation_process(engines: list[Engine]) -> None:
    """py-cpex's class as the kind, in a worker: its verdicts as in-process, and what
    its phase cannot enforce reported (the worker tells the host it is py-cpex)."""
    stanza = "  - {name: v, kind: pycpex_test_plugins.Verdict, hooks: [tool_pre_invoke], isolation: process, mode: %s}\n"
    enforced = start(engines, stanza % "sequential", timeout=5)
    out = enforced.invoke("tool_pre_invoke", 0, {"name": "t", "args": {"block": True}})
    assert out.violation is not None and out.violation.plugin_name == "v" and out.violation.code == "BLOCKED"
    assert out.retry_delay_ms == 2000
    audit = start(engines, stanza % "audit", timeout=5)
    out = audit.invoke("tool_pre_invoke", 0, {"name": "t", "args": {"block": True}})
    assert out.continue_processing
    assert [(e.plugin_name, e.code) for e in out.errors] == [("v", "not_enforced")]


def test_py_cpex_isolated_venv_with_a_requirements_file(tmp_path: Path) -> None:
    """py-cpex's layout: the class's package under plugin_dirs[0], requirements_file
    relative to it; the plugin runs in a virtualenv holding them."""
    package = tmp_path / "sixplugin"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "plugin.py").write_text(
        textwrap.dedent(
            """\
            import six
            from cpex.framework import Plugin, ToolPreInvokePayload, ToolPreInvokeResult

            class SixPlugin(Plugin):
                async def tool_pre_invoke(self, payload: ToolPreInvokePayload, context) -> ToolPreInvokeResult:
                    return ToolPreInvokeResult(metadata={"six": six.__version__, "config": sorted(self.config.config)})
            """
        )
    )
    (package / "requirements.txt").write_text("six==1.15.0\n")
    engine = Engine.from_yaml(
        textwrap.dedent(
            f"""\
            plugin_settings: {{plugin_dirs: [{str(tmp_path)!r}], plugin_timeout: 30, venv_cache_dir: {VENV_CACHE!r}}}
            plugins:
              - name: six
                kind: isolated_venv
                hooks: [tool_pre_invoke]
                config: {{class_name: sixplugin.plugin.SixPlugin, requirements_file: requirements.txt}}
            """
        )
    )
    try:
        engine.initialize()
        out = engine.invoke("tool_pre_invoke", 0, {"name": "t", "args": {}})
        assert out.errors == []
        assert out.metadata == {"six": "1.15.0", "config": ["class_name", "requirements_file"]}  # as py-cpex passes it
    finally:
        engine.shutdown()


def test_a_python_that_does_not_exist_fails_initialize_naming_the_plugin() -> None:
    engine = Engine.from_yaml(yaml_config(isolated("n", "NoOp", python="/nonexistent/python3")))
    with pytest.raises(PipelineError, match=r"plugin 'n'.*python '/nonexistent/python3' is not an executable file"):
        engine.initialize()
    engine.shutdown()


def test_the_python_setting_picks_the_workers_interpreter(engines: list[Engine]) -> None:
    engine = start(engines, isolated("who", "WhereAmI", python=repr(isolation.host_python())))
    assert invoke(engine, {}).errors == []


# -- config -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stanza", "message"),
    [
        ("  - {name: a, kind: x, hooks: [h], python: /usr/bin/python3}\n", r"plugins\[0\]: python applies to isolation: process"),
        ("  - {name: a, kind: x, hooks: [h], isolation: none, workers: 2}\n", r"plugins\[0\]: workers applies to"),
        ("  - {name: a, kind: x, isolation: process}\n", r"plugins\[0\]\.hooks: isolated plugin 'a' lists no hooks"),
        ("  - {name: a, kind: isolated_venv, hooks: [h]}\n", r"plugins\[0\]\.config\.class_name: a py-cpex isolated_venv"),
        (
            "  - {name: a, kind: isolated_venv, hooks: [h], config: {class_name: p.m.C, requirements_file: r.txt}}\n",
            r"plugins\[0\]\.config\.requirements_file: 'r.txt' not found",
        ),
        ("  - {name: a, kind: x, hooks: [h], isolation: process, env: ['A=B']}\n", r"env\[0\]: 'A=B' is not"),
    ],
)
def test_isolation_config_errors_name_the_field(stanza: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Engine.from_yaml(yaml_config(stanza))


def test_a_plugin_that_cannot_load_in_its_worker_fails_initialize_naming_it() -> None:
    engine = Engine.from_yaml(yaml_config(isolated("gone", "NoSuchClass")))
    with pytest.raises(PipelineError, match=r"plugin 'gone': its worker could not load it: .*NoSuchClass"):
        engine.initialize()
    engine.shutdown()


# -- through libcpex.so: the Python host --------------------------------------------


def test_python_host_deadline_crash_and_stats() -> None:
    manager = PluginManager(
        yaml_config(isolated("sl", "Sleeper"), isolated("c", "Crasher"), isolated("th", "Sleeper", isolation="thread"))
    )
    manager.initialize()
    try:
        began = time.monotonic()
        result = manager.invoke("tool_pre_invoke", {"sleep": 5})
        assert time.monotonic() - began < 2 * (0.5 + SLACK)  # two plugins, each stopped at its deadline
        assert sorted((e.plugin_name, e.code) for e in result.errors) == [("sl", "plugin_timeout"), ("th", "plugin_timeout")]
        result = manager.invoke("tool_pre_invoke", {"how": "segv"})
        assert any(e.plugin_name == "c" and "killed by SIGSEGV" in e.message for e in result.errors)
        by_name = {s.name: s for s in manager.plugin_stats()}
        assert by_name["c"].isolation == "process" and by_name["c"].crashes == 1
        assert (by_name["sl"].timeouts or 0) >= 1 and by_name["th"].isolation == "thread" and (by_name["th"].timeouts or 0) >= 1
    finally:
        manager.shutdown()
