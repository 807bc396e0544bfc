"""CMF payloads: typed messages for plugins, the read-only view, unknown parts kept."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest

from conftest import config, plugin
from cpexrt import Plugin, PluginContext
from cpexrt._generated.records import ContentPart, ImageSource, Message, ToolCall
from cpexrt.cmf import MessageView
from cpexrt.engine import Engine
from cpexrt.errors import InvalidInputError
from cpexrt.host import PluginManager as HostManager

VECTORS = Path(__file__).resolve().parents[2] / "tests" / "vectors"
UNKNOWN_PART = msgpack.unpackb((VECTORS / "ContentPart.unknown_variant.msgpack").read_bytes())
HOOK = "cmf.tool_pre_invoke"


def message(*tools: str) -> dict[str, object]:
    parts: list[dict[str, object]] = [{"content_type": "text", "text": "please"}]
    parts += [{"content_type": "tool_call", "content": {"tool_call_id": f"c{i}", "name": t}} for i, t in enumerate(tools)]
    return {"message": {"schema_version": "1.0", "role": "assistant", "content": [*parts, UNKNOWN_PART]}}


def test_the_view_iterates_without_copying() -> None:
    msg = Message.from_wire(message("search", "delete")["message"])
    view = MessageView(msg)
    calls = list(view.tool_calls())
    assert [c.name for c in calls] == ["search", "delete"]
    assert calls[0] is msg.content[1].value
    assert view.text() == "please" and view.has_tool_call("delete") and not view.has_tool_call("x")
    assert [p.content_type for p in view.unknown_parts()] == ["hologram"]
    media = Message(schema_version="1", role="user", content=[ContentPart.new_image(ImageSource(type="url", data="u"))])
    assert [m.data for m in MessageView(media).media()] == ["u"]


def test_a_cmf_plugin_gets_a_typed_message_and_can_deny() -> None:
    m = Engine.from_yaml(config(plugin("policy", "CmfToolPolicy", hooks=f"[{HOOK}]", config="{forbidden: [delete]}")))
    m.initialize()
    ok = m.invoke(HOOK, 1, message("search"))
    assert ok.continue_processing and ok.metadata == {"tool_calls": ["search"], "text": "please"}
    denied = m.invoke(HOOK, 1, message("search", "delete"))
    assert denied.violation is not None and denied.violation.plugin_name == "policy"
    assert denied.violation.details == {"tool_call_id": "c1"}


def test_a_malformed_cmf_payload_names_the_field() -> None:
    m = Engine.from_yaml(config(plugin("policy", "CmfToolPolicy", hooks=f"[{HOOK}]")))
    m.initialize()
    with pytest.raises(InvalidInputError, match=r"payload\.message\.role"):
        m.invoke(HOOK, 1, {"message": {"schema_version": "1", "content": []}})


@pytest.mark.parametrize(
    ("payload", "where"),
    [
        ({"message": {"schema_version": "1", "role": 1, "content": []}}, "payload.message.role: expected a string, got 1"),
        ({"message": {"role": "user", "content": "x"}}, "payload.message.content: expected a list"),
        ({"message": {"role": "user", "content": [{"content_type": 3}]}}, "payload.message.content[0].content_type"),
        (
            {"message": {"role": "user", "content": [{"content_type": "tool_call", "content": {"name": "t"}}]}},
            "payload.message.content[0].content.tool_call_id: required, missing",
        ),
        (
            {"message": {"role": "user", "content": [{"content_type": "tool_call", "content": "t"}]}},
            "payload.message.content[0].content: expected a ToolCall (a map)",
        ),
        ({"message": {"role": "user", "content": []}, "hook": 5}, "payload.hook: expected a string, got 5"),
        ({"message": 3}, "payload.message: expected a Message (a map), got 3"),
        ({"hook": "h"}, "payload.message: required, missing"),
    ],
)
@pytest.mark.parametrize("c_parse", [False, True])
def test_a_cmf_payload_is_refused_as_the_whole_record_refuses_it(
    payload: dict[str, Any], where: str, c_parse: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # payloads.decode parses the message without the MessagePayload record when it
    # can, and first in C under libcpex: the refusals, and their messages, are the
    # whole record's.
    from cpexrt import payloads
    from cpexrt._generated.records import MessagePayload
    from cpexrt.errors import ParseError

    monkeypatch.setattr(payloads, "_parse", native_parse() if c_parse else None)

    with pytest.raises(ParseError) as whole:
        MessagePayload.from_wire(payload, "payload")
    with pytest.raises(InvalidInputError, match=re.escape(where)) as decoded:
        payloads.decode(1, payload)
    assert str(decoded.value) == f"not a CMF MessagePayload: {whole.value}"
    with pytest.raises(ValueError, match=re.escape(where.replace("payload.", "MessagePayload.", 1))) as raw:
        payloads._decode_cmf(msgpack.packb(payload))
    with pytest.raises(ValueError) as whole_raw:
        MessagePayload.model_validate(payload)
    assert str(raw.value) == str(whole_raw.value)


@pytest.mark.parametrize("c_parse", [False, True])
def test_a_cmf_payload_decoded_keeps_what_the_whole_record_keeps(c_parse: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from cpexrt import payloads
    from cpexrt._generated.records import MessagePayload

    monkeypatch.setattr(payloads, "_parse", native_parse() if c_parse else None)

    wire = message("search")
    wire["message"]["later"] = {"kept": [1]}  # type: ignore[index]  # an unknown field of the message
    wire["trace"] = "t"  # an unknown field of the payload record: the message is what plugins get
    wire["hook"] = None
    for got in (payloads.decode(1, wire), payloads._decode_cmf(msgpack.packb(wire))):
        want = MessagePayload.from_wire(wire).message
        assert type(got) is Message and got.to_wire() == want.to_wire() == wire["message"]
        assert got.model_extra == {"later": {"kept": [1]}} and got.model_fields_set == want.model_fields_set
        assert got.content[-1].to_wire() == UNKNOWN_PART and not got.content[-1].known
        same_record(got, want)
    held = Message(role="user", content=[])  # a record inside the map: taken by the whole record, as it is
    assert payloads.decode(1, {"message": held}) is held


def test_unknown_parts_survive_a_modification_through_the_library() -> None:
    with HostManager(config(plugin("append", "CmfAppendText", hooks=f"[{HOOK}]", config="{text: done}"))) as m:
        m.initialize()
        out = m.invoke(HOOK, message("search"), payload_type=1)
    raw = msgpack.unpackb(out.result.modified_payload or b"")
    content = raw["message"]["content"]
    assert content[-2] == UNKNOWN_PART  # kept as received, in place
    assert content[-1] == {"content_type": "text", "text": "done"}
    assert isinstance(Message.from_wire(raw["message"]).content[1].value, ToolCall)


def test_the_view_covers_every_kind_of_part() -> None:
    from cpexrt._generated.records import PromptRequest, Resource, ResourceReference, ToolResult

    parts = [
        ContentPart.new_thinking("hmm"),
        ContentPart.new_tool_result(ToolResult(tool_call_id="c1", tool_name="search", content={"hits": 3})),
        ContentPart.new_resource(Resource(resource_request_id="r1", uri="file:///a", resource_type="file")),
        ContentPart.new_resource_ref(ResourceReference(resource_request_id="r2", uri="file:///b", resource_type="file")),
        ContentPart.new_prompt_request(PromptRequest(prompt_request_id="p1", name="summarise")),
    ]
    view = MessageView(Message(schema_version="1", role="tool", content=parts, channel="c"))
    assert (view.role, view.channel) == ("tool", "c")
    assert list(view.thinking()) == ["hmm"] and view.text() == ""
    assert [r.tool_name for r in view.tool_results()] == ["search"]
    assert [r.uri for r in view.resources()] == ["file:///a", "file:///b"]
    assert [p.name for p in view.prompts() if isinstance(p, PromptRequest)] == ["summarise"]
    assert [p.content_type for p in view.parts("thinking", "resource")] == ["thinking", "resource"]


# -- private copies of a CMF message (wire.clone, payloads.Snapshot) -----------------------


def every_part_message() -> dict[str, object]:
    """A Message map with a part of every kind (each vector, unknown variants and
    unknown fields included) and an unknown field of its own."""
    parts = [msgpack.unpackb(p.read_bytes()) for p in sorted(VECTORS.glob("ContentPart.*.msgpack"))]
    wire = msgpack.unpackb((VECTORS / "Message.unknown_field.msgpack").read_bytes())
    return {**wire, "content": parts}


def shared_mutables(a: object, b: object, path: str = "") -> list[str]:
    """Where a and b hold the same mutable object (dict, list, set, record)."""
    from cpexrt.wire import WireRecord

    found = []
    if isinstance(a, dict | list | set | WireRecord) and a is b:
        found.append(path or "<top>")
    if isinstance(a, WireRecord) and isinstance(b, WireRecord):
        found += shared_mutables(a.__dict__, b.__dict__, f"{path}.__dict__")
        found += shared_mutables(a._extra, b._extra, f"{path}.extra")
        if a._fields_set is b._fields_set:
            found.append(f"{path}.fields_set")
    elif isinstance(a, dict) and isinstance(b, dict):
        for k in a:
            found += shared_mutables(a[k], b.get(k), f"{path}[{k!r}]")
    elif isinstance(a, list) and isinstance(b, list):
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            found += shared_mutables(x, y, f"{path}[{i}]")
    return found


def fields_sets(value: object) -> list[object]:
    from cpexrt.wire import WireRecord

    if isinstance(value, WireRecord):
        return [type(value).__name__, sorted(value.model_fields_set), *[fields_sets(v) for v in value.__dict__.values()]]
    if isinstance(value, list):
        return [fields_sets(v) for v in value]
    return []


def test_a_clone_is_what_a_decode_gives_and_shares_nothing() -> None:
    from cpexrt import payloads
    from cpexrt.wire import clone

    wire = payloads._pack({"message": every_part_message()})
    decoded = payloads._decode_cmf(wire)
    copied = clone(decoded)
    again = payloads._decode_cmf(wire)
    assert copied == again and copied.to_wire() == again.to_wire() == decoded.to_wire()
    assert payloads._pack({"message": copied.to_wire()}) == wire
    assert fields_sets(copied) == fields_sets(again)
    assert copied.model_extra == again.model_extra and copied.model_extra
    unknown = [p for p in copied.content if not p.known]
    assert unknown and [p.to_wire() for p in unknown] == [p.to_wire() for p in again.content if not p.known]
    assert shared_mutables(copied, decoded) == []
    # What is done to the copy in place leaves the original as it was, and back.
    copied.content[0].__dict__.update(content_type="text", text="changed")
    copied.model_extra.clear()
    for p in copied.content:
        if not p.known:
            assert p._raw is not None
            p._raw.clear()
    assert decoded == again and decoded.to_wire() == again.to_wire()


def native_clone() -> Callable[[Any], Any]:
    """The boundary's C clone (ffi/natives.c), installed when libcpex loads into this
    process (a host made here loads it)."""
    with HostManager("plugins: []\n"):
        pass
    c_clone: Callable[[Any], Any] = sys.modules["_cpex_natives"].clone
    return c_clone


def same_record(a: object, b: object, path: str = "$") -> None:
    """a and b are equal in everything a copy carries: types, instance dicts (their
    keys in order), fields set and unknown fields, all the way down."""
    from cpexrt.wire import WireRecord

    assert type(a) is type(b), path
    if isinstance(a, WireRecord):
        assert isinstance(b, WireRecord)
        assert list(a.__dict__) == list(b.__dict__), path
        assert a._fields_set == b._fields_set, path
        same_record(a.__dict__, b.__dict__, f"{path}.__dict__")
        same_record(a._extra, b._extra, f"{path}.extra")
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), path
        for k in a:
            same_record(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same_record(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


def test_the_c_clone_makes_the_python_clones_copy_and_shares_nothing() -> None:
    # The boundary clones each plugin's CMF message in C: the same copy as wire.clone
    # (which the engine called directly in Python uses), sharing nothing mutable with
    # its source, and private once edited in place.
    from cpexrt import payloads
    from cpexrt.wire import clone

    c_clone = native_clone()
    assert payloads._cloner(1) == c_clone  # what every CMF snapshot made from now on uses
    wire = payloads._pack({"message": every_part_message()})
    decoded = payloads._decode_cmf(wire)
    copied = c_clone(decoded)
    same_record(copied, clone(decoded))
    same_record(copied, payloads._decode_cmf(wire))
    assert shared_mutables(copied, decoded) == []
    assert copied._fields_set is not decoded._fields_set
    again = payloads._decode_cmf(wire)
    copied.content[0].__dict__.update(content_type="text", text="changed")
    copied.model_extra.clear()
    copied.content[0]._fields_set.add("x")
    for p in copied.content:
        if not p.known:
            p._raw.clear()
    assert decoded == again and decoded.to_wire() == again.to_wire()
    same_record(decoded, again)
    # Plain data as MessagePack would copy it; anything else a TypeError (the snapshot
    # then decodes a copy), as wire.clone.
    inner: dict[str, object] = {"b": b"x"}
    data: dict[object, object] = {"a": [1, (2, inner)], "c": None, "d": 1.5, "e": True, b"k": "v"}
    assert c_clone(data) == clone(data) == {"a": [1, [2, {"b": b"x"}]], "c": None, "d": 1.5, "e": True, b"k": "v"}
    assert c_clone(data)["a"][1][1] is not inner
    nested: list[object] = []
    for _ in range(1000):
        nested = [nested]
    for bad in ({"a": {1, 2}}, [object()], bytearray(b"x"), {1: "int key"}, nested):
        with pytest.raises(TypeError):
            c_clone(bad)


def native_parse() -> Callable[[type[Any], dict[str, Any]], Any]:
    """The boundary's C parse (ffi/natives.c), installed when libcpex loads."""
    native_clone()
    c_parse: Callable[[type[Any], dict[str, Any]], Any] = sys.modules["_cpex_natives"].parse
    return c_parse


