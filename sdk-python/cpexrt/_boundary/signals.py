"""Signals belong to the host. In a Go or C host, a plugin calling signal.signal on the
thread that started Python would replace the host's own handler (Go's SIGTERM
handling, for one); the engine refuses it with a clear error instead."""

from __future__ import annotations

import signal
from typing import Any


class SignalInstallRefused(RuntimeError):
    pass


def refuse_signal_handlers() -> None:
    """Makes signal.signal fail for everyone in this interpreter (call it only when the
    interpreter is embedded in a non-Python host)."""
    if getattr(signal.signal, "__cpex_refuses__", False):
        return

    def refused(signalnum: Any, handler: Any) -> Any:
        raise SignalInstallRefused(
            f"cpex: plugins may not install signal handlers (signal.signal({signalnum!r}, ...)): "
            "signals belong to the host process"
        )

    refused.__cpex_refuses__ = True  # type: ignore[attr-defined]
    signal.signal = refused
