"""The etcd backend: etcd's own Mutex algorithm, spoken over etcd's gRPC API.

This is the algorithm of Go's ``concurrency.Mutex`` (the one ``etcdctl lock`` uses), so
that a lock held through either excludes the other:

- One session lease per :class:`EtcdBackend`, kept alive every TTL/3 by a thread.
  We choose the lease ID ourselves, so a grant whose response was lost is retried
  with the same ID ("already exists" then means "it worked"), and no lease leaks.
- Lock ``NAME`` is the key prefix ``NAME/``; a waiter is the key ``NAME/<lease-id-hex>``
  attached to the session lease, created by a transaction whose compare is
  ``create_revision == 0``. Retrying that transaction after a lost response finds our
  own key and reuses its revision, so a retry never takes a second queue slot.
- Waiters are ordered by create revision (FIFO). The transaction that creates the
  waiter key also reads the whole queue (keys only), so the waiter knows every key
  ahead of it at that revision. Only deletions can change that set (a key created
  later sorts after ours), so the session watches the lock prefix for deletions, from
  etcd's current revision, once per name and kept between acquires: when every key
  that was ahead has been deleted, the waiter is first. A handoff is then the holder's
  delete and one watch event, with no read to confirm it (Go's Mutex reads twice after
  the event), and a waiter that gives up in the middle of the queue just deletes its
  key. The price: every session waiting on a lock receives every deletion in its
  queue (one small event each; deciding whether it frees this waiter runs on the
  stream's thread, so it wakes no one else), where watching only the predecessor
  would send one; on 8 contenders that costs less than the read it saves.
- The fencing token is the waiter key's create revision: etcd's revision only grows,
  so every later grant of the same name has a higher token.

Lost: when a keepalive says the lease is gone, or keepalives fail until the TTL we
last had confirmed has run out on our monotonic clock (measured from when that
keepalive was *sent*, so we never believe in the lease longer than etcd does), every
grant's :class:`~distlock.LostSignal` fires. A holder paused past its TTL learns this
only when it runs again, which is why guarded writes (:class:`EtcdFencedStore`) exist.

Failover is the transport's (:mod:`distlock._etcd_grpc`: every request fails over to
the next endpoint until its deadline). All waiters of a session share one watch stream
and the lease one keepalive stream. A watch stream on a member that dies ends, every
waiter on it re-reads and re-watches through another member (a new watch re-reads the
queue once it is confirmed, which covers whatever was deleted before it started);
waiters also re-check every ``recheck`` seconds so that a member that hangs instead of
dying delays a handoff but cannot lose it.
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from distlock._backend import BackendOptions, LockBackend
from distlock._errors import BackendRefused, BackendUnavailable, LockLost, StaleTokenError
from distlock._etcd_grpc import Client, KeepAlive, QueueWatch, WatchHub
from distlock._etcd_wire import EtcdError, TLSFiles, prefix_end
from distlock._etcdpb import rpc_pb2
from distlock._fencing import check_token
from distlock._grant import Grant, LockState

_log = logging.getLogger("distlock.etcd")

_LEASE_EXISTS = "lease already exists"
_LEASE_NOT_FOUND = "lease not found"
# The lease TTL is an int64 on the wire: anything larger cannot even be sent. etcd's own,
# smaller limit is etcd's to enforce (and to name when it refuses).
_MAX_WIRE_TTL = 2**63 - 1
# Lock names whose queue watch a session keeps open between acquires.
_KEPT_WATCHES = 16


def from_options(options: BackendOptions) -> EtcdBackend:
    return EtcdBackend(options.endpoints, ttl=options.ttl,
                       tls=TLSFiles(options.ca_file, options.cert_file, options.key_file),
                       open_timeout=options.open_timeout)


def check_name(name: str) -> None:
    """ValueError naming the problem unless ``name`` can be an etcd lock name."""
    _prefix(name)


def _check_ttl(ttl: object) -> None:
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 1 <= ttl < math.inf:
        raise ValueError(f"etcd lock ttl must be a number of seconds >= 1, got {ttl!r}")
    if math.ceil(ttl) > _MAX_WIRE_TTL:
        raise ValueError(f"etcd lock ttl must be at most {_MAX_WIRE_TTL} seconds (etcd's "
                         f"int64), got {ttl!r}")


def inspect(options: BackendOptions, name: str) -> LockState:
    """``name``'s holder and queue, read without a session: a lease would be a write, and
    reading needs none. Retries an unreachable etcd as long as opening a session would."""
    _check_ttl(options.ttl)  # it still bounds the retries, so the same ttl is refused
    client = Client(options.endpoints,
                    tls=TLSFiles(options.ca_file, options.cert_file, options.key_file))
    try:
        timeout = (max(options.ttl, 5) if options.open_timeout is None
                   else options.open_timeout)
        return _lock_state(name, _range_prefix(client, _prefix(name), timeout=timeout))
    finally:
        client.close()


def _range_prefix(client: Client, prefix: str, *, timeout: float) -> list[Any]:
    """Every key under ``prefix``, oldest create revision first (keys only)."""
    start = prefix.encode()
    response = client.range(rpc_pb2.RangeRequest(
        key=start, range_end=prefix_end(start), keys_only=True,
        sort_order=rpc_pb2.RangeRequest.ASCEND, sort_target=rpc_pb2.RangeRequest.CREATE,
    ), timeout=timeout)
    return list(response.kvs)


def _lock_state(name: str, kvs: Sequence[Any]) -> LockState:
    """The holder is the oldest waiter key (lowest create revision), as the Mutex says."""
    keys = sorted((kv.create_revision, kv.key.decode()) for kv in kvs)
    if not keys:
        return LockState(name=name, holder=None, token=None, waiters=())
    return LockState(name=name, holder=keys[0][1], token=keys[0][0],
                     waiters=tuple(k for _, k in keys[1:]))


class EtcdBackend(LockBackend):
    """One etcd session (one lease); thread-safe, may hold many named locks."""

    def __init__(self, endpoints: Sequence[str] | str, *, ttl: float = 10.0,
                 tls: TLSFiles | None = None, request_timeout: float = 2.0,
                 recheck: float = 1.0, open_timeout: float | None = None) -> None:
        """``open_timeout``: how long granting the session's lease may keep failing over
        (None: the TTL, at least 5 s); a caller with a deadline passes what is left."""
        _check_ttl(ttl)
        self._client = Client(endpoints, request_timeout=request_timeout, tls=tls)
        self._watches = WatchHub(self._client)
        self._recheck = recheck
        self._mutex = threading.Lock()
        self._closed = threading.Event()
        self._lost_reason: str | None = None
        self._grants: dict[str, Grant] = {}
        self._busy: set[str] = set()  # keys of acquires in progress
        self._queue_watches: OrderedDict[str, QueueWatch] = OrderedDict()  # by lock prefix
        # The lease's clock starts when etcd applies the grant, which is after we send
        # it: counting from the send never lets us believe in it longer than etcd does.
        sent = time.monotonic()
        self._lease_id, self._ttl = self._grant_lease(
            math.ceil(ttl), max(ttl, 5) if open_timeout is None else open_timeout)
        self._expires = sent + self._ttl
        self._pings = KeepAlive(self._client, self._lease_id)
        self._keepalive = threading.Thread(target=self._keep_alive, daemon=True,
                                           name=f"distlock-etcd-keepalive-{self._lease_id:x}")
        self._keepalive.start()

    @property
    def identity(self) -> str:
        return f"{self._lease_id:x}"

    @property
    def lease_id(self) -> int:
        return self._lease_id

    @property
    def ttl(self) -> int:
        """The TTL etcd granted (it may raise a small request to its minimum)."""
        return self._ttl

    # -- acquire / release ----------------------------------------------------------

    def acquire(self, name: str, *, timeout: float | None,
                cancel: threading.Event | None = None) -> Grant | None:
        prefix = _prefix(name)
        key = f"{prefix}{self._lease_id:x}"
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0)
        with self._mutex:
            self._check_alive()
            if key in self._grants or key in self._busy:
                raise RuntimeError(f"this etcd session already holds or waits for {name!r}; "
                                   "a second waiter needs its own session")
            self._busy.add(key)
        granted = False
        once = timeout is not None and timeout <= 0
        try:
            # A try without waiting still gets whole requests; a wait bounds each by its end.
            watch = None if once else self._live_watch(prefix)
            queue = self._enqueue(key, prefix, watch, None if once else deadline)
            if once:
                granted = not queue.ahead
            else:
                granted = self._wait_turn(key, prefix, queue, watch, deadline, cancel)
            if not granted:
                return None
            grant = Grant(name=name, token=queue.revision, holder=key)
            with self._mutex:
                self._grants[key] = grant
                lost = self._lost_reason
            if lost is not None:  # the session died between the last check and now
                grant.lost.fire(lost)
            return grant
        finally:
            with self._mutex:
                self._busy.discard(key)
            if not granted:
                self._delete_quietly(key)

    def release(self, grant: Grant) -> None:
        with self._mutex:
            if self._grants.get(grant.holder) is not grant:
                return
            # Forget it first: if the delete fails, the key stays ours (on our lease), and a
            # later acquire of the same name finds it again instead of being refused.
            del self._grants[grant.holder]
        self._client.delete(grant.holder.encode(), timeout=self._request_deadline())

    def inspect(self, name: str) -> LockState:
        return _lock_state(name, self._range_prefix(_prefix(name),
                                                    timeout=self._request_deadline()))

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        with self._mutex:
            grants = list(self._grants.values())
            self._grants.clear()
        try:
            # Revoking the lease deletes every key attached to it in one step.
            self._client.lease_revoke(self._lease_id, timeout=self._request_deadline())
        except EtcdError as error:
            if _LEASE_NOT_FOUND not in error.message:
                raise
        except BackendUnavailable:
            _log.warning("could not revoke lease %x; etcd drops it within %ss",
                         self._lease_id, self._ttl)
        finally:
            for grant in grants:
                grant.lost.fire("the etcd session was closed")
            self._pings.close()
            self._watches.close()
            self._client.close()

    # -- the Mutex algorithm ---------------------------------------------------------

    def _enqueue(self, key: str, prefix: str, watch: QueueWatch | None,
                 deadline: float | None) -> _Queue:
        """Create our waiter key (or find it after a retry): its revision and who is ahead.

        As in etcd's Go Mutex, the transaction that creates the key also reads the queue
        (reads in a transaction see its own put), so an uncontended acquire is one
        commit and a contended one starts waiting without a read of its own. It reads
        the whole queue, not only the predecessor: with the prefix's deletions from the
        session's watch, that tells the waiter when it is first without another read.
        """
        raw = key.encode()
        if watch is not None:
            watch.forget()  # deletions from here on, filtered by the revision read below
        queue_read = rpc_pb2.RequestOp(request_range=_queue_range(prefix))
        response = self._client.txn(rpc_pb2.TxnRequest(
            compare=[rpc_pb2.Compare(key=raw, target=rpc_pb2.Compare.CREATE,
                                     result=rpc_pb2.Compare.EQUAL, create_revision=0)],
            success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(
                         key=raw, lease=self._lease_id)), queue_read],
            failure=[queue_read],
        ), timeout=self._request_deadline(deadline))
        read = response.responses[1 if response.succeeded else 0].response_range
        if response.succeeded:
            revision = int(response.header.revision)
        else:
            # A retry found the key its lost first attempt created (keys created since
            # sort after ours, so the same read still holds the whole queue ahead).
            mine = [kv for kv in read.kvs if kv.key == raw]
            if not mine:  # deleted between compare and read: cannot be, a txn is atomic
                raise BackendUnavailable(f"etcd lost the waiter key {key!r} inside a "
                                         "transaction")
            revision = int(mine[0].create_revision)
        return _queue_in(read, key, revision, seen_at=int(response.header.revision))

    def _reread(self, key: str, prefix: str, revision: int, deadline: float | None) -> _Queue:
        """The queue ahead of our key, read now (one linearizable range)."""
        response = self._client.range(_queue_range(prefix, revision),
                                      timeout=self._request_deadline(deadline))
        return _queue_in(response, key, revision, seen_at=int(response.header.revision))

    def _wait_turn(self, key: str, prefix: str, queue: _Queue,  # noqa: PLR0917
                   watch: QueueWatch | None, deadline: float | None,
                   cancel: threading.Event | None) -> bool:
        """Wait until no waiter is ahead of ours; False on timeout or cancel.

        The session keeps one watch per lock prefix (deletions only), started at etcd's
        *current* revision, never at a past one: a watch asked to start at a revision
        already passed is "unsynced", and etcd delivers its events only from a loop that
        runs every 100 ms (that loop was the whole handoff tail once). A current watch
        covers every event after the revision its "created" answer carries, so a queue
        read at or after that revision, plus the deletions the watch reports past the
        read's revision, is the queue now: when every key that was ahead has been
        deleted, we are first, and the handoff costs the holder's delete and its watch
        event, no read. A watch created only now (the first wait on this name, or after
        a broken stream) may have missed deletions since the last read, so the queue is
        read again once it is confirmed; and every ``recheck`` seconds without progress
        it is read again anyway, so that a member that hangs instead of dying delays a
        handoff but cannot lose it.
        """
        own = key.encode()
        while True:
            if watch is None or watch.is_broken():
                if watch is not None:
                    # The stream broke (member down, no leader, session closed): ask etcd
                    # itself, through the next member, but not in a tight loop while an
                    # election runs. The read fails once the outage outlasts its budget.
                    self._check_alive()
                    if _gave_up(deadline, cancel):
                        return False
                    time.sleep(0.05)
                    queue = self._reread(key, prefix, queue.revision, deadline)
                if not queue.ahead:
                    return True
                watch = self._new_watch(prefix)
                if not self._sleep_until(watch, watch.created_or_broken, math.inf, deadline,
                                         cancel):
                    return False
                if watch.is_broken():
                    continue
                queue = self._reread(key, prefix, queue.revision, deadline)
            watch.expect(queue.ahead, own, queue.seen_at)
            recheck_at = time.monotonic() + self._recheck
            if not self._sleep_until(watch, watch.wake.is_set, recheck_at, deadline, cancel):
                return False
            if watch.is_broken():
                continue
            first, own_gone = watch.outcome()
            if own_gone:
                raise LockLost(f"waiter key {key!r} vanished while queued (lease expired?)")
            if first:
                return True
            # ``recheck`` passed with no news: ask etcd itself.
            queue = self._reread(key, prefix, queue.revision, deadline)

    def _live_watch(self, prefix: str) -> QueueWatch | None:
        """This session's confirmed, unbroken watch of ``prefix``, if it has one."""
        with self._mutex:
            watch = self._queue_watches.get(prefix)
            if watch is not None:
                self._queue_watches.move_to_end(prefix)
            return watch if watch is not None and watch.live else None

    def _new_watch(self, prefix: str) -> QueueWatch:
        """A new watch of ``prefix``'s deletions, kept for the session's later acquires.

        At most :data:`_KEPT_WATCHES` names keep theirs (the least recently used goes):
        a session that locks many names must not hold a watch for each forever.
        """
        watch = _QueueWatch(self._watches, prefix.encode())
        with self._mutex:
            old = self._queue_watches.pop(prefix, None)
            self._queue_watches[prefix] = watch
            evicted = [old] if old is not None else []
            # Oldest first, never one a waiter of this session is sleeping on.
            idle = [name for name in self._queue_watches
                    if f"{name}{self._lease_id:x}" not in self._busy]
            for name in idle[:max(0, len(self._queue_watches) - _KEPT_WATCHES)]:
                evicted.append(self._queue_watches.pop(name))
        for stale in evicted:
            stale.stop()
        return watch

    def _sleep_until(self, watch: QueueWatch, condition: Callable[[], bool],
                     recheck_at: float, deadline: float | None,
                     cancel: threading.Event | None) -> bool:
        """Wait for ``condition`` or ``recheck_at``: True; False on timeout or cancel."""
        while not condition():
            now = time.monotonic()
            if _gave_up(deadline, cancel, now):
                return False
            self._check_alive()
            if now >= recheck_at:
                return True
            until = recheck_at if deadline is None else min(recheck_at, deadline)
            # Short slices only so that a cancel event (which cannot wake us) is seen.
            watch.wake.wait(min(until - now, 0.1))
        return True

    def _delete_quietly(self, key: str) -> None:
        """Give up a queue slot; if etcd is unreachable the lease takes it with it."""
        if self._closed.is_set():
            return
        try:
            self._client.delete(key.encode(), timeout=self._request_deadline())
        except (BackendUnavailable, EtcdError) as error:
            _log.warning("could not delete waiter key %s (%s); it goes with the lease", key,
                         error)

    def _range_prefix(self, prefix: str, *, timeout: float) -> list[Any]:
        return _range_prefix(self._client, prefix, timeout=timeout)

    # -- the session lease -----------------------------------------------------------

    def _grant_lease(self, ttl: int, timeout: float) -> tuple[int, int]:
        lease_id = secrets.randbits(63) or 1
        deadline = time.monotonic() + timeout
        retried = False
        while True:
            try:
                response = self._client.lease_grant(ttl, lease_id,
                                                    timeout=max(deadline - time.monotonic(), 0.1))
            except EtcdError as error:
                if _LEASE_EXISTS not in error.message:
                    self._client.close()
                    raise BackendRefused(f"etcd refused a lease of {ttl}s: "
                                         f"{error.message}") from error
                if retried:
                    # Our earlier attempt was applied and only its response was lost.
                    return lease_id, self._current_ttl(lease_id, ttl, deadline)
                lease_id = secrets.randbits(63) or 1  # a collision with someone else's
                continue
            except BackendUnavailable:
                self._client.close()
                raise
            retried = True
            if response.error:
                self._client.close()
                raise BackendRefused(f"etcd refused a lease of {ttl}s: {response.error}")
            return int(response.ID), int(response.TTL or ttl)

    def _current_ttl(self, lease_id: int, fallback: int, deadline: float) -> int:
        response = self._client.lease_time_to_live(
            lease_id, timeout=max(deadline - time.monotonic(), 0.1))
        return int(response.grantedTTL or fallback)

    def _keep_alive(self) -> None:
        interval = self._ttl / 3
        while not self._closed.wait(max(0.0, min(interval, self._expires - time.monotonic()))):
            sent = time.monotonic()
            if sent >= self._expires:
                self._session_lost("the lease's TTL ran out without a confirmed keepalive")
                return
            try:
                ttl = self._pings.ping(self._expires - sent)
            except (BackendUnavailable, EtcdError) as error:
                if self._closed.is_set():
                    return
                self._session_lost(f"keepalive failed until the lease's TTL ran out: {error}")
                return
            if ttl <= 0:
                if not self._closed.is_set():
                    self._session_lost("etcd says the lease has expired")
                return
            self._expires = sent + ttl

    def _session_lost(self, reason: str) -> None:
        with self._mutex:
            if self._lost_reason is None:
                self._lost_reason = reason
            grants = list(self._grants.values())
        for grant in grants:
            grant.lost.fire(reason)

    def _check_alive(self) -> None:
        if self._closed.is_set():
            raise LockLost("the etcd session is closed")
        if self._lost_reason is not None:
            raise LockLost(f"the etcd session was lost: {self._lost_reason}; "
                           "open a new backend to lock again")

    def _request_deadline(self, deadline: float | None = None) -> float:
        """How long one logical request may keep failing over: long enough to ride out
        an election (~1-2 s), never longer than the lease could still last, and never
        past ``deadline`` (the acquire's own, on the monotonic clock) when one is set."""
        budget = max(self._lease_timeout(), 5.0)
        if deadline is None:
            return budget
        return min(budget, max(deadline - time.monotonic(), 0.05))

    def _lease_timeout(self) -> float:
        return max(self._ttl, 1)


