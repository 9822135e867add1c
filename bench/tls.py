"""``venv/bin/python -m bench.tls [--rounds N] [--stream-mb M] [--clone-mb C]``: what TLS costs.

Measured in one run, interleaved, on the same server and data so load affects both sides alike:

- commit latency: one autocommit INSERT per round on a kept-open connection, to a MariaDB 10.11
  with the pods' durability (sync_binlog=1, innodb_flush_log_at_trx_commit=1), over plain TCP
  and over TLS with the CA and host name verified (what clients and ReplicationInit use);
- connect: a new connection per round (what each probe and each ReplicationInit call pays);
- clone path: the transport of a replica clone, one stream of ``--stream-mb`` MiB of
  incompressible data through ncat, plain and ``--ssl`` (the backup sidecar serves clones
  with ncat; the backup tool's own CPU is not included, so this is the transport's share);
- clone: the whole clone path, as a new replica pod runs it (``clone.sh`` streaming from the
  primary pod's ``backup-server.sh`` sidecar, extracting, preparing, marking complete: the
  pod-script harness, tests/support/pods.py), of a primary holding ``--clone-mb`` MiB, one
  cluster with mysql.tls off and one with it on (the stream over TLS, the donor verified by
  its pod DNS name, which an nss_wrapper hosts file resolves to 127.0.0.1), interleaved.

Prints a table and writes bench/results/tls.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pymysql

from bench._procs import BenchUnavailable, listening, need
from bench._report import RESULTS_DIR, machine, percentile
from bench.seeding import _generate
from components.mysql._tls import pymysql_ssl
from tests.support.certs import Pair, issue, make_ca
from tests.support.mariadb import MariaDBServer
from tests.support.pods import PodCluster
from tests.support.procs import LOCALHOST, free_port, wait_until

_DURABLE = "log_bin=mysql-bin\nbinlog_format=ROW\nsync_binlog=1\ninnodb_flush_log_at_trx_commit=1\n"


def _timed(rounds: int, action: Callable[[], None]) -> list[float]:
    out = []
    for _ in range(rounds):
        start = time.perf_counter()
        action()
        out.append((time.perf_counter() - start) * 1000)
    return out


def _stream_seconds(data: Path, cert: Path, key: Path, *, tls: bool) -> float:
    port = free_port()
    ssl_server = ["--ssl", "--ssl-cert", str(cert), "--ssl-key", str(key)] if tls else []
    ssl_client = ["--ssl"] if tls else []
    with open(os.devnull, "wb") as sink:
        server = subprocess.Popen(["ncat", "-l", LOCALHOST, str(port), "--send-only",
                                   *ssl_server], stdin=data.open("rb"), stdout=sink)
        try:
            wait_until(lambda: listening(port), timeout=10, what="ncat to listen")
            start = time.perf_counter()
            subprocess.run(["ncat", LOCALHOST, str(port), "--recv-only", *ssl_client],
                           stdout=sink, check=True, timeout=600)
            return time.perf_counter() - start
        finally:
            server.wait(timeout=30)


NSS_WRAPPER = Path("/usr/lib/x86_64-linux-gnu/libnss_wrapper.so")
_POD_NAMES = tuple(f"orders-mysql-{ordinal}.orders-mysql-headless" for ordinal in range(2))


def _clone_seconds(base: Path, ca: Pair, clone_mb: int) -> dict[str, list[float]]:
    """Seconds of each clone.sh run, plain and TLS, two of each, interleaved."""
    if not NSS_WRAPPER.is_file():
        raise BenchUnavailable(f"{NSS_WRAPPER} is missing (Debian's libnss-wrapper)")
    hosts = base / "hosts"
    hosts.write_text(f"{LOCALHOST} localhost {socket.gethostname()} {' '.join(_POD_NAMES)}\n")
    # The processes started from here on resolve the pods' names (nothing else changes).
    os.environ |= {"LD_PRELOAD": str(NSS_WRAPPER), "NSS_WRAPPER_HOSTS": str(hosts)}
    leaf = issue(ca, base / "pod-certs", "pods", dns_names=_POD_NAMES)
    tls_dir = base / "pod-tls"
    tls_dir.mkdir()
    for name, source in (("tls.crt", leaf.cert), ("tls.key", leaf.key), ("ca.crt", ca.cert)):
        shutil.copyfile(source, tls_dir / name)
    seconds: dict[str, list[float]] = {"False": [], "True": []}
    with ExitStack() as stack:
        clusters = {}
        for tls in (False, True):
            cluster = stack.enter_context(PodCluster(
                base / f"pods-{'tls' if tls else 'plain'}", max_pods=2,
                tls_dir=tls_dir if tls else None,
                peer_host_template="orders-mysql-{ordinal}.orders-mysql-headless"))
            _generate(cluster.start_pod(0).server, clone_mb << 20)
            clusters[tls] = cluster
        for _ in range(2):
            for tls, cluster in clusters.items():
                replica = cluster.pod(1)
                replica.init_config()
                start = time.perf_counter()
                code = replica.clone()
                seconds[str(tls)].append(time.perf_counter() - start)
                if code != 0:
                    raise RuntimeError(f"clone.sh exited {code}:\n{replica.clone_log()[-3000:]}")
                shutil.rmtree(replica.data_dir)
                replica.data_dir.mkdir()
    return seconds


def run(rounds: int, stream_mb: int, clone_mb: int = 0) -> dict[str, Any]:
    need("mariadbd", "ncat", "openssl")
    base = Path(tempfile.mkdtemp(prefix="bench-tls-"))
    ca = make_ca(base / "certs")
    leaf = issue(ca, base / "certs", "server")
    server = MariaDBServer(base / "server", extra_config=_DURABLE + (
        f"ssl_cert={leaf.cert}\nssl_key={leaf.key}\nssl_ca={ca.cert}\n"))
    server.initialize()
    try:
        server.query("CREATE DATABASE b")
        server.query("CREATE TABLE b.t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(64))")

        def connect(tls: bool) -> pymysql.connections.Connection[Any]:
            extra: dict[str, Any] = pymysql_ssl(str(ca.cert)) if tls else {"ssl_disabled": True}
            return pymysql.connect(host=LOCALHOST, port=server.port, user="root",
                                   password=server.root_password, autocommit=True, **extra)

        results: dict[str, dict[str, list[float]]] = {"commit": {}, "connect": {}, "stream": {}}
        conns = {tls: connect(tls) for tls in (False, True)}
        for _ in range(2):  # interleaved halves
            for tls in (False, True):
                cur = conns[tls].cursor()

                def commit(c: Any = cur) -> None:
                    c.execute("INSERT INTO b.t (v) VALUES ('x')")

                def reconnect(secure: bool = tls) -> None:
                    connect(secure).close()

                results["commit"].setdefault(str(tls), []).extend(_timed(rounds // 2, commit))
                results["connect"].setdefault(str(tls), []).extend(
                    _timed(max(rounds // 10, 1), reconnect))
        data = base / "stream.bin"
        with data.open("wb") as out:
            for _ in range(stream_mb):
                out.write(os.urandom(1 << 20))
        for _ in range(2):
            for tls in (False, True):
                results["stream"].setdefault(str(tls), []).append(
                    stream_mb / _stream_seconds(data, leaf.cert, leaf.key, tls=tls))
        for conn in conns.values():
            conn.close()
    finally:
        server.stop()
    clone = _clone_seconds(base, ca, clone_mb) if clone_mb else None
    summary: dict[str, Any] = {"machine": machine(), "rounds": rounds, "stream_mb": stream_mb,
                               "load": os.getloadavg()}
    for kind in ("commit", "connect"):
        plain_ms, tls_ms = results[kind]["False"], results[kind]["True"]
        summary[kind] = {"plain_median_ms": statistics.median(plain_ms),
                         "tls_median_ms": statistics.median(tls_ms),
                         "plain_p99_ms": percentile(plain_ms, 99),
                         "tls_p99_ms": percentile(tls_ms, 99),
                         "tls_over_plain": statistics.median(tls_ms) / statistics.median(plain_ms)}
    plain_s, tls_s = results["stream"]["False"], results["stream"]["True"]
    summary["clone_stream"] = {"plain_mib_s": statistics.median(plain_s),
                               "tls_mib_s": statistics.median(tls_s),
                               "tls_over_plain": (statistics.median(tls_s)
                                                  / statistics.median(plain_s))}
    if clone is not None:
        summary["clone_mb"] = clone_mb
        summary["clone"] = {"plain_median_s": statistics.median(clone["False"]),
                            "tls_median_s": statistics.median(clone["True"]),
                            "plain_s": clone["False"], "tls_s": clone["True"],
                            "tls_over_plain": (statistics.median(clone["True"])
                                               / statistics.median(clone["False"]))}
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.tls")
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--stream-mb", type=int, default=256)
    parser.add_argument("--clone-mb", type=int, default=256,
                        help="data on the primary for the clone-path runs (0: skip them)")
    args = parser.parse_args()
    summary = run(args.rounds, args.stream_mb, args.clone_mb)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "tls.json").write_text(json.dumps(summary, indent=2) + "\n")
    for key in ("commit", "connect", "clone_stream", "clone"):
        if key in summary:
            print(key, json.dumps(summary[key]))
    print("load", summary["load"])


if __name__ == "__main__":
    main()
