"""Every shared test vector decodes into its generated model and re-encodes to the same
bytes (tests/vectors, generated from the schema; the Go suite checks the same files)."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

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


def _fresh_records(tag: str) -> Iterator[ModuleType]:
    """A new copy of the generated records module, no class of it made yet."""
    name = f"_records_fresh_{tag}"
    spec = importlib.util.spec_from_file_location(name, records.__file__)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[name]


@pytest.mark.parametrize("name", sorted({e["type"] for e in MANIFEST}))
def test_each_record_is_made_on_first_use_whichever_comes_first(name: str) -> None:
    # records.py makes a class when it is first read, with the classes it names (a
    # cycle's together): whichever is read first, it decodes and re-encodes its vectors.
    for fresh in _fresh_records(name):
        assert "PluginViolation" not in vars(fresh) and name not in vars(fresh)
        model = getattr(fresh, name)
        assert model.__name__ == model.__qualname__ == name and model.__module__ == fresh.__name__
        assert name in dir(fresh) and "PipelineResult" in dir(fresh)
        for entry in MANIFEST:
            if entry["type"] == name:
                data = (VECTORS / entry["file"]).read_bytes()
                decoded = model.from_wire(msgpack.unpackb(data, raw=False))
                assert msgpack.packb(decoded.to_wire(), use_bin_type=True) == data
        with pytest.raises(AttributeError, match="no attribute 'NoSuchRecord'"):
            fresh.NoSuchRecord  # noqa: B018
