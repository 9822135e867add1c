"""Guarded writes: the resource, not the lock, is what finally rejects a stale holder.

No lease-based lock can stop a holder that was paused (GC, SIGSTOP, a frozen VM) past
its lease from writing afterwards: it does not know it lost the lock. The only defence
is a fencing token checked *by the resource in the same atomic step as the write*:
the resource remembers the highest token it has accepted and refuses anything lower.
A check-then-write done by the client is worthless, because the pause can fall
between the check and the write.

:class:`FencedStore` is that contract. Implementations:

- :class:`distlock.etcd.EtcdFencedStore`: one etcd transaction compares a fence key and
  writes the data key together.
- :class:`FileFencedStore`: a directory on one host, serialised by ``flock``; handy for
  tests, single-host tools and as the model of the contract.

Tokens equal to the highest seen are accepted (one holder writes many times under one
grant); lower ones raise :class:`~distlock.StaleTokenError`.
"""

from __future__ import annotations

import fcntl
import os
import re
import time
from pathlib import Path
from typing import Protocol

from distlock._errors import StaleTokenError

_SAFE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


class FencedStore(Protocol):
    """A key/value resource whose writes are conditional on a fencing token."""

    def put(self, token: int, key: str, value: bytes) -> None:
        """Write ``value`` at ``key`` unless a higher token was already accepted."""

    def get(self, key: str) -> bytes | None:
        """The value at ``key``, or None."""

    def highest_token(self) -> int:
        """The highest token this resource has accepted (0 before any write)."""


def check_token(token: int) -> int:
    if isinstance(token, bool) or not isinstance(token, int) or token <= 0:
        raise ValueError(f"a fencing token is a positive integer, got {token!r}")
    return token


class FileFencedStore:
    """Files in ``directory``; ``.fence-token`` holds the highest token accepted.

    Like any resource with its own lock (a database row, a file lock), a writer frozen
    *inside* a put blocks the others; ``lock_timeout`` turns that into a
    :class:`TimeoutError` naming the lock file instead of a silent hang.
    """

    def __init__(self, directory: str | os.PathLike[str], *, lock_timeout: float = 30.0) -> None:
        self._dir = Path(directory)
        self._dir.mkdir(parents=True, exist_ok=True)
        self._lockfile = self._dir / ".fence.lock"
        self._token_file = self._dir / ".fence-token"
        self._lock_timeout = lock_timeout

    def put(self, token: int, key: str, value: bytes) -> None:
        check_token(token)
        target = self._path(key)
        with self._lockfile.open("a") as lockfile:
            self._flock(lockfile.fileno(), fcntl.LOCK_EX)
            highest = self._read_highest()
            if token < highest:
                raise StaleTokenError(token, highest, f"{self._dir}/{key}")
            self._replace(target, value)
            if token > highest:
                self._replace(self._token_file, str(token).encode())

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def highest_token(self) -> int:
        with self._lockfile.open("a") as lockfile:
            self._flock(lockfile.fileno(), fcntl.LOCK_SH)
            return self._read_highest()

    def _flock(self, fd: int, mode: int) -> None:
        deadline = time.monotonic() + self._lock_timeout
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"{self._lockfile} stayed locked for "
                                       f"{self._lock_timeout}s (a writer is stuck)") from None
                time.sleep(0.01)  # flock has no timed wait; poll briefly

    def _read_highest(self) -> int:
        try:
            return int(self._token_file.read_text())
        except FileNotFoundError:
            return 0

    def _path(self, key: str) -> Path:
        if not _SAFE_KEY.match(key):
            raise ValueError(f"file fence key must match {_SAFE_KEY.pattern}, got {key!r}")
        return self._dir / key

    @staticmethod
    def _replace(path: Path, data: bytes) -> None:
        # Write-then-rename so a crash mid-write never leaves a torn value or token.
        temporary = path.with_name(f".{path.name}.tmp")
        with temporary.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(path)
