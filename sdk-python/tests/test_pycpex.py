"""Plugins written for py-cpex run unchanged under cpex: its config dialect loads, its
Plugin / PluginConfig / payload / context / result classes are used as they are, and
the decisions equal those of py-cpex's own PluginManager on the same inputs."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from cpex.framework import GlobalContext, TenantPluginManager, ToolPostInvokePayload, ToolPreInvokePayload

from conftest import PLUGIN_DIR
from cpexrt.engine import Engine
from cpexrt.errors import ConfigError, PipelineError, PipelineTimeoutError
from cpexrt.host import PluginManager as Host

PII = "cpex_pii_filter.pii_filter.PIIFilterPlugin"
SECRETS = "cpex_secrets_detection.secrets_detection.SecretsDetectionPlugin"
# A config as py-cpex's templates write it: top-level plugin_dirs, the legacy
# plugin_settings keys, descriptive fields, legacy modes, conditions, applied_to.
PYCPEX_CONFIG = f"""
plugin_dirs: [{PLUGIN_DIR!r}]
plugin_settings:
  parallel_execution_within_band: true
  plugin_timeout: 30
  fail_on_plugin_error: false
  enable_plugin_api: true
  plugin_health_check_interval: 60
plugins:
  - name: "PIIFilterPlugin"
    kind: "{PII}"
    description: "Detects and masks PII"
    author: "ContextForge"
    version: "0.3.9"
    tags: ["security", "pii"]
    hooks: ["prompt_pre_fetch", "prompt_post_fetch", "tool_pre_invoke", "tool_post_invoke"]
    mode: "enforce"
    priority: 50
    conditions:
      - server_ids: ["srv-1"]
    applied_to:
      tools:
        - tool_name: send_email
    config:
      block_on_detection: false
      default_mask_strategy: "redact"
  - name: "SecretsDetection"
    kind: "{SECRETS}"
    hooks: ["prompt_pre_fetch", "tool_pre_invoke", "tool_post_invoke", "resource_post_fetch"]
    mode: "enforce"
    priority: 51
    config:
      block_on_detection: true
"""
EMAIL_CALL = {
    "name": "send_email",
    "args": {"to": "john@example.com", "body": "My SSN is 123-45-6789", "count": 3, "raw": b"\x00\x01"},
}
KEY_RESULT = {"name": "get_credentials", "result": {"content": [{"type": "text", "text": "use AKIAIOSFODNN7EXAMPLE"}]}}
REQUEST = {"request_id": "req-1", "user": "alice", "tenant_id": "t1", "server_id": "srv-1"}


def engine(text: str = PYCPEX_CONFIG) -> Engine:
    m = Engine.from_yaml(text)
    m.initialize()
    return m


def config_of(*stanzas: str, settings: str = "") -> str:
    return f"plugin_dirs: [{PLUGIN_DIR!r}]\n{settings}plugins:\n" + "".join(stanzas)


def stanza(name: str, kind: str, hooks: str = "[tool_pre_invoke]", **extra: str) -> str:
    lines = [f"  - name: {name}", f"    kind: {kind}", f"    hooks: {hooks}"] + [f"    {k}: {v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def pycpex_decide(hook: str, payload: Any, request: dict[str, Any]) -> Any:
    """The same config and inputs through py-cpex's own PluginManager."""
    from cpex.framework.models import Config

    data = yaml.safe_load(PYCPEX_CONFIG)
    manager = TenantPluginManager(Config(**data))

    async def run() -> Any:
        await manager.initialize()
        try:
            result, _ = await manager.invoke_hook(hook, payload, GlobalContext(**request))
            return result
        finally:
            await manager.shutdown()

    return asyncio.run(run())


# -- the dialect ----------------------------------------------------------------------