# The name the conformance suite reaches in for (it races deletes against a watch's start).
_QueueWatch = QueueWatch


class EtcdFencedStore:
    """A :class:`~distlock.FencedStore` in etcd: data and fence change in one transaction.

    Under ``prefix``: ``<prefix>/fence`` holds the highest token accepted (zero-padded
    decimal) and ``<prefix>/data/<key>`` the values. A put reads the fence, refuses a
    lower token, and writes data + fence in a transaction that compares the fence's
    mod revision with the one it read, retrying if another writer got in between.
    """

    def __init__(self, endpoints: Sequence[str] | str, prefix: str, *,
                 tls: TLSFiles | None = None, timeout: float = 10.0) -> None:
        if not prefix or prefix.endswith("/"):
            raise ValueError(f"fence prefix must be non-empty without a trailing '/', "
                             f"got {prefix!r}")
        self._client = Client(endpoints, tls=tls)
        self._prefix = prefix
        self._fence = f"{prefix}/fence".encode()
        self._timeout = timeout

    def put(self, token: int, key: str, value: bytes) -> None:
        check_token(token)
        data = self._data_key(key)
        while True:
            seen, mod_revision = self._read_fence()
            if token < seen:
                raise StaleTokenError(token, seen, f"etcd {self._prefix}/data/{key}")
            compare = (
                rpc_pb2.Compare(key=self._fence, target=rpc_pb2.Compare.CREATE,
                                result=rpc_pb2.Compare.EQUAL, create_revision=0)
                if mod_revision == 0 else
                rpc_pb2.Compare(key=self._fence, target=rpc_pb2.Compare.MOD,
                                result=rpc_pb2.Compare.EQUAL, mod_revision=mod_revision))
            response = self._client.txn(rpc_pb2.TxnRequest(
                compare=[compare],
                success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(
                             key=self._fence, value=f"{max(token, seen):020d}".encode())),
                         rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(
                             key=data, value=value))],
            ), timeout=self._timeout)
            if response.succeeded:
                return

    def get(self, key: str) -> bytes | None:
        kvs = self._client.range(rpc_pb2.RangeRequest(key=self._data_key(key)),
                                 timeout=self._timeout).kvs
        return bytes(kvs[0].value) if kvs else None

    def highest_token(self) -> int:
        return self._read_fence()[0]

    def close(self) -> None:
        self._client.close()

    def _read_fence(self) -> tuple[int, int]:
        kvs = self._client.range(rpc_pb2.RangeRequest(key=self._fence),
                                 timeout=self._timeout).kvs
        if not kvs:
            return 0, 0
        return int(kvs[0].value or b"0"), int(kvs[0].mod_revision)

    def _data_key(self, key: str) -> bytes:
        if not key:
            raise ValueError("fenced store key must be non-empty")
        return f"{self._prefix}/data/{key}".encode()


