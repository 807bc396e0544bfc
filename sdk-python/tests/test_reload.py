"""Hot reload: reload_config / reload_config_file swap the plugin set atomically, from
the Python host over libcpex.so and on the engine directly.

The probe is the Stamp test plugin: it appends its config.gen to payload["stamps"], so
a result tells which plugin set served it, and with config.log it writes its
lifecycle and calls to a file, so the order of initialize, calls and shutdown shows."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest

from conftest import config
from cpexrt.engine import Engine
from cpexrt.errors import ConfigError, InvalidHandleError, InvalidInputError, ParseError, PipelineError, Status
from cpexrt.host import Library, PluginManager
from test_abi import call, invoke, new_manager

HOOKS = "[tool_pre_invoke, tool_post_invoke, reload.a, reload.b]"


def stamp(name: str, gen: int, hooks: str = HOOKS, **cfg: object) -> str:
    items = ", ".join([f"gen: {gen}", *(f"{k}: {v!r}" if isinstance(v, str) else f"{k}: {v}" for k, v in cfg.items())])
    return f"  - name: {name}\n    kind: cpex_test_plugins:Stamp\n    hooks: {hooks}\n    config: {{{items}}}\n"


def stamps(result: Any) -> list[int] | None:
    payload = result.modified_payload
    return None if payload is None else payload["stamps"]


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def wait_for(what: str, predicate: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def started(text: str) -> PluginManager:
    m = PluginManager(text)
    m.initialize()
    return m


def test_reload_swaps_the_plugins_and_every_query_follows() -> None:
    with started(config(stamp("a", 1), stamp("b", 1, hooks="[tool_pre_invoke]"))) as m:
        assert stamps(m.invoke("tool_pre_invoke", {})) == [1, 1]
        assert m.plugin_names() == ["a", "b"] and m.plugin_count() == 2
        assert m.has_hooks_for("reload.a") and not m.has_hooks_for("my.custom-hook")
        custom = "  - {name: k, kind: 'cpex_test_plugins:Custom', hooks: [my.custom-hook]}\n"
        m.reload_config(config(stamp("c", 2, hooks="[tool_pre_invoke]"), custom))
        assert m.is_initialized()
        assert stamps(m.invoke("tool_pre_invoke", {})) == [2]
        assert m.plugin_names() == ["c", "k"] and m.plugin_count() == 2
        assert m.has_hooks_for("my.custom-hook") and not m.has_hooks_for("reload.a")
        assert m.invoke("my.custom-hook", {}).modified_payload == {"custom": True}
        assert stamps(m.invoke("reload.a", {})) is None  # lost its plugins


def test_the_fast_path_is_republished_with_the_swap() -> None:
    # reload.a / reload.b with a generic payload and no context: a hook without plugins
    # is answered by the C fast path. Each reload moves the plugins from one to the
    # other; a stale fast path would answer the hook that gained them as unchanged.
    a = config(stamp("s", 0, hooks="[reload.a]"))
    with started(a) as m:
        for gen in range(1, 21):
            hook, other = ("reload.b", "reload.a") if gen % 2 else ("reload.a", "reload.b")
            m.reload_config(config(stamp("s", gen, hooks=f"[{hook}]")))
            assert stamps(m.invoke(hook, {"n": gen})) == [gen], f"reload {gen}: {hook} answered by the stale fast path"
            unchanged = m.invoke(other, {"n": gen})
            assert stamps(unchanged) is None and not unchanged.denied, f"reload {gen}: {other} still ran old plugins"


@pytest.mark.parametrize(
    ("bad", "error", "match"),
    [
        ("plugins: [", ParseError, "YAML syntax error"),
        ("plugins:\n  - {name: x, kind: 'cpex_test_plugins:Stamp', hooks: [tool_pre_invoke], mode: nope}\n", ConfigError, "mode"),
        (config("  - {name: x, kind: 'no_such_module_anywhere:Plugin', hooks: [tool_pre_invoke]}\n"), ConfigError, "import"),
        (config("  - {name: x, kind: 'cpex_test_plugins:NoSuchClass', hooks: [tool_pre_invoke]}\n"), ConfigError, "NoSuchClass"),
        ("plugin_settings: {plugin_dirs: [/no/such/dir]}\nplugins: []\n", ConfigError, "plugin_dirs"),
    ],
)
def test_a_bad_config_leaves_the_old_plugins_serving(bad: str, error: type[Exception], match: str) -> None:
    with started(config(stamp("a", 1))) as m:
        with pytest.raises(error, match=match):
            m.reload_config(bad)
        assert stamps(m.invoke("tool_pre_invoke", {})) == [1]
        assert stamps(m.invoke("reload.b", {})) == [1]  # the fast path still knows it has plugins
        assert m.plugin_names() == ["a"] and m.is_initialized()


def test_a_failing_initialize_shuts_the_new_plugins_down_and_the_old_keep_serving(tmp_path: Path) -> None:
    old_log, new_log = tmp_path / "old.log", tmp_path / "new.log"
    with started(config(stamp("a", 1, log=str(old_log)))) as m:
        with pytest.raises(PipelineError, match=r"reload_config: plugin 'y': initialize raised ValueError: gen 2 cannot start"):
            m.reload_config(config(stamp("x", 2, log=str(new_log)), stamp("y", 2, log=str(new_log), fail_initialize=True)))
        # x initialized and was shut down again; y failed; the old plugin was not touched
        assert lines(new_log) == ["initialize 2", "initialize 2", "shutdown 2"]
        assert stamps(m.invoke("tool_pre_invoke", {})) == [1]
        assert lines(old_log) == ["initialize 1", "entered 1", "served 1"]
    assert lines(old_log)[-1] == "shutdown 1"


def test_in_flight_calls_finish_on_the_old_set_and_it_shuts_down_after(tmp_path: Path) -> None:
    old_log, new_log = tmp_path / "old.log", tmp_path / "new.log"
    with started(config(stamp("slow", 1, log=str(old_log), seconds=1.0, hooks="[tool_pre_invoke]"))) as m:
        results: dict[str, Any] = {}

        def slow_call() -> None:
            results["slow"] = stamps(m.invoke("tool_pre_invoke", {}))

        def reload() -> None:
            m.reload_config(config(stamp("quick", 2, log=str(new_log))))
            # The slow plugin wrote "served" before its call left the old set, which
            # shuts down (and the reload returns) only after that. Not "slow" in
            # results: the caller stores it after leaving the set, racing this line.
            results["reloaded_after_slow"] = "served 1" in lines(old_log)

        caller = threading.Thread(target=slow_call)
        caller.start()
        wait_for("the slow call to enter its plugin", lambda: "entered 1" in lines(old_log))
        reloader = threading.Thread(target=reload)
        reloader.start()
        # The swap happens while the slow call runs: new calls get the new plugins
        # (reload.a: the old set has no plugin on it, the new one stamps it).
        wait_for("the new set to serve", lambda: stamps(m.invoke("reload.a", {})) == [2])
        assert caller.is_alive(), "the slow call ended before the swap; the test proves nothing"
        caller.join()
        reloader.join()
        assert results == {"slow": [1], "reloaded_after_slow": True}
        assert lines(old_log) == ["initialize 1", "entered 1", "served 1", "shutdown 1"]
        assert lines(new_log)[0] == "initialize 2"


def test_the_old_sets_fire_and_forget_tasks_finish_before_it_shuts_down(tmp_path: Path) -> None:
    log = tmp_path / "old.log"
    with started(
        config(stamp("bg", 1, log=str(log), seconds=0.3, hooks="[tool_pre_invoke]") + "    mode: fire_and_forget\n")
    ) as m:
        result = m.invoke("tool_pre_invoke", {})
        assert result.background is not None
        m.reload_config(config(stamp("a", 2)))
        assert lines(log) == ["initialize 1", "entered 1", "served 1", "shutdown 1"]
        result.background.close()


def test_context_tables_carry_state_over_to_unchanged_plugins() -> None:
    keep, gone = stamp("keep", 1), stamp("gone", 1)
    with started(config(keep, gone)) as m:
        first = m.invoke("tool_pre_invoke", {})
        assert first.context is not None
        # "keep" unchanged (same name, kind, config), "gone" removed, "new" added.
        m.reload_config(config(keep, stamp("new", 2)))
        second = m.invoke("tool_post_invoke", {}, context=first.context)
        assert stamps(second) == [1, 2]
        assert second.context is not None
        m.reload_config(config(keep))  # a table from two sets ago, through an unchanged plugin
        third = m.invoke("tool_post_invoke", {}, context=second.context)
        assert third.metadata == {"calls": 3}
        assert third.context is not None
        third.context.close()


def test_a_context_table_with_state_of_a_changed_plugin_is_refused_and_stays_usable() -> None:
    with started(config(stamp("a", 1))) as m:
        first = m.invoke("tool_pre_invoke", {})
        ctx = first.context
        assert ctx is not None
        m.reload_config(config(stamp("a", 2)))  # same name, another config
        with pytest.raises(InvalidInputError, match=r"issued before a reload, and plugin 'a' holds state .* another config"):
            m.invoke("tool_post_invoke", {}, context=ctx)
        assert not ctx.closed  # refused, not consumed: the host decides
        fresh = m.invoke("tool_post_invoke", {})  # the request goes on without it
        assert stamps(fresh) == [2] and fresh.metadata == {"calls": 1}
        ctx.close()
        m.reload_config(config("  - {name: a, kind: 'cpex_test_plugins:Counter', hooks: [tool_pre_invoke]}\n"))
        counted = m.invoke("tool_pre_invoke", {})
        assert counted.context is not None
        m.reload_config(config(stamp("a", 2)))
        with pytest.raises(InvalidInputError, match="another kind"):
            m.invoke("tool_pre_invoke", {}, context=counted.context)
        counted.context.close()


def test_reload_needs_an_initialized_live_manager() -> None:
    m = PluginManager(config(stamp("a", 1)))
    with pytest.raises(PipelineError, match="not initialized"):
        m.reload_config(config(stamp("a", 2)))
    m.initialize()
    m.reload_config(config(stamp("a", 2)))
    with pytest.raises(PipelineError, match="reload_config swaps"):
        m.load_config(config(stamp("a", 3)))
    m.shutdown()
    with pytest.raises(InvalidHandleError, match="shut down"):
        m.reload_config(config(stamp("a", 3)))


def test_shutdown_after_reload_shuts_the_serving_plugins_down(tmp_path: Path) -> None:
    log = tmp_path / "lifecycle.log"
    m = started(config(stamp("a", 1, log=str(log))))
    m.reload_config(config(stamp("a", 2, log=str(log))))
    m.reload_config(config(stamp("a", 3, log=str(log))))
    m.shutdown()
    assert lines(log) == ["initialize 1", "initialize 2", "shutdown 1", "initialize 3", "shutdown 2", "shutdown 3"]


def test_reload_config_file_takes_plugin_dirs_from_the_files_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deploy = tmp_path / "deploy"
    (deploy / "conf").mkdir(parents=True)
    (deploy / "my_plugins").mkdir()
    # a module of its own, importable only through the relative plugin_dirs
    (deploy / "my_plugins" / "reload_file_plugins.py").write_text(
        "from cpexrt import Plugin, modify\n\n\n"
        "class FromFile(Plugin):\n"
        "    def tool_pre_invoke(self, payload, ctx):\n"
        "        return modify({**payload, 'from_file': True})\n"
    )
    conf = deploy / "conf" / "cpex.yaml"
    conf.write_text(
        "plugin_settings:\n  plugin_dirs: [../my_plugins]\n"
        "plugins:\n  - {name: f, kind: 'reload_file_plugins:FromFile', hooks: [tool_pre_invoke]}\n"
    )
    bad = deploy / "conf" / "bad.yaml"
    bad.write_text("plugin_settings:\n  plugin_dirs: [../nowhere]\nplugins: []\n")
    monkeypatch.chdir(tmp_path)  # anywhere but the config's folder
    with started(config(stamp("a", 1))) as m:
        with pytest.raises(InvalidInputError, match="cannot read the config file"):
            m.reload_config_file(deploy / "conf" / "missing.yaml")
        with pytest.raises(ConfigError, match=f"resolved to {os.path.join(deploy, 'nowhere')}"):
            m.reload_config_file(bad)
        assert stamps(m.invoke("tool_pre_invoke", {})) == [1]
        m.reload_config_file(conf)
        assert m.invoke("tool_pre_invoke", {}).modified_payload == {"from_file": True}
        assert m.plugin_names() == ["f"]


def test_many_threads_see_one_set_per_call_while_reloading() -> None:
    """Python host threads invoke while the main thread reloads between two layouts;
    every result is exactly one set's answer (see the Go suite for the larger run)."""

    def layout(gen: int) -> str:
        hook = "reload.a" if gen % 2 == 0 else "reload.b"
        return config(stamp("s1", gen, hooks=f"[tool_pre_invoke, {hook}]"), stamp("s2", gen, hooks=f"[tool_pre_invoke, {hook}]"))

    started_gen, completed_gen = [0], [0]
    failures: list[str] = []
    settled = [0]  # calls that began and ended between two reloads: one set possible
    stop = threading.Event()
    with started(layout(0)) as m:

        def work() -> None:
            while not stop.is_set():
                for hook in ("tool_pre_invoke", "reload.a", "reload.b"):
                    lo = completed_gen[0]
                    try:
                        got = stamps(m.invoke(hook, {}))
                    except Exception as exc:  # noqa: BLE001 - recorded: the test fails on it
                        failures.append(f"{hook}: {exc!r}")
                        return
                    hi = started_gen[0]
                    failure = judge(hook, got, lo, hi)
                    if failure:
                        failures.append(failure)
                    if lo == hi:
                        settled[0] += 1

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for gen in range(1, 21):
            started_gen[0] = gen
            m.reload_config(layout(gen))
            completed_gen[0] = gen
            # Let calls run on the new set alone too, not only across the reload.
            target = settled[0] + 30
            wait_for("calls after the reload", lambda target=target: settled[0] >= target or bool(failures))
        stop.set()
        for t in threads:
            t.join()
    assert failures == []


