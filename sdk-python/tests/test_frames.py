"""The worker protocol's framing (cpexrt.engine.frames): frames.Channel, the reader
and writer on a worker's call path, against the plain read_frame / write_all it
replaces there. Both ends of a socket pair in this process."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from cpexrt.engine import frames

SPIN = 200_000  # ns: long enough that a spin is seen to find (or not find) a message


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    host, worker = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    host.setblocking(False)  # as isolation._Worker sets it; the worker's end blocks
    yield host, worker
    host.close()
    worker.close()


@pytest.mark.parametrize("spin", [0, SPIN])
def test_a_message_crosses_both_ways(pair: tuple[socket.socket, socket.socket], spin: int) -> None:
    host, worker = frames.Channel(pair[0]), frames.Channel(pair[1])
    call = [frames.OP_CALL, "tool_pre_invoke", 0, b"\x81\xa1a\x01", None, {"n": 1}, None, None, 12.5]
    for _ in range(3):  # the kept buffer is reused
        host.send(frames.pack(call), time.monotonic() + 5)
        assert worker.recv(None, frames.MAX_FRAME, spin) == call
        worker.send(frames.pack([frames.REPLY_ALLOW]), None)
        assert host.recv(time.monotonic() + 5, frames.MAX_FRAME, spin) == [frames.REPLY_ALLOW]


def test_frames_larger_than_the_buffer_and_split_frames_arrive_whole(pair: tuple[socket.socket, socket.socket]) -> None:
    host, worker = frames.Channel(pair[0]), frames.Channel(pair[1])
    big = [frames.REPLY_OK, b"x" * 300_000, "y" * 70_000]
    sender = threading.Thread(target=worker.send, args=(frames.pack(big), None))
    sender.start()  # more than the socket buffer: the host reads while it is written
    assert host.recv(time.monotonic() + 10) == big
    sender.join()
    data = frames.pack(["split", b"z" * 1000])

    def trickle() -> None:
        for i in range(0, len(data), 3):
            pair[0].send(data[i : i + 3])
            time.sleep(0.0005 if i < 30 else 0)

    writer = threading.Thread(target=trickle)
    writer.start()
    assert worker.recv(None, frames.MAX_FRAME, SPIN) == ["split", b"z" * 1000]
    writer.join()


@pytest.mark.parametrize("spin", [0, SPIN])
def test_a_closed_peer_is_a_frame_error(pair: tuple[socket.socket, socket.socket], spin: int) -> None:
    host = frames.Channel(pair[0])
    pair[1].close()
    with pytest.raises(frames.FrameError, match="closed"):
        host.recv(time.monotonic() + 5, frames.MAX_FRAME, spin)
    with pytest.raises(frames.FrameError):
        host.send(frames.pack([frames.OP_SHUTDOWN]), time.monotonic() + 5)


def test_a_peer_that_closes_mid_frame_is_a_frame_error(pair: tuple[socket.socket, socket.socket]) -> None:
    worker = frames.Channel(pair[1])
    pair[0].send(frames.pack(["cut", b"w" * 100])[:20])
    pair[0].close()
    with pytest.raises(frames.FrameError, match="closed"):
        worker.recv(None, frames.MAX_FRAME, SPIN)


@pytest.mark.parametrize("spin", [0, SPIN])
def test_nothing_by_the_deadline_is_a_frame_timeout(pair: tuple[socket.socket, socket.socket], spin: int) -> None:
    host = frames.Channel(pair[0])
    deadline = time.monotonic() + 0.05
    with pytest.raises(frames.FrameTimeout):
        host.recv(deadline, frames.MAX_FRAME, spin)
    assert time.monotonic() >= deadline
    # The channel still works after a spin that found nothing.
    pair[1].send(frames.pack(["late"]))
    assert host.recv(time.monotonic() + 5, frames.MAX_FRAME, spin) == ["late"]


def test_a_frame_over_the_limit_or_undecodable_is_a_frame_error(pair: tuple[socket.socket, socket.socket]) -> None:
    host = frames.Channel(pair[0])
    pair[1].send(frames.pack(["x" * 200]))
    with pytest.raises(frames.FrameError, match="larger than the limit"):
        host.recv(time.monotonic() + 5, 100)
    host2, worker2 = socket.socketpair()
    try:
        channel = frames.Channel(worker2)
        host2.send(frames.HEADER.pack(1) + b"\xc1")  # 0xc1: never used in MessagePack
        with pytest.raises(frames.FrameError, match="undecodable"):
            channel.recv(None)
    finally:
        host2.close()
        worker2.close()


def test_bytes_after_a_frame_are_a_frame_error(pair: tuple[socket.socket, socket.socket]) -> None:
    """One peer writes one frame at a time: a read never holds two."""
    host = frames.Channel(pair[0])
    pair[1].send(frames.pack(["one"]) + frames.pack(["two"]))
    time.sleep(0.05)  # both frames are in the socket before the read
    with pytest.raises(frames.FrameError, match="after the end"):
        host.recv(time.monotonic() + 5)
