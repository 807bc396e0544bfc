"""Fail closed: a plugin's failure is its own, under its on_error, and nothing it
changed leaks. Each adversary below let a call through, or leaked a change, before
the engine checked results and isolated plugins (README: "When a plugin fails")."""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest

from conftest import PLUGIN_DIR, config, plugin
from cpexrt._boundary.handles import HANDLES, Kind
from cpexrt._generated.records import ContentPart, Message, MessagePayload
from cpexrt.engine import Engine
from cpexrt.errors import ConfigError, InvalidInputError, PipelineError
from cpexrt.host import PluginManager as Host

PRE = "tool_pre_invoke"
CALL = {"tool_name": "search", "user": "alice"}
META = {"meta": {"entity_type": "tool", "entity_name": "search"}}


def engine(*plugins: str, settings: str = "") -> Engine:
    m = Engine.from_yaml(config(*plugins).replace("plugin_settings:\n", "plugin_settings:\n" + settings, 1))
    m.initialize()
    return m


def host(*plugins: str, settings: str = "") -> Host:
    m = Host(config(*plugins).replace("plugin_settings:\n", "plugin_settings:\n" + settings, 1))
    m.initialize()
    return m


def adversary(returns: str, on_error: str = "fail", name: str = "adv", size: int | None = None) -> str:
    cfg = json.dumps({"returns": returns, "size": size})
    return plugin(name, "Adversary", on_error=on_error, priority=50, config=cfg)


def trace(tag: str, priority: int) -> str:
    return plugin(tag, "Trace", priority=priority, config=f"{{tag: {tag}}}")