def judge(hook: str, got: list[int] | None, lo: int, hi: int) -> str | None:
    """None when got is an answer some set of generation lo..hi gives for hook: even
    generations have their two plugins on reload.a, odd ones on reload.b, all on
    tool_pre_invoke."""
    if got is None:
        parity = {"reload.a": 1, "reload.b": 0}.get(hook)
        if parity is not None and any(g % 2 == parity for g in range(lo, hi + 1)):
            return None
        return f"{hook}: unchanged, but generations {lo}..{hi} all have plugins on it"
    if len(got) != 2 or got[0] != got[1]:
        return f"{hook}: stamps {got}: not one set's answer"
    gen = got[0]
    if not lo <= gen <= hi:
        return f"{hook}: served by generation {gen}, outside {lo}..{hi}"
    if hook != "tool_pre_invoke" and (hook == "reload.a") != (gen % 2 == 0):
        return f"{hook}: stamped by generation {gen}, which has no plugin on it"
    return None


def test_the_engine_reloads_the_same_way_without_the_library(tmp_path: Path) -> None:
    log = tmp_path / "lifecycle.log"
    e = Engine.from_yaml(config(stamp("a", 1, log=str(log))))
    e.initialize()
    first = e.invoke("tool_pre_invoke", 0, {})
    with pytest.raises(ConfigError):
        e.reload_config(config("  - {name: x, kind: 'nowhere_at_all:X', hooks: [tool_pre_invoke]}\n"))
    assert e.invoke("tool_pre_invoke", 0, {}).modified_payload == {"stamps": [1]}
    e.reload_config(config(stamp("a", 1, log=str(log)), stamp("b", 2, hooks="[tool_pre_invoke]")))
    assert e.plugin_names() == ["a", "b"]
    second = e.invoke("tool_post_invoke", 0, {}, context=first.context)
    assert second.modified_payload == {"stamps": [1]} and second.metadata == {"calls": 2}  # a's state carried over
    assert e.hooks_with_plugins() == ["tool_pre_invoke", "tool_post_invoke", "reload.a", "reload.b"]
    e.shutdown()
    assert lines(log) == [
        "initialize 1",
        "entered 1",
        "served 1",
        "entered 1",
        "served 1",
        "initialize 1",
        "shutdown 1",
        "entered 1",
        "served 1",
        "shutdown 1",
    ]


