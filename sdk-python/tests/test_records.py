"""The generated wire records as plain classes (cpexrt.wire.WireRecord, no pydantic):
their checks, what they convert and refuse, their errors, and the pydantic API they
keep for plugin code (docs/architecture.md, "Wire records in Python")."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import pytest

from cpexrt._generated import records
from cpexrt._generated.records import (
    ContentPart,
    Extensions,
    Message,
    MessagePayload,
    PipelineResult,
    PluginError,
    PluginStats,
    PluginViolation,
    RetentionPolicy,
    ToolCall,
)
from cpexrt.errors import ParseError
from cpexrt.wire import RecordError, WireField, WireRecord


def test_a_bad_value_is_a_value_error_naming_the_record_field_and_expectation() -> None:
    with pytest.raises(RecordError, match=r"^PluginViolation\.code: expected a string, got 5$") as info:
        PluginViolation(code=5, reason="r")  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError) and info.value.loc == ["code"] and info.value.msg == "expected a string, got 5"
    with pytest.raises(ValueError, match=r"^PluginViolation\.reason: required, missing \(expected a string\)$"):
        PluginViolation(code="c")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match=r"^PluginViolation\.details: expected a map, got a list$"):
        PluginViolation.model_validate({"code": "c", "reason": "r", "details": [1]})
    with pytest.raises(ValueError, match=r"^PluginViolation: expected a PluginViolation \(a map\), got 'x'$"):
        PluginViolation.model_validate("x")


def test_from_wire_names_the_path_down_lists_maps_and_variants() -> None:
    bad_call = {"content_type": "tool_call", "content": {"tool_call_id": "c", "name": 7}}
    message = {"role": "user", "content": [{"content_type": "text", "text": "hi"}, bad_call]}
    with pytest.raises(ParseError, match=r"^payload\.message\.content\[1\]\.content\.name: expected a string, got 7$"):
        MessagePayload.from_wire({"message": message}, "payload")
    with pytest.raises(ParseError, match=r"^Extensions\.http\.request_headers\.k: expected a string, got 1$"):
        Extensions.from_wire({"http": {"request_headers": {"k": 1}}})
    with pytest.raises(ParseError, match=r"^Extensions\.custom: expected a map with string keys, got the key 1$"):
        Extensions.from_wire({"custom": {1: "x"}})
    with pytest.raises(ParseError, match=r"^PluginStats\.pids\[1\]: expected an integer \(int64\), got 'x'$"):
        PluginStats.from_wire({"name": "p", "isolation": "none", "disabled": False, "pids": [1, "x"]})


def test_integers_are_held_to_their_schema_types_range_and_bools_are_not_numbers() -> None:
    assert RetentionPolicy(max_age_seconds=2**64 - 1).max_age_seconds == 2**64 - 1
    with pytest.raises(ValueError, match=r"max_age_seconds: expected an integer in 0\.\.18446744073709551615 \(uint64\), got -1"):
        RetentionPolicy(max_age_seconds=-1)
    with pytest.raises(ValueError, match=r"payload_type: expected an integer in 0\.\.255 \(uint8\), got 256"):
        PipelineResult(continue_processing=True, payload_modified=False, extensions_modified=False, payload_type=256)
    with pytest.raises(ValueError, match=r"proto_error_code: expected an integer \(int64\), got True"):
        PluginViolation(code="c", reason="r", proto_error_code=True)
    with pytest.raises(ValueError, match=r"proto_error_code: expected an integer \(int64\), got '5'"):
        PluginViolation(code="c", reason="r", proto_error_code="5")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"disabled: expected a boolean, got 1"):
        PluginStats(name="p", isolation="none", disabled=1)  # type: ignore[arg-type]


def test_what_is_converted_an_int_to_a_float_an_integral_float_to_an_int_a_tuple_to_a_list() -> None:
    class Text(str):
        pass

    stats = PluginStats(name=Text("p"), isolation="none", disabled=False, last_restart_ms=3, workers=2.0, pids=(1, 2))  # type: ignore[arg-type]
    assert type(stats.name) is str and stats.name == "p"
    assert type(stats.last_restart_ms) is float and stats.last_restart_ms == 3.0
    assert type(stats.workers) is int and stats.workers == 2
    assert stats.pids == [1, 2] and type(stats.pids) is list
    with pytest.raises(ValueError, match=r"workers: expected an integer \(int64\), got 2\.5"):
        PluginStats(name="p", isolation="none", disabled=False, workers=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"name: expected a string, got b'p'"):
        PluginStats(name=b"p", isolation="none", disabled=False)  # type: ignore[arg-type]


def test_containers_are_copied_and_records_given_are_kept() -> None:
    args: dict[str, Any] = {"q": [1]}
    call = ToolCall(tool_call_id="c", name="n", arguments=args)
    assert call.arguments == args and call.arguments is not args
    part = ContentPart(content_type="tool_call", content=call)
    assert part.content is call and part.known and part.value is call
    from_map = ContentPart.model_validate({"content_type": "tool_call", "content": {"tool_call_id": "c", "name": "n"}})
    assert type(from_map.content) is ToolCall
    assert PluginViolation.model_validate(v := PluginViolation(code="c", reason="r")) is v


def test_fields_set_unknown_fields_and_assignment_as_pydantic_has_them() -> None:
    v = PluginViolation.model_validate({"code": "c", "reason": "r", "x_new": {"a": 1}})
    assert v.model_fields_set == {"code", "reason"} and v.model_extra == {"x_new": {"a": 1}}
    assert v.model_extra["x_new"] == {"a": 1}
    with pytest.raises(AttributeError, match="'PluginViolation' object has no attribute 'x_new'"):
        v.x_new  # type: ignore[attr-defined]  # noqa: B018  # unknown fields are not attributes
    v.description = "d"
    v.later = 5  # type: ignore[attr-defined]
    assert v.model_fields_set == {"code", "reason", "description"}
    assert v.to_wire() == {"code": "c", "reason": "r", "description": "d", "x_new": {"a": 1}, "later": 5}
    assert v.model_dump(exclude_unset=True) == {"code": "c", "reason": "r", "description": "d", "x_new": {"a": 1}, "later": 5}
    assert "plugin_name" in v.model_dump() and "plugin_name" not in v.model_dump(exclude_none=True)
    assert PluginViolation(code="c", reason="r").model_extra == {}


def test_dump_copy_equality_repr_pickle() -> None:
    message = Message(role="user", content=[ContentPart.new_text("hi")])
    assert message.model_dump() == {
        "schema_version": "2.0",
        "role": "user",
        "content": [{"content_type": "text", "text": "hi", "content": None}],
        "channel": None,
    }
    assert PluginError(plugin_name="p", message="m", details={"b": b"\xc3\xa9"}).model_dump(mode="json")["details"] == {"b": "é"}
    with pytest.raises(ValueError, match="mode must be"):
        message.model_dump(mode="yaml")
    shallow = message.model_copy(update={"role": "system", "x_new": 1})
    assert shallow.role == "system" and shallow.content is message.content and shallow.model_extra == {"x_new": 1}
    assert "role" in shallow.model_fields_set and message.role == "user" and message.model_extra == {}
    deep = message.model_copy(deep=True)
    assert deep == message and deep.content is not message.content and deep.content[0] is not message.content[0]
    assert message != message.model_copy(update={"role": "x"})
    assert message != Message(role="user", content=[ContentPart.new_text("hi")], x=1)  # type: ignore[call-arg]
    assert repr(message) == (
        "Message(schema_version='2.0', role='user', "
        "content=[ContentPart(content_type='text', text='hi', content=None)], channel=None)"
    )
    for again in (pickle.loads(pickle.dumps(message)), copy.deepcopy(message), copy.copy(message)):
        assert again == message and again.model_fields_set == message.model_fields_set
    with pytest.raises(TypeError):
        hash(message)


def test_model_construct_takes_values_unchecked() -> None:
    m = Message.model_construct(role=5, content="not a list", extra_field=1)
    assert m.role == 5 and m.schema_version == "2.0" and m.model_fields_set == {"role", "content"}  # type: ignore[comparison-overlap]
    assert m.model_extra == {"extra_field": 1}


def test_model_fields_and_the_base_are_not_pydantic() -> None:
    info = Message.model_fields["schema_version"]
    assert (info.annotation, info.default, info.is_required()) == ("str", "2.0", False)
    assert Message.model_fields["content"].is_required() and Message.model_fields["channel"].default is None
    assert WireRecord.__slots__ == ("__dict__", "_fields_set", "_extra") and Message.__slots__ == ()
    assert vars(ToolCall(tool_call_id="c", name="n")) == {"tool_call_id": "c", "name": "n", "arguments": None, "namespace": None}
    with pytest.raises(TypeError, match="not a record"):
        WireRecord()


# Values a field may hold (a record's fields are assigned unchecked): None, falsy and
# truthy scalars of each kind, empty and non-empty containers, a record, and a value of
# a type the wire does not know (taken as it is).
_FIELD_VALUES: list[Any] = [
    None,
    "",
    "x",
    b"",
    b"y",
    0,
    7,
    0.0,
    -0.0,
    1.5,
    False,
    True,
    [],
    ["a", 1],
    {},
    {"k": [1, {"n": None}]},
    (),
    (1,),
    PluginViolation(code="c", reason="r"),
    [PluginError(plugin_name="p", message="m")],
    object,
]


def _default(cls: type[WireRecord], name: str) -> dict[str, Any]:
    default = cls.model_fields[name].default
    return {name: default} if default else {}


def _walked(record: WireRecord) -> dict[str, Any]:
    """WireRecord.to_wire's map, by the plan's walk (what each class's own to_wire spells out)."""
    return WireRecord.to_wire(record)


_RECORDS = [c for c in vars(records).values() if isinstance(c, type) and issubclass(c, WireRecord) and c is not WireRecord]


@pytest.mark.parametrize("cls", [c for c in _RECORDS if "VARIANTS" not in vars(c)])  # the unions: the base's walk
def test_each_records_own_to_wire_is_the_plans_walk(cls: type[WireRecord]) -> None:
    assert "to_wire" in vars(cls)  # its own, straight-line
    names = list(cls.model_fields)
    for i, value in enumerate(_FIELD_VALUES):
        # every field the same value, then each field its own (the values rotated)
        for fill in ({n: value for n in names}, {n: _FIELD_VALUES[(i + j) % len(_FIELD_VALUES)] for j, n in enumerate(names)}):
            made = cls.model_construct(**fill, zz_unknown=i)
            assert made.to_wire() == _walked(made) and list(made.to_wire()) == list(_walked(made)), (cls, fill)
    # A field deleted from the instance: the class default (an optional field), or the error.
    made = cls.model_construct(**{n: "v" for n in names})
    for name in names:
        d = made.__dict__.copy()
        del made.__dict__[name]
        if cls.model_fields[name].required:
            with pytest.raises(AttributeError):
                made.to_wire()
        else:
            assert made.to_wire() == _walked(made) == {**{n: "v" for n in names if n != name}, **_default(cls, name)}
        made.__dict__.update(d)

    class Sub(cls):  # type: ignore[valid-type, misc]
        __slots__ = ()
        WIRE = (*cls.WIRE, WireField("more"))

    sub = Sub.model_construct(**{n: "v" for n in names})
    sub.__dict__["more"] = "m"
    assert sub.to_wire() == {**{n: "v" for n in names}, "more": "m"}  # a subclass's fields: the walk


# -- records packed in C (ffi/natives.c pack_wire, the plans of wire.pack_plans) ---------


def _c_pack_wire() -> Any:
    """The boundary's C packer of wire maps, installed when libcpex loads into this
    process (a host made here loads it)."""
    import sys

    from cpexrt import wire
    from cpexrt.host import PluginManager as Host

    with Host("plugins: []\n"):
        pass
    fn = sys.modules["_cpex_natives"].pack_wire
    assert wire._c_pack_wire is fn  # pack_wire tries it first once the boundary loaded
    return fn


def _packed(value: Any) -> bytes:
    """What pack_wire must give: msgpack's bytes of the value with its records as their
    to_wire() maps."""
    import msgpack  # type: ignore[import-untyped, unused-ignore]

    from cpexrt.wire import to_wire_value

    out: bytes = msgpack.Packer(use_bin_type=True).pack(to_wire_value(value))
    return out


@pytest.mark.parametrize("cls", _RECORDS)
def test_the_c_packer_packs_each_record_as_its_to_wire_map(cls: type[WireRecord]) -> None:
    from cpexrt.wire import pack_wire

    c_pack = _c_pack_wire()
    names = list(cls.model_fields)
    taken = 0
    for i, value in enumerate(_FIELD_VALUES):
        for fill in ({n: value for n in names}, {n: _FIELD_VALUES[(i + j) % len(_FIELD_VALUES)] for j, n in enumerate(names)}):
            made = cls.model_construct(**fill)
            if value is object or object in fill.values():
                assert c_pack(made) is None  # a value of a type the wire does not know: msgpack's to refuse
                with pytest.raises(Exception, match="cannot encode as MessagePack"):
                    pack_wire(made, "record")
                continue
            got = c_pack(made)
            assert got == _packed(made) == pack_wire(made, "record"), (cls, fill)
            assert c_pack({"in": [made, {"deep": made}]}) == _packed({"in": [made, {"deep": made}]})
            taken += 1
    assert taken > 0
    # Unknown fields: left to msgpack (to_wire appends them), the same bytes.
    made = cls.model_construct(**{n: "v" for n in names}, zz_unknown=1)
    assert c_pack(made) is None and pack_wire(made, "record") == _packed(made)
    # A field deleted from the instance: left to to_wire (the class default, or the error).
    for name in names:
        made = cls.model_construct(**{n: "v" for n in names})
        del made.__dict__[name]
        assert c_pack(made) is None
        if not cls.model_fields[name].required:
            assert pack_wire(made, "record") == _packed(made)

    # A subclass (its own fields): not in the plans, packed by its own to_wire.
    class Sub(cls):  # type: ignore[valid-type, misc]
        __slots__ = ()
        WIRE = (*cls.WIRE, WireField("more"))

    sub = Sub.model_construct(**{n: "v" for n in names})
    sub.__dict__["more"] = "m"
    assert c_pack(sub) is None and pack_wire(sub, "record") == _packed(sub)


def test_the_c_packer_packs_an_unknown_content_part_as_it_came() -> None:
    from cpexrt.wire import pack_wire

    c_pack = _c_pack_wire()
    part = records.ContentPart._parse({"content_type": "hologram", "z": [1, {"a": b"x"}], "content_type2": None})
    known = records.ContentPart._parse({"content_type": "text", "text": "hi"})
    for made in (part, known, records.Message(role="user", content=[known, part])):
        assert c_pack(made) == _packed(made) == pack_wire(made, "part")


def test_the_plain_packer_still_leaves_records_to_msgpack_which_refuses_them() -> None:
    # natives.pack (every pack of a plugin's values) takes plain data only: a record a
    # plugin returns inside its metadata stays unencodable, with or without libcpex.
    import sys

    from cpexrt import wire
    from cpexrt.errors import SerializeError

    _c_pack_wire()
    record = PluginError(plugin_name="p", message="m")
    assert sys.modules["_cpex_natives"].pack({"k": record}) is None
    with pytest.raises(SerializeError, match="cannot encode as MessagePack"):
        wire.pack({"k": record}, "metadata")
