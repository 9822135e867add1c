"""distlock's etcd transport: etcd's gRPC API with endpoint failover, and one watch stream
and one lease keepalive stream per session.

Why gRPC and not the v3 JSON gateway any more: the gateway costs a new streaming HTTP
request (and, on the server, a new gRPC watch stream the gateway opens for it) for every
waiter's watch, and JSON plus base64 on every call; on 2 shared cores that CPU was where
a handoff's time went (docs/benchmarks.md has the figures). Why grpcio with our own
generated messages rather than ``aetcd`` or ``etcd3aio``: both install beside pulumi's
grpcio/protobuf, but both are asyncio clients, so distlock's threaded, sync-first API
would run an event loop thread beside them, and neither multiplexes the waiters of a
session the way the Mutex needs. The messages are etcd's own (distlock/_etcdpb, from
scripts/gen_etcd_stubs.py); the six methods are called through the channel directly.

Failover (:func:`distlock._etcd_wire.fail_over`): every unary call has a deadline; an
attempt that fails with UNAVAILABLE or DEADLINE_EXCEEDED (member down, no leader, leader
changed) moves to the next endpoint and the call cycles until its deadline, so every
retried request is *possibly applied twice*; callers only send requests that are safe to
repeat.

Streams: :class:`WatchHub` keeps one bidirectional Watch stream per session and
multiplexes every :class:`QueueWatch` (the deletions under one lock's prefix) on it by a
watch ID we choose (etcd >= 3.4 assigns a non-zero ``watch_id`` from the create
request). When the stream breaks (a member died, lost its leader: ``hasleader``
metadata makes etcd end it instead of going silent) every watch on it fires as
*broken*; the waiter re-reads the queue (which fails over) and watches again, which
opens the next stream on the next endpoint, and reads once more when the new watch is
confirmed. That read is the resume: a waiter's state is its read plus the deletions
seen after it, not the watch's history, so nothing that happened while no stream was
open can be missed. :class:`KeepAlive` keeps one LeaseKeepAlive stream open and sends a
ping on it per keepalive, reopening it on the next endpoint when it breaks.

Cost, measured (docs/benchmarks.md): a unary call is ~0.3 ms of client CPU, a watch
event received ~0.2 ms (gRPC's C core, its polling thread and the stream's reader
thread; grpc.aio measured the same), so unary multicallables are built once per
endpoint and method, and a session never opens a watch it can do without (a try, or
an acquire that finds the lock free).
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import grpc

from distlock._errors import BackendRefused, BackendUnavailable
from distlock._etcd_wire import (
    Endpoint,
    EtcdError,
    TLSFiles,
    _Unavailable,
    fail_over,
    prefix_end,
    refused_certificate,
)
from distlock._etcdpb import rpc_pb2

_RETRY_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
# A member that comes back is retried soon; gRPC's default first backoff is a second.
_CHANNEL_OPTIONS = (("grpc.initial_reconnect_backoff_ms", 100),
                    ("grpc.min_reconnect_backoff_ms", 100),
                    ("grpc.max_reconnect_backoff_ms", 1000))
# etcd ends a stream on a member that has lost its leader, instead of leaving it silent.
_REQUIRE_LEADER = (("hasleader", "true"),)

_Response = TypeVar("_Response")


def _method(service: str, name: str) -> str:
    return f"/etcdserverpb.{service}/{name}"


class Client:
    """Thread-safe: one gRPC channel per endpoint, shared by every thread and stream."""

    def __init__(self, endpoints: Sequence[str] | str, *, request_timeout: float = 2.0,
                 tls: TLSFiles | None = None) -> None:
        if isinstance(endpoints, str):
            endpoints = [e for e in endpoints.split(",") if e.strip()]
        if not endpoints:
            raise ValueError("at least one etcd endpoint is required (http://host:port)")
        self.endpoints = [Endpoint.parse(e) for e in endpoints]
        self._credentials = None
        self._tls = tls.context() if tls else None
        if tls:
            ca, cert, key = tls.pem()
            if not all(e.tls for e in self.endpoints):
                raise ValueError("etcd TLS files were given, so every endpoint must be https://")
            self._credentials = grpc.ssl_channel_credentials(ca, key, cert)
        elif any(e.tls for e in self.endpoints):
            self._credentials = grpc.ssl_channel_credentials()
        self.request_timeout = request_timeout
        self._mutex = threading.Lock()
        self._preferred = 0
        self._channels: dict[int, grpc.Channel] = {}
        self._callables: dict[tuple[int, str], grpc.UnaryUnaryMultiCallable] = {}
        self._closed = False

    # -- unary calls, failed over --------------------------------------------------

    def range(self, request: rpc_pb2.RangeRequest, *, timeout: float) -> rpc_pb2.RangeResponse:
        return self._call(_method("KV", "Range"), request, rpc_pb2.RangeResponse, timeout)

    def txn(self, request: rpc_pb2.TxnRequest, *, timeout: float) -> rpc_pb2.TxnResponse:
        return self._call(_method("KV", "Txn"), request, rpc_pb2.TxnResponse, timeout)

    def delete(self, key: bytes, *, timeout: float) -> rpc_pb2.DeleteRangeResponse:
        return self._call(_method("KV", "DeleteRange"), rpc_pb2.DeleteRangeRequest(key=key),
                          rpc_pb2.DeleteRangeResponse, timeout)

    def lease_grant(self, ttl: int, lease_id: int, *,
                    timeout: float) -> rpc_pb2.LeaseGrantResponse:
        return self._call(_method("Lease", "LeaseGrant"),
                          rpc_pb2.LeaseGrantRequest(TTL=ttl, ID=lease_id),
                          rpc_pb2.LeaseGrantResponse, timeout)

    def lease_revoke(self, lease_id: int, *, timeout: float) -> rpc_pb2.LeaseRevokeResponse:
        return self._call(_method("Lease", "LeaseRevoke"), rpc_pb2.LeaseRevokeRequest(ID=lease_id),
                          rpc_pb2.LeaseRevokeResponse, timeout)

    def lease_time_to_live(self, lease_id: int, *,
                           timeout: float) -> rpc_pb2.LeaseTimeToLiveResponse:
        return self._call(_method("Lease", "LeaseTimeToLive"),
                          rpc_pb2.LeaseTimeToLiveRequest(ID=lease_id),
                          rpc_pb2.LeaseTimeToLiveResponse, timeout)

    def status(self, *, timeout: float) -> rpc_pb2.StatusResponse:
        return self._call(_method("Maintenance", "Status"), rpc_pb2.StatusRequest(),
                          rpc_pb2.StatusResponse, timeout)

    def _call(self, method: str, request: Any, response_type: type[_Response],
              timeout: float) -> _Response:
        """Call ``method``, failing over until ``timeout`` seconds pass."""
        return fail_over(self, method, timeout, lambda index, budget: self._attempt(
            index, method, request, response_type, budget))

    def _attempt(self, index: int, method: str, request: Any, response_type: type[_Response],
                 timeout: float) -> _Response:
        callable_ = self._callables.get((index, method))
        if callable_ is None:
            # Built once per endpoint and method: a multicallable is reusable, and building
            # one per call was a measurable share of a handoff's client CPU.
            callable_ = self.channel(index).unary_unary(
                method, request_serializer=type(request).SerializeToString,
                response_deserializer=response_type.FromString)  # type: ignore[attr-defined]
            self._callables[(index, method)] = callable_
        try:
            response: _Response = callable_(request, timeout=timeout)
        except grpc.RpcError as error:
            raise self.classify(index, error) from error
        return response

    def classify(self, index: int, error: grpc.RpcError) -> Exception:
        """The distlock error for a failed call: retry elsewhere, or give up now."""
        code: grpc.StatusCode = error.code()
        details = str(error.details() or code.name)
        url = self.endpoints[index].url
        if "CERTIFICATE_VERIFY_FAILED" in details:
            # Configuration, not an outage: retrying until the deadline would only hide it.
            return BackendUnavailable(f"TLS verification of {url} failed: {details}")
        if "ALERT" in details and any(word in details for word in
                                      ("CERTIFICATE", "UNKNOWN_CA", "ACCESS_DENIED")):
            # The member answered "not you": every retry gets the same alert.
            return BackendRefused(f"{url} refused this client's TLS certificate: {details}")
        if code == grpc.StatusCode.UNAVAILABLE and "TSI_" in details and self.endpoints[index].tls:
            # gRPC reports a member's TLS alert only as "TSI_DATA_CORRUPTED" (the alert
            # itself goes to its log), so ask the member once more with the stdlib.
            diagnosis = _tls_refusal(self.endpoints[index], self._tls)
            if diagnosis is not None:
                return diagnosis
        if code in _RETRY_CODES:
            return _Unavailable(f"{code.name}: {details}")
        return EtcdError(code.value[0], details)

    # -- endpoints and channels ----------------------------------------------------

    def is_closed(self) -> bool:
        return self._closed

    def preferred(self) -> int:
        with self._mutex:
            return self._preferred

    def demote(self, index: int) -> None:
        with self._mutex:
            if self._preferred == index:
                self._preferred = (index + 1) % len(self.endpoints)

    def channel(self, index: int) -> grpc.Channel:
        with self._mutex:
            if self._closed:
                raise BackendUnavailable("the etcd client is closed")
            channel = self._channels.get(index)
            if channel is None:
                endpoint = self.endpoints[index]
                target = f"{endpoint.host}:{endpoint.port}"
                if endpoint.tls:
                    channel = grpc.secure_channel(target, self._credentials,
                                                  options=_CHANNEL_OPTIONS)
                else:
                    channel = grpc.insecure_channel(target, options=_CHANNEL_OPTIONS)
                self._channels[index] = channel
            return channel

    def close(self) -> None:
        with self._mutex:
            self._closed = True
            channels, self._channels = list(self._channels.values()), {}
            self._callables = {}
        for channel in channels:
            channel.close()


def _tls_refusal(endpoint: Endpoint, context: ssl.SSLContext | None) -> Exception | None:
    """The refusal a TLS handshake with ``endpoint`` ends in, or None if it works.

    A TLS 1.3 server sends its verdict on our certificate after the handshake, so the
    probe reads once: an alert arrives at once, a server that accepted us stays silent.
    """
    context = context or ssl.create_default_context()
    try:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=2) as raw, \
                context.wrap_socket(raw, server_hostname=endpoint.host) as tls:
            tls.settimeout(0.5)
            with contextlib.suppress(TimeoutError):
                tls.recv(1)
    except ssl.SSLCertVerificationError as error:
        return BackendUnavailable(f"TLS verification of {endpoint.url} failed: {error}")
    except ssl.SSLError as error:
        if refused_certificate(error):
            return BackendRefused(f"{endpoint.url} refused this client's TLS certificate: "
                                  f"{error}")
    except OSError:
        return None
    return None


class _Requests:
    """The request side of a bidirectional stream: what :meth:`send` queues, until closed."""

    _END = object()

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def send(self, request: Any) -> None:
        self._queue.put(request)

    def end(self) -> None:
        self._queue.put(self._END)

    def __iter__(self) -> Iterator[Any]:
        while (request := self._queue.get()) is not self._END:
            yield request


class _Stream:
    """One open bidirectional call on one endpoint, read by its own daemon thread."""

    def __init__(self, client: Client, method: str, request_type: Any, response_type: Any, *,
                 on_message: Callable[[Any], None], on_end: Callable[[_Stream], None],
                 name: str) -> None:
        self.index = client.preferred()
        self.requests = _Requests()
        self.ended = False
        stream = client.channel(self.index).stream_stream(
            method, request_serializer=request_type.SerializeToString,
            response_deserializer=response_type.FromString)
        self._call = stream(iter(self.requests), metadata=_REQUIRE_LEADER)
        self._client = client
        self._on_message = on_message
        self._on_end = on_end
        threading.Thread(target=self._read, daemon=True, name=name).start()

    def _read(self) -> None:
        try:
            for message in self._call:
                self._on_message(message)
        except grpc.RpcError:
            self._client.demote(self.index)  # broken: the next stream goes elsewhere
        finally:
            self.ended = True
            self.requests.end()
            self._on_end(self)

    def cancel(self) -> None:
        self.requests.end()
        self._call.cancel()


class QueueWatch:
    """Every deletion under one lock's key prefix, on the session's shared watch stream.

    A waiter knows the whole queue ahead of it at the revision its read saw; from then
    on only deletions change that (a key created later sorts after it), so a watch of
    the prefix's deletions tells it when it is first without another read. ``created``
    is set once etcd confirmed the watch (``start_revision`` is then the first revision
    it covers); :meth:`is_broken` once the stream ended or etcd cancelled the watch. The waiter
    says what it waits for with :meth:`expect`; ``wake`` is set when that has happened
    (every key ahead deleted, or its own key), when the watch is created and when it
    breaks. The check runs on the stream's thread as each event arrives, so every other
    session's waiter, which sees the same deletions, is not woken for them.
    """

    def __init__(self, hub: WatchHub, prefix: bytes) -> None:
        self.created = threading.Event()
        self.wake = threading.Event()
        self._broken = False
        self.start_revision = 0
        self._mutex = threading.Lock()
        # Latest deletion revision per key since forget(), for deletions that arrive
        # between a waiter's enqueue and its expect().
        self._deleted: dict[bytes, int] = {}
        self._ahead: set[bytes] = set()
        self._own = b""
        self._since = 0
        self._own_gone = False
        self._hub = hub
        self.watch_id = hub.add(self, prefix, prefix_end(prefix))

    @property
    def live(self) -> bool:
        """Confirmed by etcd and still delivering."""
        return self.created.is_set() and not self._broken

    def is_broken(self) -> bool:
        return self._broken

    def created_or_broken(self) -> bool:
        return self.created.is_set() or self._broken

    def forget(self) -> None:
        """Drop what was recorded: a waiter calls this before it reads the queue."""
        with self._mutex:
            self._deleted.clear()
            self._ahead, self._own, self._own_gone = set(), b"", False

    def expect(self, ahead: frozenset[bytes], own: bytes, since: int) -> None:
        """Wake when every key of ``ahead`` (the queue ahead of ``own`` as read at
        revision ``since``) or ``own`` itself has been deleted after ``since``."""
        with self._mutex:
            self._ahead = {key for key in ahead if self._deleted.get(key, 0) <= since}
            self._own, self._since = own, since
            self._own_gone = self._deleted.get(own, 0) > since
            self.wake.clear()
            if not self._ahead or self._own_gone:
                self.wake.set()

    def outcome(self) -> tuple[bool, bool]:
        """(first: every key expected ahead is gone, own key gone) so far."""
        with self._mutex:
            return not self._ahead, self._own_gone

    def on_created(self, revision: int) -> None:
        self.start_revision = revision + 1
        self.created.set()
        self.wake.set()

    def on_deleted(self, deletions: Sequence[tuple[bytes, int]]) -> None:
        with self._mutex:
            for key, revision in deletions:
                self._deleted[key] = max(revision, self._deleted.get(key, 0))
                if revision > self._since:
                    self._ahead.discard(key)
                    self._own_gone = self._own_gone or key == self._own
            done = self._own != b"" and (not self._ahead or self._own_gone)
        if done:
            self.wake.set()

    def on_broken(self) -> None:
        self._broken = True
        self.wake.set()

    def stop(self) -> None:
        self._hub.remove(self.watch_id)


class WatchHub:
    """One Watch stream for every :class:`QueueWatch` of a session, opened when needed."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._mutex = threading.Lock()
        self._ids = itertools.count(1)
        self._watches: dict[int, QueueWatch] = {}
        self._stream: _Stream | None = None
        self._closed = False

    def add(self, watch: QueueWatch, key: bytes, range_end: bytes) -> int:
        watch_id = next(self._ids)
        # No start_revision: a watch from a past revision waits on etcd's 100 ms catch-up
        # loop (see EtcdBackend._wait_turn); one from "now" is notified at once.
        request = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
            key=key, range_end=range_end, filters=[rpc_pb2.WatchCreateRequest.NOPUT],
            watch_id=watch_id))
        with self._mutex:
            if self._closed:
                watch.on_broken()
                return watch_id
            if self._stream is None or self._stream.ended:
                try:
                    self._stream = _Stream(self._client, _method("Watch", "Watch"),
                                           rpc_pb2.WatchRequest, rpc_pb2.WatchResponse,
                                           on_message=self._dispatch, on_end=self._ended,
                                           name="distlock-etcd-watch")
                except BackendUnavailable:
                    watch.on_broken()
                    return watch_id
            self._watches[watch_id] = watch
            self._stream.requests.send(request)
        return watch_id

    def remove(self, watch_id: int) -> None:
        with self._mutex:
            if self._watches.pop(watch_id, None) is None or self._stream is None:
                return
            self._stream.requests.send(rpc_pb2.WatchRequest(
                cancel_request=rpc_pb2.WatchCancelRequest(watch_id=watch_id)))

    def close(self) -> None:
        with self._mutex:
            self._closed = True
            stream, self._stream = self._stream, None
            watches, self._watches = list(self._watches.values()), {}
        if stream is not None:
            stream.cancel()
        for watch in watches:
            watch.on_broken()

    def _dispatch(self, message: rpc_pb2.WatchResponse) -> None:
        with self._mutex:
            watch = self._watches.get(message.watch_id)
            if watch is None:
                return
            if message.canceled:
                del self._watches[message.watch_id]
        if message.events:
            # A delete's kv carries the key and the revision of the delete.
            watch.on_deleted([(event.kv.key, event.kv.mod_revision or message.header.revision)
                              for event in message.events if event.type == event.DELETE])
        if message.canceled:  # refused (compacted, a duplicate ID): the waiter re-reads
            watch.on_broken()
        elif message.created:
            watch.on_created(message.header.revision)

    def _ended(self, stream: _Stream) -> None:
        with self._mutex:
            if self._stream is not stream:
                return
            self._stream = None
            broken, self._watches = list(self._watches.values()), {}
        for watch in broken:
            watch.on_broken()


