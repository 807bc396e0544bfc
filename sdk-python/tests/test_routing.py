"""Routes and conditions: wildmatch patterns (`*`, `?`), what a config may not use
(refused at load, naming the entry), which route wins when several match, plugin
conditions with patterns, and calls without an entity."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import PLUGIN_DIR
from cpexrt.engine import Engine
from cpexrt.engine.patterns import Pattern
from cpexrt.errors import ConfigError

PRE = "tool_pre_invoke"


def routed(routes: str, *, groups: str = "", cache: int = 16) -> Engine:
    """A routing-enabled manager; the plugins the groups and routes name are Trace
    plugins tracing their own name, configured in the order they are first named."""
    listed = re.findall(r"plugins: \[([^\]]*)\]", groups + routes)
    names = dict.fromkeys(n.strip() for group in listed for n in group.split(",") if n.strip())
    entries = "".join(
        f"  - {{name: {n}, kind: 'cpex_test_plugins:Trace', hooks: [{PRE}], config: {{tag: {n}}}}}\n" for n in names
    )
    m = Engine.from_yaml(
        f"plugin_settings: {{routing_enabled: true, route_cache_size: {cache}, plugin_dirs: [{PLUGIN_DIR!r}]}}\n"
        + (f"global:\n  policies:\n{groups}" if groups else "")
        + "plugins:\n"
        + entries
        + "routes:\n"
        + routes
    )
    m.initialize()
    return m


def entity(kind: str, name: str, *tags: str) -> dict[str, Any]:
    return {"meta": {"entity_type": kind, "entity_name": name, "tags": list(tags)}}


def ran(m: Engine, extensions: dict[str, Any] | None) -> list[str]:
    out = m.invoke(PRE, 0, {"trace": []}, extensions)
    payload = out.modified_payload or {"trace": []}
    return list(payload["trace"])


# -- the matcher ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("get_*", "get_user", True),
        ("get_*", "get_", True),  # * matches nothing too
        ("get_*", "list_users", False),
        ("get_*", "Get_user", False),  # case-sensitive
        ("get_*", "xget_user", False),  # the whole name
        ("*", "", True),
        ("*", "any/thing with spaces", True),
        ("**", "x", True),
        ("file:///etc/*", "file:///etc/passwd", True),
        ("file:///etc/*", "file:///etc/ssh/sshd_config", True),  # * crosses /
        ("file:///etc/*", "file:///var/etc/passwd", False),
        ("*.txt", ".txt", True),
        ("*.txt", "notes.txt.bak", False),
        ("get_?", "get_a", True),
        ("get_?", "get_", False),  # ? is exactly one character
        ("get_?", "get_ab", False),
        ("?", "é", True),
        ("?", "\n", True),
        ("a*b*c", "abc", True),
        ("a*b*c", "aXXbYYc", True),
        ("a*b*c", "acb", False),
        ("a*a", "a", False),
        ("a*a", "aa", True),
        ("*x?z*", "..xyz..", True),
        ("*x?z*", "..xz..", False),
        ("(a)|b+", "(a)|b+", True),  # everything else is literal
        ("(a)|b+", "a", False),
        ("get_user", "get_user", True),
        ("get_user", "get_users", False),
    ],
)
def test_wildmatch_semantics(pattern: str, name: str, matches: bool) -> None:
    assert Pattern(pattern).matches(name) is matches


def _reference(pattern: str, name: str) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, name, re.DOTALL) is not None


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet="ab*?", max_size=8), st.text(alphabet="ab", max_size=10))
def test_the_matcher_agrees_with_a_regex_translation(pattern: str, name: str) -> None:
    assert Pattern(pattern).matches(name) is _reference(pattern, name)


def test_exact_names_and_the_catch_all_are_recognised() -> None:
    assert Pattern("get_user").exact and not Pattern("get_*").exact and not Pattern("get_?").exact
    assert Pattern("*").catch_all and not Pattern("**").catch_all and not Pattern("get_*").catch_all


# -- refused at load ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "routes: [{tool: a}, {tool: b}, {tool: 'get_[ab]*'}]",
            "routes[2].tool: pattern 'get_[ab]*' uses '[', which route patterns do not support (only * and ? are wildcards)",
        ),
        ("routes: [{tool: 'get_a]'}]", "routes[0].tool: pattern 'get_a]' uses ']'"),
        ("routes: [{resource: 'file:///{etc,var}/*'}]", "routes[0].resource: pattern 'file:///{etc,var}/*' uses '{'"),
        ("routes: [{prompt: 'a}'}]", "routes[0].prompt: pattern 'a}' uses '}'"),
        ("routes: [{tool: 'get\\_*'}]", "routes[0].tool: pattern 'get\\\\_*' uses '\\\\'"),
        (
            "routes: [{tool: '^get_user'}]",
            "routes[0].tool: pattern '^get_user' looks like a regular expression (a leading '^'); "
            "route patterns are globs matched against the whole name: write 'get_user'",
        ),
        ("routes: [{tool: 'get_user$'}]", "routes[0].tool: pattern 'get_user$' looks like a regular expression (a trailing '$')"),
        (
            "routes: [{tool: 'get_.+'}]",
            "routes[0].tool: pattern 'get_.+' looks like a regular expression ('.+'); "
            "route patterns are globs matched against the whole name: write 'get_?*'",
        ),
        ("routes: [{tool: '^.*$'}]", "write '*'"),
        ("routes: [{tool: ''}]", "routes[0].tool: empty; expected an entity name or a route pattern"),
        (
            "plugins: [{name: p, kind: 'x:Y', conditions: [{tools: [a]}, {tools: [ok, 'get_[ab]']}]}]",
            "plugins[0].conditions[1].tools[1]: pattern 'get_[ab]' uses '[', "
            "which condition patterns do not support (only * and ? are wildcards)",
        ),
        (
            "plugins: [{name: p, kind: 'x:Y', conditions: [{resources: ['file:///.+']}]}]",
            "plugins[0].conditions[0].resources[0]: pattern 'file:///.+' looks like a regular expression",
        ),
        ("plugins: [{name: p, kind: 'x:Y', conditions: [{prompts: ['']}]}]", "plugins[0].conditions[0].prompts[0]: empty"),
    ],
)
def test_unsupported_patterns_are_refused_naming_the_entry(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Engine.from_yaml(text)
    assert message in str(raised.value)


def test_every_bad_pattern_of_a_config_is_named() -> None:
    with pytest.raises(ConfigError) as raised:
        Engine.from_yaml("routes: [{tool: 'a[1]'}, {tool: ok}, {resource: 'x.+'}]")
    assert "routes[0].tool" in str(raised.value) and "routes[2].resource" in str(raised.value)


# -- which route applies --------------------------------------------------------------------

PRECEDENCE = """\
  - {tool: '*', plugins: [star]}
  - {tool: 'get_*', plugins: [glob]}
  - {tool: 'get_?ser', plugins: [glob2]}
  - {tool: get_user, plugins: [exact]}
  - {tool: get_user, plugins: [exact2]}
  - {tool: 'get_*', plugins: [glob3]}
  - {tool: '*', plugins: [star2]}
  - {resource: 'file:///etc/*', plugins: [etc]}
  - {prompt: 'summari?e', plugins: [prompt]}
