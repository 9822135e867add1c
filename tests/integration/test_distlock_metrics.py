"""distlock's Prometheus metrics on a real etcd: what a waiter, a handoff and a loss record.

Two sessions of the etcd backend contend for one lock with ``distlock.metrics`` enabled in a
registry of the test's own; the registry is read back as Prometheus would scrape it (the text
format, parsed by prometheus_client's own parser). A loss is real: etcd ends the holder's lease
(a revoke, what its lessor does when a TTL runs out) and the holder's keepalive hears it. Names
and labels are the ones the dashboard and the DistlockHeldTooLong rule read.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from distlock import BackendOptions, LockTimeout, open_backend
from distlock import metrics as lock_metrics
from tests.support.etcd import EtcdCluster, gateway
from tests.support.procs import wait_until

WAIT = 30.0


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return samples(registry).get((name, tuple(sorted(labels.items()))))


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(tmp_path_factory.mktemp("etcd"), size=1)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    registry = CollectorRegistry()
    measured = lock_metrics.enable(registry)
    try:
        yield registry
    finally:
        measured.stop()


def test_waits_handoffs_and_time_held_are_recorded(etcd: EtcdCluster,
                                                   registry: CollectorRegistry) -> None:
    options = BackendOptions(endpoints=tuple(etcd.endpoints), ttl=5)
    with open_backend("etcd", options) as first, open_backend("etcd", options) as second:
        holder, waiter = first.lock("deploy"), second.lock("deploy")
        holder.acquire(timeout=WAIT)
        assert value(registry, "distlock_handoffs_total", lock="deploy") == 1
        assert value(registry, "distlock_lock_held_since_timestamp_seconds", lock="deploy")
        with pytest.raises(LockTimeout):
            waiter.acquire(timeout=0.2)
        assert value(registry, "distlock_acquire_seconds_count", lock="deploy",
                     outcome="not_granted") == 1
        granted = threading.Event()

        def wait_for_it() -> None:
            waiter.acquire(timeout=WAIT)
            granted.set()

        thread = threading.Thread(target=wait_for_it, daemon=True)
        thread.start()
        holder.release()
        assert granted.wait(WAIT)
        thread.join(WAIT)
        assert value(registry, "distlock_handoffs_total", lock="deploy") == 2
        assert value(registry, "distlock_acquire_seconds_count", lock="deploy",
                     outcome="granted") == 2
        assert value(registry, "distlock_held_seconds_count", lock="deploy") == 1
        waiter.release()
        assert value(registry, "distlock_held_seconds_count", lock="deploy") == 2
        # Nothing held: no "held since" series, so the held-too-long rule cannot fire.
        assert value(registry, "distlock_lock_held_since_timestamp_seconds",
                     lock="deploy") is None
        assert value(registry, "distlock_lost_total", lock="deploy") in (None, 0)


def _leases(etcd: EtcdCluster) -> set[int]:
    answer = gateway(etcd.endpoints[0], "/v3/lease/leases", {})
    return {int(lease["ID"]) for lease in answer.get("leases", [])}


def test_a_lost_lock_is_counted_and_no_longer_held(etcd: EtcdCluster,
                                                   registry: CollectorRegistry) -> None:
    """The session's lease is revoked on etcd, which is how etcd ends a lease whose TTL ran
    out (its lessor proposes the revoke): the holder's next keepalive hears the lease is gone.
    Every step waits on what it needs (the lease gone in etcd, the holder's loss, the
    counter), so nothing races a clock. The uncounted losses once seen here (about one run
    in ten) were distlock.metrics handing a new registry a collected one's metrics
    (tests/unit/test_distlock_metrics_registry.py), not etcd's timing."""
    options = BackendOptions(endpoints=tuple(etcd.endpoints), ttl=2)
    before = _leases(etcd)
    with open_backend("etcd", options) as session:
        lock = session.lock("migrate")
        lock.acquire(timeout=WAIT)
        (lease,) = _leases(etcd) - before
        gateway(etcd.endpoints[0], "/v3/lease/revoke", {"ID": str(lease)})
        wait_until(lambda: lease not in _leases(etcd), timeout=WAIT,
                   what="etcd to drop the holder's lease")
        assert lock.lost.wait(WAIT), "the holder kept believing it held the lock"
        wait_until(lambda: value(registry, "distlock_lost_total", lock="migrate") == 1,
                   timeout=WAIT, what="the loss to be counted")
        assert value(registry, "distlock_lock_held_since_timestamp_seconds",
                     lock="migrate") is None


def test_enable_is_idempotent_and_stop_stops_measuring(etcd: EtcdCluster) -> None:
    registry = CollectorRegistry()
    measured = lock_metrics.enable(registry)
    assert lock_metrics.enable(registry) is measured
    measured.stop()
    options = BackendOptions(endpoints=tuple(etcd.endpoints), ttl=5)
    with open_backend("etcd", options) as session, session.lock("quiet"):
        pass
    assert value(registry, "distlock_handoffs_total", lock="quiet") is None