@dataclass(frozen=True)
class _Queue:
    """Our waiter key's create revision and the keys ahead of it, as a read at etcd
    revision ``seen_at`` saw them."""

    revision: int
    ahead: frozenset[bytes]
    seen_at: int


def _queue_range(prefix: str, max_create_revision: int = 0) -> rpc_pb2.RangeRequest:
    """A range request for every waiter key of a lock's queue (keys only), optionally
    only those created at or before ``max_create_revision``."""
    start = prefix.encode()
    return rpc_pb2.RangeRequest(key=start, range_end=prefix_end(start), keys_only=True,
                                max_create_revision=max_create_revision)


def _queue_in(answer: rpc_pb2.RangeResponse, key: str, revision: int, *,
              seen_at: int) -> _Queue:
    """From a :func:`_queue_range` answer: the keys ahead of ours.

    Our key missing means it went with our lease (or was deleted under us): then we
    hold nothing and have nothing to wait for.
    """
    own = key.encode()
    if not any(kv.key == own and kv.create_revision == revision for kv in answer.kvs):
        raise LockLost(f"waiter key {key!r} vanished while queued (lease expired?)")
    return _Queue(revision, frozenset(kv.key for kv in answer.kvs
                                      if kv.create_revision < revision), seen_at)


def _gave_up(deadline: float | None, cancel: threading.Event | None,
             now: float | None = None) -> bool:
    """The acquire's deadline has passed or it was cancelled."""
    if cancel is not None and cancel.is_set():
        return True
    return deadline is not None and (time.monotonic() if now is None else now) >= deadline


def _prefix(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"lock name must be a non-empty string, got {name!r}")
    if "\0" in name:
        raise ValueError(f"lock name must not contain NUL bytes, got {name!r}")
    return f"{name}/"