"""


def test_the_most_specific_route_wins_then_config_order() -> None:
    m = routed(PRECEDENCE)
    assert ran(m, entity("tool", "get_user")) == ["exact"]  # exact beats patterns and *
    assert ran(m, entity("tool", "get_xser")) == ["glob"]  # patterns: the first in config order
    assert ran(m, entity("tool", "get_anything")) == ["glob"]  # a pattern beats *
    assert ran(m, entity("tool", "list_users")) == ["star"]  # the first *
    assert ran(m, entity("resource", "file:///etc/ssh/sshd_config")) == ["etc"]
    assert ran(m, entity("resource", "file:///var/log")) == []  # no route, no group: nothing
    assert ran(m, entity("prompt", "summarize")) == ["prompt"] == ran(m, entity("prompt", "summarise"))
    assert ran(m, entity("tool", "file:///etc/passwd")) == ["star"]  # a resource route is no tool route
    assert m.router.route_for("tool", "get_user") is m.config.routes[3]


def test_a_pattern_route_brings_its_tags_and_the_groups_cache_resolutions() -> None:
    m = routed(
        "  - {tool: 'hr_*', meta: {tags: [pii]}, plugins: [audit]}\n",
        groups="    all: {plugins: [identity]}\n    pii: {plugins: [pii-guard]}\n",
        cache=2,
    )
    assert ran(m, entity("tool", "hr_salary")) == ["identity", "pii-guard", "audit"]
    assert ran(m, entity("tool", "weather")) == ["identity"]
    for name in ("hr_a", "hr_b", "hr_c", "hr_a"):
        assert ran(m, entity("tool", name)) == ["identity", "pii-guard", "audit"]
    assert m.router.cached == 2  # bounded
    uncached = routed("  - {tool: 'hr_*', plugins: [audit]}\n", cache=0)
    assert ran(uncached, entity("tool", "hr_x")) == ["audit"] == ran(uncached, entity("tool", "hr_x"))
    assert uncached.router.cached == 0


# -- calls without an entity ---------------------------------------------------------------


@pytest.mark.parametrize(
    "extensions",
    [None, {}, {"meta": {}}, {"meta": {"tags": ["x"]}}, {"meta": {"entity_name": "get_user"}}, {"meta": {"entity_type": "tool"}}],
)
def test_without_an_entity_every_plugin_of_the_hook_runs(extensions: dict[str, Any] | None) -> None:
    m = routed("  - {tool: get_user, plugins: [routed]}\n", groups="    all: {plugins: [always]}\n    pii: {plugins: [policy]}\n")
    assert ran(m, extensions) == ["always", "policy", "routed"]


# -- conditions ------------------------------------------------------------------------------

# The kind of every conditioned plugin below.
TRACE = "'cpex_test_plugins:Trace'"
CONDITIONED = f"""\
plugin_settings: {{plugin_dirs: [{PLUGIN_DIR!r}]}}
plugins:
  - {{name: getters, kind: {TRACE}, hooks: [{PRE}], config: {{tag: getters}}, conditions: [{{tools: ['get_*', 'read_?']}}]}}
  - {{name: etc, kind: {TRACE}, hooks: [{PRE}], config: {{tag: etc}}, conditions: [{{resources: ['file:///etc/*']}}]}}
  - {{name: exact, kind: {TRACE}, hooks: [{PRE}], config: {{tag: exact}}, conditions: [{{tools: [pay]}}, {{tags: [money]}}]}}
  - {{name: anyone, kind: {TRACE}, hooks: [{PRE}], config: {{tag: anyone}}}}
