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
import threading
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


_local = threading.local()


def pack(message: Any) -> bytes:
    """The frame of message. Each thread keeps one packer (msgpack.packb makes one,
    with its buffer, per call)."""
    try:
        packer = _local.packer
    except AttributeError:
        packer = _local.packer = msgpack.Packer(use_bin_type=True)
    body: bytes = packer.pack(message)
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


def write_all(fd: int, data: bytes | memoryview, deadline: float | None, sock: socket.socket | None = None) -> None:
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


_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)
# At most how many receives a channel skips spinning after spins that found nothing.
SPIN_SKIP_MAX = 256
# A pause longer than this between two tries of a spin means the process was
# switched out: a message found after it does not count as the spin's.
SPIN_GAP_NS = 10_000
_monotonic_ns = time.monotonic_ns


class Channel:
    """One end of a worker's socket pair with its own receive buffer (allocated once:
    a frame that fits is read with one recv_into, nothing allocated for the bytes).

    recv(spin_ns=...) first polls the socket without blocking for up to spin_ns,
    then blocks: when the peer runs on another core and answers within the spin (a
    quick plugin's reply, the next call of a busy host), this process is not put to
    sleep and woken from the other core (an inter-processor wake-up, dear on a VM).
    The spin is bounded and adaptive: one that ends without a message, or finds it
    only after this process was switched out (the peer ran on this core: spinning
    only delayed it), makes the channel skip spinning for its next 1, 2, 4 ...
    SPIN_SKIP_MAX receives (a loaded machine, a slow plugin, an idle host), and a
    spin that finds its message resets that. An idle channel sleeps in the kernel;
    one that gains nothing from spinning spends at most one spin every SPIN_SKIP_MAX
    receives."""

    __slots__ = ("sock", "fd", "_buf", "_view", "_blocking", "_poll", "_skip", "_backoff")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        # A blocking socket (the worker's end) with no deadline waits in recv itself.
        self._blocking = sock.getblocking()
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)  # POLLHUP and POLLERR come with it
        # poll, not a non-blocking recv, to look: a recv that finds nothing raises
        # BlockingIOError, several times dearer than a poll(0) that returns [].
        self._poll = poller.poll
        self._buf = bytearray(_CHUNK)
        self._view = memoryview(self._buf)
        self._skip = 0  # receives left that do not spin
        self._backoff = 1  # how many the next fruitless spin skips

    def send(self, data: bytes, deadline: float | None) -> None:
        """data to the peer by deadline (MSG_NOSIGNAL: a peer that died is FrameError)."""
        try:
            n = self.sock.send(data, _NOSIGNAL)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError as exc:
            raise FrameError(f"write failed: {exc}") from None
        if n < len(data):
            write_all(self.fd, memoryview(data)[n:], deadline, self.sock)

    def _recv_some(self, view: memoryview, deadline: float | None) -> int:
        """Bytes received into view (at least one), waiting up to deadline."""
        sock = self.sock
        poll = self._poll
        while True:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise FrameTimeout
                if not poll(max(int(left * 1000 + 0.999), 1)):
                    continue
            elif not self._blocking:
                poll(None)
            try:
                n = sock.recv_into(view, len(view))
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as exc:
                raise FrameError(f"read failed: {exc}") from None
            if not n:
                raise FrameError("the pipe closed")
            return n

    def _spin(self, spin_ns: int, deadline: float | None) -> bool:
        """Polls for up to spin_ns (not past deadline) whether a message came; keeps
        the channel's backoff (see the class)."""
        poll = self._poll
        now = _monotonic_ns()
        end = now + spin_ns
        if deadline is not None:
            end = min(end, int(deadline * 1e9))  # time.monotonic() seconds, as ns
        tries = 0
        held = True  # no pause between two tries: this process kept its core
        while True:
            if poll(0):
                ready = True
                break
            tries += 1
            last, now = now, _monotonic_ns()
            if now - last > SPIN_GAP_NS:
                held = False  # switched out: the peer may have run on this core
            if now >= end:
                ready = False
                break
        if ready and held:
            if tries:  # found by spinning while the peer ran on another core
                self._backoff = 1
        else:  # nothing came, or only after this process was switched out
            self._skip = self._backoff
            self._backoff = min(self._backoff * 2, SPIN_SKIP_MAX)
        return ready

    def recv(self, deadline: float | None, limit: int = MAX_FRAME, spin_ns: int = 0) -> Any:
        """The next message (see read_frame), spinning up to spin_ns before blocking."""
        view = self._view
        got = 0
        if spin_ns:
            if self._skip:
                self._skip -= 1
            elif self._spin(spin_ns, deadline):
                try:
                    got = self.sock.recv_into(view, _CHUNK, _DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    got = 0
                except OSError as exc:
                    raise FrameError(f"read failed: {exc}") from None
                else:
                    if not got:
                        raise FrameError("the pipe closed")
        if not got:
            got = self._recv_some(view, deadline)
        while got < HEADER.size:
            got += self._recv_some(view[got:], deadline)
        (size,) = HEADER.unpack_from(view)
        if size > limit:
            raise FrameError(f"a frame of {size} bytes is larger than the limit of {limit}")
        end_at = HEADER.size + size
        if got > end_at:
            raise FrameError("bytes after the end of a frame")
        if end_at <= _CHUNK:
            while got < end_at:
                got += self._recv_some(view[got:end_at], deadline)
            body = view[HEADER.size : end_at]
        else:
            big = bytearray(end_at)
            big[:got] = view[:got]
            whole = memoryview(big)
            while got < end_at:
                got += self._recv_some(whole[got : min(end_at, got + (1 << 20))], deadline)
            body = whole[HEADER.size :]
        try:
            return unpack(body)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise FrameError(f"undecodable frame: {exc}") from None
