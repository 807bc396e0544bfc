"""A plugin worker process: `python -m cpexrt.engine.worker` (the host starts it; see
cpexrt.engine.isolation). It loads one plugin, initializes it, and serves its hook
calls one at a time over the framed pipe protocol of cpexrt.engine.frames, until the
host asks it to shut down or goes away.

Before any plugin code runs it: asks the kernel to kill it when the thread of the
host that started it dies (PR_SET_PDEATHSIG), exits if the host is already gone,
applies its memory limit (RLIMIT_AS), moves the protocol off fds 0 and 1 (so a
plugin's print cannot corrupt a frame: fd 1 becomes the host's stderr), and starts a
thread that exits the process when the host's end of the pipe closes.

The plugin runs under the worker's own engine (its handlers through the same driver,
deadlines and watchdog as in-process); what it returns is checked here only so a
refusal carries the same code and words as in-process, and is checked again by the
host's executor, which alone decides what applies.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from cpexrt import payloads
    from cpexrt._generated.records import PluginViolation
    from cpexrt.engine import driver, frames, gating
    from cpexrt.engine.executor import _as_result
    from cpexrt.plugin import PluginContext

    _decoder: Callable[[int], Callable[[bytes], Any]]
    _ALLOW: list[int]
    _ALLOW_FRAME: bytes

_PR_SET_PDEATHSIG = 1
EXIT_MEMORY = 70  # the worker passed its memory limit and stopped itself
EXIT_PROTOCOL = 71  # the host sent something that is not the protocol
# After a reply, how long the worker polls for the next call before it sleeps until
# one comes (frames.Channel.recv: bounded, and off while it finds nothing): a busy
# host's next call finds it awake. An idle worker sleeps.
NEXT_CALL_SPIN_NS = 50_000


def _die_with_parent() -> None:
    """SIGKILL when the host's spawning thread ends; exit now if the host is gone."""
    expected = int(os.environ.pop("CPEX_WORKER_PARENT", "0") or 0)
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if expected and os.getppid() != expected:
        os._exit(0)  # the host died before the death signal was armed


def _limit_memory() -> None:
    mb = int(os.environ.pop("CPEX_WORKER_MAX_MEMORY_MB", "0") or 0)
    if mb > 0:
        import resource

        limit = mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _protocol_fds() -> tuple[int, int]:
    proto_in, proto_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    return proto_in, proto_out


def _lifeline(fd: int) -> None:
    """Exits the process when the host closes its end of the socket (it died, or
    dropped the worker), even while a plugin call is blocked."""

    def watch() -> None:
        poller = select.poll()
        poller.register(fd, getattr(select, "POLLRDHUP", 0))  # and POLLHUP / POLLERR, always reported
        while True:
            for _, event in poller.poll():
                if event & (select.POLLHUP | select.POLLERR | select.POLLNVAL | getattr(select, "POLLRDHUP", 0)):
                    os._exit(0)

    threading.Thread(target=watch, name="cpex-worker-lifeline", daemon=True).start()


def main() -> None:
    _die_with_parent()
    _limit_memory()
    proto_in, proto_out = _protocol_fds()
    _lifeline(proto_in)
    _imports()

    try:
        message = frames.read_frame(proto_in, None)
    except frames.FrameError:
        os._exit(EXIT_PROTOCOL)
    if not (isinstance(message, list) and message and message[0] == frames.OP_INIT):
        os._exit(EXIT_PROTOCOL)
    try:
        server = _Server(message[1])
    except MemoryError:
        _reply(proto_out, [frames.REPLY_FATAL, "ran out of memory while loading (max_memory_mb)"])
        os._exit(EXIT_MEMORY)
    except BaseException as exc:  # noqa: BLE001 - reported to the host, which names the plugin
        _reply(proto_out, [frames.REPLY_FATAL, _loading_error(exc)])
        os._exit(0)
    _reply(proto_out, [frames.REPLY_READY, server.info()])
    server.serve(proto_in, proto_out)


