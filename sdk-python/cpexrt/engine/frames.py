"""The worker protocol's framing: one message is a 4-byte little-endian length and
that many bytes of MessagePack (an array). Payloads and extensions travel as the
snapshots' own MessagePack bytes (bin fields), never re-encoded and never as JSON.

Host -> worker:  [OP_INIT, setup map] | [OP_CALL, call array] | [OP_SHUTDOWN]
Worker -> host:  [REPLY_OK, ...] | [REPLY_RAISED, why] | [REPLY_TIMEOUT] |
                 [REPLY_REFUSED, code, why] | [REPLY_READY, info] | [REPLY_FATAL, why]
"""

from __future__ import annotations

import errno
import os
import select
import struct
import time
from typing import Any

import msgpack

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

HEADER = struct.Struct("<I")
# No frame is larger than this, whatever a peer claims: above the default payload
# limit (10 MiB) plus extensions, state and framing.
MAX_FRAME = 64 * 1024 * 1024


class FrameError(Exception):
    """The pipe closed, or carried something that is not a frame."""


class FrameTimeout(Exception):
    """The deadline passed before a whole frame arrived or left."""


def pack(message: Any) -> bytes:
    body: bytes = msgpack.packb(message, use_bin_type=True)
    return HEADER.pack(len(body)) + body


def unpack(body: bytes) -> Any:
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


def read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    """n bytes from fd (non-blocking or not) by deadline; FrameError on end of file."""
    chunks = []
    while n:
        try:
            chunk = os.read(fd, min(n, 1 << 20))
        except BlockingIOError:
            _wait(fd, select.POLLIN, deadline)
            continue
        except OSError as exc:
            if exc.errno == errno.EINTR:
                continue
            raise FrameError(f"read failed: {exc}") from None
        if not chunk:
            raise FrameError("the pipe closed")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int, deadline: float | None, limit: int = MAX_FRAME) -> Any:
    """The next message from fd (non-blocking fd: bounded by deadline)."""
    (size,) = HEADER.unpack(read_exact(fd, HEADER.size, deadline))
    if size > limit:
        raise FrameError(f"a frame of {size} bytes is larger than the limit of {limit}")
    try:
        return unpack(read_exact(fd, size, deadline))
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise FrameError(f"undecodable frame: {exc}") from None


def write_all(fd: int, data: bytes, deadline: float | None) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            _wait(fd, select.POLLOUT, deadline)
            continue
        except OSError as exc:
            if exc.errno == errno.EINTR:
                continue
            raise FrameError(f"write failed: {exc}") from None
        view = view[n:]
