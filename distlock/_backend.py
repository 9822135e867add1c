"""The contract every lock backend meets, and the small value types it trades in.

distlock has one front (:class:`distlock.Lock`) and several backends (etcd, Kubernetes).
The front owns everything that is the same for all of them: argument checking, the
"held / not held" state of one lock object, context managers, the async wrappers and
the lost callback. A backend owns only what differs: how a client session is kept
alive, how a waiter queues, how a grant is made and how its fencing token is chosen.

Why the seam is here
--------------------
A backend is a *client session* (etcd: one lease with a keepalive; Kubernetes: one
holder identity renewing the Lock objects it holds). One session may hold many named
locks at once, so ``acquire`` takes the name and returns a :class:`Grant`, and the
session's liveness reaches each grant through that grant's :class:`LostSignal`.

What a backend must guarantee (the conformance suite in
tests/integration/test_locks.py checks every point against every backend)

- ``acquire(name, timeout=None)`` blocks until granted; ``timeout > 0`` gives up after
  that many seconds and returns ``None``; ``timeout <= 0`` tries once without waiting
  (a non-blocking try). Setting ``cancel`` makes it return ``None`` promptly.
  Whenever it does not return a grant (None *or* an exception) it leaves no queue slot
  behind: a waiter that gave up must not block the ones after it.
- Waiters are granted in FIFO order of their arrival in the queue.
- Retry-safe: a request whose response was lost may be sent again without creating a
  second queue slot (etcd: the key is per session; Kubernetes: the queue entry is the
  holder identity).
- ``Grant.token`` is a fencing token: strictly greater than every token granted for
  the same name before it (etcd: the key's create revision; Kubernetes: a counter
  incremented in the granting write).
- ``Grant.lost`` fires (once, with a reason) as soon as the backend can no longer
  vouch that the grant is held: lease expired, keepalive/renewal failed past the
  TTL, session closed underneath it. It never fires because of ``release``.
- ``release(grant)`` is idempotent and gives the lock to the next waiter.
- ``close()`` releases every grant, ends the session (etcd: revokes the lease, so no
  lease is leaked) and is idempotent. Backends are context managers that close.
- ``inspect(name)`` reports the holder and the waiting queue (the CLI's ``status``,
  the Kubernetes printer columns and the FIFO tests read it).
- Errors: :class:`~distlock.BackendUnavailable` when the service cannot be reached
  within the call's time (an acquire's requests end by its timeout too);
  :class:`~distlock._errors.BackendRefused` when it answered no (a limit, a permission);
  :class:`ValueError` naming the problem for a bad lock name, raised before anything
  is written.

A backend module (``distlock/etcd.py``, ``distlock/kube.py``) also exposes
``from_options(options: BackendOptions) -> LockBackend``, which is how the CLI and
:func:`distlock.open_backend` build it by name, and ``check_name(name)``, which raises
the ValueError a bad name would get, without a session: the CLI refuses a bad NAME
before it opens one (an etcd session is a lease: already a write).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from distlock._grant import Grant, LockState
from distlock._lock import Lock


class LockBackend(ABC):
    """A client session with a lock service; see the module docstring for the contract."""

    @property
    @abstractmethod
    def identity(self) -> str:
        """Who this session is, as it appears (as a prefix or whole) in ``LockState``."""

    @abstractmethod
    def acquire(self, name: str, *, timeout: float | None,
                cancel: threading.Event | None = None) -> Grant | None:
        """Queue for ``name`` and return the grant, or None on timeout/cancel."""

    @abstractmethod
    def release(self, grant: Grant) -> None:
        """Give up ``grant`` (idempotent); the next waiter is granted."""

    @abstractmethod
    def inspect(self, name: str) -> LockState:
        """The current holder and queue of ``name``."""

    @abstractmethod
    def close(self) -> None:
        """Release everything this session holds and end the session (idempotent)."""

    def lock(self, name: str, *, timeout: float | None = None,
             on_lost: Callable[[str], None] | None = None) -> Lock:
        """A :class:`~distlock.Lock` on ``name`` through this session."""
        return Lock(self, name, timeout=timeout, on_lost=on_lost)

    def __enter__(self) -> LockBackend:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


@dataclass(frozen=True)
class BackendOptions:
    """Everything the CLI can pass to a backend; each backend reads what it needs."""

    endpoints: tuple[str, ...] = ()
    """etcd client URLs (http://host:port), tried in order with failover."""
    ttl: float = 10.0
    """Seconds a crashed client keeps its locks (etcd lease TTL / Kubernetes lease)."""
    namespace: str | None = None
    """Kubernetes namespace of the Lock objects."""
    kubeconfig: str | None = None
    """Kubernetes: a kubeconfig path or document text; None means $KUBECONFIG,
    ~/.kube/config or in-cluster."""
    context: str | None = None
    """Kubernetes: the kubeconfig context to use; None: its current context."""
    identity: str | None = None
    """A human-readable holder name; backends make it unique per session."""
    ca_file: str | None = None
    """etcd TLS: CA bundle (PEM) that signed the members' certificates."""
    cert_file: str | None = None
    """etcd TLS: client certificate (PEM), for members started with client-cert-auth."""
    key_file: str | None = None
    """etcd TLS: the client certificate's key (PEM)."""
    open_timeout: float | None = None
    """Seconds opening the session may keep retrying an unreachable service (etcd: the
    lease grant); None: the backend's default. The CLI passes ``--timeout`` here, so
    that the timeout bounds the whole wait, not only the queue."""
