"""The etcd transport: endpoint parsing, key ranges, failover and error mapping.

A stub gRPC server on a real loopback port (grpcio's own server, serving etcd's
``KV.Range`` with etcd's messages) stands in for an etcd member, so the failover order
and the retry/no-retry split can be asserted exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import pytest

from distlock import BackendUnavailable
from distlock._etcd_grpc import Client
from distlock._etcd_wire import EtcdError, prefix_end
from distlock._etcdpb import rpc_pb2
from tests.support.procs import LOCALHOST, free_port


@dataclass
class _Member:
    """What the stub answers to KV.Range, and the requests it saw."""

    url: str = ""
    revision: int = 7
    error: tuple[grpc.StatusCode, str] | None = None
    calls: list[bytes] = field(default_factory=list)

    def range(self, request: rpc_pb2.RangeRequest,
              context: grpc.ServicerContext) -> rpc_pb2.RangeResponse:
        self.calls.append(request.key)
        if self.error is not None:
            context.abort(*self.error)
        return rpc_pb2.RangeResponse(header=rpc_pb2.ResponseHeader(revision=self.revision))


@pytest.fixture
def member() -> Iterator[_Member]:
    stub = _Member()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("etcdserverpb.KV", {
        "Range": grpc.unary_unary_rpc_method_handler(
            stub.range, request_deserializer=rpc_pb2.RangeRequest.FromString,
            response_serializer=rpc_pb2.RangeResponse.SerializeToString)}),))
    port = server.add_insecure_port(f"{LOCALHOST}:0")
    server.start()
    stub.url = f"http://{LOCALHOST}:{port}"
    yield stub
    server.stop(grace=None)


@pytest.mark.parametrize(("url", "message"), [
    ("127.0.0.1:2379", "must look like"),
    ("ftp://host:2379", "must look like"),
    ("http://host:2379/v3", "path"),
    ("http://host:99999", "bad port"),
])
def test_bad_endpoints_are_refused_by_name(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Client([url])


def test_no_endpoints_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Client("")


def test_prefix_end_covers_exactly_the_prefix() -> None:
    assert prefix_end(b"lock/") == b"lock0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b"\0"


def test_a_dead_endpoint_is_skipped_and_the_live_one_kept(member: _Member) -> None:
    client = Client([f"http://{LOCALHOST}:{free_port()}", member.url])
    try:
        for _ in range(2):
            answer = client.range(rpc_pb2.RangeRequest(key=b"k"), timeout=5)
            assert answer.header.revision == 7
        assert member.calls == [b"k", b"k"]
        assert client.preferred() == 1, "the live endpoint was not kept"
    finally:
        client.close()


def test_unavailable_is_retried_until_the_deadline(member: _Member) -> None:
    member.error = (grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader")
    client = Client([member.url], request_timeout=0.5)
    try:
        with pytest.raises(BackendUnavailable, match="no leader"):
            client.range(rpc_pb2.RangeRequest(key=b"k"), timeout=0.5)
        assert len(member.calls) > 1, "an unavailable member was not retried"
    finally:
        client.close()


def test_other_errors_are_not_retried(member: _Member) -> None:
    member.error = (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: key is not provided")
    client = Client([member.url])
    try:
        with pytest.raises(EtcdError, match="key is not provided") as error:
            client.range(rpc_pb2.RangeRequest(key=b"k"), timeout=5)
        assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert len(member.calls) == 1
    finally:
        client.close()
