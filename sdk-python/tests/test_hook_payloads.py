"""Typed payload records for the 23 hooks of py-cpex 0.1.4: one record per payload
class, wire names equal to py-cpex's model field names, values of `any` fields kept as
they are (ints stay ints, bytes stay bytes).

The expected names are written out here from py-cpex 0.1.4's sources
(cpex/framework/hooks/*.py, models.py); py-cpex itself is not imported."""

from __future__ import annotations

from typing import Any, cast

import msgpack
import pytest

from conftest import config, plugin
from cpexrt import Plugin
from cpexrt._generated import records
from cpexrt.engine import Engine
from cpexrt.host import PluginManager as HostPluginManager
from cpexrt.plugin import BUILTIN_HOOKS, HOOK_PAYLOADS
from cpexrt.wire import WireRecord

# py-cpex 0.1.4's registered hooks -> payload class (HookRegistry, 23 entries).
PYCPEX_HOOKS: dict[str, str] = {
    "tool_pre_invoke": "ToolPreInvokePayload",
    "tool_post_invoke": "ToolPostInvokePayload",
    "prompt_pre_fetch": "PromptPrehookPayload",
    "prompt_post_fetch": "PromptPosthookPayload",
    "resource_pre_fetch": "ResourcePreFetchPayload",
    "resource_post_fetch": "ResourcePostFetchPayload",
    "agent_pre_invoke": "AgentPreInvokePayload",
    "agent_post_invoke": "AgentPostInvokePayload",
    "http_pre_request": "HttpPreRequestPayload",
    "http_post_request": "HttpPostRequestPayload",
    "http_auth_resolve_user": "HttpAuthResolveUserPayload",
    "http_auth_check_permission": "HttpAuthCheckPermissionPayload",
    "identity_resolve": "IdentityPayload",
    "token_delegate": "DelegationPayload",
    "evaluate": "MessagePayload",
    "cmf.tool_pre_invoke": "MessagePayload",
    "cmf.tool_post_invoke": "MessagePayload",
    "cmf.llm_input": "MessagePayload",
    "cmf.llm_output": "MessagePayload",
    "cmf.resource_pre_fetch": "MessagePayload",
    "cmf.resource_post_fetch": "MessagePayload",
    "cmf.prompt_pre_fetch": "MessagePayload",
    "cmf.prompt_post_fetch": "MessagePayload",
}

# py-cpex model -> (its fields in declaration order, the required ones).
PYCPEX_FIELDS: dict[str, tuple[list[str], set[str]]] = {
    "ToolPreInvokePayload": (["name", "args", "headers"], {"name"}),
    "ToolPostInvokePayload": (["name", "result"], {"name", "result"}),
    "PromptPrehookPayload": (["prompt_id", "args"], {"prompt_id"}),
    "PromptPosthookPayload": (["prompt_id", "result"], {"prompt_id", "result"}),
    "ResourcePreFetchPayload": (["uri", "metadata"], {"uri"}),
    "ResourcePostFetchPayload": (["uri", "content"], {"uri", "content"}),
    "AgentPreInvokePayload": (
        ["agent_id", "messages", "tools", "headers", "model", "system_prompt", "parameters"],
        {"agent_id", "messages"},
    ),
    "AgentPostInvokePayload": (["agent_id", "messages", "tool_calls"], {"agent_id", "messages"}),
    "HttpPreRequestPayload": (["path", "method", "client_host", "client_port", "headers"], {"path", "method", "headers"}),
    "HttpPostRequestPayload": (
        ["path", "method", "client_host", "client_port", "headers", "response_headers", "status_code"],
        {"path", "method", "headers"},
    ),
    "HttpAuthResolveUserPayload": (["credentials", "headers", "client_host", "client_port"], {"headers"}),
    "HttpAuthCheckPermissionPayload": (
        ["user_email", "permission", "resource_type", "team_id", "is_admin", "auth_method", "client_host", "user_agent"],
        {"user_email", "permission"},
    ),
    "HttpAuthCheckPermissionResultPayload": (["granted", "reason"], {"granted"}),
    "IdentityPayload": (["raw_token", "source", "headers", "client_host", "client_port"], {"raw_token"}),
    "IdentityResult": (["subject", "delegation", "rejected", "reject_status", "reject_reason", "raw_claims"], set()),
    "DelegationPayload": (
        [
            "target_name",
            "target_type",
            "target_audience",
            "required_permissions",
            "trust_domain",
            "auth_enforced_by",
            "route_attenuation",
            "bearer_token",
        ],
        {"target_name"},
    ),
    "AttenuationConfig": (["capabilities", "resource_template", "actions", "ttl_seconds"], set()),
    "DelegationResult": (["delegated_token", "delegation_update", "forwarded_headers", "cache_key", "cache_ttl"], set()),
    "MessagePayload": (["message", "hook"], {"message"}),
    # py-cpex's fields, then cpex's W3C trace context (ABI 1.2), which py-cpex plugins
    # never see (engine/pycpex.py).
    "GlobalContext": (
        [
            "request_id",
            "user",
            "user_context",
            "tenant_id",
            "server_id",
            "content_type",
            "state",
            "metadata",
            "traceparent",
            "tracestate",
        ],
        {"request_id"},
    ),
}