class KeepAlive:
    """One LeaseKeepAlive stream for a session's lease; :meth:`ping` renews it once."""

    def __init__(self, client: Client, lease_id: int) -> None:
        self._client = client
        self._lease_id = lease_id
        self._answers: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._stream: _Stream | None = None

    def ping(self, timeout: float) -> int:
        """The TTL etcd reports after renewing (0: the lease is gone); fails over until
        ``timeout`` seconds pass, then raises BackendUnavailable."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BackendUnavailable(f"no keepalive answer for lease {self._lease_id:x} "
                                         f"within {timeout:.1f}s")
            stream = self._open()
            if stream is not None:
                stream.requests.send(rpc_pb2.LeaseKeepAliveRequest(ID=self._lease_id))
                try:
                    ttl = self._answers.get(timeout=min(self._client.request_timeout,
                                                        remaining))
                except queue.Empty:
                    ttl = None  # a member that hangs: drop it and try the next
                    self._client.demote(stream.index)
                    stream.cancel()
                if ttl is not None:
                    return ttl
            time.sleep(min(0.05, max(deadline - time.monotonic(), 0)))

    def close(self) -> None:
        if self._stream is not None:
            self._stream.cancel()

    def _open(self) -> _Stream | None:
        if self._stream is None or self._stream.ended:
            try:
                self._stream = _Stream(self._client, _method("Lease", "LeaseKeepAlive"),
                                       rpc_pb2.LeaseKeepAliveRequest,
                                       rpc_pb2.LeaseKeepAliveResponse,
                                       on_message=lambda answer: self._answers.put(
                                           int(answer.TTL)),
                                       on_end=lambda _stream: self._answers.put(None),
                                       name="distlock-etcd-keepalive-stream")
            except BackendUnavailable:
                return None
        return self._stream
