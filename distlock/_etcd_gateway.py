"""A small client for etcd's v3 JSON gateway, with endpoint failover.

Why not a library: ``etcd3`` (last release 2020) does not import beside protobuf 6,
which pulumi installs into the same virtualenv; ``etcd3gw`` speaks the same gateway but
its lock is try-only and unfair and leaks a lease on a failed try; ``aetcd`` is
unmaintained. The gateway (``/v3/...``, served by every etcd >= 3.4 on the client
port) needs nothing but HTTP and JSON, so the stdlib's ``http.client`` is enough and
distlock adds no dependency at all.

Gateway facts this relies on (checked against etcd 3.4 and 3.5): keys and values are
base64; int64 fields arrive as strings and zero/false fields are omitted; errors come
back as ``{"code": <grpc code>, "message": ...}`` with an HTTP error status; a watch is
one POST whose response streams newline-delimited JSON.

Failover: every call carries a deadline; an attempt that cannot connect, times out or
gets "unavailable" (no leader, leader changed) moves on to the next endpoint and the
call keeps cycling until its deadline. That makes every retried request *possibly
applied twice*, so callers only send requests that are safe to repeat (the lock's
create is a compare-and-swap on a per-session key; the lease ID is chosen by us).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from distlock._errors import BackendRefused, BackendUnavailable

# gRPC status codes that mean "this member cannot serve right now; another may".
_RETRY_CODES = frozenset({4, 14})  # DEADLINE_EXCEEDED, UNAVAILABLE
_RETRY_HTTP = frozenset({502, 503, 504})
_BACKOFF_MAX = 0.5


class EtcdError(BackendRefused):
    """etcd answered with an error that retrying elsewhere will not fix."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"etcd error {code}: {message}")
        self.code = code
        self.message = message


def b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def unb64(data: str | None) -> bytes:
    return base64.b64decode(data) if data else b""


def prefix_end(prefix: bytes) -> bytes:
    """The range_end that makes a range cover every key starting with ``prefix``."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"


@dataclass(frozen=True)
class Endpoint:
    url: str
    host: str
    port: int
    tls: bool

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parsed = urllib.parse.urlsplit(url.strip())
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"etcd endpoint must look like http://host:port, got {url!r}")
        if parsed.path not in ("", "/") or parsed.query:
            raise ValueError(f"etcd endpoint must not have a path or query, got {url!r}")
        try:
            port = parsed.port or 2379
        except ValueError as error:
            raise ValueError(f"etcd endpoint {url!r} has a bad port: {error}") from None
        return cls(url=f"{parsed.scheme}://{parsed.netloc}", host=parsed.hostname, port=port,
                   tls=parsed.scheme == "https")

    def connect(self, timeout: float,
                context: ssl.SSLContext | None) -> http.client.HTTPConnection:
        if self.tls:
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout,
                                               context=context or ssl.create_default_context())
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)


@dataclass(frozen=True)
class TLSFiles:
    """etcd client TLS, as etcdctl's --cacert/--cert/--key: PEM file paths."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    def __bool__(self) -> bool:
        return any((self.ca_file, self.cert_file, self.key_file))

    def context(self) -> ssl.SSLContext:
        for label, path in (("CA", self.ca_file), ("client certificate", self.cert_file),
                            ("client key", self.key_file)):
            if path is not None and not os.path.isfile(path):
                raise ValueError(f"etcd TLS {label} file {path!r} does not exist")
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("etcd client TLS needs both a certificate and a key file")
        try:
            context = ssl.create_default_context(cafile=self.ca_file)
        except ssl.SSLError as error:
            raise ValueError(f"etcd TLS CA file {self.ca_file!r} is not a PEM CA bundle: "
                             f"{error}") from None
        if self.cert_file and self.key_file:
            try:
                context.load_cert_chain(self.cert_file, self.key_file)
            except ssl.SSLError as error:
                raise ValueError(f"etcd TLS client certificate {self.cert_file!r} and key "
                                 f"{self.key_file!r} are not a matching PEM pair: "
                                 f"{error}") from None
        return context


def _refused_certificate(error: ssl.SSLError) -> bool:
    """True for a TLS alert by which the server rejects the client's certificate
    (``SSLV3_ALERT_BAD_CERTIFICATE``, ``TLSV13_ALERT_CERTIFICATE_REQUIRED``, ...)."""
    reason = str(getattr(error, "reason", "") or "")
    return "ALERT" in reason and any(word in reason for word in
                                     ("CERTIFICATE", "UNKNOWN_CA", "ACCESS_DENIED"))


class _Unavailable(Exception):
    """One attempt on one endpoint failed in a way another endpoint may not."""


