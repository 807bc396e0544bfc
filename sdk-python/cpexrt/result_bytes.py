"""The bytes of the most common PipelineResult: no plugin objected or changed anything.
The boundary sends them for such calls (and hands them to the C fast path); the host
client recognises them without decoding."""

from __future__ import annotations

import functools

from cpexrt._generated.records import PipelineResult
from cpexrt.wire import pack


@functools.lru_cache(maxsize=None)
def unchanged_result(payload_type: int) -> bytes:
    wire = PipelineResult.wire_from(
        continue_processing=True, payload_modified=False, extensions_modified=False, payload_type=payload_type
    )
    return pack(wire, "pipeline result")