# Fields with a non-empty default in py-cpex that a decoder must give when absent.
STRING_DEFAULTS = {
    ("IdentityPayload", "source"): "bearer",
    ("DelegationPayload", "target_type"): "tool",
    ("DelegationPayload", "auth_enforced_by"): "caller",
}


def record(name: str) -> type[WireRecord]:
    cls = getattr(records, name, None)
    assert isinstance(cls, type) and issubclass(cls, WireRecord), f"no wire record {name}"
    return cls


def round_trip(value: WireRecord) -> Any:
    """value over the wire and back: to_wire, MessagePack bytes, decoded, from_wire."""
    data = msgpack.packb(value.to_wire(), use_bin_type=True)
    again = type(value).from_wire(msgpack.unpackb(data, raw=False))
    assert msgpack.packb(again.to_wire(), use_bin_type=True) == data  # byte for byte
    return again


def test_every_pycpex_hook_has_a_payload_record() -> None:
    assert len(PYCPEX_HOOKS) == 23
    assert HOOK_PAYLOADS == PYCPEX_HOOKS
    for hook_name, name in HOOK_PAYLOADS.items():
        assert name in PYCPEX_FIELDS, hook_name
        record(name)


def test_builtin_hooks_cover_every_pycpex_hook() -> None:
    assert set(PYCPEX_HOOKS) <= set(BUILTIN_HOOKS)
    assert len(BUILTIN_HOOKS) == len(set(BUILTIN_HOOKS))


def test_a_method_named_after_any_pycpex_hook_is_discovered() -> None:
    def handler(self: Plugin, payload: Any, ctx: Any) -> Any:
        return None

    methods: dict[str, Any] = {h.replace(".", "_"): handler for h in PYCPEX_HOOKS}
    every = cast(type[Plugin], type("EveryHook", (Plugin,), methods))
    assert sorted(every.declared_hooks()) == sorted(PYCPEX_HOOKS)
    for hook_name in PYCPEX_HOOKS:
        assert every.handler_for(hook_name) == hook_name.replace(".", "_")


@pytest.mark.parametrize("name", sorted(PYCPEX_FIELDS))
def test_wire_names_are_pycpex_field_names(name: str) -> None:
    cls = record(name)
    fields, required = PYCPEX_FIELDS[name]
    assert [f.name for f in cls.WIRE] == fields
    assert list(cls.model_fields) == fields
    assert {f for f, info in cls.model_fields.items() if info.is_required()} == required


def test_string_defaults_are_pycpex_defaults() -> None:
    for (name, field), default in STRING_DEFAULTS.items():
        cls = record(name)
        assert cls.model_fields[field].default == default
        required = {f: "x" for f in PYCPEX_FIELDS[name][1]}
        assert getattr(cls.from_wire(required), field) == default
        # always sent, so the other side never guesses
        assert cls(**required).to_wire()[field] == default


def test_zero_survives_where_py_cpex_has_a_non_zero_or_none_default() -> None:
    assert records.IdentityResult(reject_status=0).to_wire() == {"reject_status": 0}
    assert records.IdentityResult().to_wire() == {}  # py-cpex reads 401
    assert records.AttenuationConfig(ttl_seconds=0).to_wire() == {"ttl_seconds": 0}
    assert records.DelegationResult(cache_ttl=0).to_wire() == {"cache_ttl": 0}
    violation = records.PluginViolation(code="c", reason="r", http_status_code=0, mcp_error_code=0)
    assert violation.to_wire() == {"code": "c", "reason": "r", "http_status_code": 0, "mcp_error_code": 0}


ANYS: dict[str, Any] = {
    "n": 3,
    "big": 2**40,
    "neg": -7,
    "f": 1.5,
    "blob": b"\x00\x01\xfe\xff",
    "text": "x",
    "flag": True,
    "none": None,
    "nested": {"ints": [1, 2, 3], "bin": [b"\x00", {"deep": b"\xff"}]},
}


def assert_same_types(got: Any, want: Any, where: str = "") -> None:
    assert type(got) is type(want), f"{where}: {type(got).__name__} != {type(want).__name__}"
    assert got == want, where
    if isinstance(want, dict):
        for k, v in want.items():
            assert_same_types(got[k], v, f"{where}.{k}")
    elif isinstance(want, list):
        for i, v in enumerate(want):
            assert_same_types(got[i], v, f"{where}[{i}]")