def test_the_raw_functions_check_their_inputs(library: Library) -> None:
    """cpex_reload_config / cpex_reload_config_file through cffi: handle, pointer and
    UTF-8 checks, each with its status and a message naming the function and input."""
    ffi = library.ffi
    m = new_manager(library, config(stamp("a", 1)))
    good = config(stamp("a", 2)).encode()
    status, message = call(library, "cpex_reload_config", ffi.NULL, good, len(good))
    assert status == Status.INVALID_HANDLE and message.startswith("cpex_reload_config:") and "manager" in message
    status, message = call(library, "cpex_reload_config", m, ffi.NULL, 5)
    assert status == Status.INVALID_INPUT and "yaml" in message
    status, message = call(library, "cpex_reload_config", m, b"\xff\xfe", 2)
    assert status == Status.INVALID_INPUT and "yaml: not valid UTF-8" in message
    status, message = call(library, "cpex_reload_config_file", m, b"/no/such/cpex.yaml", 18)
    assert status == Status.INVALID_INPUT and message.startswith("cpex_reload_config_file: path: cannot read")
    assert call(library, "cpex_reload_config", m, good, len(good)) == (Status.OK, "")
    status, _, result, _ = invoke(library, m, msgpack.packb({}))
    assert status == Status.OK and msgpack.unpackb(result)["modified_payload"] == msgpack.packb({"stamps": [2]})
    assert call(library, "cpex_shutdown", m) == (Status.OK, "")
    # A shut-down manager is gone for every path: a reload cannot bring its fast path
    # back, and a hook without plugins is refused too.
    status, message = call(library, "cpex_reload_config", m, good, len(good))
    assert status == Status.INVALID_HANDLE and "shut down" in message
    status, message, _, _ = invoke(library, m, msgpack.packb({}), hook=b"prompt_pre_fetch")
    assert status == Status.INVALID_HANDLE
