"""Property-based tests (hypothesis) of the decoders and the gating: whatever the bytes
or values, the outcome is a result or the right error class, never anything else."""

from __future__ import annotations

import copy
from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import config, plugin
from cpexrt._generated import records
from cpexrt.engine.gating import Grant, _accept_paths, accept
from cpexrt.errors import InvalidInputError, ParseError
from cpexrt.host import PluginManager
from cpexrt.wire import WireRecord, unpack

PROFILE = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=20),
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20
)
RECORDS = sorted(
    name
    for name in dir(records)
    if isinstance(getattr(records, name), type)
    and issubclass(getattr(records, name), WireRecord)
    and getattr(records, name).__module__ == records.__name__
)


@PROFILE
@given(st.binary(max_size=200))
def test_unpack_gives_a_value_or_a_parse_error(data: bytes) -> None:
    try:
        unpack(data, "payload")
    except ParseError:
        pass


@PROFILE
@given(st.sampled_from(RECORDS), st.dictionaries(st.text(max_size=12), values, max_size=6) | values)
def test_records_decode_or_name_the_problem_and_round_trip(name: str, data: Any) -> None:
    model: type[WireRecord] = getattr(records, name)
    try:
        decoded = model.from_wire(data)
    except ParseError as exc:
        assert name in str(exc)
        return
    wire = decoded.to_wire()
    again = model.from_wire(msgpack.unpackb(msgpack.packb(wire, use_bin_type=True), raw=False))
    assert again.to_wire() == wire


extension_values = st.fixed_dictionaries(
    {},
    optional={
        "meta": st.fixed_dictionaries({"entity_name": st.text(max_size=5), "tags": st.lists(st.text(max_size=3), max_size=3)}),
        "security": st.fixed_dictionaries(
            {"labels": st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=4, unique=True)},
            optional={"classification": st.text(max_size=4), "subject": st.fixed_dictionaries({"id": st.text(max_size=4)})},
        ),
        "http": st.fixed_dictionaries({"request_headers": st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=3)}),
        "custom": st.dictionaries(st.text(max_size=4), scalars, max_size=3),
    },
)
CAPABILITIES = ["read_labels", "append_labels", "read_headers", "write_headers", "read_subject"]


@PROFILE
@given(extension_values, extension_values, st.lists(st.sampled_from(CAPABILITIES), unique=True))
def test_gating_never_lets_immutable_slots_change_or_labels_shrink(
    current: dict[str, Any], proposed: dict[str, Any], caps: list[str]
) -> None:
    grant = Grant.of(caps)
    merged, refusals, _ = accept(copy.deepcopy(current), current, proposed, grant)
    assert merged.get("meta") == current.get("meta")
    assert (merged.get("security") or {}).get("subject") == (current.get("security") or {}).get("subject")
    assert (merged.get("security") or {}).get("classification") == (current.get("security") or {}).get("classification")
    old_labels = set((current.get("security") or {}).get("labels") or [])
    assert old_labels <= set((merged.get("security") or {}).get("labels") or [])
    if "write_headers" not in caps:
        assert merged.get("http") == current.get("http")
    assert all(r.field.startswith("extensions.") for r in refusals)


@PROFILE
@given(extension_values, extension_values, st.lists(st.sampled_from(CAPABILITIES), unique=True))
def test_gating_changes_neither_the_call_extensions_nor_the_view(
    current: dict[str, Any], proposed: dict[str, Any], caps: list[str]
) -> None:
    # The engine passes its read-only decode of the extensions as both: the merge copies
    # what it changes.
    before = copy.deepcopy(current)
    merged, refusals, changed = accept(current, current, proposed, Grant.of(caps))
    assert current == before
    if not refusals:
        assert set(changed) <= set(merged) | set(current)
        assert all(merged.get(k) == current.get(k) for k in current if k not in changed)


# Proposals with what the tier table's walk judges beside the top-level slots: keys no
# slot names, a monotonic slot, slots taken away.
proposals = st.fixed_dictionaries(
    {},
    optional={
        "meta": st.fixed_dictionaries({"entity_name": st.text(max_size=5)}),
        "security": st.fixed_dictionaries(
            {"labels": st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=4, unique=True)},
            optional={"classification": st.text(max_size=4)},
        ),
        "http": st.fixed_dictionaries({"request_headers": st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=3)}),
        "custom": st.dictionaries(st.text(max_size=4), scalars, max_size=3),
        "delegation": st.fixed_dictionaries({"chain": st.lists(st.text(max_size=3), max_size=3)}),
        "agent": st.fixed_dictionaries({"id": st.text(max_size=3)}),
        "unknown": scalars,
        "other": st.dictionaries(st.text(max_size=4), scalars, max_size=2),
    },
)


@PROFILE
@given(
    extension_values, proposals, st.lists(st.sampled_from([*CAPABILITIES, "append_delegation", "read_delegation"]), unique=True)
)
def test_gating_by_top_level_slots_judges_as_the_walk_does(
    current: dict[str, Any], proposed: dict[str, Any], caps: list[str]
) -> None:
    # accept() judges whole top-level slots by the grant's table, and takes the walk
    # over the tier table's paths for the rest: the same merge, refusals (in order)
    # and changed slots as the walk alone.
    grant = Grant.of(caps)
    for shown in (current, {}):
        fast = accept(current, shown, proposed, grant)
        walked = _accept_paths(current, shown, proposed, grant)
        assert fast[0] == walked[0]
        assert fast[1] == walked[1]
        assert fast[2] == walked[2]


_HOST: list[PluginManager] = []


def host() -> PluginManager:
    if not _HOST:
        m = PluginManager(config(plugin("guard", "DenyWhenBlocked"), plugin("probe", "ExtensionProbe", priority=200)))
        m.initialize()
        _HOST.append(m)
    return _HOST[0]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=120), st.binary(max_size=60))
def test_random_bytes_through_the_library_are_parse_or_input_errors(payload: bytes, extensions: bytes) -> None:
    m = host()
    lib = m._library
    ffi = lib.ffi
    out, out_len = ffi.new("uint8_t **"), ffi.new("size_t *")
    oc, ob, err = ffi.new("cpex_context **"), ffi.new("cpex_background **"), ffi.new("char **")
    status = lib.lib.cpex_invoke(
        m._handle,
        b"tool_pre_invoke",
        15,
        0,
        payload,
        len(payload),
        extensions or ffi.NULL,
        len(extensions),
        ffi.NULL,
        out,
        out_len,
        oc,
        ob,
        err,
    )
    try:
        lib.check(status, err)
    except (ParseError, InvalidInputError):
        return
    lib.lib.cpex_free_buffer(out[0])