def test_a_pycpex_config_loads_unchanged() -> None:
    m = engine()
    assert m.plugin_names() == ["PIIFilterPlugin", "SecretsDetection"]
    assert m.has_hooks_for("resource_post_fetch") and m.has_hooks_for("prompt_post_fetch")
    m.shutdown()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (config_of(stanza("a", PII, shade="blue")), r"plugins\[0\]\.shade: unknown field"),
        (config_of(stanza("a", "external")), r"plugins\[0\]\.kind: py-cpex's kind 'external' .* is not supported"),
        (
            config_of(stanza("a", "no_such_package_zz.mod.Plugin")),
            r"plugins\[0\]\.kind: cannot import module 'no_such_package_zz\.mod'.*is the plugin's package installed",
        ),
        (
            config_of(stanza("a", "broken_pycpex_plugin.Plugin")),
            r"plugins\[0\]\.kind: cannot import module 'broken_pycpex_plugin'.*broken on purpose",
        ),
        (
            config_of(stanza("a", "pycpex_test_plugins.NotAPlugin")),
            r"neither a cpexrt\.Plugin subclass nor a py-cpex cpex\.framework\.Plugin subclass",
        ),
        (
            config_of(stanza("a", "pycpex_test_plugins.RejectsConfig", config="{threshold: -1}")),
            r"plugins\[0\]: plugin 'a' .* rejected its config: ValueError: threshold must be >= 0",
        ),
        (
            config_of(stanza("a", PII, config="{default_mask_strategy: shout}")),
            r"plugins\[0\]: plugin 'a' \(cpex_pii_filter.*\) rejected its config",
        ),
        (config_of(stanza("a", PII, hooks="[resource_pre_fetch]")), r"plugins\[0\]\.hooks\[0\]: plugin 'a': .*has no hook"),
        (config_of(stanza("a", PII, hooks="[]")), r"plugins\[0\]\.hooks: py-cpex plugin 'a' lists no hooks"),
        (config_of(stanza("a", PII, conditions="[{tags: [x]}]")), r"plugins\[0\]\.conditions\[0\]\.tags: py-cpex plugins"),
        (
            config_of(stanza("a", "cpex_test_plugins.Allow", conditions="[{server_ids: [x]}]")),
            r"plugins\[0\]\.conditions\[0\]\.server_ids: a py-cpex condition",
        ),
        ("server_settings: {port: 8000}\nplugins: []", r"server_settings: unknown field"),
    ],
)
def test_what_cpex_cannot_honour_is_refused_at_load_naming_the_plugin(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Engine.from_yaml(text)


def test_legacy_modes_map_onto_cpex_modes() -> None:
    from cpexrt.engine.config import parse_config

    text = config_of(
        stanza("a", PII, mode="enforce"),
        stanza("b", PII, mode="enforce_ignore_error"),
        stanza("c", PII, mode="permissive"),
        stanza("d", PII, mode="enforce_ignore_error", on_error="disable"),
    )
    got = [(p.mode.value, p.on_error.value) for p in parse_config(text).plugins]
    assert got == [("sequential", "fail"), ("sequential", "ignore"), ("transform", "fail"), ("sequential", "disable")]


# -- the decisions, against py-cpex's own -------------------------------------------------


def test_pii_is_redacted_as_pycpex_redacts_it_and_types_survive() -> None:
    theirs = pycpex_decide("tool_pre_invoke", ToolPreInvokePayload(**EMAIL_CALL), REQUEST)
    m = engine()
    ours = m.invoke("tool_pre_invoke", 0, EMAIL_CALL, request=REQUEST)
    assert ours.continue_processing and theirs.continue_processing
    assert ours.modified_payload["args"] == theirs.modified_payload.args
    assert ours.modified_payload["args"]["to"] == "[REDACTED]"
    assert ours.modified_payload["args"]["count"] == 3 and type(ours.modified_payload["args"]["count"]) is int
    assert ours.modified_payload["args"]["raw"] == b"\x00\x01"
    m.shutdown()


def test_a_secret_in_a_tool_result_is_denied_as_pycpex_denies_it() -> None:
    theirs = pycpex_decide("tool_post_invoke", ToolPostInvokePayload(**KEY_RESULT), REQUEST)
    m = engine()
    ours = m.invoke("tool_post_invoke", 0, KEY_RESULT, request=REQUEST)
    assert not ours.continue_processing and not theirs.continue_processing
    assert ours.violation is not None and ours.violation.plugin_name == "SecretsDetection"
    for field in ("code", "reason", "description", "details"):
        assert getattr(ours.violation, field) == getattr(theirs.violation, field)
    m.shutdown()


@pytest.mark.parametrize("content", [{"text": "AKIAIOSFODNN7EXAMPLE"}, "AKIAIOSFODNN7EXAMPLE"])
def test_resource_content_given_as_a_map_or_text_is_still_scanned(content: Any) -> None:
    m = engine()
    result = m.invoke("resource_post_fetch", 0, {"uri": "file:///creds", "content": content})
    assert not result.continue_processing and result.violation is not None and result.violation.code == "SECRETS_DETECTED"
    m.shutdown()


def test_pycpex_conditions_match_on_the_request_by_pycpexs_own_rules() -> None:
    m = engine()
    other_server = {**REQUEST, "server_id": "srv-2"}
    assert m.invoke("tool_pre_invoke", 0, EMAIL_CALL, request=other_server).modified_payload is None
    assert m.invoke("tool_pre_invoke", 0, EMAIL_CALL).modified_payload is None  # no server at all
    assert m.invoke("tool_pre_invoke", 0, EMAIL_CALL, request=REQUEST).modified_payload is not None
    m.shutdown()


# -- contexts, results and cpex's rules ---------------------------------------------------


def test_global_context_and_state_are_threaded_pre_to_post() -> None:
    m = engine(config_of(stanza("keeper", "pycpex_test_plugins.StateKeeper", hooks="[tool_pre_invoke, tool_post_invoke]")))
    pre = m.invoke("tool_pre_invoke", 0, {"name": "t", "args": {}}, request=REQUEST)
    assert pre.metadata == {"request_id": "req-1", "tenant_id": "t1", "server_id": "srv-1"}
    post = m.invoke("tool_post_invoke", 0, {"name": "t", "result": {}}, context=pre.context, request=REQUEST)
    assert post.metadata == {"seen_user": "alice", "pre_ran": "keeper"}
    m.shutdown()


def test_a_plugin_that_keeps_no_state_gets_empty_maps_and_hands_no_context_back() -> None:
    m = engine(config_of(stanza("keeper", "pycpex_test_plugins.StateKeeper", hooks="[tool_pre_invoke, tool_post_invoke]")))
    # Nothing held yet: the plugin reads empty maps, and leaves nothing to thread on.
    post = m.invoke("tool_post_invoke", 0, {"name": "t", "result": {}}, request=REQUEST)
    assert post.metadata == {"seen_user": None, "pre_ran": None} and post.context is None
    # What the pre hook kept reaches the post hook through a context the post hook
    # only reads (kept as it was, for the request's next hook).
    pre = m.invoke("tool_pre_invoke", 0, {"name": "t", "args": {}}, request=REQUEST)
    post = m.invoke("tool_post_invoke", 0, {"name": "t", "result": {}}, context=pre.context, request=REQUEST)
    assert post.metadata == {"seen_user": "alice", "pre_ran": "keeper"}
    again = m.invoke("tool_post_invoke", 0, {"name": "t", "result": {}}, context=post.context, request=REQUEST)
    assert again.metadata == {"seen_user": "alice", "pre_ran": "keeper"}
    m.shutdown()


def test_a_violation_keeps_every_field_and_the_result_carries_retry_and_headers() -> None:
    with Host(config_of(stanza("v", "pycpex_test_plugins.Verdict"))) as h:
        h.initialize()
        denied = h.invoke("tool_pre_invoke", {"name": "t", "args": {"block": True}}, request=REQUEST).result
        v = denied.violation
        assert v is not None and (v.code, v.reason, v.description, v.plugin_name) == (
            "BLOCKED",
            "blocked by policy",
            "the call asked to be blocked",
            "v",
        )
        assert v.details == {"tool": "t", "count": 3} and v.http_status_code == 429 and v.http_headers == {"Retry-After": "2"}
        assert denied.retry_delay_ms == 2000
        rewritten = h.invoke("tool_pre_invoke", {"name": "t", "args": {"rewrite": 1}}).result
        assert rewritten.payload_modified and rewritten.http_headers == {"X-Rewritten": "yes"} and rewritten.retry_delay_ms == 5


def test_a_hook_that_waits_is_finished_with_its_result_from_plain_code_and_from_a_running_loop() -> None:
    # The adapter drives a hook inline until it first waits; the driver finishes the
    # rest (on this thread's loop, or on the runtime loop when the host's own loop runs
    # here): the result converts the same as that of a hook that never waits.
    m = engine(config_of(stanza("v", "pycpex_test_plugins.Verdict")))
    rewrite = {"name": "t", "args": {"sleep": 0.01, "rewrite": 1}}
    block = {"name": "t", "args": {"sleep": 0.01, "block": True}}

    async def from_a_running_loop() -> tuple[Any, Any]:
        return m.invoke("tool_pre_invoke", 0, rewrite), m.invoke("tool_pre_invoke", 0, block, request=REQUEST)

    plain = (m.invoke("tool_pre_invoke", 0, rewrite), m.invoke("tool_pre_invoke", 0, block, request=REQUEST))
    for rewritten, denied in (plain, asyncio.run(from_a_running_loop())):
        assert rewritten.continue_processing and rewritten.modified_payload == {
            "name": "t",
            "args": {"sleep": 0.01, "rewrite": 1, "rewritten": True},
        }
        assert rewritten.http_headers == {"X-Rewritten": "yes"} and rewritten.retry_delay_ms == 5
        v = denied.violation
        assert not denied.continue_processing and v is not None and (v.code, v.http_status_code) == ("BLOCKED", 429)
        assert denied.retry_delay_ms == 2000
    m.shutdown()


def test_a_permissive_plugins_deny_is_reported_not_enforced_as_in_pycpex() -> None:
    m = engine(config_of(stanza("v", "pycpex_test_plugins.Verdict", mode="permissive")))
    records: list[dict[str, Any]] = []
    m.set_decision_sink(records.append)
    result = m.invoke("tool_pre_invoke", 0, {"name": "t", "args": {"block": True}})
    assert result.continue_processing and result.violation is None
    assert [(e.plugin_name, e.code, e.details) for e in result.errors] == [("v", "not_enforced", {"violation_code": "BLOCKED"})]
    m.shutdown()
    # Shadow mode, as for cpex plugins: recorded with its verdict, not enforced.
    ((plugin,),) = [r["plugins"] for r in records]
    assert (plugin["mode"], plugin["verdict"], plugin["enforced"], plugin["violation_code"]) == (
        "permissive",
        "deny",
        False,
        "BLOCKED",
    )


def test_cpexs_fail_closed_rules_hold_for_pycpex_plugins() -> None:
    m = engine(config_of(stanza("v", "pycpex_test_plugins.Verdict", timeout="0.2")))
    with pytest.raises(PipelineError, match=r"plugin 'v' raised RuntimeError: exploded on purpose"):
        m.invoke("tool_pre_invoke", 0, {"name": "t", "args": {"explode": True}})
    with pytest.raises(
        PipelineError, match=r"plugin 'v' returned a modified payload that cannot be encoded.*modified_payload_unencodable"
    ):
        m.invoke("tool_pre_invoke", 0, {"name": "t", "args": {"garbage": True}})
    with pytest.raises(PipelineTimeoutError, match=r"plugin 'v' timed out after 0\.2s"):
        m.invoke("tool_pre_invoke", 0, {"name": "t", "args": {"sleep": 2}})
    # A payload of the wrong shape for the hook is the plugin's failure, never an allow.
    with pytest.raises(PipelineError, match=r"plugin 'v' raised ValidationError"):
        m.invoke("tool_pre_invoke", 0, {"tool": "no name field"})
    m.shutdown()


@pytest.mark.parametrize(
    "payload",
    [
        {"name": "send_email", "args": ["john@example.com", "My SSN is 123-45-6789"]},
        {"name": 7, "args": {"to": "john@example.com"}},
        {"args": {"to": "john@example.com"}},
        {"name": "send_email", "args": {"to": "john@example.com"}, "headers": ["not", "headers"]},
    ],
)
def test_a_payload_of_the_wrong_shape_never_reaches_the_pii_plugin(payload: dict[str, Any]) -> None:
    # cpex-pii-filter catches its own errors and allows: a payload it cannot read must be
    # refused before it runs, by py-cpex's own payload model.
    m = engine(config_of(stanza("pii", PII, config="{block_on_detection: true}")))
    with pytest.raises(PipelineError, match=r"plugin 'pii' raised ValidationError"):
        m.invoke("tool_pre_invoke", 0, payload)
    assert not m.invoke("tool_pre_invoke", 0, EMAIL_CALL).continue_processing  # a readable one is blocked
    m.shutdown()


@pytest.mark.parametrize(
    "request_",
    [{**REQUEST, "user": 7}, {**REQUEST, "content_type": "text/plain\x00"}, {**REQUEST, "user_context": {"no": "user id"}}],
)
def test_a_request_pycpex_refuses_fails_the_plugin_never_allows(request_: dict[str, Any]) -> None:
    m = engine(config_of(stanza("pii", PII, config="{block_on_detection: true}")))
    with pytest.raises(PipelineError, match=r"plugin 'pii' raised ValidationError"):
        m.invoke("tool_pre_invoke", 0, EMAIL_CALL, request=request_)
    m.shutdown()


def test_a_modified_payload_holding_models_tuples_and_secrets_comes_back_as_pycpex_dumps_it() -> None:
    m = engine(config_of(stanza("r", "pycpex_test_plugins.Reshapes")))
    result = m.invoke("tool_pre_invoke", 0, {"name": "t", "args": {"reshape": True}})
    assert result.payload_modified
    assert result.modified_payload == {
        "name": "t",
        "args": {"pair": [1, 2], "point": {"x": 3}, "secret": "s3cret", "nested": [{"t": [4]}]},
    }
    m.shutdown()


def test_a_failed_pycpex_plugins_state_writes_are_not_kept() -> None:
    m = engine(config_of(stanza("r", "pycpex_test_plugins.Reshapes", on_error="ignore")))
    failed = m.invoke("tool_pre_invoke", 0, {"name": "t", "args": {"fail_after_writing": True}}, request=REQUEST)
    assert failed.continue_processing and [e.plugin_name for e in failed.errors] == ["r"]
    later = m.invoke("tool_pre_invoke", 0, {"name": "t", "args": {}}, context=failed.context, request=REQUEST)
    assert later.metadata == {"state": {}, "request_state": {}}
    m.shutdown()


@pytest.fixture
def host() -> Iterator[Host]:
    with Host(PYCPEX_CONFIG) as h:
        h.initialize()
        yield h


def test_the_python_host_gets_the_same_decisions(host: Host) -> None:
    pre = host.invoke("tool_pre_invoke", EMAIL_CALL, request=REQUEST)
    assert pre.modified_payload is not None and pre.modified_payload["args"]["to"] == "[REDACTED]"
    assert pre.modified_payload["args"]["raw"] == b"\x00\x01" and pre.modified_payload["args"]["count"] == 3
    post = host.invoke("tool_post_invoke", KEY_RESULT, request=REQUEST)
    assert post.denied and post.violation is not None and post.violation.code == "SECRETS_DETECTED"


def test_a_pycpex_cmf_plugin_gets_the_message_and_its_hook_and_may_modify_it() -> None:
    from cpexrt._generated.records import ContentPart, Message, MessagePayload

    m = engine(config_of(stanza("cmf", "pycpex_test_plugins.CmfWatcher", hooks="[cmf.tool_pre_invoke]")))
    plain = MessagePayload(message=Message(schema_version="2.0", role="assistant", content=[ContentPart.new_text("hello")]))
    result = m.invoke("cmf.tool_pre_invoke", 1, plain.to_wire())
    assert result.metadata == {"hook": "tool_pre_invoke", "role": "assistant"} and not result.payload_modified
    asks = MessagePayload(message=Message(schema_version="2.0", role="assistant", content=[ContentPart.new_text("append")]))
    result = m.invoke("cmf.tool_pre_invoke", 1, asks.to_wire())
    assert result.payload_modified
    assert [p.value for p in result.modified_payload.content] == ["append", "appended by py-cpex"]
    m.shutdown()
