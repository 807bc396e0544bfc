"""The engine called directly (no C): config, ordering, authority, on_error, context."""

from __future__ import annotations

from typing import Any

import pytest

from conftest import config, plugin
from cpexrt.engine import Engine
from cpexrt.errors import ConfigError, InvalidHandleError, InvalidInputError, ParseError, PipelineError, PipelineTimeoutError


def started(text: str) -> Engine:
    m = Engine.from_yaml(text)
    m.initialize()
    return m


def test_priority_orders_sequential_plugins_and_config_order_breaks_ties() -> None:
    m = started(
        config(
            plugin("c", "Trace", priority=30, config="{tag: c}"),
            plugin("a", "Trace", priority=10, config="{tag: a}"),
            plugin("b1", "Trace", priority=20, config="{tag: b1}"),
            plugin("b2", "Trace", priority=20, config="{tag: b2}"),
        )
    )
    out = m.invoke("tool_pre_invoke", 0, {"trace": []})
    assert out.modified_payload == {"trace": ["a", "b1", "b2", "c"]}
    assert m.plugin_names() == ["c", "a", "b1", "b2"]


def test_deny_stops_the_pipeline_and_the_engine_names_the_plugin() -> None:
    m = started(config(plugin("guard", "DenyWhenBlocked", priority=1), plugin("after", "Trace", priority=2, config="{tag: x}")))
    out = m.invoke("tool_pre_invoke", 0, {"block": True, "tool_name": "t"})
    assert not out.continue_processing
    assert out.violation is not None
    assert out.violation.plugin_name == "guard"
    assert out.violation.code == "blocked"
    assert out.violation.details == {"tool": "t"}
    assert out.modified_payload is None  # "after" never ran


def test_transform_may_not_deny_and_audit_may_not_modify() -> None:
    m = started(
        config(
            plugin("t", "DenyWhenBlocked", mode="transform", on_error="ignore"),
            plugin("a", "Trace", mode="audit", on_error="ignore", config="{tag: a}"),
        )
    )
    out = m.invoke("tool_pre_invoke", 0, {"block": True})
    assert out.continue_processing
    assert out.modified_payload is None
    assert [(e.plugin_name, "may not" in e.message) for e in out.errors] == [("t", True), ("a", True)]


@pytest.mark.parametrize("cls", ["Raises", "Garbage"])
def test_on_error_fail_fails_the_call_naming_the_plugin(cls: str) -> None:
    m = started(config(plugin("bad", cls)))
    with pytest.raises(PipelineError, match="'bad'"):
        m.invoke("tool_pre_invoke", 0, {})


def test_on_error_ignore_records_and_continues_disable_stops_running_the_plugin() -> None:
    m = started(config(plugin("ign", "Raises", on_error="ignore"), plugin("dis", "Raises", on_error="disable")))
    first = m.invoke("tool_pre_invoke", 0, {})
    assert [e.plugin_name for e in first.errors] == ["ign", "dis"]
    assert "kaboom" in first.errors[0].message
    second = m.invoke("tool_pre_invoke", 0, {})
    assert [e.plugin_name for e in second.errors] == ["ign"]


def test_async_handlers_and_their_timeout() -> None:
    m = started(config(plugin("nope", "AsyncDeny")))
    out = m.invoke("tool_pre_invoke", 0, {})
    assert out.violation is not None and out.violation.plugin_name == "nope"
    slow = started(config(plugin("slow", "AsyncSleeper", config="{seconds: 5}"), timeout=0.2))
    with pytest.raises(PipelineTimeoutError, match="'slow' timed out"):
        slow.invoke("tool_pre_invoke", 0, {})


def test_context_state_threads_between_hooks_and_cannot_be_reused() -> None:
    m = started(config(plugin("count", "Counter", hooks="[tool_pre_invoke, tool_post_invoke]")))
    pre = m.invoke("tool_pre_invoke", 0, {})
    assert pre.context is not None
    post = m.invoke("tool_post_invoke", 0, {}, context=pre.context)
    assert post.metadata == {"calls": 2}
    with pytest.raises(InvalidInputError, match="already consumed"):
        m.invoke("tool_post_invoke", 0, {}, context=pre.context)


def test_custom_hook_names_bind_through_the_decorator() -> None:
    m = started(config(plugin("c", "Custom", hooks="[my.custom-hook]")))
    assert m.has_hooks_for("my.custom-hook")
    assert not m.has_hooks_for("tool_pre_invoke")
    assert m.invoke("my.custom-hook", 0, {"a": 1}).modified_payload == {"a": 1, "custom": True}