def test_the_c_parse_makes_the_record_the_generated_parse_makes() -> None:
    # Every vector of every record: the same record (instance dict in order, fields
    # set, unknown fields, all the way down), or left to _parse (None) when _parse
    # refuses it. A class the C specs do not cover is parsed by its own _parse.
    from cpexrt import payloads
    from cpexrt._generated import records
    from cpexrt.wire import parse_specs

    c_parse = native_parse()
    assert payloads._parse == c_parse  # what every CMF message decoded from now on goes through first
    specs = parse_specs(vars(records))
    assert {records.Message, records.ContentPart, records.ToolCall, records.MessagePayload} <= specs.keys()
    taken = 0
    for path in sorted(VECTORS.glob("*.msgpack")):
        cls = getattr(records, path.name.split(".")[0], None)
        data = msgpack.unpackb(path.read_bytes())
        if cls is None or type(data) is not dict:
            continue
        got = c_parse(cls, data)
        try:
            want = cls._parse(data)
        except ValueError:
            assert got is None, path.name
            continue
        assert got is not None, path.name
        same_record(got, want, path.name)
        assert shared_mutables(got, want) == [] or cls not in specs or _aliases_as_parse(got, want, data)
        taken += 1
    assert taken > 100
    message = every_part_message()
    same_record(c_parse(records.Message, message), records.Message._parse(message))


