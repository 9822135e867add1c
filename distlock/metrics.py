"""Prometheus metrics for distlock: how long acquiring takes, how often a lock changes hands,
how long it is held, how often it is lost, and since when each held lock is held.

Optional and off by default: nothing here runs until :func:`enable` is called, and only this
module imports ``prometheus_client`` (install ``mysql-cluster[metrics]``, or the pinned
``prometheus-client``), so distlock itself needs nothing new. The numbers come from the one
place every backend's locks pass through (``distlock._lock``'s observers), so etcd and
Kubernetes locks are measured the same way and no backend carries metrics code.

The names are the ones the cluster's dashboard and alert rules read
(``deploy/monitoring/dashboard.json``, ``components/mysql/_metrics.py``):

- ``distlock_acquire_seconds`` (histogram; ``lock``, ``outcome`` granted / not_granted): the
  wait in ``acquire``, queue time included.
- ``distlock_handoffs_total`` (counter; ``lock``): grants to this process, each one the lock
  handed over to a holder.
- ``distlock_held_seconds`` (histogram; ``lock``): from grant to release.
- ``distlock_lost_total`` (counter; ``lock``): grants lost while held (lease expired, session
  gone, the holder record taken).
- ``distlock_lock_held_since_timestamp_seconds`` (gauge; ``lock``): wall-clock time of the
  current grant, present only while held; ``DistlockHeldTooLong`` fires on it.

Usage::

    import prometheus_client
    from distlock import metrics

    metrics.enable()                      # the default registry
    prometheus_client.start_http_server(9108)
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from distlock._lock import add_observer

# Lock waits span milliseconds (a free lock) to minutes (a long queue).
_WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
_HELD_BUCKETS = (0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)


@dataclass
class LockMetrics:
    """The metric families, registered in one registry, and the observer that fills them."""

    acquire_seconds: Histogram
    handoffs: Counter
    held_seconds: Histogram
    lost_total: Counter
    held_since: Gauge
    stop: Callable[[], None]

    def granted(self, name: str, waited: float) -> None:
        self.acquire_seconds.labels(lock=name, outcome="granted").observe(waited)
        self.handoffs.labels(lock=name).inc()
        self.held_since.labels(lock=name).set(time.time())

    def not_granted(self, name: str, waited: float) -> None:
        self.acquire_seconds.labels(lock=name, outcome="not_granted").observe(waited)

    def released(self, name: str, held: float) -> None:
        self.held_seconds.labels(lock=name).observe(held)
        self._forget(name)

    def lost(self, name: str) -> None:
        self.lost_total.labels(lock=name).inc()
        self._forget(name)

    def _forget(self, name: str) -> None:
        # A lock no longer held has no "held since": an absent series never fires the alert.
        with contextlib.suppress(KeyError):
            self.held_since.remove(name)


# Keyed by the registry itself, weakly: an id() key would hand a new registry that reuses a
# collected one's address the old registry's metrics, and record nothing into the new one.
_enabled: weakref.WeakKeyDictionary[CollectorRegistry, LockMetrics] = weakref.WeakKeyDictionary()
_mutex = threading.Lock()


def enable(registry: CollectorRegistry = REGISTRY) -> LockMetrics:
    """Start measuring every Lock of this process into ``registry``; idempotent per registry.
    ``LockMetrics.stop()`` stops the measuring (the families stay registered)."""
    with _mutex:
        if registry in _enabled:
            return _enabled[registry]
        metrics = LockMetrics(
            acquire_seconds=Histogram(
                "distlock_acquire_seconds", "Time spent waiting in acquire, queue included.",
                ["lock", "outcome"], buckets=_WAIT_BUCKETS, registry=registry),
            handoffs=Counter("distlock_handoffs", "Grants of the lock to this process.",
                             ["lock"], registry=registry),
            held_seconds=Histogram("distlock_held_seconds", "Time from grant to release.",
                                   ["lock"], buckets=_HELD_BUCKETS, registry=registry),
            lost_total=Counter("distlock_lost", "Grants lost while held.", ["lock"],
                               registry=registry),
            held_since=Gauge("distlock_lock_held_since_timestamp_seconds",
                             "Unix time the current grant was received; only while held.",
                             ["lock"], registry=registry),
            stop=lambda: None)
        metrics.stop = add_observer(metrics)
        _enabled[registry] = metrics
        return metrics


__all__ = ["LockMetrics", "enable"]