"""


@pytest.mark.parametrize("routing", [False, True])
def test_conditions_match_patterns(routing: bool) -> None:
    text = CONDITIONED
    if routing:  # every plugin routed for every entity: the conditions decide
        every = "plugins: [getters, etc, exact, anyone]"
        text = text.replace("plugin_settings: {", "plugin_settings: {routing_enabled: true, ")
        text += f"routes:\n  - {{tool: '*', {every}}}\n  - {{resource: '*', {every}}}\n"
    m = Engine.from_yaml(text)
    m.initialize()
    assert ran(m, entity("tool", "get_user")) == ["getters", "anyone"]
    assert ran(m, entity("tool", "read_x")) == ["getters", "anyone"]
    assert ran(m, entity("tool", "read_xy")) == ["anyone"]
    assert ran(m, entity("resource", "file:///etc/hosts")) == ["etc", "anyone"]
    assert ran(m, entity("resource", "get_user")) == ["anyone"]  # a tools condition wants a tool
    assert ran(m, entity("tool", "pay")) == ["exact", "anyone"]
    assert ran(m, entity("tool", "other", "money")) == ["exact", "anyone"]
    # No entity: conditions naming tools / resources / prompts do not match; tags still do.
    assert ran(m, None) == ["anyone"]
    assert ran(m, {"meta": {"tags": ["money"]}}) == ["exact", "anyone"]