@pytest.fixture(params=["engine", "host"])
def make(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Runs a test against the engine called directly and through libcpex (the
    Python host): the same rules must hold on both paths."""
    made: list[Any] = []

    def build(*plugins: str, settings: str = "") -> Any:
        m = engine(*plugins, settings=settings) if request.param == "engine" else host(*plugins, settings=settings)
        made.append(m)
        return m

    yield build
    for m in made:
        m.shutdown()


def run(m: Any, payload: dict[str, Any], extensions: dict[str, Any] | None = None) -> Any:
    """invoke on either kind of manager; the engine's outcome has the result inside."""
    if isinstance(m, Engine):
        return m.invoke(PRE, 0, payload, extensions)
    return m.invoke(PRE, payload, extensions=extensions).result


def modified_payload(result: Any) -> Any:
    raw = result.modified_payload
    return msgpack.unpackb(raw) if isinstance(raw, bytes) else raw


def modified_extensions(result: Any) -> Any:
    raw = result.modified_extensions
    return msgpack.unpackb(raw) if isinstance(raw, bytes) else raw


# -- 1. results that cannot be encoded ------------------------------------------------

UNENCODABLE = [
    ("set", "modified_payload_unencodable", "cannot be encoded"),
    ("object", "modified_payload_unencodable", "cannot be encoded"),
    ("int_keys", "modified_payload_invalid", "int is not allowed for map key"),
    ("bad_extensions", "modified_extensions_unencodable", "cannot be encoded"),
    ("metadata", "metadata_unencodable", "metadata that cannot be encoded"),
    ("not_bool", "invalid_result", "continue_processing='no'"),
]


@pytest.mark.parametrize(("returns", "code", "text"), UNENCODABLE)
def test_under_on_error_fail_the_call_fails_naming_the_plugin_and_code(make: Any, returns: str, code: str, text: str) -> None:
    m = make(adversary(returns))
    with pytest.raises(PipelineError) as info:
        run(m, CALL, META)
    message = str(info.value)
    assert "plugin 'adv'" in message and f"(code {code})" in message and text in message
    assert "<ffi>" not in message


@pytest.mark.parametrize(("returns", "code", "text"), UNENCODABLE)
def test_under_ignore_the_whole_modification_is_discarded_and_the_pipeline_goes_on(
    make: Any, returns: str, code: str, text: str
) -> None:
    m = make(trace("before", 10), adversary(returns, on_error="ignore"), trace("after", 90))
    result = run(m, CALL, META)
    assert result.continue_processing
    assert [(e.plugin_name, e.code) for e in result.errors] == [("adv", code)]
    assert text in result.errors[0].message
    # The previous value went on: no "changed_by", and the extensions are untouched.
    assert modified_payload(result) == {**CALL, "trace": ["before", "after"]}
    assert result.extensions_modified is False and modified_extensions(result) is None
    assert result.payload_modified is True
    assert not result.metadata


@pytest.mark.parametrize("returns", ["set", "bad_extensions"])
def test_under_disable_the_plugin_is_also_switched_off(make: Any, returns: str) -> None:
    m = make(adversary(returns, on_error="disable"), trace("after", 90))
    first = run(m, CALL, META)
    assert [e.plugin_name for e in first.errors] == ["adv"]
    assert modified_payload(first) == {**CALL, "trace": ["after"]}
    second = run(m, CALL, META)
    assert not second.errors and modified_payload(second) == {**CALL, "trace": ["after"]}


def test_a_tuple_is_encodable_and_comes_back_as_a_list(make: Any) -> None:
    result = run(make(adversary("tuple_ok")), CALL)
    assert result.payload_modified and modified_payload(result)["pair"] == [1, 2]


def test_a_deny_that_cannot_be_encoded_still_denies(make: Any) -> None:
    with pytest.raises(PipelineError, match=r"plugin 'adv' returned a violation that cannot be encoded.*denied all the same"):
        run(make(adversary("deny_bad_details")), CALL)
    result = run(make(adversary("deny_bad_details", on_error="ignore")), CALL)
    assert not result.continue_processing
    assert result.violation is not None and result.violation.plugin_name == "adv" and result.violation.code == "denied"
    assert [(e.plugin_name, e.code) for e in result.errors or []] == [("adv", "violation_unencodable")]


def test_a_violation_given_as_a_map_is_taken(make: Any) -> None:
    result = run(make(adversary("violation_dict")), CALL)
    assert not result.continue_processing and result.violation.code == "as_dict" and result.violation.plugin_name == "adv"


@pytest.mark.parametrize(
    ("returns", "code"),
    [
        ("cmf_dict", "modified_payload_invalid"),
        ("cmf_unvalidated", "modified_payload_invalid"),
        ("cmf_wrong_type", "modified_payload_invalid"),
    ],
)
def test_a_cmf_modification_of_the_wrong_shape_is_the_plugins_failure(returns: str, code: str) -> None:
    m = host(
        plugin("adv", "Adversary", hooks="[cmf.tool_pre_invoke]", on_error="ignore", config=json.dumps({"returns": returns}))
    )
    message = Message(schema_version="2.0", role="user", content=[ContentPart.new_text("hi")])
    result = m.invoke("cmf.tool_pre_invoke", MessagePayload(message=message)).result
    assert [(e.plugin_name, e.code) for e in result.errors or []] == [("adv", code)]
    assert result.payload_modified is False
    m.shutdown()


# -- 2. refused extension writes ------------------------------------------------------


def test_a_refused_write_fails_the_plugin_and_none_of_its_changes_apply(make: Any) -> None:
    with pytest.raises(
        PipelineError, match=r"plugin 'adv' may not write extensions\.meta \(immutable\).*code extension_write_refused"
    ):
        run(make(adversary("refused_write")), CALL, META)
    m = make(adversary("refused_write", on_error="ignore"), trace("after", 90))
    result = run(m, CALL, META)
    assert result.continue_processing
    assert [(e.plugin_name, e.code, e.details) for e in result.errors] == [
        ("adv", "extension_write_refused", {"fields": ["extensions.meta"]})
    ]
    assert modified_payload(result) == {**CALL, "trace": ["after"]}  # its payload change did not apply either
    assert result.extensions_modified is False


# -- 3. BaseExceptions ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["SystemExit", "KeyboardInterrupt", "GeneratorExit", "CancelledError", "CustomBaseException"])
@pytest.mark.parametrize("after_await", [False, True])
@pytest.mark.parametrize("mode", ["sequential", "concurrent"])
def test_a_base_exception_is_the_plugins_error_under_on_error(make: Any, name: str, after_await: bool, mode: str) -> None:
    cfg = json.dumps({"raise": name, "after_await": after_await})
    m = make(
        plugin("base", "RaisesBase", mode=mode, config=cfg),
        plugin("soft", "RaisesBase", mode=mode, on_error="ignore", config=cfg),
        settings="  plugin_timeout: 5\n",
    )
    with pytest.raises(PipelineError, match=rf"plugin 'base' raised {name}"):
        run(m, CALL)
    m2 = make(plugin("soft", "RaisesBase", mode=mode, on_error="ignore", config=cfg), trace("after", 90))
    result = run(m2, CALL)
    assert result.continue_processing
    assert [(e.plugin_name, e.code) for e in result.errors] == [("soft", "plugin_error")]
    assert f"raised {name}" in result.errors[0].message
    assert run(m2, CALL).continue_processing  # the runtime keeps serving


@pytest.mark.parametrize("name", ["SystemExit", "KeyboardInterrupt", "CustomBaseException"])
@pytest.mark.parametrize("after_await", [False, True])
def test_a_base_exception_in_a_fire_and_forget_plugin_is_reported_and_the_loop_goes_on(
    make: Any, name: str, after_await: bool
) -> None:
    cfg = json.dumps({"raise": name, "after_await": after_await})
    m = make(plugin("bg", "RaisesBase", mode="fire_and_forget", config=cfg), settings="  plugin_timeout: 5\n")
    for _ in range(2):  # the runtime loop survived the first one
        outcome = m.invoke(PRE, 0, CALL) if isinstance(m, Engine) else m.invoke(PRE, CALL)
        assert outcome.background is not None
        errors = outcome.background.wait()
        assert [(e.plugin_name, e.code) for e in errors] == [("bg", "plugin_error")]
        assert f"raised {name}" in errors[0].message


# -- 4. in-place edits never leak -----------------------------------------------------


@pytest.mark.parametrize("mode", ["sequential", "transform", "audit", "concurrent"])
def test_in_place_edits_reach_no_later_plugin_and_not_the_host(make: Any, mode: str) -> None:
    # The vandal rewrites user mallory to alice in place; the gate denies anyone but alice.
    m = make(
        plugin("vandal", "Vandal", mode=mode, priority=1, config="{user: alice}"),
        plugin("gate", "UserGate", mode="concurrent", priority=99, config="{allowed: alice}"),
    )
    payload = {"tool_name": "search", "user": "mallory"}
    result = run(m, payload, META)
    assert not result.continue_processing and result.violation.plugin_name == "gate"
    assert result.violation.details == {"user": "mallory", "nested": None, "entity_name": "search", "custom": None}
    assert result.payload_modified is False and result.extensions_modified is False
    assert payload == {"tool_name": "search", "user": "mallory"}  # the host's own object


def test_fire_and_forget_plugins_get_their_own_copies() -> None:
    m = engine(
        plugin("vandal", "Vandal", mode="fire_and_forget", priority=1),
        plugin("watcher", "UserGate", mode="fire_and_forget", priority=2, config="{allowed: alice, record_global: true}"),
    )
    payload = dict(CALL)
    extensions = json.loads(json.dumps(META))
    for _ in range(3):
        out = m.invoke(PRE, 0, payload, extensions)
        assert out.background is not None and out.background.wait() == []
    assert m.global_state["seen"] == [{"user": "alice", "nested": None, "entity_name": "search", "custom": None}] * 3
    assert payload == CALL and extensions == META


def _twice_with_followers(m: Any) -> Engine:
    """Invokes PRE twice on m (an engine or a host manager over libcpex), waiting for
    each invoke's fire-and-forget plugins (none failed); returns the engine behind m."""
    for _ in range(2):
        if isinstance(m, Engine):
            background = m.invoke(PRE, 0, dict(CALL), META).background
        else:
            background = m.invoke(PRE, dict(CALL), extensions=META).background
        assert background is not None and background.wait() == []
    return m if isinstance(m, Engine) else HANDLES.get(Kind.MANAGER, int(m._library.ffi.cast("uintptr_t", m._live("t"))), "m")


def test_fire_and_forget_plugins_get_pristine_extensions_the_routes_tagged(make: Any) -> None:
    # Through libcpex the extensions arrive as bytes: a follower's copy of the tagged
    # map is those bytes decoded and tagged again, never a map a plugin edited in place.
    routes = "routes:\n  - tool: search\n    meta:\n      tags: [pii]\n    plugins: [vandal, recorder, late]\n"
    m = make(
        plugin("vandal", "Vandal", priority=1),
        plugin("recorder", "ExtensionRecorder", mode="fire_and_forget", priority=2),
        plugin("late", "ExtensionRecorder", mode="fire_and_forget", priority=3),
        routes,
        settings="  routing_enabled: true\n",
    )
    engine = _twice_with_followers(m)
    tagged = {"meta": {**META["meta"], "tags": ["pii"]}}
    assert engine.global_state["extensions_seen"] == [tagged] * 4


def test_fire_and_forget_plugins_get_the_pipelines_final_payload_and_extensions(make: Any) -> None:
    # Followers keep what their copies are made from (the final snapshots' bytes), not
    # the values: each gets the accepted modifications, privately, call after call.
    m = make(
        plugin("trace", "Trace", priority=1, config="{tag: a}"),
        plugin("writer", "ExtensionWriter", mode="transform", priority=2, config="{tag: w}"),
        plugin("first", "FinalRecorder", mode="fire_and_forget", priority=3),
        plugin("second", "FinalRecorder", mode="fire_and_forget", priority=4),
    )
    engine = _twice_with_followers(m)
    final = ({**CALL, "trace": ["a"]}, {**META, "custom": {"w": True}})
    assert engine.global_state["final_seen"] == [final] * 4


def test_fire_and_forget_plugins_get_the_final_cmf_message() -> None:
    m = engine(
        plugin("append", "CmfAppendText", hooks="[cmf.tool_pre_invoke]", priority=1, config="{text: added}"),
        plugin("first", "FinalRecorder", hooks="[cmf.tool_pre_invoke]", mode="fire_and_forget", priority=2),
        plugin("second", "FinalRecorder", hooks="[cmf.tool_pre_invoke]", mode="fire_and_forget", priority=3),
    )
    message = Message(schema_version="2.0", role="user", content=[ContentPart.new_text("hello")])
    out = m.invoke("cmf.tool_pre_invoke", 1, MessagePayload(message=message).to_wire(), META)
    assert out.background is not None and out.background.wait() == []
    assert m.global_state["final_seen"] == [(["hello", "added"], META)] * 2


def test_a_cmf_message_edited_in_place_reaches_nobody() -> None:
    m = engine(
        plugin("vandal", "Vandal", hooks="[cmf.tool_pre_invoke]", priority=1),
        plugin("gate", "UserGate", hooks="[cmf.tool_pre_invoke]", priority=2),
    )
    message = Message(schema_version="2.0", role="user", content=[ContentPart.new_text("hello")])
    wire = MessagePayload(message=message).to_wire()
    result = m.invoke("cmf.tool_pre_invoke", 1, wire)
    assert result.metadata == {"role": "user", "text": "hello"}
    assert not result.payload_modified and result.modified_payload is None


def test_a_later_plugin_sees_the_accepted_modification_not_the_modifiers_object(make: Any) -> None:
    m = make(trace("a", 10), trace("b", 20))
    assert modified_payload(run(m, {"trace": []})) == {"trace": ["a", "b"]}


# -- 5. payload_modified --------------------------------------------------------------


def test_payload_modified_is_explicit_on_every_result(make: Any) -> None:
    m = make(plugin("a", "Allow"))
    result = run(m, CALL)
    assert result.payload_modified is False and result.extensions_modified is False
    m = make(trace("t", 10))
    result = run(m, CALL)
    assert result.payload_modified is True and result.extensions_modified is False


def test_payload_modified_is_on_the_wire_even_when_false(library: Any) -> None:
    from cpexrt._generated.errors import UNCHANGED_RESULTS

    wire = msgpack.unpackb(UNCHANGED_RESULTS[0])
    assert wire["payload_modified"] is False and wire["extensions_modified"] is False


# -- 7. the context after a failure ---------------------------------------------------


def test_a_failed_invoke_leaves_the_hosts_context_usable_and_unchanged() -> None:
    m = host(plugin("count", "CountThenFail", hooks="[tool_pre_invoke, tool_post_invoke]"))
    first = m.invoke(PRE, {})
    ctx = first.context
    assert ctx is not None
    with pytest.raises(PipelineError, match="plugin 'count' raised RuntimeError"):
        m.invoke(PRE, {"fail": True}, context=ctx)
    with pytest.raises(InvalidInputError):  # a host-side mistake: a payload that is not a map
        m.invoke(PRE, [1, 2], context=ctx)  # type: ignore[call-overload]
    assert not ctx.closed
    post = m.invoke("tool_post_invoke", {}, context=ctx)
    assert post.metadata == {"calls": 1}  # the failed call's count did not stick
    assert ctx.closed  # consumed by the successful call
    m.shutdown()


def test_the_engines_context_is_held_by_one_invoke_at_a_time() -> None:
    m = engine(plugin("count", "CountThenFail", hooks="[tool_pre_invoke, tool_post_invoke]"))
    ctx = m.invoke(PRE, 0, {}).context
    assert ctx is not None
    ctx.hold()
    with pytest.raises(InvalidInputError, match="in use by another invoke"):
        m.invoke(PRE, 0, {}, context=ctx)
    ctx.release()
    assert m.invoke("tool_post_invoke", 0, {}, context=ctx).metadata == {"calls": 1}
    with pytest.raises(InvalidInputError, match="already consumed"):
        m.invoke(PRE, 0, {}, context=ctx)


# -- 9. size limits -------------------------------------------------------------------

SMALL = "  max_payload_bytes: 200\n  max_extensions_bytes: 100\n  max_collection_entries: 8\n"


def test_payload_and_extensions_over_the_limit_are_refused_naming_the_setting() -> None:
    m = host(plugin("a", "Allow"), settings=SMALL)
    with pytest.raises(
        InvalidInputError, match=r"payload: \d+ bytes, over the limit of 200 \(plugin_settings\.max_payload_bytes\)"
    ):
        m.invoke(PRE, {"blob": "x" * 300})
    with pytest.raises(
        InvalidInputError, match=r"extensions: \d+ bytes, over the limit of 100 \(plugin_settings\.max_extensions_bytes\)"
    ):
        m.invoke(PRE, CALL, extensions={"custom": {"blob": "x" * 150}})
    with pytest.raises(InvalidInputError, match=r"payload: a map or array has 9 entries, over the limit of 8"):
        m.invoke(PRE, {"items": list(range(9))})
    # A hook nobody handles (answered in C when the call is plainly valid) refuses too.
    with pytest.raises(InvalidInputError, match=r"over the limit of 200"):
        m.invoke("nobody_handles_this", {"blob": "x" * 300})
    with pytest.raises(InvalidInputError, match=r"9 entries, over the limit of 8"):
        m.invoke("nobody_handles_this", {"items": list(range(9))})
    assert m.invoke(PRE, CALL).result.continue_processing
    m.shutdown()


def test_the_default_limit_refuses_a_huge_payload_without_decoding_it() -> None:
    m = host(plugin("a", "Allow"))
    with pytest.raises(
        InvalidInputError, match=r"over the limit of 10485760 \(plugin_settings\.max_payload_bytes\); refused before decoding"
    ):
        m.invoke(PRE, {"blob": b"\0" * (11 * 1024 * 1024)})
    m.shutdown()
    gc.collect()


def test_a_modified_payload_over_the_limit_is_the_plugins_failure(make: Any) -> None:
    m = make(adversary("big", on_error="ignore", size=500), settings="  max_payload_bytes: 300\n")
    result = run(m, CALL)
    assert [(e.plugin_name, e.code) for e in result.errors] == [("adv", "modified_payload_too_large")]
    assert "limit is 300 (plugin_settings.max_payload_bytes)" in result.errors[0].message
    assert not result.payload_modified


# -- 11. wire defaults ----------------------------------------------------------------


def test_a_message_without_schema_version_decodes_as_2_0() -> None:
    message = Message.from_wire({"role": "user", "content": []})
    assert message.schema_version == "2.0"
    assert message.to_wire()["schema_version"] == "2.0"


# -- 13. relative plugin_dirs ---------------------------------------------------------


def test_relative_plugin_dirs_resolve_against_the_config_files_folder(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import shutil

    folder = tmp_path / "deploy" / "conf"
    folder.mkdir(parents=True)
    shutil.copytree(PLUGIN_DIR, tmp_path / "deploy" / "my_plugins")
    text = config(plugin("a", "Allow")).replace(repr(PLUGIN_DIR), "../my_plugins")
    (folder / "cpex.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)  # anywhere but the config's folder
    with Host() as h:
        h.load_config_file(folder / "cpex.yaml")
        assert h.plugin_count() == 1
    e = Engine()
    e.load_config_file(os.fspath(folder / "cpex.yaml"))
    assert e.plugin_count() == 1
    with Host() as h:
        with pytest.raises(InvalidInputError, match="cannot read the config file"):
            h.load_config_file(folder / "missing.yaml")


def test_a_yaml_alias_bomb_gets_a_short_config_error() -> None:
    # Six levels of ten aliases: a few hundred bytes of YAML standing for a million values.
    text = "a0: &a0 [x,x,x,x,x,x,x,x,x,x]\n"
    for i in range(1, 7):
        text += f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]\n"
    for tail in ("plugin_settings: {plugin_timeout: *a6}\n", "plugins: *a4\n"):
        with pytest.raises(ConfigError) as info:
            Engine.from_yaml(text + tail)
        assert len(str(info.value)) < 10_000
    with pytest.raises(ConfigError, match=r"; and \d+ more problems$"):
        Engine.from_yaml(text + "plugins: *a4\n")


@pytest.mark.parametrize(
    ("extensions", "why"),
    [
        (b"\x81\xa1x" + b"\x91" * 900 + b"\xc0", "nested 900 levels deep"),
        (b"\x81\xa1t\xd6\xff\x00\x00\x00\x01", "a MessagePack timestamp"),
        (b"\x81\xc4\x01k\x01", "a map key of bytes"),
    ],
)
def test_what_the_fast_path_refuses_python_refuses_too(library: Any, extensions: bytes, why: str) -> None:
    from cpexrt.errors import Status
    from test_abi import invoke

    for hook in (b"tool_pre_invoke", b"nobody_handles_this"):
        with host(plugin("a", "Allow")) as m:
            status, message, _, _ = invoke(library, m._handle, msgpack.packb(CALL), hook=hook, extensions=extensions)
        assert status == Status.INVALID_INPUT, (why, hook, status, message)
        assert "nested more than 64 levels deep" in message, (why, message)


def test_the_engines_plugin_error_is_the_records_own_and_anything_else_is_checked() -> None:
    """executor._plugin_error makes the record of the engine's own values without its
    check; the record is the one the constructor makes (fields, fields set, a private
    details map), and a value the engine did not make (a code or details from elsewhere)
    goes through the constructor's check, which names the field."""
    from cpexrt._generated.records import PluginError
    from cpexrt.engine.executor import _plugin_error
    from cpexrt.wire import RecordError

    details = {"fields": ["extensions.http"]}
    for given in (details, None):
        made = _plugin_error("p", "plugin 'p' failed", "extension_write_refused", given)
        checked = PluginError(plugin_name="p", message="plugin 'p' failed", code="extension_write_refused", details=given)
        assert made == checked and made.model_fields_set == checked.model_fields_set and made.model_extra == {}
        assert made.to_wire() == checked.to_wire() and made.pack() == checked.pack()
        assert made.details is None if given is None else made.details is not given
    with pytest.raises(RecordError, match=r"^PluginError\.code: expected a string, got 5$"):
        _plugin_error("p", "m", 5, None)  # type: ignore[arg-type]
    with pytest.raises(RecordError, match=r"^PluginError\.details: expected a map with string keys, got the key 1$"):
        _plugin_error("p", "m", "c", {1: "x"})  # type: ignore[dict-item]
    with pytest.raises(RecordError, match=r"^PluginError\.details: expected a map, got a list$"):
        _plugin_error("p", "m", "c", [1])  # type: ignore[arg-type]
    with pytest.raises(RecordError, match=r"^PluginError\.plugin_name: expected a string"):
        _plugin_error(None, "m", "c", None)  # type: ignore[arg-type]
    with pytest.raises(RecordError, match=r"^PluginError\.message: expected a string"):
        _plugin_error("p", b"m", "c", None)  # type: ignore[arg-type]


def test_a_refused_writes_error_is_the_records_own_with_a_details_map_of_its_own() -> None:
    """executor._own_error (a refused write's error, made of the engine's own values
    without the check): the record the constructor makes of the same values, and each
    call's details a map of its own, so changing one error changes no other."""
    from cpexrt._generated.records import PluginError

    e = engine(adversary("refused_write", on_error="ignore"))
    e.initialize()
    first, second = (e.invoke("tool_pre_invoke", 0, CALL, META).errors[0] for _ in range(2))
    for made in (first, second):
        checked = PluginError(
            plugin_name="adv", message=made.message, code="extension_write_refused", details={"fields": ["extensions.meta"]}
        )
        assert made == checked and made.model_fields_set == checked.model_fields_set and made.model_extra == {}
        assert made.to_wire() == checked.to_wire() and made.pack() == checked.pack()
    assert first.message == "plugin 'adv' may not write extensions.meta (immutable); none of its changes were applied"
    assert first.details is not None and second.details is not None
    assert first.details is not second.details and first.details["fields"] is not second.details["fields"]
    first.details["fields"].append("changed")
    assert second.details == {"fields": ["extensions.meta"]}
    e.shutdown()


def test_the_engine_names_the_denying_plugin_in_a_checked_private_copy_of_its_violation() -> None:
    """executor._violation: the plugin's name is set in the private copy before the
    copy's check (whatever name, of whatever type, the plugin put there); every other
    field is still checked, a bad one refusing the violation (the deny stands)."""
    from types import SimpleNamespace

    from cpexrt._generated.records import PluginViolation
    from cpexrt.engine.executor import _violation

    plugin: Any = SimpleNamespace(name="p")
    given = PluginViolation(code="c", reason="r", plugin_name="someone-else", details={"k": [1]})
    taken, problem = _violation(plugin, given)
    assert problem is None and taken is not given and taken.details is not given.details
    assert taken == given.model_copy(update={"plugin_name": "p"}) and "plugin_name" in taken.model_fields_set
    given.plugin_name = 5  # type: ignore[assignment]  # assigned unchecked: the engine's name replaces it
    assert _violation(plugin, given)[0].plugin_name == "p" and _violation(plugin, given)[1] is None
    given.code = 5  # type: ignore[assignment]
    taken, problem = _violation(plugin, given)
    assert problem is not None and problem.code == "violation_invalid" and "violation.code: expected a string" in problem.why
    assert (taken.code, taken.plugin_name) == ("denied", "p")
