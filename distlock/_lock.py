"""The one Lock front every backend shares.

A :class:`Lock` is one named lock seen through one backend session, and holds it at
most once at a time (it is not reentrant: a second acquire on a held Lock is a bug in
the caller, reported as such rather than silently deadlocking on its own queue slot).

``acquire`` raises :class:`LockTimeout` instead of returning False because the common
use is a ``with`` block, where a silent False would run the body unlocked;
``try_acquire`` is the boolean form. The async methods run the blocking backend call
in a worker thread and turn task cancellation into the backend's ``cancel`` event, so
a cancelled waiter leaves its queue slot promptly instead of when the thread times out.

Observers (:func:`add_observer`) hear of every wait, grant, release and loss of every Lock in
the process; :mod:`distlock.metrics` is the one this package ships (Prometheus). Here, in the
front, because every backend's locks pass through it: no backend knows about metrics.
"""

from __future__ import annotations

import asyncio
import enum
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Protocol

from distlock._errors import LockLost, LockTimeout, NotHeldError
from distlock._grant import Grant, LostSignal


class LockSession(Protocol):
    """The two calls a :class:`Lock` makes on its backend session.

    A protocol rather than :class:`~distlock.LockBackend` itself, so that this module
    does not import the backend's (which imports this one to hand out Locks); every
    LockBackend is one.
    """

    def acquire(self, name: str, *, timeout: float | None,
                cancel: threading.Event | None = None) -> Grant | None: ...

    def release(self, grant: Grant) -> None: ...


class LockObserver(Protocol):
    """What an observer hears (seconds on the monotonic clock). Called on the thread that
    did the work, so it must be quick and must not raise."""

    def granted(self, name: str, waited: float) -> None: ...

    def not_granted(self, name: str, waited: float) -> None: ...

    def released(self, name: str, held: float) -> None: ...

    def lost(self, name: str) -> None: ...


_observers: list[LockObserver] = []
_observers_mutex = threading.Lock()


def add_observer(observer: LockObserver) -> Callable[[], None]:
    """Observe every Lock of the process from now on; returns the call that stops it."""
    with _observers_mutex:
        _observers.append(observer)

    def remove() -> None:
        with _observers_mutex:
            if observer in _observers:
                _observers.remove(observer)
    return remove


def _notify(event: Callable[[LockObserver], None]) -> None:
    with _observers_mutex:
        observers = list(_observers)
    for observer in observers:
        event(observer)


class _Unset(enum.Enum):
    """A typed "argument not given", so ``timeout=None`` can keep meaning "forever"."""

    UNSET = enum.auto()


_UNSET = _Unset.UNSET


def _checked_timeout(timeout: float | None) -> float | None:
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)
                                or timeout < 0):
        raise ValueError(f"lock timeout must be >= 0 seconds or None, got {timeout!r}")
    return timeout


