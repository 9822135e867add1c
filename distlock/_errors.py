"""Every error distlock raises derives from :class:`DistlockError`.

They are separate classes because callers react differently: a timeout is "try later",
a lost lock is "stop writing now", a stale token is "someone newer owns this", an
unavailable backend is an outage, not contention, and a refusal is neither: the service
answered, and asking again unchanged will get the same answer.
"""

from __future__ import annotations


class DistlockError(Exception):
    """Base class of distlock's errors."""


class LockTimeout(DistlockError):
    """The lock was not granted within the timeout (nothing is left queued)."""


class LockLost(DistlockError):
    """The lock is no longer held: lease expired, keepalive failed, or session closed."""


class NotHeldError(DistlockError):
    """An operation needing the lock ran while this Lock object does not hold it."""


class BackendUnavailable(DistlockError):
    """The lock service could not be reached on any endpoint within the allowed time."""


class BackendRefused(DistlockError):
    """The lock service answered and refused the request (a limit such as etcd's largest
    lease TTL, missing permissions, no Lock CRD): retrying will not help, fixing will."""


class StaleTokenError(DistlockError):
    """A guarded write carried a fencing token older than one the resource already saw."""

    def __init__(self, token: int, highest: int, resource: str) -> None:
        super().__init__(f"stale fencing token {token} for {resource}: "
                         f"it has already accepted token {highest}")
        self.token = token
        self.highest = highest
        self.resource = resource
