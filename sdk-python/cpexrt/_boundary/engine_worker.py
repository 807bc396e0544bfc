"""An engine worker process (plugin_settings.engine_workers): the whole engine of one
manager, serving the invokes that ffi/remote.c hands it, one at a time, over its end of
a socket pair. The host's boundary (cpexrt._boundary.remote) starts it, sets it up with
control calls (the config, the factories), and restarts it when it dies.

It does what Exports.invoke_with does in-process, from the bytes of the frame instead
of the caller's pointers: the same limits, checks, messages and result bytes. Its
request state (each request's context table, each call's background tasks) stays here,
named by ids; the host's C side maps its handles onto them and sends the ids the host
freed with its next call.

Frames (native byte order: both ends run on one machine), as in ffi/remote.c:
- request: u32 length (of what follows), u8 op, u8 payload type, u8 flags, u8 0, u64 id
  (the context of an invoke, the background of a wait), u32 hook, payload, extensions,
  request, options lengths, u32 number of freed ids; then the freed ids (u64 each, bit
  63 set for a background), then the hook, payload, extensions, request and options
  bytes. A control call is op 3 with its MessagePack body in the payload's place.
  Flags: which of payload (1), extensions (2; or absent), request (4), options (8) the
  C checker took as plain maps.
- reply: u32 length, i32 status (1: done, else the negative cpex status), u64 new
  context id, u64 background id, u32 data length, then the data: the result, the
  background errors or the control reply, or the error message.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import struct
import sys
import threading
from collections.abc import Callable
from typing import Any

from cpexrt._boundary.exports import (
    _MAX_MESSAGE,
    check_sizes,
    failure,
    hook_name_of,
    invoke_decoded,
    outcome_bytes,
)
from cpexrt.engine.worker import _die_with_parent, _lifeline, _protocol_fds
from cpexrt.errors import InvalidHandleError
from cpexrt.wire import pack, unpack

EVENT_DECISIONS = "d"
EVENT_LOG = "l"
EVENT_HEAD = struct.Struct("=I")

OP_INVOKE = 1
OP_WAIT = 2
OP_CONTROL = 3

REQUEST = struct.Struct("=IBBBBQ6I")
REPLY = struct.Struct("=IiQQI")
FREE_BACKGROUND = 1 << 63
_BUFFER = 1 << 16  # the read buffer kept between calls
OK = 1


class Events:
    """The worker's second socket: decision records and log records for the host
    (cpexrt._boundary.remote reads them and hands them to the manager's sink, file and
    the host's logging). Frames: u32 length, then MessagePack [kind, value]."""

    def __init__(self, sock: socket.socket | None) -> None:
        self.sock = sock
        self.lock = threading.Lock()

    def send(self, kind: str, value: Any) -> None:
        if self.sock is None:
            return
        import msgpack  # type: ignore[import-untyped, unused-ignore]

        body = msgpack.packb([kind, value], use_bin_type=True, default=repr)
        with self.lock:
            try:
                self.sock.sendall(EVENT_HEAD.pack(len(body)) + body)
            except OSError:
                self.sock = None  # the host went away; the lifeline ends the process


class ForwardedDecisions:
    """The worker engine's DecisionLog: its records go to the host, which writes the
    config's decision_records.file and calls the manager's sink (one file, written by
    one process). active is what the host says (a sink or a file there)."""

    def __init__(self, events: Events) -> None:
        from cpexrt.engine.outbox import Outbox

        self.active = False
        self.include_values = False
        self.events = events
        self._outbox = Outbox("cpex-decisions", self._deliver)

    def open_file(self, file: str | None, base_dir: str | None) -> None:
        return None  # the host opens it

    def use(self, opened: Any, include_values: bool) -> None:
        self.include_values = include_values

    def set_sink(self, sink: Any) -> None:
        raise AssertionError("the host holds the sink")

    def emit(self, record: dict[str, Any]) -> None:
        self._outbox.offer(record)

    def flush(self, timeout: float = 5.0) -> bool:
        return bool(self._outbox.flush(timeout))

    def close(self, timeout: float = 5.0) -> None:
        self._outbox.flush(timeout)

    def _deliver(self, batch: list[Any]) -> None:
        self.events.send(EVENT_DECISIONS, batch)


class LogRelay(logging.Handler):
    """Sends the worker's cpexrt log records to the host, which logs them again."""

    def __init__(self, events: Events) -> None:
        super().__init__(logging.NOTSET)
        self.events = events

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string still gets through
            message = str(record.msg)
        entry = {k: v for k, v in record.__dict__.items() if k not in _RELAYED_NOT}
        entry["msg"], entry["args"] = message, None
        if record.exc_info and record.exc_info[1] is not None:
            import traceback

            entry["exc_text"] = "".join(traceback.format_exception(*record.exc_info))
        entry["engine_worker_pid"] = os.getpid()
        self.events.send(EVENT_LOG, entry)


_RELAYED_NOT = frozenset({"msg", "args", "exc_info", "exc_text", "stack_info"})


class Server:
    def __init__(self, events: Events | None = None) -> None:
        self.events = events or Events(None)
        self.forwarding = False
        self.engine = self.new_engine()
        self.contexts: dict[int, Any] = {}
        self.backgrounds: dict[int, Any] = {}
        self.ids = itertools.count(1)
        self.hook_names: dict[bytes, str] = {}
        self.config: tuple[str, str | None] | None = None
        self.factories: list[tuple[str, str]] = []

    def new_engine(self) -> Any:
        from cpexrt.engine.manager import Engine

        engine = Engine()
        engine.engine_worker = True  # its config's engine_workers is this process's pool
        decisions = ForwardedDecisions(self.events)
        decisions.active = self.forwarding
        engine.decisions = decisions  # type: ignore[assignment]
        return engine

    # -- the loop ----------------------------------------------------------------------

    def serve(self, sock: socket.socket) -> None:
        # The loop runs once per call: what it touches is bound to locals once, and an
        # invoke's frame is taken apart here (one struct read, its parts copied out of
        # the read buffer) with no call but the engine's.
        recv_into, sendall = sock.recv_into, sock.sendall
        unpack_head, pack_reply = REQUEST.unpack_from, REPLY.pack
        reply_head = REPLY.size - 4
        contexts, backgrounds, hook_names = self.contexts, self.backgrounds, self.hook_names
        next_id = self.ids.__next__
        size = _BUFFER
        buf = bytearray(size)
        view = memoryview(buf)
        head = REQUEST.size
        got = 0  # bytes in buf: the next frame's start, and what came with it
        while True:
            # The host may have sent the next frame already (ffi/remote.c queues up to
            # CPEX__DEPTH calls on a worker): what a read brought past this frame is
            # kept for the next one.
            while got < head:
                more = recv_into(view[got:])
                if not more:
                    os._exit(0)  # the host went away
                got += more
            (length, op, payload_type, flags, _, ident, hook_len, payload_len, extensions_len, request_len, options_len,
             nfree) = unpack_head(buf)  # fmt: skip
            total = length + 4
            if total > size:  # a large call: a buffer of its size, for this call only
                view.release()
                grown = bytearray(total)
                grown[:got] = buf[:got]
                buf, view = grown, memoryview(grown)
            while got < total:
                more = recv_into(view[got:total])
                if not more:
                    os._exit(0)
                got += more
            pos = head
            if nfree:
                pos += nfree * 8
                self.forget(struct.unpack_from(f"={nfree}Q", buf, head))
            context_id = background_id = 0
            try:
                if op == OP_INVOKE:
                    end = pos + hook_len
                    raw = bytes(view[pos:end])
                    hook = hook_names.get(raw)
                    if hook is None:
                        hook = hook_name_of(hook_names, raw)
                    ctx = None
                    if ident:
                        ctx = contexts.get(ident)
                        if ctx is None:
                            raise InvalidHandleError("context: the context handle was freed, consumed or shut down")
                    engine = self.engine
                    serving = engine.serving()
                    try:
                        limits = serving.limits
                        if not 0 < payload_len <= limits.max_payload_bytes or extensions_len > limits.max_extensions_bytes:
                            check_sizes(limits, payload_len, extensions_len)
                        pos, end = end, end + payload_len
                        body_wire = bytes(view[pos:end])
                        ext_wire = request_wire = options_wire = None
                        if extensions_len:
                            pos, end = end, end + extensions_len
                            ext_wire = bytes(view[pos:end])
                        # ffi/remote.c refused a request or options over the limit before sending.
                        if request_len:
                            pos, end = end, end + request_len
                            request_wire = bytes(view[pos:end])
                        if options_len:
                            options_wire = bytes(view[end : end + options_len])
                        outcome = invoke_decoded(
                            engine, hook, payload_type, body_wire, ext_wire, request_wire, options_wire, flags, ctx, serving
                        )
                        try:
                            result = outcome_bytes(outcome, payload_type)
                        except BaseException:
                            if ctx is not None:
                                ctx.revive()  # the call failed after all: the caller keeps its context
                            raise
                    finally:
                        serving.leave()
                    if ident:
                        contexts.pop(ident, None)
                    if outcome.context is not None:
                        context_id = next_id()
                        contexts[context_id] = outcome.context
                    if outcome.background is not None:
                        background_id = next_id()
                        backgrounds[background_id] = outcome.background
                    status = OK
                elif op == OP_WAIT:
                    result, status = self.wait(ident), OK
                elif op == OP_CONTROL:
                    result, status = self.control(bytes(view[pos : pos + payload_len])), OK
                else:
                    os._exit(71)
            except BaseException as exc:  # noqa: BLE001 - every failure is an answer
                status, result = _failure(exc)
                context_id = background_id = 0
            sendall(pack_reply(reply_head + len(result), status, context_id, background_id, len(result)) + result)
            rest = got - total
            if total > _BUFFER:
                view.release()
                kept = buf[total:got]
                buf = bytearray(max(_BUFFER, rest))
                buf[:rest] = kept
                size = len(buf)
                view = memoryview(buf)
            elif rest:
                buf[:rest] = buf[total:got]
            got = rest
            if op == OP_CONTROL and self.engine_shut_down():
                os._exit(0)

    def forget(self, ids: tuple[int, ...]) -> None:
        for ident in ids:
            if ident & FREE_BACKGROUND:
                self.backgrounds.pop(ident & ~FREE_BACKGROUND, None)
            else:
                self.contexts.pop(ident, None)

    def engine_shut_down(self) -> bool:
        return bool(self.engine._shut_down)

    def wait(self, ident: int) -> bytes:
        tasks = self.backgrounds.get(ident)
        if tasks is None:
            raise InvalidHandleError("background: the background handle was freed or shut down")
        return pack([e.to_wire() for e in tasks.wait()], "background errors")

    # -- control calls (cpexrt._boundary.remote) ---------------------------------------

    def control(self, body: bytes) -> bytes:
        message = unpack(body, "control call", 1 << 20)
        op, args = message[0], message[1:]
        engine = self.engine
        answer: Any = None
        if op == "setup":
            factories, text, base_dir, forwarding, level = args
            self.forwarding = forwarding
            engine.decisions.active = forwarding
            logging.getLogger("cpexrt").setLevel(level)
            self.take_config(engine.load_config, factories, text, base_dir)
        elif op == "load":
            self.take_config(engine.load_config, *args)
        elif op == "initialize":
            engine.initialize()
        elif op == "undo_initialize":
            # Another worker's initialize failed: this one's plugins are shut down (in
            # reverse order, by shutdown) and its config loaded again, not initialized.
            engine.shutdown()
            self.contexts.clear()
            self.backgrounds.clear()
            self.engine = engine = self.new_engine()
            for kind, target in self.factories:
                engine.register_factory(kind, target)
            if self.config is not None:
                engine.load_config(*self.config)
        elif op == "reload":
            self.take_config(engine.reload_config, *args)
        elif op == "shutdown":
            self.contexts.clear()
            self.backgrounds.clear()
            engine.shutdown()
        elif op == "decisions":
            self.forwarding = engine.decisions.active = bool(args[0])
        elif op == "log_level":
            logging.getLogger("cpexrt").setLevel(args[0])
        elif op == "has_hooks":
            return pack(engine.has_hooks_for(args[0]), "answer")
        elif op == "stats":
            answer = engine.plugin_stats()
            return pack(answer, "plugin stats")
        elif op != "info":
            raise ValueError(f"unknown control call {op!r}")
        return pack(self.info(), "info")

    def take_config(self, load: Callable[[str, str | None], Any], factories: list[Any], text: str, base_dir: str | None) -> None:
        """The host's config (and the kinds it registered) loaded by load (the engine's
        load_config or reload_config), kept for an undo_initialize."""
        self.add_factories(factories)
        load(text, base_dir)
        self.config = (text, base_dir)

    def add_factories(self, factories: list[Any]) -> None:
        """The host's registered kinds this engine does not know yet (the host refused
        a kind registered twice before sending it)."""
        known = {kind for kind, _ in self.factories}
        for kind, target in factories:
            if kind not in known:
                self.engine.register_factory(kind, target)
                self.factories.append((kind, target))

    def info(self) -> dict[str, Any]:
        engine = self.engine
        if engine._shut_down:
            return {"pid": os.getpid(), "shut_down": True}
        limits = engine.limits
        return {
            "pid": os.getpid(),
            "hooks": engine.hooks_with_plugins(),
            "names": engine.plugin_names(),
            "initialized": engine.is_initialized(),
            "limits": [limits.max_payload_bytes, limits.max_extensions_bytes, limits.max_collection_entries],
            "invoke_timeout": engine.config.plugin_settings.invoke_timeout,
        }


def _failure(exc: BaseException) -> tuple[int, bytes]:
    status, message = failure(exc)
    return status, message.encode("utf-8", "replace")[:_MAX_MESSAGE]


def main() -> None:
    _die_with_parent()
    proto_in, proto_out = _protocol_fds()
    os.close(proto_out)  # one socket both ways: fd 0 and 1 were its two ends' copies
    _lifeline(proto_in)
    sock = socket.socket(fileno=proto_in)
    sock.setblocking(True)
    events_fd = int(os.environ.pop("CPEX_EVENTS_FD", "-1"))
    events = Events(socket.socket(fileno=events_fd) if events_fd >= 0 else None)
    logger = logging.getLogger("cpexrt")
    logger.addHandler(LogRelay(events))
    logger.propagate = False  # the host logs them: not twice on this process's stderr
    try:
        Server(events).serve(sock)
    except BaseException:  # noqa: BLE001 - the host sees the closed socket, and fails the call
        import traceback

        traceback.print_exc(file=sys.stderr)
        os._exit(1)


if __name__ == "__main__":
    main()
