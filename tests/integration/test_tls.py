"""TLS on a real MariaDB 10.11 with certificates made by openssl.

The server reads the repository's conf/tls fragments (the pod path /etc/mysql/tls replaced by the
test's Secret volume, laid out as the kubelet writes one: files behind a ``..data`` symlink that
one rename swaps). Proven here: clients and replication over TLS with the CA and host name
verified, a wrong CA refused by both, plaintext TCP refused with requireSecureTransport, and
``tls-reload.sh watch`` rotating the certificate under a client that keeps connecting, with no
failed connection and no server restart; a broken rotation (a key that does not match) is
refused, named in RUN_DIR/tls-invalid, and the server keeps the certificate it had.
"""

from __future__ import annotations

import os
import shutil
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from components.mysql._tls import pymysql_ssl, replication_tls_clause
from components.mysql.flavor import FLAVORS
from tests.support.certs import Pair, issue, make_ca, serial
from tests.support.mariadb import MariaDBServer, random_password
from tests.support.procs import LOCALHOST, ManagedProcess, run, wait_until

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "components" / "mysql" / "conf" / "tls"
SCRIPTS = ROOT / "components" / "mysql" / "scripts"
POD_TLS_DIR = "/etc/mysql/tls"


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
    return {"ca": ca, "wrong_ca": make_ca(base, "wrong-ca"), "server": issue(ca, base, "server"),
            "rotated": issue(ca, base, "rotated"), "stray": issue(ca, base, "stray")}


def tls_server(base: Path, certs: dict[str, Pair], *, server_id: int = 1,
               require_secure_transport: bool = True) -> tuple[MariaDBServer, SecretVolume]:
    volume = SecretVolume(base / "tls")
    volume.publish(certs["server"].cert, certs["server"].key, certs["ca"].cert)
    include = conf_dir(base, volume.directory, require_secure_transport=require_secure_transport)
    server = MariaDBServer(base / "server", server_id=server_id, include_dir=include,
                           extra_config="log_bin=mysql-bin\nbinlog_format=ROW\n")
    server.initialize()
    return server, volume


@pytest.fixture(scope="module")
def primary(tmp_path_factory: pytest.TempPathFactory,
            certs: dict[str, Pair]) -> Iterator[tuple[MariaDBServer, SecretVolume]]:
    server, volume = tls_server(tmp_path_factory.mktemp("primary"), certs)
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
    # MariaDB 10.11 answers a plaintext login under require_secure_transport with 1045 (access
    # denied), not MySQL's 3159; the same root password logs in over TLS in the test above.
    assert raised.value.args[0] == 1045, raised.value


def replica_status(replica: MariaDBServer) -> dict[str, Any]:
    rows = replica.query("SHOW REPLICA STATUS", host=None)
    return rows[0] if rows else {}


@pytest.mark.parametrize("ca_name", ["ca", "wrong_ca"])
def test_replication_runs_over_verified_tls_and_refuses_a_wrong_ca(
        primary: tuple[MariaDBServer, SecretVolume], certs: dict[str, Pair],
        tmp_path: Path, ca_name: str) -> None:
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
    replica, _ = tls_server(tmp_path, certs, server_id=2)
    try:
        clause = replication_tls_clause("mariadb", str(certs[ca_name].cert))
        with replica.cursor(host=None) as cur:
            cur.execute("SET GLOBAL gtid_slave_pos = %s", (start[0] if start else "",))
            cur.execute(f"CHANGE MASTER TO MASTER_HOST='{LOCALHOST}', MASTER_PORT={source.port}, "
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
        tmp_path: Path, certs: dict[str, Pair]) -> None:
    server, volume = tls_server(tmp_path, certs)
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