def _loading_error(exc: BaseException) -> str:
    from cpexrt.errors import CpexError

    if isinstance(exc, CpexError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _reply(fd: int, message: Any) -> None:
    frames.write_all(fd, frames.pack(message), None)


class _Server:
    def __init__(self, setup: dict[str, Any]) -> None:
        from cpexrt.engine.manager import Engine

        for path in setup.get("sys_path") or []:
            if path not in sys.path:
                sys.path.append(path)
        self.engine = Engine()
        self.engine.load_config(setup["config"])
        self.engine.initialize()
        self.plugin = self.engine._set.plugins[0]
        self.limits = payloads.Limits(*setup["limits"])

    def info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "pycpex": self.plugin.reports_unenforced, "hooks": sorted(self.plugin.handlers)}

    def serve(self, fd_in: int, fd_out: int) -> None:
        import socket

        channel = frames.Channel(socket.socket(fileno=fd_in))
        spin = 0  # the first call after a setup, a shutdown's wait: no spin
        while True:
            try:
                message = channel.recv(None, frames.MAX_FRAME, spin)
            except frames.FrameError:
                os._exit(0)  # the host went away
            spin = NEXT_CALL_SPIN_NS
            op = message[0]
            if op == frames.OP_CALL:
                reply = self.call(message)
                try:
                    data = _ALLOW_FRAME if reply is _ALLOW else frames.pack(reply)
                except (TypeError, ValueError, OverflowError) as exc:
                    data = frames.pack([frames.REPLY_REFUSED, "invalid_result", f"returned a result that cannot be sent: {exc}"])
                channel.send(data, None)
                if reply[0] == frames.REPLY_RAISED and reply[2]:
                    os._exit(EXIT_MEMORY)
            elif op == frames.OP_SHUTDOWN:
                try:
                    self.engine.shutdown()
                    _reply(fd_out, [frames.REPLY_DONE, None])
                except BaseException as exc:  # noqa: BLE001 - reported
                    _reply(fd_out, [frames.REPLY_DONE, _loading_error(exc)])
                os._exit(0)
            else:
                os._exit(EXIT_PROTOCOL)

    def call(self, message: list[Any]) -> list[Any]:
        _, hook, payload_type, payload_wire, ext, state, request_state, request, deadline = message
        try:
            payload = _decoder(payload_type)(payload_wire)
            state = state if state is not None else {}
            request_state = request_state if request_state is not None else {}
            ctx = PluginContext(
                ext if ext is not None else {},
                state,
                self.engine.global_state,
                load_request=(lambda: request) if request is not None else None,
                request_state=request_state,
            )
            value = driver.call(self.plugin.handlers[hook], (payload, ctx), deadline)
        except driver.HandlerTimeout:
            return [frames.REPLY_TIMEOUT]
        except MemoryError as exc:
            return [frames.REPLY_RAISED, driver.describe(exc).rstrip(": "), True]
        except BaseException as exc:  # noqa: BLE001 - the plugin's failure, reported
            return [frames.REPLY_RAISED, driver.describe(exc), False]
        try:
            if value is None:  # a plain allow: only the state may have changed
                if not ctx.state and not ctx.request_state:
                    return _ALLOW
                return [
                    frames.REPLY_OK,
                    True,
                    None,
                    None,
                    None,
                    None,
                    0,
                    None,
                    self.state(ctx.state),
                    self.state(ctx.request_state),
                ]
            return self.result(payload_type, value, ctx)
        except payloads.Refusal as refused:
            return [frames.REPLY_REFUSED, refused.code, refused.why]
        except MemoryError as exc:
            return [frames.REPLY_RAISED, driver.describe(exc).rstrip(": "), True]

    @staticmethod
    def state(state: dict[str, Any]) -> Any:
        return payloads.plain_copy(state, "state", "per-request state") if state else None

    def result(self, payload_type: int, value: Any, ctx: Any) -> list[Any]:
        result = _as_result(value)
        violation: Any = result.violation
        if isinstance(violation, PluginViolation):
            violation = violation.to_wire()
        if violation is not None:
            violation = payloads.plain_copy(violation, "violation", "violation")
        modified = None
        if result.modified_payload is not None:
            modified = payloads.accept(payload_type, result.modified_payload, self.limits).wire
        extensions = None
        if result.modified_extensions is not None:
            extensions = payloads.plain_copy(
                gating.as_wire(result.modified_extensions), "modified_extensions", "modified extensions"
            )
        metadata = payloads.plain_copy(result.metadata, "metadata", "metadata") if result.metadata else None
        return [
            frames.REPLY_OK,
            result.continue_processing,
            violation,
            modified,
            extensions,
            metadata,
            result.retry_delay_ms,
            result.http_headers,
            self.state(ctx.state),
            self.state(ctx.request_state),
        ]


def _imports() -> None:
    """The engine's modules, imported once the process is set up (no plugin code or
    engine import runs before the death signal, memory limit and fds are in place)."""
    global payloads, driver, frames, gating, PluginContext, PluginViolation, _as_result, _decoder, _ALLOW, _ALLOW_FRAME
    from cpexrt import payloads
    from cpexrt._generated.records import PluginViolation
    from cpexrt.engine import driver, frames, gating
    from cpexrt.engine.executor import _as_result
    from cpexrt.plugin import PluginContext

    _decoder = payloads._decoder
    _ALLOW = [frames.REPLY_ALLOW]
    _ALLOW_FRAME = frames.pack(_ALLOW)


if __name__ == "__main__":
    main()
