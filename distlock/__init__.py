"""distlock: fair, fenced distributed locks on etcd or Kubernetes, without Pulumi.

This package never imports pulumi: it runs in pods, in CI jobs and inside dynamic
providers alike. Usage::

    from distlock import BackendOptions, open_backend
    from distlock.etcd import EtcdFencedStore

    endpoints = ("http://etcd-0.etcd:2379", "http://etcd-1.etcd:2379")
    store = EtcdFencedStore(endpoints, "fences/deploy-prod")
    with open_backend("etcd", BackendOptions(endpoints=endpoints, ttl=10)) as session:
        with session.lock("deploy-prod", timeout=60) as lock:
            store.put(lock.token, "config", data)  # refused if a newer holder wrote

See :mod:`distlock._backend` for the backend contract and :mod:`distlock._fencing` for
why guarded writes, not the lock alone, are what keeps a paused holder out.
"""

from distlock._backend import BackendOptions, Grant, LockBackend, LockState, LostSignal
from distlock._errors import (
    BackendUnavailable,
    DistlockError,
    LockLost,
    LockTimeout,
    NotHeldError,
    StaleTokenError,
)
from distlock._fencing import FencedStore, FileFencedStore
from distlock._lock import Lock
from distlock._registry import BACKENDS, open_backend

__all__ = [
    "BACKENDS",
    "BackendOptions",
    "BackendUnavailable",
    "DistlockError",
    "FencedStore",
    "FileFencedStore",
    "Grant",
    "Lock",
    "LockBackend",
    "LockLost",
    "LockState",
    "LockTimeout",
    "LostSignal",
    "NotHeldError",
    "StaleTokenError",
    "open_backend",
]
