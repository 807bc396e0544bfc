"""Names no schema identifier may take, because some generated target would break.

Two kinds: the keywords of the target languages, and the names the generator itself
gives things (the members of every generated record, the helpers beside them). A schema
name equal to one of the latter does not fail to compile everywhere; it silently
replaces the generated member (a Python field `to_wire` overrides the encoder method, a
Go field `Extra` collides with the unknown-field store), so the schema check refuses it
and says why.
"""

from __future__ import annotations

from pydantic import BaseModel

_C = """auto break case char const continue default do double else enum extern float for goto
if inline int long register restrict return short signed sizeof static struct switch typedef
union unsigned void volatile while bool true false""".split()
_CPP = """class delete new namespace operator private protected public template this throw try
catch virtual friend mutable explicit export typename using""".split()
_GO = """break case chan const continue default defer else fallthrough for func go goto if
import interface map package range return select struct switch type var""".split()
_PY = """False None True and as assert async await break class continue def del elif else
except finally for from global if import in is lambda nonlocal not or pass raise return try
while with yield""".split()

RESERVED: dict[str, str] = {}
for _lang, _words in (("Python", _PY), ("Go", _GO), ("C++", _CPP), ("C", _C)):
    for _w in _words:
        RESERVED[_w] = _lang

# --- Python (sdk-python/cpexrt/_generated/records.py) ---------------------------------

# Attribute names a generated Python record (a cpexrt.wire.WireRecord) cannot take:
# each value completes "'<name>' ...".
PY_RESERVED: dict[str, str] = {w: "is a Python keyword" for w in _PY}
PY_RESERVED.update(
    {
        w: "is an attribute of pydantic's BaseModel, whose API every Python record keeps (cpexrt.wire.WireRecord)"
        for w in dir(BaseModel)
        if not w.startswith("_")
    }
)
PY_RESERVED.update(
    {
        # The builtins the generated annotations name: a field of that name shadows the
        # type inside the class body, so the other fields' annotations resolve to it.
        **{
            w: f"shadows the builtin {w}, which the generated Python annotations use"
            for w in ("str", "int", "bool", "float", "bytes", "list", "dict", "tuple")
        },
        "WIRE": "is the field table (WireRecord.WIRE) of every Python record",
        "to_wire": "is the encoder method (WireRecord.to_wire) of every Python record",
        "wire_from": "is the fast encoder (WireRecord.wire_from) of every Python record",
        "from_wire": "is the validating decoder (WireRecord.from_wire) of every Python record",
        "pack": "is the MessagePack method (WireRecord.pack) of every Python record",
        "unpack": "is the MessagePack decoder (WireRecord.unpack) of every Python record of a generated wire module",
    }
)
# pydantic refuses (or warns about) fields in these namespaces; its own model_*
# attributes are in PY_RESERVED above. Other model_* names (model_id) are free.
PY_PROTECTED_PREFIXES: tuple[str, ...] = ("model_validate", "model_dump")

# What a generated Python union (ContentPart) adds to PY_RESERVED; `new_<tag>` for each
# variant tag is checked where the tags are known.
PY_UNION_RESERVED: dict[str, str] = {
    "VARIANTS": "is the variant table of the generated Python union",
    "known": "is a property of the generated Python union",
    "value": "is a property of the generated Python union",
}

# Module-level names of records.py a record or union class would replace.
PY_RECORDS_MODULE: dict[str, str] = {
    "Any": "is imported by the generated records.py (typing.Any)",
    "ClassVar": "is imported by the generated records.py (typing.ClassVar)",
    **{
        w: f"is imported by the generated records.py (cpexrt.wire.{w})"
        for w in (
            *("FieldInfo", "RecordError", "clone", "clone_list", "_MISSING"),
            *(f"check_{t}" for t in ("any", "bool", "bytes", "float", "int", "list", "map", "string")),
        )
    },
    "WireField": "is imported by the generated records.py (cpexrt.wire.WireField)",
    "WireRecord": "is the base class of the generated Python records (cpexrt.wire.WireRecord)",
}

# Module-level names of calls.py a function's call would replace.
PY_CALLS_MODULE: dict[str, str] = {
    "Any": "is imported by the generated calls.py (typing.Any)",
    "TYPE_CHECKING": "is imported by the generated calls.py (typing.TYPE_CHECKING)",
    "Library": "is imported by the generated calls.py (cpexrt.host.library.Library)",
    "Scratch": "is the out-parameter class of the generated calls.py",
    "annotations": "is imported by the generated calls.py (from __future__)",
}
# Names inside every function of calls.py a parameter of the same name would shadow.
PY_CALLS_LOCALS: dict[str, str] = {
    "library": "is the first parameter of every generated Python call",
    "scratch": "is the out-parameter parameter of the generated fast-path Python calls",
    "ffi": "is a local variable of the generated Python calls",
    "status": "is a local variable of the generated Python calls",
    "len": "is the Python builtin the generated Python calls use",
    "bool": "is the Python builtin the generated Python calls use",
    "int": "is the Python builtin the generated Python calls use",
}

# --- Go (sdk-go/abi_gen.go, sdk-go/records_gen.go) ------------------------------------

# Members the generator gives every Go record struct: a field whose CamelCase name is
# one of these does not compile, or (a method) changes how the record is encoded.
GO_RECORD_MEMBERS: dict[str, str] = {
    "Extra": "the field in which every Go record keeps its unknown fields",
    "EncodeMsgpack": "the MessagePack encoder method of every Go record",
    "DecodeMsgpack": "the MessagePack decoder method of every Go record",
}
GO_UNION_MEMBERS: dict[str, str] = {
    **GO_RECORD_MEMBERS,
    "Raw": "the field in which the Go union keeps an unknown variant",
    "Known": "the method of the Go union that reports a known variant",
}

# Package-level names of package cpex the generated code declares or relies on; a record,
# union, payload type constant or sentinel of the same name is a redeclaration.
GO_PACKAGE_NAMES: dict[str, str] = {
    "ABIVersionMajor": "a constant of the generated abi_gen.go",
    "ABIVersionMinor": "a constant of the generated abi_gen.go",
    "ExtraField": "the Go SDK type of an unknown field, which the generated records use",
}

# --- Python errors.py ------------------------------------------------------------------

PY_ERRORS_MODULE: dict[str, str] = {
    "CpexError": "is the base class of the generated Python exceptions",
    "Status": "is the generated Python status enum",
}