def test_any_fields_keep_ints_and_bytes() -> None:
    pre = round_trip(records.ToolPreInvokePayload(name="search", args=ANYS))
    assert_same_types(pre.args, ANYS, "args")
    post = round_trip(records.ToolPostInvokePayload(name="search", result=ANYS))
    assert_same_types(post.result, ANYS, "result")
    for scalar in (3, b"\x00\xff", 2.5, "text", [1, b"\x01"]):
        assert_same_types(round_trip(records.ResourcePostFetchPayload(uri="u", content=scalar)).content, scalar, "content")
    agent = round_trip(
        records.AgentPreInvokePayload(agent_id="a", messages=[{"role": "user", "content": b"\x01"}, 7], parameters=ANYS)
    )
    assert_same_types(agent.messages, [{"role": "user", "content": b"\x01"}, 7], "messages")
    assert_same_types(agent.parameters, ANYS, "parameters")
    calls = round_trip(records.AgentPostInvokePayload(agent_id="a", messages=[], tool_calls=[ANYS]))
    assert_same_types(calls.tool_calls, [ANYS], "tool_calls")
    identity = round_trip(records.IdentityResult(subject={"id": "u1", "type": "user"}, raw_claims=ANYS, reject_status=403))
    assert_same_types(identity.raw_claims, ANYS, "raw_claims")
    assert identity.reject_status == 403 and type(identity.reject_status) is int


def test_global_context_takes_a_string_or_a_map_user() -> None:
    for user in ("alice@example.com", {"email": "alice@example.com", "id": 42}):
        ctx = round_trip(records.GlobalContext(request_id="r1", user=user, state={"n": 1}, metadata={"b": b"\x00"}))
        assert_same_types(ctx.user, user, "user")
        assert_same_types(ctx.state, {"n": 1}, "state")
        assert_same_types(ctx.metadata, {"b": b"\x00"}, "metadata")
    assert records.GlobalContext(request_id="r1").to_wire() == {"request_id": "r1"}


def test_nested_records_are_typed() -> None:
    payload = round_trip(
        records.DelegationPayload(
            target_name="search",
            route_attenuation=records.AttenuationConfig(capabilities=["read"], ttl_seconds=60),
            bearer_token="t",
        )
    )
    assert isinstance(payload.route_attenuation, records.AttenuationConfig)
    assert payload.to_wire() == {
        "target_name": "search",
        "target_type": "tool",
        "auth_enforced_by": "caller",
        "route_attenuation": {"capabilities": ["read"], "ttl_seconds": 60},
        "bearer_token": "t",
    }
    result = round_trip(records.IdentityResult(delegation=records.DelegationExtension(depth=1, delegated=True)))
    assert isinstance(result.delegation, records.DelegationExtension)


def test_the_evaluate_hook_field_of_message_payload() -> None:
    message = records.Message(role="user", content=[records.ContentPart.new_text("hi")])
    assert "hook" not in records.MessagePayload(message=message).to_wire()  # py-cpex reads "evaluate"
    again = round_trip(records.MessagePayload(message=message, hook="llm_input"))
    assert again.hook == "llm_input"


PAYLOAD_KEYS = config(plugin("keys", "PayloadKeys", hooks="[tool_pre_invoke, identity_resolve, http_auth_check_permission]"))
TOOL_CALL = records.ToolPreInvokePayload(name="search", args={"q": "x", "n": 3, "raw": b"\x00\xff"})


def test_the_engine_receives_pycpex_field_names() -> None:
    m = Engine.from_yaml(PAYLOAD_KEYS)
    m.initialize()
    try:
        out = m.invoke("tool_pre_invoke", 0, TOOL_CALL.to_wire())
        assert out.metadata["payload_keys"] == ["args", "name"]
        assert out.metadata["arg_types"] == {"q": "str", "n": "int", "raw": "bytes"}
        who = records.IdentityPayload(raw_token="eyJ...", headers={"authorization": "Bearer eyJ..."})
        out = m.invoke("identity_resolve", 0, who.to_wire())
        assert out.metadata["payload_keys"] == ["headers", "raw_token", "source"]
        check = records.HttpAuthCheckPermissionPayload(user_email="a@example.com", permission="tools.read", is_admin=True)
        out = m.invoke("http_auth_check_permission", 0, check.to_wire())
        assert out.metadata["payload_keys"] == ["is_admin", "permission", "user_email"]
        assert out.metadata["payload_types"]["is_admin"] == "bool"
    finally:
        m.shutdown()


def test_a_host_invokes_with_a_typed_payload() -> None:
    with HostPluginManager(PAYLOAD_KEYS) as m:
        m.initialize()
        res = m.invoke("tool_pre_invoke", TOOL_CALL)
        assert res.result.payload_type == 0  # a generic payload
        assert res.result.metadata is not None
        assert res.result.metadata["payload_keys"] == ["args", "name"]
        assert res.result.metadata["arg_types"] == {"q": "str", "n": "int", "raw": "bytes"}
