"""Every shared test vector decodes into its generated model and re-encodes to the same
bytes (tests/vectors, generated from the schema; the Go suite checks the same files)."""

from __future__ import annotations

import json
from pathlib import Path

import msgpack
import pytest

from cpexrt._generated import records
from cpexrt.wire import WireRecord

VECTORS = Path(__file__).resolve().parents[2] / "tests" / "vectors"
MANIFEST = json.loads((VECTORS / "manifest.json").read_text())


@pytest.mark.parametrize("entry", MANIFEST, ids=[e["name"] for e in MANIFEST])
def test_vector_round_trips_byte_for_byte(entry: dict[str, str]) -> None:
    data = (VECTORS / entry["file"]).read_bytes()
    model: type[WireRecord] = getattr(records, entry["type"])
    decoded = model.from_wire(msgpack.unpackb(data, raw=False))
    assert msgpack.packb(decoded.to_wire(), use_bin_type=True) == data


def test_every_record_and_variant_has_vectors() -> None:
    names = {e["name"] for e in MANIFEST}
    for name in dir(records):
        cls = getattr(records, name)
        if isinstance(cls, type) and issubclass(cls, WireRecord) and cls.__module__ == records.__name__ and name != "ContentPart":
            assert {name, f"{name}.unknown_field"} <= names
    for tag in records.ContentPart.VARIANTS:
        assert f"ContentPart.{tag}" in names
    assert "ContentPart.unknown_variant" in names


def test_unknown_fields_and_variants_are_kept() -> None:
    data = msgpack.unpackb((VECTORS / "ToolCall.unknown_field.msgpack").read_bytes())
    call = records.ToolCall.from_wire(data)
    assert call.model_extra == {"x_future_field": {"kept": True, "n": 3}}
    part = records.ContentPart.from_wire(msgpack.unpackb((VECTORS / "ContentPart.unknown_variant.msgpack").read_bytes()))
    assert not part.known and part.value is None
    tool = records.ContentPart.from_wire(msgpack.unpackb((VECTORS / "ContentPart.tool_call.msgpack").read_bytes()))
    assert isinstance(tool.value, records.ToolCall)


def test_pointer_fields_keep_zero_and_optional_fields_drop_empty() -> None:
    policy = records.RetentionPolicy(max_age_seconds=0, policy="")
    assert policy.to_wire() == {"max_age_seconds": 0}
    assert records.PluginError(plugin_name="p", message="m", code="", details={}).to_wire() == {
        "plugin_name": "p",
        "message": "m",
    }


@pytest.mark.parametrize("name", sorted({e["type"] for e in MANIFEST}))
def test_each_record_is_a_plain_class_that_round_trips_its_vectors(name: str) -> None:
    # records.py defines every class at import (plain classes: no builder, no
    # pydantic); each decodes and re-encodes its vectors byte for byte.
    from cpexrt.wire import WireRecord

    model = vars(records)[name]
    assert model.__name__ == model.__qualname__ == name and model.__module__ == records.__name__
    assert issubclass(model, WireRecord) and not any("pydantic" in c.__module__ for c in model.__mro__)
    for entry in MANIFEST:
        if entry["type"] == name:
            data = (VECTORS / entry["file"]).read_bytes()
            decoded = model.from_wire(msgpack.unpackb(data, raw=False))
            assert msgpack.packb(decoded.to_wire(), use_bin_type=True) == data
            assert model.from_wire(decoded.model_dump()) == decoded
    with pytest.raises(AttributeError, match="no attribute 'NoSuchRecord'"):
        records.NoSuchRecord  # type: ignore[attr-defined]  # noqa: B018