def _aliases_as_parse(got: object, want: object, data: object) -> bool:
    """got shares with data only what want (the generated _parse's record) shares."""
    return shared_mutables(got, data) == shared_mutables(want, data)


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda m: m.update(role=1), "role"),
        (lambda m: m.update(role=None), "role"),
        (lambda m: m.pop("role"), "role"),
        (lambda m: m.update(schema_version=None), "schema_version"),
        (lambda m: m.update(content=None), "content"),
        (lambda m: m.update(content="parts"), "content"),
        (lambda m: m.update(content=tuple(m["content"])), None),  # _parse takes a tuple: C leaves it to it
        (lambda m: m["content"].append("part"), "content[2]"),
        (lambda m: m["content"][0].update(content_type=3), "content[0].content_type"),
        (lambda m: m["content"][1].update(content="call"), "content[1].content"),
        (lambda m: m["content"][1]["content"].pop("tool_call_id"), "content[1].content.tool_call_id"),
        (lambda m: m["content"][1]["content"].update(name=b"x"), "content[1].content.name"),
        (lambda m: m["content"][1]["content"]["arguments"].update({1: "x"}), "content[1].content.arguments"),
        (lambda m: m["content"][1]["content"].update(arguments=[1]), "content[1].content.arguments"),
        (lambda m: m.update(channel=Label("c")), None),  # a str subclass: _parse's check takes it
        (
            lambda m: m["content"].append({"content_type": "prompt_result", "content": {"x": 1}}),  # a class with no spec
            "content[2].content.prompt_request_id",
        ),
    ],
)
def test_the_c_parse_leaves_what_is_not_of_its_exact_types_to_the_generated_parse(
    change: Callable[[dict[str, Any]], object], where: str | None
) -> None:
    # Anything but the exact types it takes (a wrong type, a null or missing required
    # field, a refused variant, a str subclass, a tuple) is not taken (None): the
    # generated _parse then refuses it naming the field, or takes it as it would.
    from cpexrt import payloads
    from cpexrt._generated.records import Message
    from cpexrt.errors import ParseError
    from cpexrt.wire import RecordError

    c_parse = native_parse()
    wire = message()["message"]
    assert isinstance(wire, dict)
    wire["content"] = [
        {"content_type": "text", "text": "please"},
        {"content_type": "tool_call", "content": {"tool_call_id": "c", "name": "t", "arguments": {"q": [1]}}},
    ]
    assert c_parse(Message, wire) is not None
    change(wire)
    assert c_parse(Message, wire) is None
    if where is None:
        same_record(payloads.decode(1, {"message": wire}), Message._parse(wire))
        return
    with pytest.raises(RecordError) as refused:
        Message._parse(wire)
    assert refused.value.where() == f".{where}".replace(".[", "[")
    with pytest.raises(InvalidInputError, match=re.escape(f"payload.message.{where}: ")):
        payloads.decode(1, {"message": wire})
    with pytest.raises(ParseError):
        Message.from_wire(wire)


