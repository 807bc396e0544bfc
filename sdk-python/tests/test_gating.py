"""Capability gating: each plugin sees only what its capabilities grant, and a write it
has no right to is refused and reported naming the field."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import msgpack
import pytest

from conftest import config, plugin
from cpexrt.engine import Engine
from cpexrt.errors import PipelineError

PRE = "tool_pre_invoke"
VECTORS = Path(__file__).resolve().parents[2] / "tests" / "vectors"
# Every extension slot filled in: the schema's own example.
FULL: dict[str, Any] = msgpack.unpackb((VECTORS / "Extensions.msgpack").read_bytes())
ALWAYS = {"meta", "request", "provenance", "completion", "llm", "framework", "mcp", "custom"}
SECURITY_ALWAYS = {"classification", "agent", "auth_method", "objects", "data"}


def seen_by(capabilities: list[str], extensions: dict[str, Any] = FULL) -> dict[str, Any]:
    m = Engine.from_yaml(config(plugin("probe", "ExtensionProbe", capabilities=json.dumps(capabilities))))
    m.initialize()
    seen: dict[str, Any] = m.invoke(PRE, 0, {}, extensions).metadata["seen"]
    return seen


def test_without_capabilities_guarded_and_private_slots_are_hidden() -> None:
    seen = seen_by([])
    assert set(seen) == ALWAYS | {"security"}
    assert set(seen["security"]) == SECURITY_ALWAYS
    for slot in ALWAYS:
        assert seen[slot] == FULL[slot]


@pytest.mark.parametrize(
    ("capability", "slot"),
    [("read_agent", "agent"), ("read_headers", "http"), ("read_delegation", "delegation")],
)
def test_a_read_capability_shows_its_slot(capability: str, slot: str) -> None:
    seen = seen_by([capability])
    assert seen[slot] == FULL[slot]
    assert set(seen) == ALWAYS | {"security", slot}


def test_labels_need_read_labels() -> None:
    assert seen_by(["read_labels"])["security"]["labels"] == FULL["security"]["labels"]


@pytest.mark.parametrize("field", ["roles", "teams", "claims", "permissions"])
def test_subject_fields_need_their_own_capability(field: str) -> None:
    subject = seen_by([f"read_{field}"])["security"]["subject"]  # any sub-capability implies read_subject
    assert subject[field] == FULL["security"]["subject"][field]
    assert set(subject) == {"id", "subject_type", field}


def test_read_subject_shows_the_subject_without_its_guarded_fields() -> None:
    assert set(seen_by(["read_subject"])["security"]["subject"]) == {"id", "subject_type"}


def edit(
    capabilities: list[str], changes: dict[str, Any], extensions: dict[str, Any] = FULL
) -> tuple[dict[str, Any] | None, list[str]]:
    m = Engine.from_yaml(
        config(
            plugin(
                "editor",
                "ExtensionEditor",
                capabilities=json.dumps(capabilities),
                on_error="ignore",
                config=json.dumps({"set": changes}),
            )
        )
    )
    m.initialize()
    result = m.invoke(PRE, 0, {}, extensions)
    assert all(e.plugin_name == "editor" and e.code == "extension_write_refused" for e in result.errors)
    return result.modified_extensions, [e.message for e in result.errors]


IMMUTABLE_WRITES = [
    ("meta.entity_name", "other"),
    ("request.request_id", "forged"),
    ("provenance.source", "forged"),
    ("completion.model", "forged"),
    ("llm.model_id", "forged"),
    ("framework.framework", "forged"),
    ("mcp.tool", "__remove__"),
    ("security.classification", "public"),
    ("security.objects", {}),
    ("security.data", "__remove__"),
    ("security.auth_method", "none"),
]


@pytest.mark.parametrize(("path", "value"), IMMUTABLE_WRITES)
def test_immutable_slots_refuse_writes(path: str, value: Any) -> None:
    modified, errors = edit([], {path: value})
    assert modified is None
    # the governing slot: security's fields have their own tiers, other slots are whole
    slot = ".".join(path.split(".")[:2]) if path.startswith("security.") else path.split(".")[0]
    assert len(errors) == 1 and f"may not write extensions.{slot}" in errors[0] and "immutable" in errors[0]


def test_subject_and_agent_stay_immutable_even_when_readable() -> None:
    for caps, path in (
        (["read_roles"], "security.subject.roles"),
        (["read_subject"], "security.subject.id"),
        (["read_agent"], "agent.agent_id"),
    ):
        modified, errors = edit(caps, {path: ["admin"]})
        assert modified is None and len(errors) == 1 and "immutable" in errors[0], (caps, errors)


def test_custom_is_writable_by_everyone() -> None:
    modified, errors = edit([], {"custom.note": "hi"})
    assert errors == [] and modified is not None and modified["custom"]["note"] == "hi"
    assert modified["security"] == FULL["security"]  # hidden fields untouched


def test_http_headers_need_write_headers() -> None:
    headers = {"x-processed": "yes"}
    modified, errors = edit(["read_headers"], {"http.response_headers": headers})
    assert modified is None and "needs the capability write_headers" in errors[0] and "extensions.http" in errors[0]
    modified, errors = edit(["read_headers", "write_headers"], {"http.response_headers": headers})
    assert errors == [] and modified is not None and modified["http"]["response_headers"] == headers


def test_labels_only_grow() -> None:
    labels = FULL["security"]["labels"]
    modified, errors = edit(["read_labels", "append_labels"], {"security.labels": [*labels, "reviewed"]})
    assert errors == [] and modified is not None and modified["security"]["labels"] == [*labels, "reviewed"]
    modified, errors = edit(["read_labels", "append_labels"], {"security.labels": labels[:1]})
    assert modified is None and "monotonic" in errors[0] and "extensions.security.labels" in errors[0]
    modified, errors = edit(["read_labels"], {"security.labels": [*labels, "x"]})
    assert modified is None and "needs the capability append_labels" in errors[0]


def test_append_without_read_merges_into_the_hidden_labels() -> None:
    modified, errors = edit(["append_labels"], {"security.labels": ["reviewed"]})
    assert errors == [] and modified is not None
    assert modified["security"]["labels"] == [*FULL["security"]["labels"], "reviewed"]


def test_delegation_chain_is_append_only() -> None:
    chain = FULL["delegation"]["chain"]
    hop = {"subject_id": "svc-b", "strategy": "token_exchange"}
    modified, errors = edit(["read_delegation", "append_delegation"], {"delegation.chain": [*chain, hop]})
    assert errors == [] and modified is not None and modified["delegation"]["chain"] == [*chain, hop]
    modified, errors = edit(["read_delegation", "append_delegation"], {"delegation.chain": []})
    assert modified is None and "monotonic" in errors[0]


def test_unknown_slots_are_not_writable() -> None:
    modified, errors = edit([], {"shadow": {"x": 1}})
    assert modified is None and "extensions.shadow (not a writable extension slot" in errors[0]


def test_edits_in_place_never_reach_another_plugin() -> None:
    m = Engine.from_yaml(
        config(
            plugin(
                "vandal",
                "ExtensionEditor",
                priority=1,
                capabilities='["read_headers"]',
                config=json.dumps({"in_place": True, "set": {"http.request_headers": {"x": "evil"}, "custom.alpha": 99}}),
            ),
            plugin("probe", "ExtensionProbe", priority=2, capabilities='["read_headers"]'),
        )
    )
    m.initialize()
    result = m.invoke(PRE, 0, {}, FULL)
    assert result.metadata["seen"]["http"] == FULL["http"]
    assert result.metadata["seen"]["custom"] == FULL["custom"]
    assert result.modified_extensions is None


def test_unknown_capabilities_fail_the_load() -> None:
    from cpexrt.errors import ConfigError

    with pytest.raises(ConfigError, match=r"plugins\[0\]\.capabilities\[0\]: unknown capability 'write_header'"):
        Engine.from_yaml(config(plugin("p", "Allow", capabilities='["write_header"]')))


def test_writes_in_turn_build_on_each_other_and_the_call_keeps_its_input() -> None:
    # Each accepted write is merged over the engine's read-only value of the previous
    # extensions: nothing of it (nor of the host's map) may be changed along the way.
    given = copy.deepcopy(FULL)
    m = Engine.from_yaml(
        config(
            plugin(
                "first",
                "ExtensionEditor",
                priority=1,
                capabilities='["read_headers", "write_headers", "read_labels", "append_labels"]',
                config=json.dumps(
                    {"set": {"http.response_headers": {"x-first": "1"}, "security.labels": [*FULL["security"]["labels"], "a"]}}
                ),
            ),
            plugin(
                "second",
                "ExtensionEditor",
                priority=2,
                capabilities='["read_headers", "write_headers"]',
                config=json.dumps({"set": {"http.request_headers.x-second": "2", "custom.alpha": "__remove__"}}),
            ),
            plugin("refused", "ExtensionEditor", priority=3, on_error="ignore", config=json.dumps({"set": {"meta.scope": "x"}})),
            plugin("probe", "ExtensionProbe", priority=4, capabilities='["read_headers", "read_labels"]'),
        )
    )
    m.initialize()
    result = m.invoke(PRE, 0, {}, given)
    assert given == FULL
    assert [e.plugin_name for e in result.errors] == ["refused"]
    final = result.modified_extensions
    assert final is not None and result.metadata["seen"]["http"] == final["http"]
    assert final["http"]["response_headers"] == {"x-first": "1"}
    assert final["http"]["request_headers"] == {**FULL["http"]["request_headers"], "x-second": "2"}
    assert final["security"]["labels"] == [*FULL["security"]["labels"], "a"]
    assert "alpha" not in final["custom"] and {k: v for k, v in FULL["custom"].items() if k != "alpha"} == final["custom"]
    assert final["meta"] == FULL["meta"]
    assert {k: v for k, v in final["security"].items() if k != "labels"} == {
        k: v for k, v in FULL["security"].items() if k != "labels"
    }


def test_an_allowed_write_of_the_wrong_shape_fails_the_plugin_naming_the_field() -> None:
    for on_error in ("ignore", "fail"):
        m = Engine.from_yaml(
            config(
                plugin(
                    "editor",
                    "ExtensionEditor",
                    capabilities='["read_headers", "write_headers"]',
                    on_error=on_error,
                    config=json.dumps({"set": {"http.request_headers.k1": 5, "custom.note": "kept?"}}),
                )
            )
        )
        m.initialize()
        if on_error == "fail":
            with pytest.raises(PipelineError, match=r"editor.*extensions\.http\.request_headers\.k1"):
                m.invoke(PRE, 0, {}, FULL)
            continue
        result = m.invoke(PRE, 0, {}, FULL)
        assert result.modified_extensions is None  # none of its changes, custom.note neither
        [error] = result.errors
        assert (error.plugin_name, error.code) == ("editor", "modified_extensions_invalid")
        assert "extensions.http.request_headers.k1" in error.message


def test_each_changed_slot_is_checked_as_the_extensions_record_checks_it() -> None:
    # payloads._check_slots checks the slots given by the Extensions record's checks:
    # it takes exactly what the record takes, slot by slot (every slot of the vector,
    # unknown slots, None), and refuses what it refuses, naming the field.
    from pathlib import Path

    import msgpack

    from cpexrt import payloads
    from cpexrt._generated.records import Extensions
    from cpexrt.errors import ParseError

    vector = Path(__file__).resolve().parents[2] / "tests" / "vectors" / "Extensions.msgpack"
    full = msgpack.unpackb(vector.read_bytes())
    Extensions.from_wire(full)
    wrong: list[object] = [5, "text", [1], {"labels": 5, "request_headers": [1], "tags": {"a": 1}}, True, 1.5]
    for name in [*Extensions.model_fields, "not_a_slot"]:
        for value in [full.get(name), None, *wrong]:
            try:
                Extensions(**{name: value})
                record_takes = True
            except ValueError:
                record_takes = False
            if name != "not_a_slot" and type(value) is int:
                assert not record_takes, name  # every slot is a record or a map
            if record_takes:
                payloads._check_slots({name: value})
            else:
                with pytest.raises(ParseError, match=rf"extensions\.{name}"):
                    payloads._check_slots({name: value})


def returned(capabilities: list[str], changes: dict[str, Any], extensions: dict[str, Any]) -> tuple[Any, list[str]]:
    """A plugin that edits its view in place (changes) and returns that very map."""
    m = Engine.from_yaml(
        config(
            plugin(
                "returner",
                "ExtensionReturner",
                capabilities=json.dumps(capabilities),
                on_error="ignore",
                config=json.dumps({"set": changes}),
            )
        )
    )
    m.initialize()
    result = m.invoke(PRE, 0, {}, extensions)
    return result.modified_extensions, [f"{e.code}: {e.message}" for e in result.errors]


# security present with none of the slots hidden from a plugin without capabilities.
SECURITY_SHOWN = {"security": {"classification": "internal"}, "custom": {"alpha": 1}}


@pytest.mark.parametrize("extensions", [FULL, SECURITY_SHOWN, {}], ids=["hidden-slots", "none-hidden", "empty"])
@pytest.mark.parametrize("capabilities", [[], ["read_headers", "write_headers"]])
def test_its_view_returned_unchanged_is_no_change(capabilities: list[str], extensions: dict[str, Any]) -> None:
    # Hidden slots absent from its view are not taken as removed; nothing is written.
    assert returned(capabilities, {}, extensions) == (None, [])


@pytest.mark.parametrize("extensions", [FULL, SECURITY_SHOWN], ids=["hidden-slots", "none-hidden"])
def test_its_view_edited_in_place_and_returned_is_checked(extensions: dict[str, Any]) -> None:
    # The returned map is the one it was handed (equal to itself): compared with the
    # engine's pristine value of what it was shown, the edit is seen and judged.
    headers = {"x-added": "1"}
    modified, errors = returned(["read_headers"], {"http.response_headers": headers}, extensions)
    assert modified is None and len(errors) == 1
    assert errors[0].startswith("extension_write_refused:") and "extensions.http" in errors[0]
    modified, errors = returned(["read_headers", "write_headers"], {"http.response_headers": headers}, extensions)
    assert errors == [] and modified is not None and modified["http"]["response_headers"] == headers
    modified, errors = returned([], {"security.classification": "public"}, extensions)
    assert modified is None and "extensions.security.classification (immutable)" in errors[0]
    modified, errors = returned([], {"custom.alpha": 2}, extensions)
    assert errors == [] and modified is not None and modified["custom"]["alpha"] == 2
    assert {k: v for k, v in modified.items() if k != "custom"} == {k: v for k, v in extensions.items() if k != "custom"}


def test_hides_any_finds_a_hidden_slot_only_where_one_is_present() -> None:
    from cpexrt.engine.gating import Grant, hide, hides_any

    none = Grant.of([])
    assert hides_any(FULL, none) and hide(copy.deepcopy(FULL), none) != FULL
    shown: list[dict[str, Any]] = [SECURITY_SHOWN, {}, {"security": {}}, {"security": "odd"}, {"custom": {"agent": 1}}]
    for tree in shown:
        assert not hides_any(tree, none) and hide(copy.deepcopy(tree), none) == tree
    hidden: list[dict[str, Any]] = [{"security": {"subject": None}}, {"security": {"labels": []}}, {"delegation": None}]
    for tree in hidden:
        assert hides_any(tree, none) and hide(copy.deepcopy(tree), none) != tree
    assert hides_any({"security": {"subject": {"id": "u"}}}, none)
    assert hides_any({"security": {"subject": {"id": "u"}}}, Grant.of(["read_subject"])) is False
    assert hides_any({"security": {"subject": {"id": "u", "roles": ["a"]}}}, Grant.of(["read_subject"]))
    assert hides_any({"agent": {}}, none) and not hides_any({"agent": {}}, Grant.of(["read_agent"]))
