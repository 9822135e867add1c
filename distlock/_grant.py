"""What a grant is: the value types a backend hands the front, and the lost signal.

Kept apart from :mod:`distlock._backend` (the contract) and :mod:`distlock._lock` (the
front) because both trade in them: the front receives grants, the backend makes them.
With these here, the front needs nothing from the backend module but the two calls it
makes (its ``LockSession`` protocol), and the backend module imports the front to hand
out :class:`~distlock.Lock` objects, so the imports run one way only.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

_log = logging.getLogger("distlock")


class LostSignal:
    """Fires once when a grant can no longer be trusted; readable like a threading.Event.

    Callbacks run on the backend's own thread (the keepalive or renewal loop) and must
    not block; a callback added after the signal fired runs at once on the caller's
    thread, so nobody misses it by registering late.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._mutex = threading.Lock()
        self._reason: str | None = None
        self._callbacks: list[Callable[[str], None]] = []

    def is_set(self) -> bool:
        return self._reason is not None

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)

    @property
    def reason(self) -> str | None:
        return self._reason

    def add_callback(self, callback: Callable[[str], None]) -> None:
        with self._mutex:
            if self._reason is None:
                self._callbacks.append(callback)
                return
            reason = self._reason
        _run_callback(callback, reason)

    def fire(self, reason: str) -> None:
        """For backends: mark lost (first reason wins), run the callbacks, then wake
        waiters, so that whoever returns from :meth:`wait` knows the callbacks ran."""
        with self._mutex:
            if self._reason is not None:
                return
            self._reason = reason
            callbacks, self._callbacks = self._callbacks, []
        _log.warning("lock lost: %s", reason)
        for callback in callbacks:
            _run_callback(callback, reason)
        self._event.set()


def _run_callback(callback: Callable[[str], None], reason: str) -> None:
    try:
        callback(reason)
    except Exception:  # noqa: BLE001 - a user's callback must not kill the keepalive thread
        _log.exception("a lost-lock callback raised")


@dataclass(frozen=True, eq=False)
class Grant:
    """One successful acquisition: what was granted, to whom, and its fencing token."""

    name: str
    token: int
    holder: str
    """The backend's name for this holding (etcd: the key ``NAME/<lease-hex>``;
    Kubernetes: the holder identity); matches :attr:`LockState.holder`."""
    lost: LostSignal = field(default_factory=LostSignal)


@dataclass(frozen=True)
class LockState:
    """A snapshot of one lock as the service sees it."""

    name: str
    holder: str | None
    token: int | None
    waiters: tuple[str, ...]
    """Queued holders after the current one, in the order they will be granted."""