class Label(str):
    """A str subclass: not the exact type the C parse takes."""


def test_the_c_parse_keeps_unknown_variants_and_fields_and_takes_nothing_but_maps() -> None:
    from cpexrt._generated.records import ContentPart, Message, ToolCall

    c_parse = native_parse()
    part = {"content_type": "hologram", "content": {"x": [1]}, "later": 2}
    got = c_parse(ContentPart, part)
    assert got is not None and not got.known and got.to_wire() == part and got._raw is not part
    same_record(got, ContentPart._parse(part))
    call = {"name": "n", "tool_call_id": "i", "zeta": 1, "alpha": {"b": 2}}
    made = c_parse(ToolCall, call)
    same_record(made, ToolCall._parse(call))
    assert made.model_extra == {"zeta": 1, "alpha": {"b": 2}} and list(made.model_extra) == ["zeta", "alpha"]
    assert made.model_fields_set == {"name", "tool_call_id"} and made.arguments is None
    not_maps: list[Any] = [[1], Message(role="r", content=[])]
    assert [c_parse(Message, v) for v in not_maps] == [None, None]
    with pytest.raises(TypeError):
        c_parse(Message)  # type: ignore[call-arg]


def test_the_c_parse_takes_a_map_of_strings_only_when_every_key_and_value_is_an_exact_str() -> None:
    # map<string, string> fields (the http extension's headers): an exact dict of exact
    # str keys and values is copied, the record the one _parse makes; anything else is
    # left to _parse (None), which refuses it naming the field or takes it as it would.
    from cpexrt._generated import records
    from cpexrt._generated.records import HttpExtension
    from cpexrt.wire import RecordError, parse_specs

    c_parse = native_parse()
    assert HttpExtension in parse_specs(vars(records))
    good: dict[str, Any] = {"request_headers": {"a": "b", "c": ""}, "response_headers": None, "later": [1]}
    got = c_parse(HttpExtension, good)
    same_record(got, HttpExtension._parse(good))
    assert got.request_headers == {"a": "b", "c": ""} and got.request_headers is not good["request_headers"]
    assert c_parse(HttpExtension, {}) is not None
    for headers, where in (
        ({"a": 1}, ".request_headers.a"),
        ({1: "a"}, ".request_headers"),
        ({"a": None}, ".request_headers.a"),
        ({"a": b"b"}, ".request_headers.a"),
        (["a"], ".request_headers"),
        ("a", ".request_headers"),
        ({Label("k"): "v"}, ".request_headers"),
    ):
        bad = {"request_headers": headers}
        assert c_parse(HttpExtension, bad) is None, headers
        with pytest.raises(RecordError) as refused:
            HttpExtension._parse(bad)
        assert refused.value.where().startswith(where), (headers, refused.value.where())
    taken = {"k": Label("v")}  # a str subclass value: _parse's check takes it
    assert c_parse(HttpExtension, {"request_headers": taken}) is None
    assert HttpExtension._parse({"request_headers": taken}).request_headers == {"k": "v"}


