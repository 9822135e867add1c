"""The etcd gateway client: endpoint parsing, key ranges, failover and error mapping.

A stub HTTP server on a real loopback port stands in for an etcd member so the
failover order and the retry/no-retry split can be asserted exactly.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from distlock import BackendUnavailable
from distlock._etcd_gateway import EtcdError, Gateway, b64, prefix_end, unb64
from tests.support.procs import free_port


class _Stub(BaseHTTPRequestHandler):
    url: ClassVar[str] = ""
    status: ClassVar[int] = 200
    body: ClassVar[dict[str, object]] = {}
    paths: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        self.rfile.read(length)
        type(self).paths.append(self.path)
        data = json.dumps(type(self).body).encode()
        self.send_response(type(self).status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def stub() -> Iterator[type[_Stub]]:
    class Handler(_Stub):  # a fresh subclass per test: its own class-level state
        paths: ClassVar[list[str]] = []

    handler = Handler
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    handler.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield handler
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("url", "message"), [
    ("127.0.0.1:2379", "must look like"),
    ("ftp://host:2379", "must look like"),
    ("http://host:2379/v3", "path"),
    ("http://host:99999", "bad port"),
])
def test_bad_endpoints_are_refused_by_name(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Gateway([url])


def test_no_endpoints_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Gateway("")


def test_prefix_end_covers_exactly_the_prefix() -> None:
    assert prefix_end(b"lock/") == b"lock0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b"\0"
    assert unb64(b64("naïve")) == "naïve".encode()


def test_a_dead_endpoint_is_skipped_and_the_live_one_kept(stub: type[_Stub]) -> None:
    stub.body = {"header": {"revision": "7"}}
    gateway = Gateway([f"http://127.0.0.1:{free_port()}", stub.url])
    assert gateway.call("kv/range", {"key": b64("k")}, timeout=5)["header"]["revision"] == "7"
    assert gateway.call("kv/range", {"key": b64("k")}, timeout=5)["header"]["revision"] == "7"
    assert stub.paths == ["/v3/kv/range", "/v3/kv/range"]
    gateway.close()


def test_unavailable_is_retried_until_the_deadline(stub: type[_Stub]) -> None:
    stub.status, stub.body = 503, {"code": 14, "message": "etcdserver: no leader"}
    gateway = Gateway([stub.url], request_timeout=0.5)
    with pytest.raises(BackendUnavailable, match="no leader"):
        gateway.call("kv/put", {}, timeout=0.5)
    assert len(stub.paths) > 1, "an unavailable member was not retried"


def test_other_errors_are_not_retried(stub: type[_Stub]) -> None:
    stub.status, stub.body = 400, {"code": 3, "message": "etcdserver: key is not provided"}
    gateway = Gateway([stub.url])
    with pytest.raises(EtcdError, match="key is not provided") as error:
        gateway.call("kv/put", {}, timeout=5)
    assert error.value.code == 3
    assert len(stub.paths) == 1
