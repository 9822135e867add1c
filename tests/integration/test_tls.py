"""TLS on real MariaDB 10.11 and 11.4 (the ``mariadb_version`` fixture) with openssl certificates.

The server reads the repository's conf/tls fragments (the pod path /etc/mysql/tls replaced by the
test's Secret volume, laid out as the kubelet writes one: files behind a ``..data`` symlink that
one rename swaps). Proven here: clients and replication over TLS with the CA and host name
verified, a wrong CA refused by both, plaintext TCP refused with requireSecureTransport, and
``tls-reload.sh watch`` rotating the certificate under a client that keeps connecting, with no
failed connection and no server restart; a broken rotation (a key that does not match) is
refused, named in RUN_DIR/tls-invalid, and the server keeps the certificate it had.

Then the pods themselves with TLS on and requireSecureTransport (tests/support/pods.py, the
scripts unmodified, as the StatefulSet wires them), peers named by their pod DNS names (an
nss_wrapper hosts file resolves them to 127.0.0.1) as in a cluster: a replica cloned over TLS
from a donor it verified (10.11: 11.4 has no backup tool here, its replica is seeded) and
replicating with the primary's certificate verified, every probe passing over the socket while
plaintext TCP is refused, readiness naming a certificate that cannot serve, and the exporter
scraping through the socket as its own least-privilege account. The clone stream's two ends on
their own, with ncat and with socat: a plaintext peer gets no backup, a receiver refuses a donor
whose certificate another CA signed. And the backup sidecar's listener, which ncat and socat
start with the certificate of the moment, following a rotation (a new certificate, a new CA)
without the container restarting and without cutting the stream in progress, refusing a broken
one; with both transports.

Seen to differ on 11.4: a plaintext login under require_secure_transport gets 3159 (10.11:
1045), and a replica refuses to verify the primary by an IP address (127.0.0.1, though the
certificate carries it) where 10.11 accepts it; by DNS name, as the pods connect, both verify.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
import requests

from components.mysql._metrics import EXPORTER_FLAGS
from components.mysql._replication import _ReplicationProvider
from components.mysql._tls import pymysql_ssl, replication_tls_clause
from components.mysql.flavor import FLAVORS
from tests.support.certs import Pair, issue, make_ca, serial
from tests.support.mariadb import DEBIAN, MAVEN, MariaDBServer, random_password
from tests.support.pods import Pod, PodCluster, Transport, listening
from tests.support.procs import (
    LOCALHOST,
    ManagedProcess,
    free_port,
    missing_tool,
    require_binary,
    run,
    wait_until,
)
from tests.support.provider_server import ProviderError, ProviderServer, ResourceDriver

EXPORTER = "prometheus-mysqld-exporter"

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "components" / "mysql" / "conf" / "tls"
SCRIPTS = ROOT / "components" / "mysql" / "scripts"
POD_TLS_DIR = "/etc/mysql/tls"
NSS_WRAPPER = Path("/usr/lib/x86_64-linux-gnu/libnss_wrapper.so")
# The pods' DNS names, as PEER_HOST_TEMPLATE names peers in a cluster (the headless Service):
# the clone stream's receiver verifies the donor by the name it dialled, so the certificate
# carries them (ncat and OpenSSL accept no wildcard over the single-label *.orders-mysql-headless).
POD_NAMES = tuple(f"orders-mysql-{ordinal}.orders-mysql-headless" for ordinal in range(3))
PEER_HOST_TEMPLATE = "orders-mysql-{ordinal}.orders-mysql-headless"
# A plaintext login under require_secure_transport: 10.11 answers access denied, 11.4 as MySQL
# does (ER_SECURE_TRANSPORT_REQUIRED).
PLAINTEXT_REFUSED = {DEBIAN: 1045, MAVEN: 3159}


class SecretVolume:
    """A Secret volume as the kubelet writes it: ``key -> ..data/key``, ``..data -> ..vN``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.version = 0
        directory.mkdir(parents=True)

    def publish(self, cert: Path, key: Path, ca: Path) -> None:
        self.version += 1
        payload = self.directory / f"..v{self.version}"
        payload.mkdir()
        for name, source in (("tls.crt", cert), ("tls.key", key), ("ca.crt", ca)):
            shutil.copyfile(source, payload / name)
            if not (self.directory / name).is_symlink():
                (self.directory / name).symlink_to(Path("..data") / name)
        tmp = self.directory / "..data_tmp"
        tmp.symlink_to(payload.name)
        os.replace(tmp, self.directory / "..data")  # the atomic swap


def conf_dir(base: Path, tls_dir: Path, *, require_secure_transport: bool) -> Path:
    directory = base / "conf.d"
    directory.mkdir(parents=True)
    names = ["tls.cnf"] + (["require-secure-transport.cnf"] if require_secure_transport else [])
    for name in names:
        text = (CONF / name).read_text().replace(POD_TLS_DIR, str(tls_dir))
        (directory / name).write_text(text)
    return directory


def tls_connect(server: MariaDBServer, ca: Path, *, user: str = "root",
                password: str | None = None) -> pymysql.connections.Connection[Any]:
    return pymysql.connect(host=LOCALHOST, port=server.port, user=user,
                           password=server.root_password if password is None else password,
                           connect_timeout=5, autocommit=True, **pymysql_ssl(str(ca)))


