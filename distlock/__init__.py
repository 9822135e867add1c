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

Layout (kopf's: a small public API re-exported here; kr8s's: thin public modules over
private ones). What this package's top and the public backend modules
:mod:`distlock.etcd`, :mod:`distlock.kube` and :mod:`distlock.crd` export is what callers
may rely on; every ``_``-module is machinery that may change with any release, and a
caller reaching into it (as some tests do, on purpose) takes that risk. The imports run
one way: ``_grant`` (value types) <- ``_lock`` (the front) <- ``_backend`` (the
contract) <- the backends; the front needs only the two calls of its ``LockSession``.

See :mod:`distlock._backend` for the backend contract and :mod:`distlock._fencing` for
why guarded writes, not the lock alone, are what keeps a paused holder out.
"""

from distlock._backend import BackendOptions, LockBackend
from distlock._errors import (
    BackendUnavailable,
    DistlockError,
    LockLost,
    LockTimeout,
    NotHeldError,
    StaleTokenError,
)
from distlock._fencing import FencedStore, FileFencedStore
from distlock._grant import Grant, LockState, LostSignal
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