@pytest.mark.parametrize(
    ("http", "where"),
    [
        ({"request_headers": {"a": 1}}, "extensions.http.request_headers.a"),
        ({"response_headers": {"a": None}}, "extensions.http.response_headers.a"),
        ({"response_headers": ["a"]}, "extensions.http.response_headers"),
        ({"request_headers": "a"}, "extensions.http.request_headers"),
    ],
)
def test_a_modified_http_slot_the_c_parse_leaves_is_refused_naming_the_field(http: dict[str, Any], where: str) -> None:
    from cpexrt import payloads

    assert payloads._parse == native_parse()
    limits = payloads.Limits(1 << 20, 1 << 20, 16)
    ok = payloads.accept_extensions({"http": {"request_headers": {"a": "b"}}}, {"http"}, limits)
    assert ok.peek() == {"http": {"request_headers": {"a": "b"}}}
    with pytest.raises(payloads.Refusal) as refused:
        payloads.accept_extensions({"http": http}, {"http"}, limits)
    assert refused.value.code == "modified_extensions_invalid" and f"{where}: " in refused.value.why, refused.value.why


def test_a_clone_copies_plain_data_as_messagepack_would_and_refuses_other_objects() -> None:
    from cpexrt.wire import clone

    inner: dict[str, object] = {"b": b"x"}
    data: dict[str, object] = {"a": [1, (2, inner)], "c": None}
    copied = clone(data)
    assert copied == {"a": [1, [2, {"b": b"x"}]], "c": None}
    assert copied["a"] is not data["a"] and copied["a"][1][1] is not inner and copied["a"][1][1] == inner
    with pytest.raises(TypeError):
        clone({"a": {1, 2}})


