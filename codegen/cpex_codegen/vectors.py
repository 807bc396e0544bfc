"""Test vectors: one MessagePack file per record, per union variant, and for unknown
fields and an unknown variant, derived from the schema (its `example:` values, else a
value of the field's type). Both SDKs must decode and re-encode each to the same bytes.

Canonical form, which both SDKs emit: known fields in schema order, then unknown ones;
maps of untyped or string values with sorted keys (Go cannot keep a map's order)."""

from __future__ import annotations

import json
import re
from typing import Any

import msgpack

from .schema import Record, RecordField, Schema, Union

UNKNOWN_FIELD = ("x_future_field", {"kept": True, "n": 3})
_CONTAINER = re.compile(r"^(list|map)<(?:string,)?(.+)>$")

_ANY_MAP = {"alpha": 1, "beta": ["x", 2.5, None, True], "gamma": {"deep": -3}}
_SCALAR_EXAMPLES: dict[str, Any] = {
    "string": None,  # named after the field
    "bool": True,
    "uint8": 1,
    "uint32": 42,
    "int": 7,
    "int64": -32000,
    "uint64": 70000,
    "float64": 1.5,
    "bytes": b"\x00\x01\xfe\xff",
    "any": {"a": [1, "two", None], "b": {"c": 3.25}},
}


class _Builder:
    def __init__(self, schema: Schema) -> None:
        self.records = {r.name: r for r in schema.records}
        self.unions = {u.name: u for u in schema.unions}

    def record(self, r: Record, depth: int = 0) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for fl in r.fields:
            value = self.field(r, fl, depth)
            if value is not None:
                out[fl.name] = value
        return out

    def field(self, r: Record, fl: RecordField, depth: int) -> Any:
        if fl.example is not None:
            return fl.example
        if fl.pointer:
            return 0  # a pointer field keeps its zero
        return self.value(fl.type, f"{r.name.lower()}-{fl.name}", depth)

    def value(self, t: str, label: str, depth: int) -> Any:
        m = _CONTAINER.match(t)
        if m is not None:
            kind, inner = m.groups()
            if inner in self.records or inner in self.unions:
                if depth >= 2:
                    return [] if kind == "list" else {}
                if inner in self.unions:
                    u = self.unions[inner]
                    return [self.variant(u, u.variants[0].tag, depth + 1), self.variant(u, u.variants[2].tag, depth + 1)]
                item = self.record(self.records[inner], depth + 1)
                return [item] if kind == "list" else {f"{label}-key": item}
            if kind == "list":
                return [self.value(inner, f"{label}-{i}", depth) for i in (1, 2)] if inner != "any" else [1, "two", {"three": 3}]
            return {"k1": "v1", "k2": "v2"} if inner == "string" else dict(_ANY_MAP)
        if t in self.records:
            return self.record(self.records[t], depth + 1)
        if t in self.unions:
            u = self.unions[t]
            return self.variant(u, u.variants[0].tag, depth + 1)
        example = _SCALAR_EXAMPLES[t]
        return label if example is None else example

    def variant(self, u: Union, tag: str, depth: int) -> dict[str, Any]:
        v = next(v for v in u.variants if v.tag == tag)
        return {u.tag: tag, v.field: self.value(v.type, f"{tag}-{v.field}", depth)}


def encode(value: Any) -> bytes:
    """The canonical MessagePack of a wire value (the module's doc): what both SDKs'
    encoders produce for the same record."""
    data: bytes = msgpack.packb(value, use_bin_type=True)
    return data


def unchanged_result_value(schema: Schema, payload_type: int) -> dict[str, Any]:
    """The unchanged result (abi.yaml unchanged_result) of one payload type, as a wire
    map: its fields in schema order, optional ones absent."""
    u = schema.unchanged_result
    if u is None:
        raise ValueError("the schema has no unchanged_result")
    record = next(r for r in schema.records if r.name == u.record)
    values: dict[str, Any] = {**u.fields, u.payload_type_field: payload_type}
    return {fl.name: values[fl.name] for fl in record.fields if fl.name in values}


def unchanged_results(schema: Schema) -> dict[int, bytes]:
    """Payload type id -> the bytes of its unchanged result, in payload type order."""
    return {t.id: encode(unchanged_result_value(schema, t.id)) for t in schema.payload_types}


def build(schema: Schema) -> dict[str, tuple[str, Any]]:
    """Vector name -> (record or union name, value)."""
    b = _Builder(schema)
    out: dict[str, tuple[str, Any]] = {}
    for r in schema.records:
        example = b.record(r)
        out[r.name] = (r.name, example)
        out[f"{r.name}.unknown_field"] = (r.name, {**example, UNKNOWN_FIELD[0]: UNKNOWN_FIELD[1]})
    for u in schema.unions:
        for v in u.variants:
            out[f"{u.name}.{v.tag}"] = (u.name, b.variant(u, v.tag, 0))
        known = b.variant(u, u.variants[2].tag, 0)
        out[f"{u.name}.{u.variants[2].tag}.unknown_field"] = (u.name, {**known, UNKNOWN_FIELD[0]: UNKNOWN_FIELD[1]})
        out[f"{u.name}.unknown_variant"] = (
            u.name,
            {"payload": {"frames": [1, 2]}, u.tag: "hologram", "text": "after the tag", "content": {"z": 1, "a": [True]}},
        )
    return out


def render(schema: Schema, folder: str = "tests/vectors") -> dict[str, str | bytes]:
    """<folder>/<name>.msgpack for every vector, plus manifest.json."""
    files: dict[str, str | bytes] = {}
    manifest = []
    for name, (type_name, value) in build(schema).items():
        files[f"{folder}/{name}.msgpack"] = encode(value)
        manifest.append({"name": name, "type": type_name, "file": f"{name}.msgpack"})
    files[f"{folder}/manifest.json"] = json.dumps(manifest, indent=1) + "\n"
    return files
