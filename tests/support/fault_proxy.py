"""A small HTTPS proxy in front of the real API server, for the faults it cannot be told to make.

A real kube-apiserver never loses a response it has committed, never hangs on purpose
and never drops a healthy watch; the Kubernetes lock backend must survive all three. So
tests put this proxy between the client and the server and inject exactly those faults,
while everything else (validation, resourceVersions, conflicts, RBAC, watch semantics,
410 Gone after a compaction) stays the real server's.

Why it speaks HTTP and not just TCP: "the response to the next PUT is lost" needs request
boundaries. It terminates TLS with the API server's own certificate (issued for
127.0.0.1, so clients verify it with the cluster CA as they would the server) and opens
its own TLS connection upstream; credentials travel as the client's bearer token, which
it forwards untouched (client certificates cannot cross a TLS-terminating proxy, so
kubeconfigs for the proxy carry tokens). It understands just enough HTTP/1.1 for the
Kubernetes clients used here: Content-Length request bodies and Content-Length or
chunked responses, streamed chunk by chunk so watches flow through as they happen.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from tests.support.procs import LOCALHOST

_HEAD_LIMIT = 1 << 20
_POLL = 0.2  # how often a blocked forwarder re-checks that the proxy is still running


class _Closed(Exception):
    """One side of a proxied connection went away."""


@dataclass(eq=False)  # identity semantics: connections live in a set
class _Connection:
    client: socket.socket
    upstream: socket.socket | None = None
    watching: bool = False
    closed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def close(self) -> None:
        with self.lock:
            self.closed = True
            for sock in (self.client, self.upstream):
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
                    with contextlib.suppress(OSError):
                        sock.close()


def _read_head(stream: BinaryIO) -> list[bytes]:
    """The start line and header lines of one HTTP message (without the blank line)."""
    lines: list[bytes] = []
    size = 0
    while True:
        line = stream.readline(_HEAD_LIMIT)
        if not line:
            raise _Closed
        size += len(line)
        if size > _HEAD_LIMIT:
            raise _Closed
        if line in (b"\r\n", b"\n"):
            if lines:
                return lines
            continue  # tolerate stray CRLF between messages
        lines.append(line.rstrip(b"\r\n"))


def _headers(lines: list[bytes]) -> dict[bytes, bytes]:
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return headers


class FaultProxy:
    """Listens on 127.0.0.1 (``url``) and forwards to ``upstream`` (host, port) over TLS.

    Faults: :meth:`unreachable` (every request and stream hangs, or every connection is
    cut), :meth:`lose_next_responses` (the server applies the request, the client never
    hears back), :meth:`close_watches` (open watch streams are cut). Observations:
    :attr:`requests` ((method, path) in arrival order), :attr:`answered` ((method, path,
    status) of every response the server sent, lost or not), :meth:`open_watches`,
    :attr:`expired_watches` (watch streams that carried a 410 ERROR event).
    """

    def __init__(self, upstream: tuple[str, int], *, certificate: Path, key: Path,
                 ca_file: Path) -> None:
        self.upstream = upstream
        self._server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._server_tls.load_cert_chain(str(certificate), str(key))
        self._client_tls = ssl.create_default_context(cafile=str(ca_file))
        self._listener = socket.create_server((LOCALHOST, 0))
        self.port = int(self._listener.getsockname()[1])
        self.requests: list[tuple[str, str]] = []
        self.answered: list[tuple[str, str, int]] = []
        self.expired_watches = 0
        self._connections: set[_Connection] = set()
        self._lost: dict[str, int] = {}
        self._serving = threading.Event()
        self._serving.set()
        self._refusing = False
        self._stopped = False
        self._state = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True, name="fault-proxy")

    @property
    def url(self) -> str:
        return f"https://{LOCALHOST}:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped = True
        self._serving.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._state:
            connections = list(self._connections)
        for connection in connections:
            connection.close()
        self._thread.join(5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- faults ----------------------------------------------------------------------

    @contextlib.contextmanager
    def unreachable(self, *, hang: bool = True) -> Iterator[None]:
        """Inside: with ``hang`` every request and watch stream stalls (a frozen server);
        without, every connection is cut and new ones are closed at once. On exit the
        proxy serves again and stalled requests carry on."""
        if hang:
            self._serving.clear()
        else:
            self._refusing = True
            self._close_where(lambda _: True)
        try:
            yield
        finally:
            self._refusing = False
            self._serving.set()

    def lose_next_responses(self, count: int, *, methods: tuple[str, ...] = ("PUT",)) -> None:
        """The next ``count`` requests with one of ``methods`` reach the server, which
        applies them; their responses are read and dropped, and the connection is cut."""
        with self._state:
            for method in methods:
                self._lost[method.upper()] = self._lost.get(method.upper(), 0) + count

    @property
    def pending_lost_responses(self) -> int:
        with self._state:
            return max(self._lost.values(), default=0)

    def close_watches(self) -> int:
        """Cut every open watch stream (both sides); returns how many."""
        return self._close_where(lambda c: c.watching)

    def open_watches(self) -> int:
        with self._state:
            return sum(1 for c in self._connections if c.watching and not c.closed)

    # -- forwarding ------------------------------------------------------------------

    def _close_where(self, predicate: object) -> int:
        assert callable(predicate)
        with self._state:
            chosen = [c for c in self._connections if predicate(c)]
        for connection in chosen:
            connection.close()
        return len(chosen)

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._refusing:
                client.close()
                continue
            connection = _Connection(client)
            with self._state:
                self._connections.add(connection)
            threading.Thread(target=self._serve, args=(connection,), daemon=True,
                             name="fault-proxy-connection").start()

    def _wait_serving(self, connection: _Connection) -> None:
        while not self._serving.wait(_POLL):
            if self._stopped or connection.closed:
                raise _Closed
        if self._stopped or connection.closed or self._refusing:
            raise _Closed

    def _take_loss(self, method: str) -> bool:
        with self._state:
            left = self._lost.get(method, 0)
            if left <= 0:
                return False
            self._lost[method] = left - 1
            if self._lost[method] == 0:
                del self._lost[method]
            return True

    def _serve(self, connection: _Connection) -> None:
        try:
            tls = self._server_tls.wrap_socket(connection.client, server_side=True)
            connection.client = tls
            client_in = tls.makefile("rb")
            upstream_in: BinaryIO | None = None
            while True:
                head = _read_head(client_in)
                method, target = head[0].split(b" ")[:2]
                body = client_in.read(int(_headers(head).get(b"content-length", b"0")))
                path, _, query = target.decode("latin-1").partition("?")
                with self._state:
                    self.requests.append((method.decode(), path))
                self._wait_serving(connection)
                if connection.upstream is None:
                    raw = socket.create_connection(self.upstream, timeout=None)
                    connection.upstream = self._client_tls.wrap_socket(
                        raw, server_hostname=self.upstream[0])
                    upstream_in = connection.upstream.makefile("rb")
                assert upstream_in is not None
                connection.upstream.sendall(b"\r\n".join(head) + b"\r\n\r\n" + body)
                # As the API server reads it (Go's ParseBool): the Python client 36.x sends
                # "watch=True", 37.x "watch=true".
                watch = any(p.lower() in ("watch=true", "watch=1", "watch=t")
                            for p in query.split("&"))
                self._relay_response(connection, upstream_in, tls, (method.decode(), path),
                                     lose=self._take_loss(method.decode()), watch=watch)
        except (_Closed, OSError, ValueError, ssl.SSLError):
            pass
        finally:
            connection.close()
            with self._state:
                self._connections.discard(connection)

    def _relay_response(self, connection: _Connection, upstream_in: BinaryIO,
                        client: socket.socket, request: tuple[str, str], *, lose: bool,
                        watch: bool) -> None:
        head = _read_head(upstream_in)
        headers = _headers(head)
        with self._state:
            self.answered.append((*request, int(head[0].split(b" ")[1])))
        if not lose:
            client.sendall(b"\r\n".join(head) + b"\r\n\r\n")
        connection.watching = watch
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            self._relay_chunks(connection, upstream_in, client, lose=lose, watch=watch)
        else:
            data = upstream_in.read(int(headers.get(b"content-length", b"0")))
            if not lose:
                client.sendall(data)
        connection.watching = False
        if lose:
            raise _Closed  # the client's request was applied; it never hears of it
        if headers.get(b"connection", b"").lower() == b"close":
            raise _Closed

    def _relay_chunks(self, connection: _Connection, upstream_in: BinaryIO,
                      client: socket.socket, *, lose: bool, watch: bool) -> None:
        """Copy a chunked body chunk by chunk, so a watch's events arrive as they happen."""
        while True:
            size_line = upstream_in.readline(_HEAD_LIMIT)
            if not size_line:
                raise _Closed
            size = int(size_line.split(b";")[0].strip(), 16)
            data = upstream_in.read(size + 2)  # the chunk and its CRLF
            if watch and b'"code":410' in data:
                with self._state:
                    self.expired_watches += 1
            if size == 0:
                trailer = data
                while trailer not in (b"\r\n", b"\n", b""):
                    trailer = upstream_in.readline(_HEAD_LIMIT)
                if not lose:
                    client.sendall(size_line + b"\r\n")
                return
            if not lose:
                self._wait_serving(connection)
                client.sendall(size_line + data)