SEEN: list[tuple[str, object, object]] = []


class MessageVandal(Plugin):
    """Records what it was given (and that object), then edits it in place, deep."""

    def cmf_tool_pre_invoke(self, message: Message, ctx: PluginContext) -> None:
        SEEN.append((self.config["tag"], message.to_wire(), message))
        message.role = "system"
        message.model_extra.clear()
        for part in message.content:
            if isinstance(part.value, ToolCall) and part.value.arguments is not None:
                part.value.arguments["query"] = "tampered"
            elif not part.known:
                part._raw["content_type"] = "tampered"  # type: ignore[index]
        message.content.append(ContentPart.new_text("added"))


@pytest.mark.parametrize("owned", [False, True])
def test_every_cmf_plugin_gets_its_own_message_whatever_the_others_did_in_place(owned: bool) -> None:
    m = Engine()
    m.register_factory("Vandal", MessageVandal)
    stanzas = "".join(
        f"  - {{name: {t}, kind: Vandal, hooks: [{HOOK}], mode: {mode}, priority: {i}, config: {{tag: {t}}}}}\n"
        for i, (t, mode) in enumerate(
            [("a", "sequential"), ("b", "transform"), ("c", "audit"), ("d", "concurrent"), ("e", "concurrent")]
        )
    )
    m.load_config(f"plugin_settings:\n  routing_enabled: false\nplugins:\n{stanzas}")
    m.initialize()
    wire_map = {"message": every_part_message()}
    wire = msgpack.packb(wire_map, use_bin_type=True)
    expected = msgpack.unpackb(wire)["message"]
    for _ in range(2):
        SEEN.clear()
        if owned:
            out = m.invoke(HOOK, 1, msgpack.unpackb(wire), payload_wire=wire, owned=True)
        else:
            out = m.invoke(HOOK, 1, wire_map)
        assert out.continue_processing and not out.payload_modified and out.errors == []
        assert [name for name, _, _ in SEEN] == ["a", "b", "c", "d", "e"]
        assert [seen for _, seen, _ in SEEN] == [expected] * 5
        assert len({id(obj) for _, _, obj in SEEN}) == 5
    assert wire_map == {"message": every_part_message()}  # the host's own object


