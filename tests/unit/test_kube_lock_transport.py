"""The Kubernetes lock backend's HTTP (distlock/_kube_http.py) keeps the kubeconfig's
authentication and TLS exactly: the server's certificate checked against the
kubeconfig's CA, the kubeconfig's client certificate presented, its token sent (and
asked for again on every request, so refreshing credentials keep working).

The server is a real HTTPS server on 127.0.0.1 (Python's own, with a CA, server and
client certificates made by openssl) that requires a client certificate and records
what each request carried; the API server's own checks are in the integration tests
(RBAC, 403s), which cannot tell a client certificate from a token being sent.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import urllib3
import yaml  # type: ignore[import-untyped]  # PyYAML ships with kubernetes; no stubs pinned
from kubernetes.client.exceptions import ApiException

from distlock._kube import api_client
from distlock._kube_http import KubeHTTP
from tests.support.certs import Pair, issue, make_ca
from tests.support.procs import LOCALHOST

TOKEN = "token-from-the-kubeconfig"


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    """Lower-cased names: HTTP header names are case-insensitive."""
    body: bytes
    client_cn: str | None


@dataclass
class Server:
    url: str
    ca: Pair
    client: Pair
    seen: list[Seen] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    server: Any

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        peer = self.connection.getpeercert()
        subject = dict(item[0] for item in peer.get("subject", ())) if peer else {}
        self.server.seen.append(Seen(self.command, self.path,
                                     {k.lower(): v for k, v in self.headers.items()}, body,
                                     subject.get("commonName")))
        if self.path.startswith("/refused"):
            self._send(422, {"kind": "Status", "reason": "Invalid", "message": "no"})
        elif "/namespaces/garbled/" in self.path:  # a watch whose event is not JSON
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            line = b"{not json\n"
            self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n0\r\n\r\n")
        elif self.path.startswith("/watch"):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for n in (1, 2):
                line = json.dumps({"type": "MODIFIED", "object": {"n": n}}).encode() + b"\n"
                self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        else:
            self._send(200, {"echo": json.loads(body) if body else None})

    def _send(self, status: int, answer: object) -> None:
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PUT = do_PATCH = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    pki = tmp_path_factory.mktemp("pki")
    ca = make_ca(pki / "ca")
    server_pair = issue(ca, pki / "server", "api-server")
    client_pair = issue(ca, pki / "client", "lock-client")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(server_pair.cert, server_pair.key)
    context.load_verify_locations(ca.cert)
    context.verify_mode = ssl.CERT_REQUIRED  # no client certificate, no connection
    httpd = ThreadingHTTPServer((LOCALHOST, 0), _Handler)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    httpd.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    running = Server(f"https://{LOCALHOST}:{httpd.server_address[1]}", ca, client_pair,
                     httpd.seen)  # type: ignore[attr-defined]
    try:
        yield running
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def _kubeconfig(path: Path, server: Server, *, ca: Path) -> str:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": server.url,
                                               "certificate-authority": str(ca)}}],
        "users": [{"name": "u", "user": {"token": TOKEN,
                                         "client-certificate": str(server.client.cert),
                                         "client-key": str(server.client.key)}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}]}))
    return str(path)


def test_requests_carry_the_kubeconfigs_token_and_client_certificate(
        server: Server, tmp_path: Path) -> None:
    http = KubeHTTP(api_client(_kubeconfig(tmp_path / "kc", server, ca=server.ca.cert)))
    before = len(server.seen)
    answer = http.request("PATCH", "/apis/g/v1/namespaces/ns/locks/a/status", timeout=10,
                          query={"fieldSelector": "metadata.name=a", "watch": True},
                          body=[{"op": "test", "path": "/status/holder", "value": "h"}],
                          content_type="application/json-patch+json")
    assert answer == {"echo": [{"op": "test", "path": "/status/holder", "value": "h"}]}
    (seen,) = server.seen[before:]
    assert seen.method == "PATCH"
    assert seen.path == ("/apis/g/v1/namespaces/ns/locks/a/status"
                         "?fieldSelector=metadata.name%3Da&watch=true")
    assert seen.headers["authorization"] == f"Bearer {TOKEN}"
    assert seen.headers["content-type"] == "application/json-patch+json"
    assert seen.client_cn == "lock-client"
    assert seen.headers["user-agent"].startswith("OpenAPI-Generator/")


def test_the_token_is_asked_for_on_every_request(server: Server, tmp_path: Path) -> None:
    """exec and OIDC credentials refresh through the configuration's hook, which the
    generated client runs per request; so must the backend's own requests."""
    api = api_client(_kubeconfig(tmp_path / "kc", server, ca=server.ca.cert))
    issued = iter(["Bearer first", "Bearer second"])  # as the kubeconfig loader stores it

    def refresh(configuration: Any) -> None:
        configuration.api_key["BearerToken"] = next(issued)

    api.configuration.refresh_api_key_hook = refresh
    http = KubeHTTP(api)
    before = len(server.seen)
    http.request("GET", "/one", timeout=10)
    http.request("GET", "/two", timeout=10)
    assert [s.headers["authorization"] for s in server.seen[before:]] == [
        "Bearer first", "Bearer second"]


def test_a_server_the_kubeconfigs_ca_did_not_sign_is_refused(
        server: Server, tmp_path: Path) -> None:
    other_ca = make_ca(tmp_path / "other", "other-ca")
    http = KubeHTTP(api_client(_kubeconfig(tmp_path / "kc", server, ca=other_ca.cert)))
    before = len(server.seen)
    with pytest.raises(urllib3.exceptions.SSLError, match="CERTIFICATE_VERIFY_FAILED"):
        http.request("GET", "/anything", timeout=10)
    assert server.seen[before:] == [], "a request went to an unverified server"


def test_an_error_status_is_the_clients_api_exception_with_its_body(
        server: Server, tmp_path: Path) -> None:
    http = KubeHTTP(api_client(_kubeconfig(tmp_path / "kc", server, ca=server.ca.cert)))
    with pytest.raises(ApiException) as refused:
        http.request("PATCH", "/refused", timeout=10, body=[])
    assert refused.value.status == 422
    assert json.loads(refused.value.body)["reason"] == "Invalid"


def test_a_stream_yields_its_chunks_as_lines(server: Server, tmp_path: Path) -> None:
    from distlock._kube import _lines  # noqa: PLC0415 - the reader the watcher uses

    http = KubeHTTP(api_client(_kubeconfig(tmp_path / "kc", server, ca=server.ca.cert)))
    response = http.stream("/watch", query={"watch": True}, connect_timeout=10,
                           read_timeout=10)
    try:
        events = [json.loads(line) for line in _lines(response)]
    finally:
        response.release_conn()
    assert [event["object"]["n"] for event in events] == [1, 2]
    assert server.seen[-1].headers["authorization"] == f"Bearer {TOKEN}"


def test_an_unreadable_watch_event_ends_the_watch_loudly(server: Server, tmp_path: Path) -> None:
    """A watcher thread that died on it silently would leave its waiter waiting on an
    empty queue (until its deadline, or for ever without one)."""
    from distlock import _kube  # noqa: PLC0415

    api = api_client(_kubeconfig(tmp_path / "kc", server, ca=server.ca.cert))
    objects = _kube._LockObjects(api, "garbled", _kube.Timing.from_ttl(10))
    watcher = _kube._Watcher(objects, "lock", "1", connect_timeout=10)
    try:
        item = watcher.next(30)
    finally:
        watcher.stop()
    assert isinstance(item, _kube._Transient), item
    assert "unreadable watch event" in str(item)
