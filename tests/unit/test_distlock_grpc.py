"""distlock's gRPC transport: one watch stream and one keepalive stream per session.

Against one real etcd member (the conformance suite, tests/integration/test_locks.py,
runs the lock itself against three). What is checked here is the transport's promise:
every waiter of a session shares the session's one Watch stream, keepalives reuse one
LeaseKeepAlive stream, and a broken stream wakes its waiters, who watch again on a new
one and still get the lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from distlock import _etcd_grpc
from distlock._grant import Grant
from distlock.etcd import EtcdBackend
from tests.support.procs import wait_until

WAIT = 30.0  # an upper bound for what should happen at once; never a measured figure


@pytest.fixture
def streams(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, _etcd_grpc._Stream]]:
    """Every stream the transport opens, with its gRPC method."""
    opened: list[tuple[str, _etcd_grpc._Stream]] = []
    real_init = _etcd_grpc._Stream.__init__

    def recording_init(stream: _etcd_grpc._Stream, client: _etcd_grpc.Client, method: str,
                       *args: Any, **kwargs: Any) -> None:
        real_init(stream, client, method, *args, **kwargs)
        opened.append((method, stream))

    monkeypatch.setattr(_etcd_grpc._Stream, "__init__", recording_init)
    return opened


def _watch_streams(streams: list[tuple[str, _etcd_grpc._Stream]]) -> list[_etcd_grpc._Stream]:
    return [stream for method, stream in streams if method.endswith("/Watch")]


def _hand_over(holder: EtcdBackend, waiter: EtcdBackend, names: list[str],
               while_waiting: Callable[[], None] = lambda: None) -> None:
    """``holder`` takes every name, ``waiter`` queues for each on a thread of its own;
    once all of them watch, ``while_waiting`` runs, then the holder lets go and every
    waiter must be granted."""
    held = [holder.acquire(name, timeout=WAIT) for name in names]
    grants: list[Grant] = []
    errors: list[BaseException] = []

    def wait(name: str) -> None:
        try:
            grant = waiter.acquire(name, timeout=WAIT)
            assert grant is not None, f"{name} timed out"
            grants.append(grant)
        except Exception as error:  # noqa: BLE001 - reported by the test
            errors.append(error)

    threads = [threading.Thread(target=wait, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(waiter._watches._watches) == len(names), timeout=WAIT,
               what="every waiter to watch its predecessor")
    while_waiting()
    for grant in held:
        assert grant is not None
        holder.release(grant)
    for thread in threads:
        thread.join(WAIT)
    assert not errors, errors
    assert sorted(g.name for g in grants) == names


def test_every_waiter_of_a_session_shares_one_watch_stream(
        etcd: str, streams: list[tuple[str, _etcd_grpc._Stream]]) -> None:
    holder, waiter = EtcdBackend([etcd], ttl=10), EtcdBackend([etcd], ttl=10)
    with holder, waiter:
        _hand_over(holder, waiter, [f"shared-{i}" for i in range(4)])
    assert len(_watch_streams(streams)) == 1, "more than one watch stream for one session"
    keepalives = [m for m, _ in streams if m.endswith("/LeaseKeepAlive")]
    assert len(keepalives) <= 2, keepalives  # at most one per session


def test_a_broken_watch_stream_wakes_its_waiters_and_they_watch_again(
        etcd: str, streams: list[tuple[str, _etcd_grpc._Stream]]) -> None:
    holder = EtcdBackend([etcd], ttl=10)
    waiter = EtcdBackend([etcd], ttl=10, recheck=3600)  # no periodic re-checks

    def break_the_stream() -> None:
        _watch_streams(streams)[0]._call.cancel()  # as a member dying would end it
        wait_until(lambda: len(_watch_streams(streams)) >= 2 and
                   len(waiter._watches._watches) == 2, timeout=WAIT,
                   what="the waiters to watch again on a new stream")

    with holder, waiter:
        _hand_over(holder, waiter, ["broken-0", "broken-1"], break_the_stream)


def test_a_waiter_that_has_waited_before_is_granted_without_a_read(
        etcd: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A handoff is the holder's delete and one watch event: a waiter whose session
    already watches the name's queue sends its enqueue transaction and nothing else
    (no watch created per wait, no read to confirm it is first)."""
    calls: list[tuple[_etcd_grpc.Client, str]] = []
    real_attempt = _etcd_grpc.Client._attempt

    def recording(self: _etcd_grpc.Client, index: int, method: str, request: Any,  # noqa: PLR0917
                  response_type: Any, timeout: float) -> Any:
        calls.append((self, method.rsplit("/", 1)[1]))
        return real_attempt(self, index, method, request, response_type, timeout)

    monkeypatch.setattr(_etcd_grpc.Client, "_attempt", recording)
    name = "granted-without-a-read"
    first, second = EtcdBackend([etcd], ttl=10, recheck=3600), EtcdBackend([etcd], ttl=10,
                                                                           recheck=3600)

    def hand_over(holder: EtcdBackend, grant: Grant, waiter: EtcdBackend) -> tuple[Grant,
                                                                                  list[str]]:
        granted: list[Grant | None] = []
        calls.clear()
        thread = threading.Thread(target=lambda: granted.append(waiter.acquire(name,
                                                                               timeout=WAIT)))
        thread.start()
        wait_until(lambda: len(holder.inspect(name).waiters) == 1, timeout=WAIT,
                   what="the waiter queued")
        holder.release(grant)
        thread.join(WAIT)
        assert granted, "the waiter's acquire did not return"
        assert granted[0] is not None, "the waiter was not granted"
        return granted[0], [method for client, method in calls if client is waiter._client]

    with first, second:
        grant = first.acquire(name, timeout=WAIT)
        assert grant is not None
        grant, _ = hand_over(first, grant, second)   # second's first wait opens its watch
        grant, _ = hand_over(second, grant, first)   # and first's
        grant, sent = hand_over(first, grant, second)
        assert sent == ["Txn"], f"a waiter with a live watch sent {sent}"
        second.release(grant)