class Gateway:
    """Thread-safe: each thread keeps its own keep-alive connection per endpoint."""

    def __init__(self, endpoints: Sequence[str], *, request_timeout: float = 2.0,
                 tls: TLSFiles | None = None) -> None:
        if isinstance(endpoints, str):
            endpoints = [e for e in endpoints.split(",") if e.strip()]
        if not endpoints:
            raise ValueError("at least one etcd endpoint is required (http://host:port)")
        self.endpoints = [Endpoint.parse(e) for e in endpoints]
        self._tls = tls.context() if tls else None
        if self._tls is not None and not all(e.tls for e in self.endpoints):
            raise ValueError("etcd TLS files were given, so every endpoint must be https://")
        self.request_timeout = request_timeout
        self._preferred = 0
        self._mutex = threading.Lock()
        self._local = threading.local()
        self._connections: list[http.client.HTTPConnection] = []
        self._closed = False

    def call(self, path: str, body: Mapping[str, Any], *, timeout: float = 10.0) -> dict[str, Any]:
        """POST ``body`` to ``/v3/<path>``, failing over until ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        errors: list[str] = []
        attempt = 0
        while True:
            index = self._preferred_index()
            endpoint = self.endpoints[index]
            remaining = deadline - time.monotonic()
            try:
                result = self._attempt(endpoint, path, body, min(self.request_timeout,
                                                                 max(remaining, 0.05)))
            except _Unavailable as error:
                errors.append(f"{endpoint.url}: {error}")
                self._demote(index)
            else:
                return result
            attempt += 1
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._closed:
                recent = "; ".join(errors[-len(self.endpoints):])
                raise BackendUnavailable(f"etcd /v3/{path} failed on every endpoint for "
                                         f"{timeout:.1f}s: {recent}")
            if attempt % len(self.endpoints) == 0:
                # A whole round failed (an election is running): back off a little.
                time.sleep(min(_BACKOFF_MAX, 0.05 * attempt, remaining))

    def _attempt(self, endpoint: Endpoint, path: str, body: Mapping[str, Any],
                 timeout: float) -> dict[str, Any]:
        connection = self._connection(endpoint)
        payload = json.dumps(body).encode()
        try:
            if connection.sock is not None:
                connection.sock.settimeout(timeout)
            connection.timeout = timeout
            connection.request("POST", f"/v3/{path}", body=payload,
                               headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            raw = response.read()
        except ssl.SSLCertVerificationError as error:
            # Configuration, not an outage: retrying until the deadline would only hide it.
            self._drop(endpoint)
            raise BackendUnavailable(f"TLS verification of {endpoint.url} failed: {error}") \
                from error
        except ssl.SSLError as error:
            self._drop(endpoint)
            if _refused_certificate(error):
                # The member answered "not you" (no or an untrusted client certificate):
                # every retry gets the same alert, so this is a refusal, not an outage.
                raise BackendRefused(f"{endpoint.url} refused this client's TLS "
                                     f"certificate: {error}") from error
            raise _Unavailable(f"{type(error).__name__}: {error}") from error
        except (OSError, http.client.HTTPException) as error:
            self._drop(endpoint)
            raise _Unavailable(f"{type(error).__name__}: {error}") from error
        try:
            decoded: dict[str, Any] = json.loads(raw) if raw else {}
        except ValueError:
            raise _Unavailable(f"HTTP {response.status}: undecodable body {raw[:200]!r}") from None
        if response.status == 200 and "error" not in decoded:
            return decoded
        code = int(decoded.get("code", 0))
        message = str(decoded.get("message") or decoded.get("error") or raw[:200])
        if code in _RETRY_CODES or response.status in _RETRY_HTTP:
            raise _Unavailable(f"HTTP {response.status}: {message}")
        raise EtcdError(code, message)

    def stream(self, path: str, body: Mapping[str, Any], *, timeout: float) -> Stream:
        """Open a streaming POST on the preferred endpoint; see :class:`Stream`.

        Not failed over here: a stream that cannot open or breaks simply ends, and the
        caller decides (it re-reads state through :meth:`call`, which fails over, and
        streams again, by then from the next endpoint).
        """
        index = self._preferred_index()
        connection = self.endpoints[index].connect(timeout, self._tls)
        try:
            connection.request("POST", f"/v3/{path}", body=json.dumps(body).encode(),
                               headers={"Content-Type": "application/json",
                                        # etcd cancels the watch if this member loses its
                                        # leader, instead of going silent.
                                        "Grpc-Metadata-hasleader": "true"})
            response = connection.getresponse()
            if connection.sock is not None:
                connection.sock.settimeout(None)  # a watch is quiet until its event
        except (OSError, http.client.HTTPException):
            self._demote(index)
            connection.close()
            return Stream(connection, None)
        return Stream(connection, response)

    def close(self) -> None:
        self._closed = True
        with self._mutex:
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()

    def _preferred_index(self) -> int:
        with self._mutex:
            return self._preferred

    def _demote(self, index: int) -> None:
        with self._mutex:
            if self._preferred == index:
                self._preferred = (index + 1) % len(self.endpoints)

    def _connection(self, endpoint: Endpoint) -> http.client.HTTPConnection:
        pool: dict[str, http.client.HTTPConnection] | None = getattr(self._local, "pool", None)
        if pool is None:
            pool = self._local.pool = {}
        connection = pool.get(endpoint.url)
        if connection is None:
            connection = pool[endpoint.url] = endpoint.connect(self.request_timeout,
                                                               self._tls)
            with self._mutex:
                self._connections.append(connection)
        return connection

    def _drop(self, endpoint: Endpoint) -> None:
        pool: dict[str, http.client.HTTPConnection] = getattr(self._local, "pool", {})
        connection = pool.pop(endpoint.url, None)
        if connection is not None:
            connection.close()
            with self._mutex, contextlib.suppress(ValueError):
                self._connections.remove(connection)


class Stream:
    """Newline-delimited JSON messages of one streaming call, abortable from any thread.

    Iterating yields each message's ``result``; it ends when the server closes the
    stream, sends an error, the connection breaks, or :meth:`abort` is called (shutting
    the socket down wakes a thread blocked reading it).
    """

    def __init__(self, connection: http.client.HTTPConnection,
                 response: http.client.HTTPResponse | None) -> None:
        self._connection = connection
        self._response = response
        self._aborted = False

    def abort(self) -> None:
        self._aborted = True
        sock = self._connection.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._connection.close()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        response = self._response
        if response is None or response.status != 200:
            return
        while not self._aborted:
            try:
                line = response.readline()
            except Exception:  # noqa: BLE001 - abort() closes the response under us
                return
            if not line:
                return
            if not line.strip():
                continue
            try:
                message = json.loads(line)
            except ValueError:
                return
            if "error" in message:
                return
            result: dict[str, Any] = message.get("result", message)
            yield result
