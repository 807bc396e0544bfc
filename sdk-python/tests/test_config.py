"""The config's validation (cpexrt.engine.config on cpexrt.engine.shape): every problem
listed with its field's path, each type and constraint's message, the lax conversions
kept and the ones refused, aliases, defaults per instance, and the copies and plain
data the engine makes of a plugin's stanza."""

from __future__ import annotations

import re

import pytest

from cpexrt.engine import config as config_module
from cpexrt.engine.config import Conditions, Config, Isolation, Mode, OnError, PluginSpec, PolicyGroup, Route, parse_config
from cpexrt.errors import ConfigError


def problems(text: str) -> list[str]:
    """The problems of text's ConfigError, in order (split at "; ", which the messages
    of these tests do not hold)."""
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    message = str(info.value)
    assert message.startswith("invalid config: "), message
    return message.removeprefix("invalid config: ").split("; ")


def problem(text: str) -> str:
    """The one problem of text's ConfigError."""
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    return str(info.value).removeprefix("invalid config: ")


def stanza(extra: str) -> str:
    return "plugins: [{name: a, kind: 'x:Y', " + extra + "}]"


# -- several problems -------------------------------------------------------------------


def test_every_problem_is_listed_with_its_path_in_the_order_of_the_file() -> None:
    text = "plugins:\n  - {name: '', kind: 'x:Y', priority: x, shade: blue}\n  - {kind: 'x:Y', mode: maybe}\nbogus: 1\n"
    assert problems(text) == [
        "plugins[0].name: expected a non-empty string, got ''",
        "plugins[0].priority: expected an integer, got 'x'",
        "plugins[0].shade: unknown field",
        "plugins[1].mode: expected one of 'sequential', 'transform', 'audit', 'concurrent', 'fire_and_forget' "
        "or 'disabled', got 'maybe'",
        "plugins[1].name: required field missing",
        "bogus: unknown field",
    ]


def test_ten_problems_are_listed_and_the_rest_counted() -> None:
    ten = "plugins: [" + ", ".join(f"{{name: p{i}, kind: 'x:Y', priority: x}}" for i in range(10)) + "]"
    listed = problems(ten)
    assert listed == [f"plugins[{i}].priority: expected an integer, got 'x'" for i in range(10)]
    thirteen = ten.replace("]", ", {name: q, kind: 'x:Y', priority: x, mode: m, on_error: e}]")
    listed = problems(thirteen)
    assert len(listed) == 11
    assert listed[:10] == [f"plugins[{i}].priority: expected an integer, got 'x'" for i in range(10)]
    assert listed[10] == "and 3 more problems"


def test_cross_field_checks_run_once_the_fields_are_valid() -> None:
    # isolation thread is wrong for isolated_venv, but the bad priority is what is reported
    assert problems("plugins: [{name: a, kind: isolated_venv, isolation: thread, priority: x}]") == [
        "plugins[0].priority: expected an integer, got 'x'"
    ]
    assert problem("plugins: [{name: a, kind: isolated_venv, isolation: thread}]") == (
        "plugins[0]: a py-cpex isolated_venv plugin runs in worker processes; isolation thread is not possible"
    )
    assert problems("plugins: [{name: a, kind: 'x:Y', python: /bin/py, env: [A]}]") == [
        "plugins[0]: python applies to isolation: process only",
        "plugins[0]: env applies to isolation: process only",
    ]


