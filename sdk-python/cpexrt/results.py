"""What a plugin handler returns, and the constructors plugin authors use."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cpexrt._generated.records import PluginViolation


@dataclass(frozen=True)
class PluginResult:
    """The outcome of one handler: continue or deny, and what it changed."""

    continue_processing: bool = True
    violation: PluginViolation | None = None
    modified_payload: Any = None
    modified_extensions: dict[str, Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    # Asked of the host: wait this long before a retry (the largest of the plugins'),
    # and these headers on its response (merged, later plugins winning).
    retry_delay_ms: int = 0
    http_headers: dict[str, str] | None = None


_ALLOW = PluginResult()
_new_result = object.__new__


def built(
    continue_processing: bool,
    violation: PluginViolation | None,
    modified_payload: Any,
    modified_extensions: dict[str, Any] | None,
    metadata: dict[str, Any],
    retry_delay_ms: int,
    http_headers: dict[str, str] | None,
) -> PluginResult:
    """PluginResult(every field given), without the frozen dataclass's __init__ (a
    setattr per field, half the cost of an adapter's conversion). For the engine's
    adapters: the executor checks the result like any handler's."""
    result: PluginResult = _new_result(PluginResult)
    result.__dict__.update(
        continue_processing=continue_processing,
        violation=violation,
        modified_payload=modified_payload,
        modified_extensions=modified_extensions,
        metadata=metadata,
        retry_delay_ms=retry_delay_ms,
        http_headers=http_headers,
    )
    return result


def _result(continue_processing: bool, violation: Any, payload: Any, extensions: Any, metadata: dict[str, Any]) -> PluginResult:
    """PluginResult(...) with these fields and the rest at their defaults."""
    return built(continue_processing, violation, payload, extensions, metadata, 0, None)


def allow(metadata: dict[str, Any] | None = None) -> PluginResult:
    """Let the call continue unchanged."""
    # Results are read, never changed, by the engine: one shared plain allow will do.
    return _result(True, None, None, None, dict(metadata)) if metadata else _ALLOW


def deny(
    code: str,
    reason: str,
    description: str | None = None,
    details: dict[str, Any] | None = None,
    proto_error_code: int | None = None,
    metadata: dict[str, Any] | None = None,
) -> PluginResult:
    """Stop the call with a violation. The engine fills in the plugin's name."""
    violation = PluginViolation(
        code=code, reason=reason, description=description, details=details, proto_error_code=proto_error_code
    )
    return _result(False, violation, None, None, dict(metadata or {}))


def modify(
    payload: Any = None, *, extensions: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None
) -> PluginResult:
    """Continue with a replaced payload and/or replaced extensions; later plugins and
    the host see them (when the plugin's phase may modify)."""
    if payload is None and extensions is None:
        raise ValueError("modify(): give a payload, extensions, or both")
    # built(...) spelled out: a plugin's every modification comes through here. The
    # fields in their order (a dict's order is its first keys'), then the three given.
    result: PluginResult = _new_result(PluginResult)
    d = result.__dict__
    d.update(_MODIFY_FIELDS)
    d["modified_payload"] = payload
    d["modified_extensions"] = extensions
    d["metadata"] = dict(metadata) if metadata else {}
    return result


# A modify()'s fields before the three it is given (its payload, extensions, metadata).
_MODIFY_FIELDS: dict[str, Any] = dict(
    continue_processing=True,
    violation=None,
    modified_payload=None,
    modified_extensions=None,
    metadata=None,
    retry_delay_ms=0,
    http_headers=None,
)