@pytest.mark.parametrize(
    ("text", "error", "match"),
    [
        ("plugins: [", ParseError, "YAML syntax error at line"),
        ("- 1", ConfigError, "expected a mapping"),
        ("plugins: [{name: a, kind: 'x:Y', mode: sideways}]", ConfigError, r"plugins\[0\]\.mode"),
        ("plugins: [{name: a, kind: 'x:Y', colour: red}]", ConfigError, r"plugins\[0\]\.colour"),
        ("plugins: [{name: a, kind: nocolon}]", ConfigError, r"plugins\[0\]\.kind: unknown plugin kind"),
        ("plugins: [{name: a, kind: 'no_such_module_xyz:A'}]", ConfigError, "cannot import module"),
        (config(plugin("a", "Allow"), plugin("a", "Allow")), ConfigError, r"plugins\[1\]\.name: duplicate plugin name 'a'"),
        (config(plugin("a", "Allow", hooks="[prompt_pre_fetch]")), ConfigError, r"plugins\[0\]\.hooks\[0\]: .* no handler"),
        ("plugin_settings: {plugin_dirs: [/no/such/dir]}", ConfigError, "plugin_dirs"),
    ],
)
def test_bad_configs_name_the_field(text: str, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        Engine.from_yaml(text)


def test_lifecycle_errors() -> None:
    m = Engine.from_yaml(config(plugin("b", "BrokenInit")))
    with pytest.raises(PipelineError, match="'b': initialize raised ValueError: no database"):
        m.initialize()
    assert not m.is_initialized()
    idle = Engine()
    with pytest.raises(PipelineError, match="not initialized"):
        idle.invoke("tool_pre_invoke", 0, {})
    idle.shutdown()
    idle.shutdown()
    with pytest.raises(InvalidHandleError, match="shut down"):
        idle.plugin_count()


@pytest.mark.parametrize(
    ("payload_type", "payload", "match"),
    [(7, {}, "unknown payload type 7"), (0, [1, 2], "must be a map")],
)
def test_bad_invoke_input(payload_type: int, payload: object, match: str) -> None:
    m = started(config(plugin("a", "Allow")))
    with pytest.raises(InvalidInputError, match=match):
        m.invoke("tool_pre_invoke", payload_type, payload)


def test_modify_gives_the_dataclass_with_every_field_and_nothing_shared() -> None:
    # results.modify fills the result's dict from a module template (no __init__): it
    # must set every field, in the dataclass's order, equal the constructor's result,
    # and share no map with the template or with another result.
    from cpexrt.results import _MODIFY_FIELDS, PluginResult, modify

    given = {"m": 1}
    first = modify({"p": 1}, extensions={"meta": {}}, metadata=given)
    assert type(first) is PluginResult and list(vars(first)) == list(PluginResult.__dataclass_fields__)
    assert first == PluginResult(modified_payload={"p": 1}, modified_extensions={"meta": {}}, metadata={"m": 1})
    assert first.metadata is not given
    second = modify(extensions={})
    assert second == PluginResult(modified_extensions={}) and second.metadata == {} and second.metadata is not first.metadata
    assert _MODIFY_FIELDS == dict.fromkeys(PluginResult.__dataclass_fields__) | {"continue_processing": True, "retry_delay_ms": 0}
    with pytest.raises(ValueError, match="give a payload, extensions, or both"):
        modify()


def test_a_result_built_for_an_adapter_is_the_dataclass_with_every_field() -> None:
    # results.built skips the frozen dataclass's __init__: it must still set every
    # field (a field added to PluginResult and not to built fails here) and equal
    # the result the constructor gives.
    from cpexrt._generated.records import PluginViolation
    from cpexrt.results import PluginResult, built

    fields: dict[str, Any] = {
        "continue_processing": False,
        "violation": PluginViolation(code="c", reason="r"),
        "modified_payload": {"a": 1},
        "modified_extensions": {"meta": {}},
        "metadata": {"m": 2},
        "retry_delay_ms": 3,
        "http_headers": {"x-a": "b"},
    }
    assert set(fields) == set(PluginResult.__dataclass_fields__)
    result = built(**fields)
    assert type(result) is PluginResult
    assert result == PluginResult(**fields)
    assert set(vars(result)) == set(PluginResult.__dataclass_fields__)
    with pytest.raises(AttributeError):
        result.continue_processing = True  # type: ignore[misc]
