"""The engine's rules, called directly: phases, authority, timeouts, fire-and-forget,
state, routing, factories."""

from __future__ import annotations

import time
from typing import Any

import pytest

import cpex_test_plugins as tp
from conftest import PLUGIN_DIR, config, plugin
from cpexrt.engine import Engine
from cpexrt.errors import ConfigError, InvalidInputError, PipelineError, PipelineTimeoutError

PRE = "tool_pre_invoke"


def started(text: str) -> Engine:
    m = Engine.from_yaml(text)
    m.initialize()
    return m


def meta(tool: str, *tags: str) -> dict[str, Any]:
    return {"meta": {"entity_type": "tool", "entity_name": tool, "tags": list(tags)}}


def trace(m: Engine, extensions: dict[str, Any] | None = None) -> list[str]:
    out = m.invoke(PRE, 0, {"trace": []}, extensions)
    payload = out.modified_payload or {"trace": []}
    return list(payload["trace"])


def test_phases_run_in_order_whatever_the_priorities() -> None:
    m = started(
        config(
            plugin("t", "Trace", mode="transform", priority=1, config="{tag: transform}"),
            plugin("s", "Trace", mode="sequential", priority=99, config="{tag: sequential}"),
            plugin("dis", "Trace", mode="disabled", priority=0, config="{tag: disabled}"),
        )
    )
    assert trace(m) == ["sequential", "transform"]


def test_concurrent_plugins_run_together() -> None:
    m = started(
        config(
            plugin("waiter", "Rendezvous", mode="concurrent", config="{role: wait}"),
            plugin("setter", "Rendezvous", mode="concurrent", config="{role: set}"),
        )
    )
    out = m.invoke(PRE, 0, {})
    assert out.continue_processing, out.violation
    assert out.metadata == {"waiter": "met", "setter": "set"}


def test_concurrent_first_deny_halts_and_modifications_are_refused() -> None:
    m = started(
        config(
            plugin("quick-no", "AsyncVerdict", mode="concurrent", config="{seconds: 0.01, deny: true, tag: quick}"),
            plugin("slow-yes", "AsyncVerdict", mode="concurrent", config="{seconds: 3, tag: slow}"),
        )
    )
    out = m.invoke(PRE, 0, {})
    assert out.violation is not None and out.violation.plugin_name == "quick-no"
    assert "slow" not in out.metadata and out.errors == []
    m2 = started(config(plugin("c", "Trace", mode="concurrent", on_error="ignore", config="{tag: c}")))
    res = m2.invoke(PRE, 0, {})
    assert res.modified_payload is None and "may not modify" in res.errors[0].message


def test_sync_spinning_plugin_is_stopped_at_its_timeout() -> None:
    m = started(
        config(
            plugin("spin", "Spinner", on_error="ignore", timeout=0.2),
            plugin("after", "Trace", priority=200, config="{tag: after}"),
        )
    )
    started_at = time.monotonic()
    out = m.invoke(PRE, 0, {"trace": []})
    assert time.monotonic() - started_at < 5
    assert [(e.plugin_name, e.code) for e in out.errors] == [("spin", "plugin_timeout")]
    assert out.modified_payload == {"trace": ["after"]}
    # no stray interrupt lands later in the engine or the caller
    total = sum(range(2_000_000))
    assert total > 0
    fail = started(config(plugin("spin", "Spinner", timeout=0.2)))
    with pytest.raises(PipelineTimeoutError, match=r"'spin' timed out after 0\.2s"):
        fail.invoke(PRE, 0, {})


def test_the_invoke_wall_clock_limit_bounds_the_whole_call() -> None:
    text = config(
        # Each plugin alone is under the limit, together they are over it; a has half
        # a second to spare (a loaded machine), b cannot finish before the limit.
        plugin("a", "AsyncVerdict", on_error="ignore", config="{seconds: 0.2, tag: a}"),
        plugin("b", "AsyncVerdict", on_error="ignore", config="{seconds: 0.6, tag: b}"),
    ).replace("plugin_settings:\n", "plugin_settings:\n  invoke_timeout: 0.7\n")
    m = started(text)
    with pytest.raises(PipelineTimeoutError, match=r"invoke_timeout.*plugin 'b'"):
        m.invoke(PRE, 0, {})


