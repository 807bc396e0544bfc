"""The worker protocol's framing: one message is a 4-byte little-endian length and
that many bytes of MessagePack (an array). Payloads and extensions travel as the
snapshots' own MessagePack bytes (bin fields), never re-encoded and never as JSON.

Host -> worker:  [OP_INIT, setup map] | [OP_CALL, call array] | [OP_SHUTDOWN]
Worker -> host:  [REPLY_ALLOW] | [REPLY_OK, ...] | [REPLY_RAISED, why] | [REPLY_TIMEOUT] |
                 [REPLY_REFUSED, code, why] | [REPLY_READY, info] | [REPLY_FATAL, why]
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import time
from typing import Any

import msgpack  # type: ignore[import-untyped, unused-ignore]  # untyped: the package passes mypy wherever it is installed

OP_INIT = 1
OP_CALL = 2
OP_SHUTDOWN = 3

REPLY_OK = 0
REPLY_RAISED = 1
REPLY_TIMEOUT = 2
REPLY_REFUSED = 3
REPLY_READY = 4
REPLY_FATAL = 5
REPLY_DONE = 6
REPLY_ALLOW = 7  # a plain allow, and the plugin's state and the request state are empty

HEADER = struct.Struct("<I")
# No frame is larger than this, whatever a peer claims: above the default payload
# limit (10 MiB) plus extensions, state and framing.
MAX_FRAME = 64 * 1024 * 1024
# Below glibc's mmap threshold: a read buffer is not an mmap / munmap per frame.
_CHUNK = 64 * 1024
_NOSIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)


class FrameError(Exception):
    """The pipe closed, or carried something that is not a frame."""


class FrameTimeout(Exception):
    """The deadline passed before a whole frame arrived or left."""


def pack(message: Any) -> bytes:
    body: bytes = msgpack.packb(message, use_bin_type=True)
    return HEADER.pack(len(body)) + body


def unpack(body: bytes | memoryview) -> Any:
    return msgpack.unpackb(body, raw=False, strict_map_key=False)


def _wait(fd: int, events: int, deadline: float | None) -> None:
    """Blocks until fd is ready for events, or FrameTimeout at deadline."""
    poller = select.poll()
    poller.register(fd, events)
    while True:
        if deadline is None:
            timeout_ms = None
        else:
            left = deadline - time.monotonic()
            if left <= 0:
                raise FrameTimeout
            timeout_ms = max(int(left * 1000 + 0.999), 1)
        if poller.poll(timeout_ms):
            return


def _read_some(fd: int, n: int, deadline: float | None) -> bytes:
    """Up to n bytes (at least one) from fd by deadline; FrameError at end of file."""
    while True:
        try:
            chunk = os.read(fd, n)
        except BlockingIOError:
            _wait(fd, select.POLLIN, deadline)
            continue
        except OSError as exc:
            if exc.errno == errno.EINTR:
                continue
            raise FrameError(f"read failed: {exc}") from None
        if not chunk:
            raise FrameError("the pipe closed")
        return chunk


def read_frame(fd: int, deadline: float | None, limit: int = MAX_FRAME) -> Any:
    """The next message from fd (non-blocking fd: bounded by deadline). One peer
    writes one frame at a time, so a read never takes bytes of the next frame; most
    frames arrive in a single read."""
    data = _read_some(fd, _CHUNK, deadline)
    while len(data) < HEADER.size:
        data += _read_some(fd, HEADER.size - len(data), deadline)
    (size,) = HEADER.unpack_from(data)
    if size > limit:
        raise FrameError(f"a frame of {size} bytes is larger than the limit of {limit}")
    end = HEADER.size + size
    if len(data) > end:
        raise FrameError("bytes after the end of a frame")
    if len(data) < end:
        parts = [data]
        got = len(data)
        while got < end:
            chunk = _read_some(fd, min(end - got, 1 << 20), deadline)
            parts.append(chunk)
            got += len(chunk)
        data = b"".join(parts)
    try:
        return unpack(memoryview(data)[HEADER.size :])
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise FrameError(f"undecodable frame: {exc}") from None


def write_all(fd: int, data: bytes, deadline: float | None, sock: socket.socket | None = None) -> None:
    """data to fd by deadline; through sock.send with MSG_NOSIGNAL when given (a peer
    that died is then FrameError, not SIGPIPE)."""
    view = memoryview(data)
    while view:
        try:
            n = sock.send(view, _NOSIGNAL) if sock is not None else os.write(fd, view)
        except BlockingIOError:
            _wait(fd, select.POLLOUT, deadline)
            continue
        except OSError as exc:
            if exc.errno == errno.EINTR:
                continue
            raise FrameError(f"write failed: {exc}") from None
        view = view[n:]
