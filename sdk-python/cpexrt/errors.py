"""The error classes of cpex, one per status code (generated from the ABI schema)."""

from cpexrt._generated.errors import (
    ERROR_CLASSES,
    AbiMismatchError,
    ConfigError,
    CpexError,
    InternalError,
    InvalidHandleError,
    InvalidInputError,
    ParseError,
    PipelineError,
    PipelineTimeoutError,
    RuntimeInitError,
    SerializeError,
    Status,
)

__all__ = [
    "ERROR_CLASSES",
    "AbiMismatchError",
    "ConfigError",
    "CpexError",
    "InternalError",
    "InvalidHandleError",
    "InvalidInputError",
    "ParseError",
    "PipelineError",
    "PipelineTimeoutError",
    "RuntimeInitError",
    "SerializeError",
    "Status",
]