def test_fire_and_forget_runs_after_the_pipeline_and_reports_through_the_handle() -> None:
    m = started(
        config(
            plugin("guard", "DenyWhenBlocked"),
            plugin("rec", "Recorder", mode="fire_and_forget", on_error="ignore", config="{seconds: 0.05}"),
            plugin("sync-rec", "SyncRecorder", mode="fire_and_forget"),
        )
    )
    out = m.invoke(PRE, 0, {"id": 1})
    assert out.background is not None and out.background.wait() == []
    assert m.global_state["recorded"] == [1] and m.global_state["sync_recorded"] == [1]
    failing = m.invoke(PRE, 0, {"id": 2, "fail": True}).background
    assert failing is not None
    errors = failing.wait()
    assert [(e.plugin_name, e.code) for e in errors] == [("rec", "plugin_error")]
    assert "recorder told to fail" in errors[0].message
    denied = m.invoke(PRE, 0, {"id": 3, "block": True})
    assert denied.violation is not None
    assert denied.background is not None and denied.background.wait() == []
    assert m.global_state["recorded"] == [1, 3]
    # dropped without waiting: the task still finishes
    m.invoke(PRE, 0, {"id": 4})
    deadline = time.monotonic() + 5
    while 4 not in m.global_state["recorded"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert m.global_state["recorded"][-1] == 4


def test_global_state_is_shared_across_invokes_and_local_state_is_per_request() -> None:
    m = started(config(plugin("g", "GlobalCounter"), plugin("c", "Counter", hooks="[tool_pre_invoke, tool_post_invoke]")))
    assert m.invoke(PRE, 0, {}).metadata["global_count"] == 1
    first = m.invoke(PRE, 0, {})
    assert first.metadata["global_count"] == 2
    other_request = m.invoke("tool_post_invoke", 0, {})
    assert other_request.metadata == {"calls": 1}
    same_request = m.invoke("tool_post_invoke", 0, {}, context=first.context)
    assert same_request.metadata == {"calls": 2}


def test_modified_extensions_flow_to_later_plugins_and_the_result() -> None:
    m = started(
        config(
            plugin("w1", "ExtensionWriter", config="{tag: one}"),
            plugin("w2", "ExtensionWriter", priority=200, config="{tag: two}"),
        )
    )
    out = m.invoke(PRE, 0, {}, {"custom": {"seed": 1}})
    assert out.modified_extensions == {"custom": {"seed": 1, "one": True, "two": True}}
    audit = started(config(plugin("w", "ExtensionWriter", mode="audit", on_error="ignore", config="{tag: x}")))
    res = audit.invoke(PRE, 0, {})
    assert res.modified_extensions is None and "may not modify" in res.errors[0].message


ROUTED = f"""
plugin_settings:
  routing_enabled: true
  route_cache_size: 2
  plugin_dirs: [{PLUGIN_DIR!r}]
global:
  policies:
    all: {{plugins: [identity]}}
    pii: {{plugins: [pii-guard]}}
plugins:
  - {{name: identity, kind: "cpex_test_plugins:Trace", hooks: [tool_pre_invoke], priority: 10, config: {{tag: identity}}}}
  - {{name: pii-guard, kind: "cpex_test_plugins:Trace", hooks: [tool_pre_invoke], priority: 20, config: {{tag: pii}}}}
  - {{name: audit, kind: "cpex_test_plugins:Trace", hooks: [tool_pre_invoke], priority: 100, config: {{tag: audit}}}}
  - {{name: echo, kind: "cpex_test_plugins:TagEcho", hooks: [tool_pre_invoke], priority: 200, config: {{tag: tags}}}}
routes:
  - {{tool: get_compensation, meta: {{tags: [pii, hr]}}, plugins: [audit, echo]}}
  - {{tool: "*", plugins: [audit]}}
  - {{tool: listed_after_star, plugins: [echo]}}
"""


def test_routes_policy_groups_and_tags() -> None:
    m = started(ROUTED)
    assert trace(m, meta("get_compensation")) == ["identity", "pii", "audit"]
    assert m.invoke(PRE, 0, {}, meta("get_compensation", "finance")).metadata["tags"] == ["finance", "pii", "hr"]
    assert trace(m, meta("list_departments")) == ["identity", "audit"]
    assert trace(m, meta("list_departments", "pii")) == ["identity", "pii", "audit"]  # the entity's own tag
    # An exact route beats the earlier '*' (the most specific wins): echo, not audit.
    assert m.invoke(PRE, 0, {"trace": []}, meta("listed_after_star")).metadata["tags"] == []
    assert trace(m, meta("listed_after_star")) == ["identity"]
    assert trace(m) == ["identity", "pii", "audit"]  # no entity: every plugin of the hook
    for name in ("a", "b", "c", "d"):
        trace(m, meta(name))
    assert m.router.cached <= 2


def test_routing_disabled_runs_every_plugin_of_the_hook() -> None:
    m = started(ROUTED.replace("routing_enabled: true", "routing_enabled: false"))
    assert trace(m, meta("list_departments")) == ["identity", "pii", "audit"]


def test_conditions_restrict_a_plugin() -> None:
    m = started(config(plugin("only-pay", "Trace", config="{tag: pay}", conditions="[{tools: [pay]}, {tags: [money]}]")))
    assert trace(m, meta("pay")) == ["pay"]
    assert trace(m, meta("other", "money")) == ["pay"]
    assert trace(m, meta("other")) == []


def test_factories_registered_by_the_host() -> None:
    m = Engine()
    m.register_factory("tracer", tp.Trace)
    m.register_factory("blocker", "cpex_test_plugins:DenyWhenBlocked")
    with pytest.raises(InvalidInputError, match="already registered"):
        m.register_factory("tracer", tp.Allow)
    with pytest.raises(InvalidInputError, match="reserved for import paths"):
        m.register_factory("a:b", tp.Allow)
    with pytest.raises(InvalidInputError, match="not an import path"):
        m.register_factory("x", "no_colon")
    m.load_config(
        f"plugin_settings: {{plugin_dirs: [{PLUGIN_DIR!r}]}}\n"
        "plugins:\n  - {name: t, kind: tracer, hooks: [tool_pre_invoke], config: {tag: t}}\n"
        "  - {name: b, kind: blocker}\n"
    )
    m.initialize()
    assert trace(m) == ["t"]
    fresh = Engine()
    fresh.register_factory("tracer", tp.Trace)
    fresh.register_factory("blocker", tp.DenyWhenBlocked)
    with pytest.raises(
        ConfigError, match=r"plugins\[0\]\.kind: unknown plugin kind 'nope'; expected a registered kind \(blocker, tracer\)"
    ):
        fresh.load_config("plugins: [{name: a, kind: nope}]")


def test_hooks_default_to_what_the_class_handles() -> None:
    m = started(config(plugin("c", "Counter", hooks="[]")))
    assert m.has_hooks_for(PRE) and m.has_hooks_for("tool_post_invoke") and not m.has_hooks_for("prompt_pre_fetch")
    with pytest.raises(ConfigError, match=r"plugins\[0\]\.hooks: plugin 'x' lists no hooks"):
        Engine.from_yaml(
            config(plugin("x", "BrokenInit", hooks="[]").replace("BrokenInit", "Plugin").replace("cpex_test_plugins:", "cpexrt:"))
        )


def test_async_lifecycle_and_disabled_plugins_stay_disabled() -> None:
    m = started(config(plugin("l", "AsyncLifecycle"), plugin("d", "Raises", on_error="disable")))
    assert m.is_initialized()
    assert [e.plugin_name for e in m.invoke(PRE, 0, {}).errors] == ["d"]
    for _ in range(3):
        assert m.invoke(PRE, 0, {}).errors == []
    assert m.has_hooks_for(PRE)  # l still handles it
    alone = started(config(plugin("d", "Raises", on_error="disable")))
    alone.invoke(PRE, 0, {})
    assert not alone.has_hooks_for(PRE)  # a disabled plugin no longer counts
    m.shutdown()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            "routes: [{tool: a, prompt: b}]",
            r"routes\[0\]: a route names exactly one of tool, resource, prompt \(got tool, prompt\)",
        ),
        ("routes: [{plugins: []}]", r"routes\[0\]: .*got none"),
        ("global: {policies: {all: {plugins: [ghost]}}}", r"global\.policies\.all\.plugins\[0\]: no plugin named 'ghost'"),
        ("routes: [{tool: x, plugins: [ghost]}]", r"routes\[0\]\.plugins\[0\]: no plugin named 'ghost'"),
        (
            "plugins: [{name: a, kind: 'x:Y', on_error: explode}]",
            r"plugins\[0\]\.on_error: expected one of 'fail', 'ignore' or 'disable', got 'explode'",
        ),
        ("plugin_settings: {plugin_timeout: -1}", r"plugin_settings\.plugin_timeout"),
        ("plugin_settings: {routing: true}", r"plugin_settings\.routing: unknown field"),
    ],
)
def test_more_bad_configs(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Engine.from_yaml(text)


def test_a_failing_fail_mode_plugin_names_itself_and_the_hook() -> None:
    m = started(config(plugin("bad", "Raises")))
    with pytest.raises(PipelineError, match="hook 'tool_pre_invoke': plugin 'bad' raised RuntimeError: kaboom"):
        m.invoke(PRE, 0, {})
