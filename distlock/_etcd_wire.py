"""What distlock's etcd transport needs beside gRPC itself: endpoint URLs, TLS files,
etcd's refusals, and the failover loop every call goes through.

Failover: every call carries a deadline; an attempt that cannot connect, times out or
gets "unavailable" (no leader, leader changed) moves on to the next endpoint and the
call keeps cycling until its deadline. That makes every retried request *possibly
applied twice*, so callers only send requests that are safe to repeat (the lock's
create is a compare-and-swap on a per-session key; the lease ID is chosen by us).

(Until issue 19 this module was ``_etcd_gateway``, a client for etcd's v3 JSON gateway;
the gRPC client in :mod:`distlock._etcd_grpc` replaced it, and no user need for the
gateway remained: every etcd >= 3.4 serves gRPC on the same client port.)
"""


from __future__ import annotations

import itertools
import os
import ssl
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from distlock._errors import BackendRefused, BackendUnavailable

_BACKOFF_MAX = 0.5


class EtcdError(BackendRefused):
    """etcd answered with an error that retrying elsewhere will not fix."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"etcd error {code}: {message}")
        self.code = code
        self.message = message


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

    def pem(self) -> tuple[bytes | None, bytes | None, bytes | None]:
        """The CA, certificate and key as PEM bytes (gRPC's credentials take bytes),
        checked exactly as :meth:`context` checks them."""
        self.context()

        def read(path: str | None) -> bytes | None:
            if path is None:
                return None
            with open(path, "rb") as file:
                return file.read()

        return read(self.ca_file), read(self.cert_file), read(self.key_file)


def refused_certificate(error: ssl.SSLError) -> bool:
    """True for a TLS alert by which the server rejects the client's certificate
    (``SSLV3_ALERT_BAD_CERTIFICATE``, ``TLSV13_ALERT_CERTIFICATE_REQUIRED``, ...)."""
    reason = str(getattr(error, "reason", "") or "")
    return "ALERT" in reason and any(word in reason for word in
                                     ("CERTIFICATE", "UNKNOWN_CA", "ACCESS_DENIED"))


class _Unavailable(Exception):
    """One attempt on one endpoint failed in a way another endpoint may not."""


class FailsOver(Protocol):
    """A client that :func:`fail_over` can cycle: endpoints, the one to try, a budget."""

    endpoints: list[Endpoint]
    request_timeout: float

    def preferred(self) -> int: ...

    def demote(self, index: int) -> None: ...

    def is_closed(self) -> bool: ...


_T = TypeVar("_T")


def fail_over(client: FailsOver, what: str, timeout: float,
              attempt: Callable[[int, float], _T]) -> _T:
    """``attempt(endpoint index, budget)`` on the preferred endpoint, moving to the next
    on each :class:`_Unavailable` until ``timeout`` seconds pass (BackendUnavailable)."""
    deadline = time.monotonic() + timeout
    errors: list[str] = []
    for tries in itertools.count(1):
        index = client.preferred()
        remaining = deadline - time.monotonic()
        try:
            return attempt(index, min(client.request_timeout, max(remaining, 0.05)))
        except _Unavailable as error:
            errors.append(f"{client.endpoints[index].url}: {error}")
            client.demote(index)
        remaining = deadline - time.monotonic()
        if remaining <= 0 or client.is_closed():
            recent = "; ".join(errors[-len(client.endpoints):])
            raise BackendUnavailable(f"etcd {what} failed on every endpoint for "
                                     f"{timeout:.1f}s: {recent}")
        if tries % len(client.endpoints) == 0:
            # A whole round failed (an election is running): back off a little.
            time.sleep(min(_BACKOFF_MAX, 0.05 * tries, remaining))
    raise AssertionError("unreachable")  # pragma: no cover - itertools.count never ends
