"""distlock's gRPC transport: one watch stream and one keepalive stream per session.

Against one real etcd member (the conformance suite, tests/integration/test_locks.py,
runs the lock itself against three). What is checked here is the transport's promise:
every waiter of a session shares the session's one Watch stream, keepalives reuse one
LeaseKeepAlive stream, and a broken stream wakes its waiters, who watch again on a new
one and still get the lock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from distlock import _etcd_grpc
from distlock._grant import Grant
from distlock.etcd import EtcdBackend
from tests.support.etcd import EtcdCluster
from tests.support.procs import wait_until

WAIT = 30.0  # an upper bound for what should happen at once; never a measured figure


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    cluster = EtcdCluster(tmp_path_factory.mktemp("etcd"), size=1).start()
    try:
        yield cluster.endpoints[0]
    finally:
        cluster.stop()


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


def _wait_for_locks(waiter: EtcdBackend, names: list[str]) -> tuple[list[Grant], list[Any]]:
    """Acquire every name on its own thread of one session; the grants once all return."""
    grants: list[Grant] = []
    errors: list[Any] = []

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
    return grants, [threads, errors]


def _queued(observer: EtcdBackend, names: list[str], count: int) -> bool:
    return all(len(observer.inspect(name).waiters) == count for name in names)


def test_every_waiter_of_a_session_shares_one_watch_stream(
        etcd: str, streams: list[tuple[str, _etcd_grpc._Stream]]) -> None:
    names = [f"shared-{i}" for i in range(4)]
    holder, waiter = EtcdBackend([etcd], ttl=10), EtcdBackend([etcd], ttl=10)
    with holder, waiter:
        held = [holder.acquire(name, timeout=WAIT) for name in names]
        grants, (threads, errors) = _wait_for_locks(waiter, names)
        for grant in held:
            assert grant is not None
            holder.release(grant)
        for thread in threads:
            thread.join(WAIT)
        assert not errors, errors
        assert sorted(g.name for g in grants) == names
    watch_streams = [s for method, s in streams if method.endswith("/Watch")]
    assert len(watch_streams) == 1, f"{len(watch_streams)} watch streams for one session"
    keepalives = [m for m, _ in streams if m.endswith("/LeaseKeepAlive")]
    assert len(keepalives) <= 2, keepalives  # at most one per session


def test_a_broken_watch_stream_wakes_its_waiters_and_they_watch_again(
        etcd: str, streams: list[tuple[str, _etcd_grpc._Stream]]) -> None:
    names = ["broken-0", "broken-1"]
    holder = EtcdBackend([etcd], ttl=10)
    waiter = EtcdBackend([etcd], ttl=10, recheck=3600)  # no periodic re-checks
    with holder, waiter:
        held = [holder.acquire(name, timeout=WAIT) for name in names]
        grants, (threads, errors) = _wait_for_locks(waiter, names)

        def watching() -> bool:
            return any(m.endswith("/Watch") for m, _ in streams) and len(
                waiter._watches._watches) == len(names)

        wait_until(watching, timeout=WAIT, what="both waiters to watch")
        first = next(s for m, s in streams if m.endswith("/Watch"))
        first._call.cancel()  # as a member dying would end it
        wait_until(lambda: len([m for m, _ in streams if m.endswith("/Watch")]) >= 2,
                   timeout=WAIT, what="the waiters to watch on a new stream")
        for grant in held:
            assert grant is not None
            holder.release(grant)
        for thread in threads:
            thread.join(WAIT)
        assert not errors, errors
        assert sorted(g.name for g in grants) == names
