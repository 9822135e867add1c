"""Certificates made with openssl for TLS tests: a CA, and leaf certificates it signs.

Leaves carry ``subjectAltName`` IP:127.0.0.1 (what the test servers listen on) so clients can
verify the server's identity, not just its chain. ``days=-1`` makes an already expired one.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from tests.support.procs import LOCALHOST, require_binary, run


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


def make_ca(directory: Path, name: str = "test-ca") -> Pair:
    require_binary("openssl")
    directory.mkdir(parents=True, exist_ok=True)
    pair = Pair(directory / f"{name}.crt", directory / f"{name}.key")
    run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", f"/CN={name}", "-keyout", str(pair.key), "-out", str(pair.cert)])
    return pair


def issue(ca: Pair, directory: Path, name: str, *, days: int = 2,
          dns_names: tuple[str, ...] = ()) -> Pair:
    """A leaf for ``name`` signed by ``ca``, valid for 127.0.0.1, localhost and ``dns_names``."""
    directory.mkdir(parents=True, exist_ok=True)
    pair = Pair(directory / f"{name}.crt", directory / f"{name}.key")
    csr = directory / f"{name}.csr"
    ext = directory / f"{name}.ext"
    names = "".join(f",DNS:{dns}" for dns in dns_names)
    ext.write_text(f"subjectAltName=IP:{LOCALHOST},DNS:localhost{names}\n")
    run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
         "-keyout", str(pair.key), "-out", str(csr)])
    run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
         "-set_serial", str(secrets.randbits(63)), "-days", str(days),
         "-extfile", str(ext), "-out", str(pair.cert)])
    return pair


def serial(cert: Path) -> int:
    out = run(["openssl", "x509", "-in", str(cert), "-noout", "-serial"]).stdout
    return int(out.strip().split("=", 1)[1], 16)


__all__ = ["Pair", "issue", "make_ca", "serial"]