def peer_serial(conn: pymysql.connections.Connection[Any]) -> int:
    # pymysql keeps the TLS socket here; nothing public exposes the peer certificate
    sock = getattr(conn, "_sock", None)
    assert isinstance(sock, ssl.SSLSocket)
    peer = sock.getpeercert()
    assert peer, "no verified peer certificate"
    return int(str(peer["serialNumber"]), 16)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Pair]:
    base = tmp_path_factory.mktemp("certs")
    ca = make_ca(base, "ca")
    wrong_ca = make_ca(base, "wrong-ca")
    return {"ca": ca, "wrong_ca": wrong_ca,
            "server": issue(ca, base, "server", dns_names=POD_NAMES),
            "rotated": issue(ca, base, "rotated", dns_names=POD_NAMES),
            "stray": issue(ca, base, "stray", dns_names=POD_NAMES),
            # Every name right, the wrong signer: a donor that is not one of ours.
            "impostor": issue(wrong_ca, base, "impostor", dns_names=POD_NAMES)}


@pytest.fixture(scope="module")
def rotated_ca(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Pair]:
    """A CA rotation: a new CA and a pod certificate it signed."""
    base = tmp_path_factory.mktemp("rotated-ca")
    ca = make_ca(base, "new-ca")
    return {"ca": ca, "server": issue(ca, base, "renewed", dns_names=POD_NAMES)}


