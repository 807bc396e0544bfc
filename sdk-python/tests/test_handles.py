"""The boundary's handle table (cpexrt._boundary.handles): lock-free, so these check
what the lock used to guarantee: a token is taken once, never reissued, and a dead or
mistyped token is refused, named."""

from __future__ import annotations

import threading

import pytest

from cpexrt._boundary.handles import HandleTable, Kind
from cpexrt.errors import InvalidHandleError


def test_a_taken_token_is_dead_and_never_reissued() -> None:
    table: HandleTable[object] = HandleTable()
    token = table.issue(Kind.CONTEXT, "state")
    assert table.get(Kind.CONTEXT, token, "context") == "state"
    assert table.take(Kind.CONTEXT, token, "context") == "state"
    with pytest.raises(InvalidHandleError, match="was freed, consumed or shut down"):
        table.take(Kind.CONTEXT, token, "context")
    with pytest.raises(InvalidHandleError, match="was freed, consumed or shut down"):
        table.get(Kind.CONTEXT, token, "context")
    issued = {table.issue(Kind.CONTEXT, i) for i in range(1000)}
    assert token not in issued and len(issued) == 1000


def test_a_token_of_another_kind_is_refused_and_kept() -> None:
    table: HandleTable[object] = HandleTable()
    token = table.issue(Kind.BACKGROUND, "tasks")
    with pytest.raises(InvalidHandleError, match="expected a context handle, got a background handle"):
        table.take(Kind.CONTEXT, token, "context")
    table.discard(Kind.CONTEXT, token)  # the wrong kind: nothing removed
    assert table.take(Kind.BACKGROUND, token, "background") == "tasks"
    with pytest.raises(InvalidHandleError, match="the context handle is NULL"):
        table.take(Kind.CONTEXT, 0, "context")


def test_racing_takes_of_one_token_succeed_once() -> None:
    table: HandleTable[object] = HandleTable()
    tokens = [table.issue(Kind.CONTEXT, i) for i in range(2000)]
    wins: list[int] = []
    losses: list[int] = []
    start = threading.Barrier(4)

    def taker() -> None:
        start.wait()
        for token in tokens:
            try:
                table.take(Kind.CONTEXT, token, "context")
                wins.append(token)
            except InvalidHandleError:
                losses.append(token)

    threads = [threading.Thread(target=taker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == sorted(tokens)  # each exactly once
    assert len(losses) == 3 * len(tokens)
    assert len(table) == 0


def test_issues_racing_a_release_and_counts() -> None:
    table: HandleTable[object] = HandleTable()
    owner, other = object(), object()
    kept = [table.issue(Kind.CONTEXT, i, owner=other) for i in range(100)]
    stop = threading.Event()

    def issuer() -> None:
        while not stop.is_set():
            table.issue(Kind.BACKGROUND, None, owner=owner)

    t = threading.Thread(target=issuer)
    t.start()
    try:
        for _ in range(50):
            table.release_owned_by(owner)  # never "dictionary changed size during iteration"
            table.counts()
    finally:
        stop.set()
        t.join()
    table.release_owned_by(owner)
    assert table.counts() == {Kind.MANAGER: 0, Kind.CONTEXT: 100, Kind.BACKGROUND: 0}
    assert all(table.get(Kind.CONTEXT, token, "context") is not None for token in kept)