# -- each type's and constraint's message ----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (stanza("name: 5"), "plugins[0].name: expected a string, got 5"),
        (stanza("description: no"), "plugins[0].description: expected a string, got False"),
        (stanza("version: 2020-01-01"), "plugins[0].version: expected a string, got datetime.date(2020, 1, 1)"),
        (stanza("priority: 1.5"), "plugins[0].priority: expected an integer, got 1.5"),
        (stanza("priority: true"), "plugins[0].priority: expected an integer, got True"),
        (stanza("priority: '10'"), "plugins[0].priority: expected an integer, got '10'"),
        (stanza("priority: null"), "plugins[0].priority: expected an integer, got None"),
        (stanza("timeout: true"), "plugins[0].timeout: expected a number, got True"),
        (stanza("timeout: '5'"), "plugins[0].timeout: expected a number, got '5'"),
        ("plugin_settings: {routing_enabled: 1}", "plugin_settings.routing_enabled: expected true or false, got 1"),
        ("plugin_settings: {routing_enabled: 'yes'}", "plugin_settings.routing_enabled: expected true or false, got 'yes'"),
        (stanza("hooks: tool_pre_invoke"), "plugins[0].hooks: expected a list, got 'tool_pre_invoke'"),
        (stanza("config: [1]"), "plugins[0].config: expected a mapping, got [1]"),
        ("plugin_settings: null", "plugin_settings: expected a mapping, got None"),
        (stanza("on_error: explode"), "plugins[0].on_error: expected one of 'fail', 'ignore' or 'disable', got 'explode'"),
        (stanza("isolation: 3"), "plugins[0].isolation: expected one of 'none', 'thread' or 'process', got 3"),
        # constraints: gt, ge, le, min_length
        (stanza("timeout: 0"), "plugins[0].timeout: expected a number greater than 0, got 0"),
        (stanza("timeout: .nan"), "plugins[0].timeout: expected a number greater than 0, got nan"),
        ("plugin_settings: {invoke_timeout: -1.5}", "plugin_settings.invoke_timeout: expected a number greater than 0, got -1.5"),
        ("plugin_settings: {route_cache_size: -1}", "plugin_settings.route_cache_size: expected at least 0, got -1"),
        (stanza("isolation: process, hooks: [h], workers: 0"), "plugins[0].workers: expected at least 1, got 0"),
        (stanza("isolation: process, hooks: [h], workers: 65"), "plugins[0].workers: expected at most 64, got 65"),
        ("plugin_settings: {engine_workers: 65.0}", "plugin_settings.engine_workers: expected at most 64, got 65.0"),
        (stanza("isolation: process, max_memory_mb: 8"), "plugins[0].max_memory_mb: expected at least 16, got 8"),
        (stanza("isolation: process, python: ''"), "plugins[0].python: expected a non-empty string, got ''"),
        ("decision_records: {file: ''}", "decision_records.file: expected a non-empty string, got ''"),
        # the checks of their own
        (stanza("hooks: [h, '']"), "plugins[0].hooks[1]: expected a hook name, got ''"),
        (stanza("isolation: process, env: [OK, 'A=B']"), "plugins[0].env[1]: 'A=B' is not an environment variable name"),
        (
            "routes: [{tool: a, resource: b}]",
            "routes[0]: a route names exactly one of tool, resource, prompt (got tool, resource)",
        ),
        ("routes: [{tool: 'a[b'}]", "routes[0].tool: pattern 'a[b' uses '[', which route patterns do not support"),
        ("plugins: [{kind: 'x:Y'}]", "plugins[0].name: required field missing"),
        ("global_: {}", "global_: unknown field"),
    ],
)
def test_each_problem_names_the_field_and_the_expectation(text: str, expected: str) -> None:
    found = problem(text)
    assert found.startswith(expected) and "; " not in found.removeprefix(expected), found


def test_a_long_bad_value_is_shown_briefly() -> None:
    (listed,) = problems(stanza("priority: '" + "x" * 500 + "'"))
    assert re.fullmatch(r"plugins\[0\]\.priority: expected an integer, got 'x+\.\.\.x+'", listed)
    assert len(listed) < 120


def test_wrong_types_deep_in_lists_and_maps_name_their_paths() -> None:
    text = (
        "plugins: [{name: a, kind: 'x:Y', conditions: [{tools: [ok]}, {tools: [1], tags: x}, 5], config: {1: x, ok: [1]}}]\n"
        "global: {policies: {g: {plugins: [a, [b]]}, h: 5}}\n"
        "routes: [{tool: t, meta: {tags: [a, {b: 1}]}}]\n"
    )
    assert problems(text) == [
        "plugins[0].conditions[1].tools[0]: expected a string, got 1",
        "plugins[0].conditions[1].tags: expected a list, got 'x'",
        "plugins[0].conditions[2]: expected a mapping, got 5",
        "plugins[0].config[1]: expected a string key, got 1",
        "global.policies.g.plugins[1]: expected a string, got ['b']",
        "global.policies.h: expected a mapping, got 5",
        "routes[0].meta.tags[1]: expected a string, got {'b': 1}",
    ]


# -- what loads ------------------------------------------------------------------------------


def test_numbers_convert_as_yaml_writes_them() -> None:
    spec = parse_config(stanza("timeout: 5, priority: 10.0")).plugins[0]
    assert spec.timeout == 5.0 and type(spec.timeout) is float
    assert spec.priority == 10 and type(spec.priority) is int
    assert parse_config("plugin_settings: {plugin_timeout: .inf}").plugin_settings.plugin_timeout == float("inf")


def test_the_global_key_is_the_global__attribute() -> None:
    config = parse_config("plugins: [{name: a, kind: 'x:Y'}]\nglobal: {policies: {all: {plugins: [a]}}}")
    assert config.global_.policies["all"].plugins == ["a"]
    assert Config(**{"global": {"policies": {"g": {}}}}).global_.policies["g"].plugins == []
    with pytest.raises(ConfigError, match=r"^invalid config: global_: unknown field$"):
        Config(global_={})