@pytest.fixture(scope="module")
def pod_dns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every process started from here on resolves the pods' DNS names to 127.0.0.1
    (nss_wrapper's hosts file, preloaded into them; nothing on the machine changes)."""
    if not NSS_WRAPPER.is_file():
        missing_tool(f"{NSS_WRAPPER} is missing (Debian's libnss-wrapper; scripts/test.sh "
                     "installs it)")
    hosts = tmp_path_factory.mktemp("pod-dns") / "hosts"
    hosts.write_text(f"{LOCALHOST} localhost {socket.gethostname()} {' '.join(POD_NAMES)}\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LD_PRELOAD", str(NSS_WRAPPER))
        patch.setenv("NSS_WRAPPER_HOSTS", str(hosts))
        yield


def tls_server(base: Path, certs: dict[str, Pair], version: str, *, server_id: int = 1,
               require_secure_transport: bool = True) -> tuple[MariaDBServer, SecretVolume]:
    volume = SecretVolume(base / "tls")
    volume.publish(certs["server"].cert, certs["server"].key, certs["ca"].cert)
    include = conf_dir(base, volume.directory, require_secure_transport=require_secure_transport)
    server = MariaDBServer(base / "server", server_id=server_id, include_dir=include,
                           extra_config="log_bin=mysql-bin\nbinlog_format=ROW\n",
                           version=version)
    server.initialize()
    return server, volume


@pytest.fixture(scope="module")
def primary(tmp_path_factory: pytest.TempPathFactory, certs: dict[str, Pair],
            mariadb_version: str) -> Iterator[tuple[MariaDBServer, SecretVolume]]:
    server, volume = tls_server(tmp_path_factory.mktemp("primary"), certs, mariadb_version)
    try:
        yield server, volume
    finally:
        server.stop()


def test_a_client_verifies_the_server_over_tls(primary: tuple[MariaDBServer, SecretVolume],
                                                certs: dict[str, Pair]) -> None:
    server, _ = primary
    with tls_connect(server, certs["ca"].cert) as conn, conn.cursor() as cur:
        cur.execute("SHOW SESSION STATUS LIKE 'Ssl_version'")
        row = cur.fetchone()
        assert row is not None
        assert str(row[1]).startswith("TLS")
        assert peer_serial(conn) == serial(certs["server"].cert)


def test_a_wrong_ca_is_refused_by_the_client(primary: tuple[MariaDBServer, SecretVolume],
                                             certs: dict[str, Pair]) -> None:
    server, _ = primary
    with pytest.raises(pymysql.err.OperationalError) as raised:
        tls_connect(server, certs["wrong_ca"].cert)
    assert "CERTIFICATE_VERIFY_FAILED" in str(raised.value)


def test_plaintext_tcp_is_refused_with_require_secure_transport(
        primary: tuple[MariaDBServer, SecretVolume]) -> None:
    server, _ = primary
    with pytest.raises(pymysql.err.OperationalError) as raised:
        server.connect()  # the harness connects without TLS
    # The same root password logs in over TLS in the test above.
    assert raised.value.args[0] == PLAINTEXT_REFUSED[server.version], raised.value


def replica_status(replica: MariaDBServer) -> dict[str, Any]:
    rows = replica.query("SHOW REPLICA STATUS", host=None)
    return rows[0] if rows else {}


@pytest.mark.usefixtures("pod_dns")
@pytest.mark.parametrize("ca_name", ["ca", "wrong_ca"])
def test_replication_runs_over_verified_tls_and_refuses_a_wrong_ca(
        primary: tuple[MariaDBServer, SecretVolume], certs: dict[str, Pair],
        tmp_path: Path, ca_name: str, mariadb_version: str) -> None:
    source, _ = primary
    password = random_password()
    with tls_connect(source, certs["ca"].cert) as conn, conn.cursor() as cur:
        cur.execute("CREATE OR REPLACE USER 'repl'@'127.0.0.1' IDENTIFIED BY %s REQUIRE SSL",
                    (password,))
        cur.execute("GRANT REPLICATION SLAVE ON *.* TO 'repl'@'127.0.0.1'")
        # The replica starts from here: the primary's own account setup is not replayed.
        cur.execute("SELECT @@gtid_binlog_pos")
        start = cur.fetchone()
        cur.execute("DROP DATABASE IF EXISTS app")
        cur.execute("CREATE DATABASE app")
        cur.execute("CREATE TABLE app.t (id INT PRIMARY KEY)")
        cur.execute("INSERT INTO app.t VALUES (1)")
    replica, _ = tls_server(tmp_path, certs, mariadb_version, server_id=2)
    try:
        clause = replication_tls_clause("mariadb", str(certs[ca_name].cert))
        with replica.cursor(host=None) as cur:
            cur.execute("SET GLOBAL gtid_slave_pos = %s", (start[0] if start else "",))
            # By a DNS name, as the pods reach the primary: 11.4 refuses an IP address even
            # with the certificate's IP:127.0.0.1 ("SSL certificate validation failure").
            cur.execute(f"CHANGE MASTER TO MASTER_HOST='{POD_NAMES[0]}', "
                        f"MASTER_PORT={source.port}, "
                        f"MASTER_USER='repl', MASTER_PASSWORD=%s, MASTER_USE_GTID=slave_pos, "
                        f"{clause}", (password,))
            cur.execute("START REPLICA")
        if ca_name == "ca":
            wait_until(lambda: replica.query("SELECT id FROM app.t", host=None) == [{"id": 1}],
                       timeout=60, what="the row to replicate over TLS")
            status = replica_status(replica)
            assert status["Master_SSL_Allowed"] == "Yes"
            assert status["Master_SSL_Verify_Server_Cert"] == "Yes"
            assert status["Slave_IO_Running"] == "Yes"
        else:
            status = wait_until(lambda: (s := replica_status(replica))["Last_IO_Errno"] and s,
                                timeout=60, what="the IO thread to refuse the primary")
            assert status["Last_IO_Errno"] == 2026, status["Last_IO_Error"]  # SSL error
            assert status["Slave_IO_Running"] != "Yes"
    finally:
        replica.stop()


def start_watcher(server: MariaDBServer, volume: SecretVolume, base: Path) -> ManagedProcess:
    run_dir = base / "run"
    run_dir.mkdir()
    password_file = base / "root-password"
    password_file.write_text(server.root_password)
    password_file.chmod(0o400)
    env = {**FLAVORS["mariadb"].pod_environment(),
           "CONFIG_DIR": str(SCRIPTS), "MYSQL_FLAVOR": "mariadb", "TLS_DIR": str(volume.directory),
           "RUN_DIR": str(run_dir), "ROOT_PASSWORD_FILE": str(password_file),
           "MYSQL_SOCKET": str(server.socket), "TLS_RELOAD_INTERVAL": "1",
           "PATH": server.distribution.path()}
    return ManagedProcess("tls-reload", ["bash", str(SCRIPTS / "tls-reload.sh"), "watch"],
                          log_dir=base, env=env).start()


def test_rotation_under_a_connecting_client_without_restart(
        tmp_path: Path, certs: dict[str, Pair], mariadb_version: str) -> None:
    server, volume = tls_server(tmp_path, certs, mariadb_version)
    watcher = start_watcher(server, volume, tmp_path)
    seen: list[int] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                with tls_connect(server, certs["ca"].cert) as conn, conn.cursor() as cur:
                    cur.execute("SELECT 1")
                    seen.append(peer_serial(conn))
            except BaseException as error:  # noqa: BLE001  # every failure is the finding
                failures.append(error)

    thread = threading.Thread(target=client, daemon=True)
    try:
        pid = server.process.pid
        thread.start()
        wait_until(lambda: seen, timeout=30, what="a first TLS connection")
        volume.publish(certs["rotated"].cert, certs["rotated"].key, certs["ca"].cert)
        rotated = serial(certs["rotated"].cert)
        wait_until(lambda: seen[-1] == rotated, timeout=60,
                   what="new connections to get the rotated certificate")
        # A key that does not belong to the certificate: refused, named, and not loaded.
        volume.publish(certs["stray"].cert, certs["rotated"].key, certs["ca"].cert)
        invalid = tmp_path / "run" / "tls-invalid"
        wait_until(invalid.exists, timeout=60, what="the watcher to refuse the mismatched key")
        assert "tls.key: does not match the certificate" in invalid.read_text()
        count = len(seen)
        wait_until(lambda: len(seen) > count + 3, timeout=30, what="more connections")
        assert seen[-1] == rotated
        stop.set()
        thread.join(timeout=30)
        assert failures == []
        assert server.process.pid == pid
        assert server.running()
        assert serial(certs["server"].cert) in seen
    finally:
        stop.set()
        watcher.stop()
        server.stop()


def test_check_names_each_bad_secret(tmp_path: Path, certs: dict[str, Pair]) -> None:
    base = tmp_path / "base"
    cases = {"expired": "tls.crt: certificate expired", "mismatch": "tls.key: does not match",
             "wrong_ca": "not signed by the CA", "missing": "missing or empty"}
    expired = issue(certs["ca"], tmp_path, "expired", days=-1)
    for case, expected in cases.items():
        volume = SecretVolume(base / case)
        if case == "expired":
            volume.publish(expired.cert, expired.key, certs["ca"].cert)
        elif case == "mismatch":
            volume.publish(certs["server"].cert, certs["stray"].key, certs["ca"].cert)
        elif case == "wrong_ca":
            volume.publish(certs["server"].cert, certs["server"].key, certs["wrong_ca"].cert)
        else:
            volume.publish(certs["server"].cert, certs["server"].key, certs["ca"].cert)
            (volume.directory / "..data" / "ca.crt").unlink()
        result = run(["bash", str(SCRIPTS / "tls-reload.sh"), "check"], check=False,
                     env={"CONFIG_DIR": str(SCRIPTS), "TLS_DIR": str(volume.directory)})
        assert result.returncode != 0, case
        assert expected in result.stderr, (case, result.stderr)
    good = SecretVolume(base / "good")
    good.publish(certs["server"].cert, certs["server"].key, certs["ca"].cert)
    result = run(["bash", str(SCRIPTS / "tls-reload.sh"), "check"], check=False,
                 env={"CONFIG_DIR": str(SCRIPTS), "TLS_DIR": str(good.directory)})
    assert result.returncode == 0, result.stderr


# --- the pods with TLS on: the pod scripts unmodified, as the StatefulSet wires them ---------


@pytest.fixture(scope="module")
def tls_pods(tmp_path_factory: pytest.TempPathFactory, certs: dict[str, Pair],
             pod_dns: None, mariadb_version: str) -> Iterator[tuple[PodCluster, SecretVolume]]:
    """A primary and a cloned replica with mysql.tls on and requireSecureTransport: init-config
    copies conf/tls into conf.d, the clone streams over TLS with the donor verified, the
    sidecar's CHANGE MASTER verifies the primary, the probes and the backup tool use the socket.
    Peers are named by their pod DNS names; one certificate carrying every pod's name (and IP
    127.0.0.1, for the clients here) serves both pods."""
    base = tmp_path_factory.mktemp("tls-pods")
    volume = SecretVolume(base / "tls")
    volume.publish(certs["server"].cert, certs["server"].key, certs["ca"].cert)
    cluster = PodCluster(base / "pods", max_pods=2, tls_dir=volume.directory,
                         require_secure_transport=True, peer_host_template=PEER_HOST_TEMPLATE,
                         version=mariadb_version)
    try:
        cluster.start_pod(0)
        cluster.primary.query("CREATE DATABASE app")
        cluster.primary.query("CREATE TABLE app.t (id INT PRIMARY KEY)")
        cluster.primary.query("INSERT INTO app.t VALUES (1)")
        cluster.start_pod(1)  # cloned over TLS through the primary's sidecar, whose backup
        #                       tool logs in over the socket: plaintext TCP is refused here
        yield cluster, volume
    finally:
        cluster.close()


def test_the_pods_replicate_over_verified_tls(
        tls_pods: tuple[PodCluster, SecretVolume]) -> None:
    cluster, _ = tls_pods
    primary, replica = cluster.primary, cluster.pod(1)
    primary.query("INSERT INTO app.t VALUES (2)")
    replica.wait_for_gtid(primary.gtid_binlog_pos())
    assert replica.query("SELECT id FROM app.t ORDER BY id") == [{"id": 1}, {"id": 2}]
    status = replica.query("SHOW REPLICA STATUS")[0]
    assert (status["Master_SSL_Allowed"], status["Master_SSL_Verify_Server_Cert"]) == (
        "Yes", "Yes")
    assert status["Master_SSL_CA_File"] == str(certs_ca(cluster))
    # The server itself serves the Secret's certificate, and refuses plaintext TCP.
    for pod in (primary, replica):
        with tls_connect(pod.server, certs_ca(cluster), user="monitor",
                         password=cluster.secrets.monitor) as conn:
            assert peer_serial(conn) == serial(certs_ca(cluster).with_name("tls.crt"))
        with pytest.raises(pymysql.err.OperationalError) as refused:
            pod.server.connect(user="monitor", password=cluster.secrets.monitor)
        assert refused.value.args[0] == PLAINTEXT_REFUSED[cluster.version]


def certs_ca(cluster: PodCluster) -> Path:
    assert cluster.tls_dir is not None
    return cluster.tls_dir / "ca.crt"


def test_the_probes_pass_under_require_secure_transport(
        tls_pods: tuple[PodCluster, SecretVolume]) -> None:
    """Over TCP the monitor account is refused (above); the probes use the socket."""
    cluster, _ = tls_pods
    for pod in (cluster.primary, cluster.pod(1)):
        for kind in ("startup", "liveness", "readiness"):
            result = pod.probe(kind)
            assert result.returncode == 0, (pod.name, kind, result.stderr)


def test_readiness_names_a_certificate_that_cannot_serve(
        tls_pods: tuple[PodCluster, SecretVolume], certs: dict[str, Pair]) -> None:
    cluster, volume = tls_pods
    volume.publish(certs["server"].cert, certs["stray"].key, certs["ca"].cert)
    try:
        result = cluster.pod(1).probe("readiness")
        assert result.returncode != 0
        assert "TLS: " in result.stderr
        assert "tls.key: does not match the certificate" in result.stderr
    finally:
        volume.publish(certs["server"].cert, certs["server"].key, certs["ca"].cert)
    assert cluster.pod(1).probe("readiness").returncode == 0


def test_the_exporter_scrapes_through_the_socket_as_its_own_account(
        tls_pods: tuple[PodCluster, SecretVolume], tmp_path: Path) -> None:
    """exporter-config.sh writes the option file the sidecar reads; Debian's mysqld_exporter
    (the pinned image's release) reads every series the rules need with the exporter account,
    through the socket, with plaintext TCP refused."""
    require_binary(EXPORTER)
    cluster, _ = tls_pods
    replica = cluster.pod(1)
    run_dir = tmp_path / "exporter-run"
    result = replica.run_script("exporter-config.sh", extra_env={"EXPORTER_RUN_DIR": str(run_dir)})
    assert result.returncode == 0, result.stderr
    cnf = run_dir / "exporter.cnf"
    assert oct(cnf.stat().st_mode & 0o777) == "0o600"
    assert "monitor" not in cnf.read_text()
    port = free_port()
    exporter = ManagedProcess("exporter", [
        EXPORTER, f"--web.listen-address={LOCALHOST}:{port}", f"--config.my-cnf={cnf}",
        *EXPORTER_FLAGS], log_dir=tmp_path).start()
    try:
        url = f"http://{LOCALHOST}:{port}/metrics"
        text = wait_until(lambda: _scrape_up(url), timeout=30, what="the exporter to scrape")
        for series in ("mysql_slave_status_slave_io_running", "mysql_global_variables_read_only",
                       "mysql_slave_status_last_io_errno"):
            assert re.search(f"^{series}[ {{]", text, re.MULTILINE), series
        # 0.14 reports a failing collector (a missing privilege) as a scrape error.
        assert re.search(r"^mysql_exporter_last_scrape_error 0$", text, re.MULTILINE), text
        collectors = set(re.findall(
            r'^mysql_exporter_collector_duration_seconds\{collector="collect\.([a-z_]+)"\}',
            text, re.MULTILINE))
        assert collectors == {"global_status", "global_variables", "slave_status"}
    finally:
        exporter.stop()
    # Least privilege: replication status, no data.
    with pytest.raises(pymysql.err.OperationalError) as denied:
        replica.server.query("SELECT * FROM app.t", user="exporter",
                             password=cluster.secrets.exporter, host=None)
    assert denied.value.args[0] in (1142, 1044)


def _scrape_up(url: str) -> str | None:
    try:
        text = requests.get(url, timeout=5).text
    except requests.RequestException:
        return None
    return text if "\nmysql_up 1" in text else None


# --- the clone stream over TLS -----------------------------------------------------------------

# What the backup tool's stream starts with (xbstream chunk magic).
XBSTREAM_MAGIC = b"XBSTCK01"


def test_the_clone_stream_is_tls_from_a_verified_donor(
        tls_pods: tuple[PodCluster, SecretVolume]) -> None:
    """The replica of the fixture was cloned (its data and marker are the clone's) from a
    listener that speaks TLS with the pod certificate, by a receiver that verified it."""
    cluster, _ = tls_pods
    if not cluster.distribution.has_backup_tool:
        pytest.skip(f"MariaDB {cluster.version} has no backup tool here, so its replica is "
                    "seeded, not cloned (tests/support/pods.py); the stream runs on 10.11")
    primary, replica = cluster.primary, cluster.pod(1)
    assert "donor=0" in (replica.data_dir / ".clone-complete").read_text()
    listener = (Path("/proc") / str(listener_pid(primary)) / "cmdline").read_bytes().split(b"\0")
    assert listener[0].endswith(b"ncat"), listener
    assert {b"--ssl", b"--ssl-cert", b"--ssl-key"} <= set(listener), listener
    assert str(certs_ca(cluster).with_name("tls.crt")).encode() in listener
    assert "streaming a backup from ordinal 0" in replica.clone_log()


def test_plaintext_to_the_tls_backup_port_gets_no_backup(
        tls_pods: tuple[PodCluster, SecretVolume]) -> None:
    """A peer speaking plaintext to the donor gets a TLS alert, not one byte of a backup, and
    the donor serves the next receiver as before."""
    cluster, _ = tls_pods
    primary = cluster.primary
    assert primary.sidecar is not None
    log = primary.sidecar.log_path
    streams_before = log.read_text().count("streaming a backup")
    received = b""
    with socket.create_connection((LOCALHOST, primary.backup_port), timeout=30) as plain:
        plain.sendall(b"GET / HTTP/1.0\r\n\r\n")
        try:
            while chunk := plain.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass  # the listener may answer the failed handshake with a reset
    assert XBSTREAM_MAGIC not in received
    assert len(received) < 100, received  # an alert record at most
    assert log.read_text().count("streaming a backup") == streams_before
    assert primary.probe("backup").returncode == 0


def listener_pid(pod: Pod) -> int:
    """The listener the sidecar started, as probe.sh backup finds it (under TLS the sidecar's
    own process supervises it)."""
    return int((pod.run_dir / "backup-listener.pid").read_text())


def served_certificate(port: int) -> bytes:
    """The certificate (DER) the listener on ``port`` serves, as a receiver sees it in the
    handshake. Every connection is a backup: the stream is read to its end."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # whatever it serves is the finding
    with socket.create_connection((LOCALHOST, port), timeout=120) as raw, \
            context.wrap_socket(raw) as tls:
        served = tls.getpeercert(binary_form=True)
        try:
            while tls.recv(1 << 16):
                pass
        except ssl.SSLEOFError:
            pass  # the listener closes without close_notify after the stream
    assert served is not None
    return served


def der(pair: Pair) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pair.cert.read_text())


class PausingRelay:
    """A donor stand-in on ``listen_port`` for one connection to ``upstream_port``, both
    directions (TLS needs the receiver's handshake), that stops passing the stream on after
    ``pause_after`` bytes until :meth:`resume`: the donor's backup is then blocked in the
    middle of its stream (the socket buffers hold far less than the stream) however fast the
    machine is."""

    def __init__(self, listen_port: int, upstream_port: int, pause_after: int) -> None:
        self.upstream_port = upstream_port
        self.pause_after = pause_after
        self.paused = threading.Event()
        self.relayed = 0
        self._resume = threading.Event()
        self._server = socket.create_server((LOCALHOST, listen_port))
        self._thread = threading.Thread(target=self._serve, name="pausing-relay", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        client, _address = self._server.accept()
        with client, socket.create_connection((LOCALHOST, self.upstream_port)) as upstream:
            forward = threading.Thread(target=self._forward, args=(client, upstream), daemon=True)
            forward.start()
            with contextlib.suppress(OSError):
                while chunk := upstream.recv(65536):
                    if self.relayed >= self.pause_after and not self._resume.is_set():
                        self.paused.set()
                        self._resume.wait()
                    client.sendall(chunk)
                    self.relayed += len(chunk)
                client.shutdown(socket.SHUT_WR)
            forward.join(timeout=60)

    @staticmethod
    def _forward(client: socket.socket, upstream: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := client.recv(65536):
                upstream.sendall(chunk)
            upstream.shutdown(socket.SHUT_WR)

    def resume(self) -> None:
        self._resume.set()

    def close(self) -> None:
        self._resume.set()
        self._server.close()
        self._thread.join(timeout=60)


def start_rotating_sidecar(pod: Pod) -> ManagedProcess:
    """The backup container as the StatefulSet runs it with mysql.tls, but polling the
    Secret every second (TLS_RELOAD_INTERVAL) rather than every ten."""
    pod.sidecar = ManagedProcess(
        f"backup-{pod.generation}", ["bash", str(pod.cluster.config_dir / "backup-server.sh")],
        log_dir=pod.logs, env={**pod.env("backup"), "TLS_RELOAD_INTERVAL": "1"}).start()
    return pod.sidecar


def log_count(process: ManagedProcess, text: str) -> int:
    return process.log_path.read_text(errors="replace").count(text)


def wait_restarted(sidecar: ManagedProcess, port: int, restarts: int, what: str) -> None:
    """The supervisor logged its ``restarts``-th new listener, and that one listens (the old
    one was stopped before it started)."""
    wait_until(lambda: log_count(sidecar, "now serves") == restarts, timeout=120,
               what=f"the supervisor to restart the listener {what}")
    wait_until(lambda: listening(port), timeout=30, what="the new listener to listen")


@pytest.mark.parametrize("transport", ["ncat", "socat"])
def test_the_clone_listener_follows_certificate_rotation_without_restart(
        tmp_path: Path, certs: dict[str, Pair], rotated_ca: dict[str, Pair], pod_dns: None,
        transport: Transport) -> None:
    """ncat and socat read the certificate once: the sidecar's supervisor starts the listener
    again on rotated files, with the container's main process (its PID) unchanged. A new
    certificate is served; a broken one is refused, logged, and the previous one kept; a CA
    rotation waits for the stream in progress, which completes (a real clone.sh, verified and
    prepared), and the next clone, trusting only the new CA, succeeds. SIGKILLing the listener
    ends the container with its status; SIGTERM to the main process stops both."""
    volume = SecretVolume(tmp_path / "tls")  # one Secret for every pod, as in the other tests
    volume.publish(certs["server"].cert, certs["server"].key, certs["ca"].cert)
    cluster = PodCluster(tmp_path / "pods", max_pods=3, transport=transport,
                         tls_dir=volume.directory, require_secure_transport=True,
                         peer_host_template=PEER_HOST_TEMPLATE)
    relay: PausingRelay | None = None
    try:
        donor = cluster.pod(0)
        donor.init_config()
        donor.initialize_primary()
        sidecar = start_rotating_sidecar(donor)
        donor.wait_serving()
        port = donor.backup_port
        assert served_certificate(port) == der(certs["server"])
        first_listener = listener_pid(donor)

        # A new certificate from the same CA.
        volume.publish(certs["rotated"].cert, certs["rotated"].key, certs["ca"].cert)
        wait_restarted(sidecar, port, 1, "on the rotated certificate")
        assert served_certificate(port) == der(certs["rotated"])
        second_listener = listener_pid(donor)
        assert second_listener != first_listener
        assert sidecar.running(), "the container restarted"
        assert sidecar.pid not in (first_listener, second_listener)  # the supervisor stays
        assert donor.probe("backup").returncode == 0

        # A CA rotation while a clone streams: pod 2 clones from "ordinal 1", the relay.
        donor.query("CREATE DATABASE app")
        donor.query("CREATE TABLE app.big ENGINE=InnoDB "
                    "AS SELECT seq, REPEAT('x', 1000) AS payload FROM app.seq_1_to_60000")
        relay = PausingRelay(cluster.pod(1).backup_port, port, pause_after=1 << 20)
        in_progress = cluster.pod(2)
        in_progress.init_config()
        clone = in_progress.start_clone()
        paused = relay.paused
        wait_until(lambda: paused.is_set() or not clone.running(), timeout=120,
                   what="the stream to reach the relay")
        assert paused.is_set(), in_progress.clone_log()
        volume.publish(rotated_ca["server"].cert, rotated_ca["server"].key,
                       rotated_ca["ca"].cert)
        wait_until(lambda: log_count(sidecar, "once no stream is in progress") == 2, timeout=60,
                   what="the supervisor to see the CA rotation")
        # The stream is still in progress, through the listener it started on.
        assert any(comm == "mariadb-backup" for _pid, comm in donor.sidecar_group())
        assert listener_pid(donor) == second_listener
        relay.resume()
        assert clone.process is not None
        assert clone.process.wait(timeout=600) == 0, in_progress.clone_log()
        assert "clone from ordinal 1 complete" in in_progress.clone_log()
        wait_restarted(sidecar, port, 2, "once the stream ended")
        # The next clone trusts the new CA only (the Secret's ca.crt).
        receiver = cluster.pod(1)
        relay.close()
        relay = None
        receiver.init_config()
        assert receiver.clone() == 0, receiver.clone_log()
        assert "clone from ordinal 0 complete" in receiver.clone_log()
        assert served_certificate(port) == der(rotated_ca["server"])
        third_listener = listener_pid(donor)
        assert third_listener != second_listener

        # Broken new files: a key that is not the certificate's.
        volume.publish(certs["stray"].cert, rotated_ca["server"].key, rotated_ca["ca"].cert)
        wait_until(lambda: log_count(sidecar, "tls.key: does not match the certificate"),
                   timeout=60, what="the supervisor to refuse the mismatched key")
        assert "TLS: not serving the changed files, the listener keeps its certificate" in \
            sidecar.log_path.read_text()
        assert served_certificate(port) == der(rotated_ca["server"])
        assert listener_pid(donor) == third_listener
        assert sidecar.running(), "the container restarted"
        assert "refusing this stream" not in sidecar.log_path.read_text()

        # A listener that dies on its own ends the container, with its status.
        os.kill(listener_pid(donor), signal.SIGKILL)
        assert sidecar.process is not None
        assert sidecar.process.wait(timeout=60) == 128 + signal.SIGKILL
        assert "exited with status 137" in sidecar.log_tail()
        # SIGTERM to the container's main process stops the listener and the supervisor (the
        # Secret fixed first: a new container refuses to serve the broken files).
        volume.publish(rotated_ca["server"].cert, rotated_ca["server"].key, rotated_ca["ca"].cert)
        restarted = start_rotating_sidecar(donor)
        donor.wait_serving()
        listener = listener_pid(donor)
        os.kill(restarted.pid, signal.SIGTERM)
        assert restarted.process is not None
        assert restarted.process.wait(timeout=60) == 128 + signal.SIGTERM
        assert not Path(f"/proc/{listener}").exists()
        assert not listening(port)
    finally:
        if relay is not None:
            relay.close()
        cluster.close()


def _lib_command(function: str, *args: str) -> list[str]:
    """Runs the command line lib.sh's ``function ARRAY ARGS...`` builds, in the environment it
    is given (a container's, TLS_DIR included)."""
    script = f'source "$CONFIG_DIR/lib.sh"; {function} command "$@"; exec "${{command[@]}}"'
    return ["bash", "-c", script, function, *args]


@pytest.mark.parametrize("transport", ["ncat", "socat"])
def test_a_receiver_refuses_a_donor_its_ca_did_not_sign(
        tmp_path: Path, certs: dict[str, Pair], pod_dns: None, transport: Transport) -> None:
    """With the same transport and names, a listener serving the pod certificate streams to the
    receiver; one serving a certificate another CA signed (every name right) gets nothing
    through: clone.sh refuses it, receives no byte and says why."""
    volume = SecretVolume(tmp_path / "tls")
    volume.publish(certs["server"].cert, certs["server"].key, certs["ca"].cert)
    impostor = SecretVolume(tmp_path / "impostor-tls")
    impostor.publish(certs["impostor"].cert, certs["impostor"].key, certs["wrong_ca"].cert)
    cluster = PodCluster(tmp_path / "pods", max_pods=2, transport=transport,
                         tls_dir=volume.directory, require_secure_transport=True,
                         peer_host_template=PEER_HOST_TEMPLATE)
    donor, receiver = cluster.pod(0), cluster.pod(1)
    payload = tmp_path / "payload"
    payload.write_bytes(XBSTREAM_MAGIC + b" not a real backup\n")

    def listener(tls_dir: Path) -> ManagedProcess:
        env = {**donor.env("backup"), "TLS_DIR": str(tls_dir), "PAYLOAD": str(payload)}
        return ManagedProcess(f"listener-{tls_dir.name}", _lib_command(
            "serve_command", str(donor.backup_port), 'cat "$PAYLOAD"'),
            log_dir=tmp_path, env=env).start()

    def receive() -> subprocess.CompletedProcess[bytes]:
        argv = _lib_command("receive_command", POD_NAMES[0], str(donor.backup_port))
        return subprocess.run(argv, env={**os.environ, **receiver.env("clone")},
                              capture_output=True, timeout=60, check=False)

    genuine = listener(volume.directory)
    try:
        wait_until(lambda: listening(donor.backup_port), timeout=30, what="the listener")
        streamed = receive()
        assert streamed.stdout == payload.read_bytes(), streamed.stderr
    finally:
        genuine.stop()
    rogue = listener(impostor.directory)
    try:
        wait_until(lambda: listening(donor.backup_port), timeout=30, what="the rogue listener")
        refused = receive()
        assert refused.returncode != 0
        assert refused.stdout == b""
        receiver.init_config()
        assert receiver.clone() != 0
    finally:
        rogue.stop()
    log = receiver.clone_log()
    assert (f"ordinal 0 could not be reached or sent nothing (TLS: or its certificate is not "
            f"signed by {volume.directory}/ca.crt or does not name {POD_NAMES[0]})") in log, log
    if transport == "socat":
        assert "certificate verify failed" in log, log
    # Nothing arrived: only the in-progress marker, which the next start wipes past.
    assert [p.name for p in receiver.data_dir.iterdir()] == [".clone-in-progress"]


# --- ReplicationInit through the real provider server, against the TLS pods ------------------


def _replication_inputs(cluster: PodCluster, ca: Path) -> dict[str, Any]:
    """What MySQLCluster gives ReplicationInit with mysql.tls on (replicationInit.caFile set,
    a port-forward-like endpoint 127.0.0.1 that the test certificate names)."""
    primary, replica = cluster.primary, cluster.pod(1)
    return {
        "flavor": "mariadb",
        "primary": {"host": LOCALHOST, "port": primary.mysql_port},
        "replicas": [{"host": LOCALHOST, "port": replica.mysql_port}],
        "source_host": POD_NAMES[0], "source_port": primary.mysql_port,
        "admin_user": "admin", "admin_password": cluster.secrets.admin,
        "replication_user": "repl", "replication_password": cluster.secrets.replication,
        "max_lag_seconds": 30, "timeout_seconds": 60, "lock_endpoints": [],
        "tls_ca_file": str(ca), "tls_verify_identity": True,
        "replication_tls_ca": str(certs_ca(cluster)),
    }


def _driver(server: ProviderServer) -> ResourceDriver:
    secrets = frozenset({"admin_password", "replication_password"})
    return ResourceDriver(server, _ReplicationProvider(),
                          type_name="pulumi-python:dynamic/mysql:ReplicationInit",
                          name="tls-replication", secret_inputs=secrets,
                          additional_secret_outputs=secrets)


def test_replication_init_repoints_a_replica_onto_verified_tls(
        tls_pods: tuple[PodCluster, SecretVolume]) -> None:
    """A replica pointed elsewhere with TLS off (as a hand-made CHANGE MASTER would leave it)
    is re-pointed by ReplicationInit, whose own connections verify the servers (plaintext TCP
    is refused here), and replicates over verified TLS again."""
    cluster, _ = tls_pods
    replica = cluster.pod(1)
    replica.query("STOP REPLICA")
    replica.query("CHANGE MASTER TO MASTER_HOST='localhost', MASTER_SSL=0, "
                  "MASTER_SSL_VERIFY_SERVER_CERT=0")
    try:
        with ProviderServer() as server:
            result = _driver(server).up(_replication_inputs(cluster, certs_ca(cluster)))
        assert result.outputs["in_sync"] is True
        status = replica.query("SHOW REPLICA STATUS")[0]
        assert (status["Master_Host"], status["Master_SSL_Allowed"],
                status["Master_SSL_Verify_Server_Cert"]) == (POD_NAMES[0], "Yes", "Yes")
        assert status["Slave_IO_Running"] == "Yes"
    finally:
        # The fixture's other tests expect the pods' own replication back.
        status = replica.query("SHOW REPLICA STATUS")[0]
        if status["Master_Host"] != POD_NAMES[0]:
            replica.query("STOP REPLICA")
            clause = replication_tls_clause("mariadb", str(certs_ca(cluster)))
            replica.query(f"CHANGE MASTER TO MASTER_HOST='{POD_NAMES[0]}', {clause}")
            replica.query("START REPLICA")


def test_replication_init_refuses_a_server_its_ca_did_not_sign(
        tls_pods: tuple[PodCluster, SecretVolume], certs: dict[str, Pair]) -> None:
    cluster, _ = tls_pods
    with ProviderServer() as server, pytest.raises(ProviderError) as refused:
        _driver(server).up(_replication_inputs(cluster, certs["wrong_ca"].cert))
    assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value)
    assert "cannot connect as 'admin'" in str(refused.value)