class Lock:
    """A named distributed lock; see :meth:`LockBackend.lock` for the usual way to get one."""

    def __init__(self, backend: LockSession, name: str, *, timeout: float | None = None,
                 on_lost: Callable[[str], None] | None = None) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"lock name must be a non-empty string, got {name!r}")
        self._backend = backend
        self._name = name
        self._timeout = _checked_timeout(timeout)
        self._on_lost = on_lost
        self._grant: Grant | None = None
        self._granted_at = 0.0
        self._acquiring = False
        self._mutex = threading.Lock()

    @property
    def name(self) -> str:
        return self._name

    @property
    def backend(self) -> LockSession:
        return self._backend

    @property
    def grant(self) -> Grant | None:
        """The current (or, after loss, the last) grant; None before acquire / after release."""
        return self._grant

    @property
    def held(self) -> bool:
        """Granted, not released, and not known to be lost."""
        grant = self._grant
        return grant is not None and not grant.lost.is_set()

    @property
    def token(self) -> int:
        """The fencing token of the current grant: pass it to every guarded write."""
        return self._current().token

    @property
    def lost(self) -> LostSignal:
        """Fires when the current grant is lost (wait on it, or poll ``is_set()``)."""
        return self._current().lost

    def check(self) -> None:
        """Raise :class:`LockLost` unless the lock is held right now."""
        grant = self._current()
        if grant.lost.is_set():
            raise LockLost(f"lock {self._name!r} was lost: {grant.lost.reason}")

    def acquire(self, timeout: float | _Unset | None = _UNSET, *,
                cancel: threading.Event | None = None) -> int:
        """Wait for the lock and return its fencing token.

        ``timeout``: seconds to wait (None = forever; default: the Lock's own timeout).
        ``cancel``: set it from another thread (a signal handler, a shutdown path) to
        stop waiting; the wait then ends with :class:`LockTimeout` and leaves no slot.
        """
        wait = self._timeout if timeout is _UNSET else _checked_timeout(timeout)
        grant = self._acquire(wait, cancel)
        if grant is None:
            cancelled = cancel is not None and cancel.is_set()
            raise LockTimeout(f"lock {self._name!r} not granted: " + (
                "cancelled" if cancelled else f"still held after {wait}s"))
        return grant.token

    def try_acquire(self) -> bool:
        """Take the lock if it is free right now; never waits in the queue."""
        return self._acquire(0, None) is not None

    def release(self) -> None:
        """Release the lock (a lost grant is released too, to clean up its key)."""
        with self._mutex:
            grant, self._grant = self._grant, None
        if grant is None:
            raise NotHeldError(f"lock {self._name!r} is not held")
        try:
            self._backend.release(grant)
        finally:
            held = time.monotonic() - self._granted_at
            _notify(lambda o: o.released(self._name, held))

    async def acquire_async(self, timeout: float | _Unset | None = _UNSET) -> int:
        wait = self._timeout if timeout is _UNSET else _checked_timeout(timeout)
        cancel = threading.Event()
        future = asyncio.ensure_future(asyncio.to_thread(self._acquire, wait, cancel))
        try:
            grant = await asyncio.shield(future)
        except asyncio.CancelledError:
            # The worker thread cannot be interrupted; tell the backend to give up and
            # wait for it so that no grant is left behind unreleased.
            cancel.set()
            late = await future
            if late is not None:
                self.release()
            raise
        if grant is None:
            raise LockTimeout(f"lock {self._name!r} not granted: still held after {wait}s")
        return grant.token

    async def release_async(self) -> None:
        await asyncio.to_thread(self.release)

    def _acquire(self, timeout: float | None, cancel: threading.Event | None) -> Grant | None:
        with self._mutex:
            if self._grant is not None or self._acquiring:
                raise RuntimeError(f"lock {self._name!r} is already held or being acquired by "
                                   "this Lock object (distlock locks are not reentrant)")
            self._acquiring = True
        started = time.monotonic()
        try:
            grant = self._backend.acquire(self._name, timeout=timeout, cancel=cancel)
        finally:
            with self._mutex:
                self._acquiring = False
        now = time.monotonic()
        if grant is None:
            _notify(lambda o: o.not_granted(self._name, now - started))
            return None
        with self._mutex:
            self._grant = grant
            self._granted_at = now
        _notify(lambda o: o.granted(self._name, now - started))
        grant.lost.add_callback(lambda _reason: _notify(lambda o: o.lost(self._name)))
        if self._on_lost is not None:
            grant.lost.add_callback(self._on_lost)
        return grant

    def _current(self) -> Grant:
        grant = self._grant
        if grant is None:
            raise NotHeldError(f"lock {self._name!r} is not held")
        return grant

    def __enter__(self) -> Lock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    async def __aenter__(self) -> Lock:
        await self.acquire_async()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.release_async()

    def __repr__(self) -> str:
        state = "held" if self.held else ("lost" if self._grant is not None else "free")
        return f"<distlock.Lock {self._name!r} {state}>"