def test_defaults_are_made_for_each_instance() -> None:
    config = parse_config(
        "plugins: [{name: a, kind: 'x:Y'}, {name: b, kind: 'x:Y'}]\nroutes: [{tool: x}, {tool: y}]",
    )
    a, b = config.plugins
    a.tags.append("mutated")
    a.config["k"] = 1
    a.conditions.append(Conditions())
    assert (b.tags, b.config, b.conditions) == ([], {}, [])
    assert PluginSpec(name="c", kind="x:Y").tags == []
    config.routes[0].meta.tags.append("mutated")
    assert config.routes[1].meta.tags == []
    one, other = Config(), Config()
    one.plugin_settings.plugin_dirs.append("/mutated")
    one.global_.policies["g"] = PolicyGroup()
    assert one.plugin_settings is not other.plugin_settings and other.plugin_settings.plugin_dirs == []
    assert other.global_.policies == {} and Config().plugin_settings.plugin_dirs == []


def test_legacy_modes_and_a_null_config() -> None:
    enforce, ignore, permissive, kept = parse_config(
        "plugins:\n"
        "  - {name: a, kind: 'x:Y', mode: enforce}\n"
        "  - {name: b, kind: 'x:Y', mode: enforce_ignore_error, config: }\n"
        "  - {name: c, kind: 'x:Y', mode: permissive}\n"
        "  - {name: d, kind: 'x:Y', mode: enforce_ignore_error, on_error: disable}\n"
    ).plugins
    assert (enforce.mode, enforce.on_error, enforce.shadow) == (Mode.SEQUENTIAL, OnError.FAIL, False)
    assert (ignore.mode, ignore.on_error, ignore.shadow, ignore.config) == (Mode.SEQUENTIAL, OnError.IGNORE, False, {})
    assert (permissive.mode, permissive.shadow) == (Mode.TRANSFORM, True)
    assert kept.on_error is OnError.DISABLE


def test_the_constructors_validate_as_the_file_does() -> None:
    with pytest.raises(
        ConfigError, match=r"^invalid config: name: expected a non-empty string, got ''; kind: required field missing$"
    ):
        PluginSpec(name="")
    with pytest.raises(ConfigError, match=r"^invalid config: plugins\[0\]\.hooks\[0\]: expected a string, got 3$"):
        Config(plugins=[{"name": "a", "kind": "x:Y", "hooks": [3]}])
    assert Config(plugins=[PluginSpec(name="a", kind="x:Y")]).plugins[0].name == "a"  # instances taken as they are


def test_fields_set_are_the_fields_the_data_gave() -> None:
    spec = parse_config(stanza("isolation: thread, workers: 2")).plugins[0]
    assert spec.fields_set == {"name", "kind", "isolation", "workers"}
    assert spec.isolation is Isolation.THREAD
    assert Conditions(tools=["a"], server_ids=["s"]).given() == ["tools", "server_ids"]


# -- copies and plain data ---------------------------------------------------------------------


def test_replace_copies_with_the_named_fields_changed() -> None:
    spec = parse_config(stanza("mode: permissive, conditions: [{tools: [a]}]")).plugins[0]
    copy = spec.replace(conditions=[])
    assert copy.conditions == [] and spec.conditions == [Conditions(tools=["a"])]
    assert copy.shadow and copy.name == "a" and copy.mode is Mode.TRANSFORM
    assert copy != spec and copy == spec.replace(conditions=[])
    assert copy != parse_config(stanza("mode: transform")).plugins[0].replace(conditions=[])  # not in shadow
    with pytest.raises(TypeError, match="PluginSpec has no field 'colour'"):
        spec.replace(colour="blue")


def test_as_data_is_the_stanza_as_yaml_writes_it() -> None:
    spec = parse_config(
        stanza("hooks: [h], mode: transform, priority: 100, timeout: 2, conditions: [{tools: [t]}], config: {k: [1]}")
    ).plugins[0]
    assert spec.as_data(defaults=False) == {
        "name": "a",
        "kind": "x:Y",
        "hooks": ["h"],
        "mode": "transform",
        "timeout": 2.0,
        "config": {"k": [1]},
        "conditions": [{"tools": ["t"]}],
    }
    full = parse_config("global: {policies: {g: {plugins: []}}}").as_data()
    assert full["global"] == {"policies": {"g": {"plugins": []}}}
    assert full["plugin_settings"]["plugin_timeout"] == 30.0 and "venv_cache_dir" not in full["plugin_settings"]
    assert Route(tool="t").as_data(defaults=False) == {"tool": "t"}


def test_the_config_module_holds_nothing_of_pydantic() -> None:
    """The config path imports no pydantic (its import was half a cold start)."""
    held = {name for name, value in vars(config_module).items() if getattr(value, "__module__", "").startswith("pydantic")}
    assert held == set()
    assert not any("pydantic" in cls.__module__ for cls in Config.__mro__)