class MessageRecorder(Plugin):
    """Keeps the message it was given."""

    def cmf_tool_pre_invoke(self, message: Message, ctx: PluginContext) -> None:
        SEEN.append(("recorder", message.to_wire(), message))


def test_a_cmf_map_from_a_python_caller_reaches_plugins_as_a_hosts_bytes_do() -> None:
    # A map the caller keeps is taken as a host's bytes are: the plugins get what the
    # same map's MessagePack gives them (one validation, of the decoded bytes); the
    # caller's map stays as it was; what does not encode or decode as it is (a record
    # object inside, a bad field) goes the way it always went: taken, or refused naming
    # the field.
    m = Engine()
    m.register_factory("Recorder", MessageRecorder)
    m.load_config(f"plugins:\n  - {{name: r, kind: Recorder, hooks: [{HOOK}]}}\n")
    m.initialize()
    parts: list[object] = list(every_part_message()["content"])  # type: ignore[call-overload]
    parts[1] = {"content_type": "tool_call", "content": {"tool_call_id": "c", "name": "n", "arguments": {}}}
    given = {"message": {**every_part_message(), "channel": None, "content": parts}}
    wire = msgpack.packb(given, use_bin_type=True)
    seen: list[Message] = []
    for how in ("map", "bytes", "record inside"):
        SEEN.clear()
        if how == "map":
            out = m.invoke(HOOK, 1, given)
        elif how == "bytes":
            out = m.invoke(HOOK, 1, msgpack.unpackb(wire), payload_wire=wire, owned=True)
        else:
            out = m.invoke(HOOK, 1, {"message": Message.from_wire(msgpack.unpackb(wire)["message"])})
        assert out.continue_processing and out.errors == []
        [(_, _, received)] = SEEN
        assert isinstance(received, Message)
        seen.append(received)
    same_record(seen[0], seen[1])
    assert seen[0].to_wire() == seen[2].to_wire()
    assert msgpack.packb(given, use_bin_type=True) == wire
    with pytest.raises(InvalidInputError, match=r"payload\.message\.content\[0\]\.content_type"):
        m.invoke(HOOK, 1, {"message": {"role": "user", "content": [{"text": "no type"}]}})
    with pytest.raises(InvalidInputError, match="map keys must be strings"):
        m.invoke(HOOK, 1, {"message": {"role": "user", "content": [], "x": {1: "int key"}}})


def test_a_snapshot_with_a_clone_hands_its_value_only_to_the_last_caller() -> None:
    from cpexrt import payloads

    wire = payloads._pack(message("search"))
    value = payloads._decode_cmf(wire)
    snap = payloads.Snapshot(wire, payloads._decode_cmf, value, payloads._cloner(1))
    first, second = snap.copy(), snap.copy()
    assert first is not value and second is not value and first is not second
    assert first == second == value
    assert snap.copy(last=True) is value
    after = snap.copy()
    assert after is not value and after == value  # decoded again: the value was handed out
    generic = payloads.Snapshot(b"\x81\xa1a\x01", payloads._decode_generic, {"a": 1})
    # A snapshot made without a clone decodes each copy (which clone a generic
    # payload's snapshots get, None or libcpex's C copy: test_plain_copy.py).
    assert generic.copy() == {"a": 1} and generic.copy() == {"a": 1}
