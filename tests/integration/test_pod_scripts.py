"""The pod scripts, run unmodified against real MariaDB, mariadb-backup, mbstream and ncat/socat.

Each pod is a set of local processes (tests/support/pods.py) with its own data dir, its
pod name injected as the StatefulSet would, and only addresses and paths supplied from
outside. Catch-up is awaited with MASTER_GTID_WAIT, never with sleeps, and consistency is
checked both ways: CHECKSUM TABLE against the primary, and the exact list of rows a writer
committed (nothing missing, nothing twice).
"""

from __future__ import annotations

import os
import random
import re
import signal
import struct
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from tests.support.pods import (
    CLONE_COMPLETE,
    CLONE_IN_PROGRESS,
    REPLICATION_CONFIGURED,
    REPLICATION_STARTED,
    ByteLimitRelay,
    Pod,
    PodCluster,
    Transport,
    directory_bytes,
    listening,
)
from tests.support.procs import LOCALHOST, ManagedProcess, wait_until

pytestmark = pytest.mark.integration

TABLE = "app.events"
READ_ONLY_ERROR = 1290  # ER_OPTION_PREVENTS_STATEMENT: "running with the --read-only option"


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., PodCluster]]:
    clusters: list[PodCluster] = []

    def make(**options: Any) -> PodCluster:
        cluster = PodCluster(tmp_path / f"cluster-{len(clusters)}", **options)
        clusters.append(cluster)
        return cluster

    yield make
    for cluster in clusters:
        cluster.close()


def create_schema(primary: Pod) -> None:
    # seq is deliberately not unique: a row applied twice would show up as a duplicate seq.
    primary.query_as("admin", "CREATE DATABASE app")
    primary.query_as("admin", "CREATE TABLE app.events (id BIGINT AUTO_INCREMENT PRIMARY KEY, "
                              "seq BIGINT NOT NULL, payload VARCHAR(255) NOT NULL, KEY (seq))")


def bulk_load(primary: Pod, rows: int, *, first_seq: int, batch: int = 10_000) -> list[int]:
    """Rows with a wide payload, so that a clone stream is tens of megabytes."""
    payload = "x" * 200
    seqs = list(range(first_seq, first_seq + rows))
    with primary.server.connect(user="admin", password=primary.cluster.secrets.admin,
                                host=LOCALHOST) as conn, conn.cursor() as cur:
        for start in range(0, rows, batch):
            cur.executemany("INSERT INTO app.events (seq, payload) VALUES (%s, %s)",
                            [(seq, payload) for seq in seqs[start:start + batch]])
    return seqs


class Writer(threading.Thread):
    """An application inserting into the primary, one transaction per row, as admin over TCP."""

    def __init__(self, primary: Pod, *, first_seq: int = 1_000_000) -> None:
        super().__init__(name="writer", daemon=True)
        self.primary = primary
        self.next_seq = first_seq
        self.committed: list[int] = []
        self.error: BaseException | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            password = self.primary.cluster.secrets.admin
            with self.primary.server.connect(user="admin", host=LOCALHOST,
                                             password=password) as conn, conn.cursor() as cur:
                while not self._halt.is_set():
                    cur.execute("INSERT INTO app.events (seq, payload) VALUES (%s, 'w')",
                                (self.next_seq,))
                    self.committed.append(self.next_seq)
                    self.next_seq += 1
        except BaseException as error:  # noqa: BLE001 - reported by stop()
            self.error = error

    def wait_for_more(self, rows: int = 50) -> None:
        target = len(self.committed) + rows
        wait_until(lambda: self.error is not None or len(self.committed) >= target,
                   timeout=60, what=f"the writer to commit {rows} more rows")
        assert self.error is None, f"writer failed: {self.error!r}"

    def stop(self) -> list[int]:
        self._halt.set()
        self.join(timeout=60)
        assert not self.is_alive(), "writer did not stop"
        assert self.error is None, f"writer failed: {self.error!r}"
        return self.committed


def assert_consistent(primary: Pod, replicas: list[Pod], expected_seqs: list[int]) -> None:
    """Every replica has applied everything, byte for byte, with no row missing or doubled."""
    gtid = primary.gtid_binlog_pos()
    primary_checksum = primary.checksum(TABLE)
    primary_seqs = [row["seq"] for row in primary.query("SELECT seq FROM app.events ORDER BY seq")]
    assert primary_seqs == sorted(expected_seqs), "the primary lost or doubled committed rows"
    for replica in replicas:
        replica.wait_for_gtid(gtid)
        assert replica.checksum(TABLE) == primary_checksum, f"{replica.name} differs"
        seqs = [row["seq"] for row in replica.query("SELECT seq FROM app.events ORDER BY seq")]
        assert len(seqs) == len(set(seqs)), f"{replica.name} applied rows twice"
        assert seqs == primary_seqs, f"{replica.name} is missing rows"
        replica.wait_caught_up()
        ready = replica.run_script("probe.sh", "readiness")
        assert ready.returncode == 0, f"{replica.name} not ready: {ready.stderr}"


def assert_no_password_in_environments(pod: Pod) -> None:
    """No process the pod's scripts left running (the listener, anything it forked) holds a
    password in its environment: they got file paths, and read_secret exports nothing."""
    group = pod.sidecar_group()
    assert group, f"{pod.name}: the backup sidecar is not running"
    for pid, comm in group:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        assert b"ROOT_PASSWORD_FILE=" in environ, (pod.name, comm)
        for password in pod.cluster.secrets.passwords():
            assert password.encode() not in environ, f"{pod.name}: {comm} has a password in env"


def clone_marker(pod: Pod) -> dict[str, str]:
    text = (pod.data_dir / CLONE_COMPLETE).read_text()
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def streams_served(donor: Pod) -> int:
    """Backups the donor's sidecar has started, from its logs (every generation)."""
    return sum(log.read_text(errors="replace").count("streaming a backup to")
               for log in donor.logs.glob("backup-*.log"))


# --- the scenarios ------------------------------------------------------------------------

@pytest.mark.parametrize("transport", ["ncat", "socat"])
def test_three_pods_from_empty_clone_in_chain_under_writes(
        make_cluster: Callable[..., PodCluster], transport: Transport) -> None:
    cluster = make_cluster(transport=transport)
    primary = cluster.start_pod(0)
    assert primary.run_script("probe.sh", "readiness").returncode == 0
    create_schema(primary)
    writer = Writer(primary)
    writer.start()
    try:
        writer.wait_for_more()
        for ordinal in (1, 2):
            before = len(writer.committed)
            cluster.start_pod(ordinal)
            # The primary kept taking writes while this replica was being seeded.
            assert len(writer.committed) > before
            writer.wait_for_more()
    finally:
        committed = writer.stop()

    pod1, pod2 = cluster.pod(1), cluster.pod(2)
    assert clone_marker(pod1)["donor"] == "0"
    assert clone_marker(pod2)["donor"] == "1", "pod 2 must clone from the previous ordinal"
    assert streams_served(pod1) == 1
    # Each stream's scratch dir goes with it.
    # No stream leftovers in /tmp: only the role labels init-config wrote for the label step.
    assert [p.name for p in primary.scratch_dir.iterdir()] == ["role-labels.json"]
    assert [p.name for p in pod1.scratch_dir.iterdir()] == ["role-labels.json"]
    assert "streaming a backup from ordinal 1" in pod2.clone_log()
    # The position came from pod 1's replica info, parsed, not pasted.
    assert (pod2.data_dir / "xtrabackup_slave_info").exists()
    assert "position from the donor's replica info" in pod2.clone_log()
    assert_consistent(primary, [pod1, pod2], committed)
    for pod in (pod1, pod2):
        assert sorted(pod.markers()) == sorted([CLONE_COMPLETE, REPLICATION_CONFIGURED,
                                                REPLICATION_STARTED])
        server_id = pod.query("SELECT @@server_id AS s")[0]["s"]
        assert server_id == cluster.server_id_base + pod.ordinal
    for pod in (pod1, pod2):
        # Root's option file is gone once replication is configured; only the sidecar's and
        # the probes' own accounts keep theirs, private to the pod, beside the listener's PID.
        assert sorted(p.name for p in pod.run_dir.iterdir()) == [
            "backup-client.cnf", "backup-listener.pid", "monitor-client.cnf"]
        assert all(p.stat().st_mode & 0o077 == 0 for p in pod.run_dir.iterdir())
    served = [streams_served(pod) for pod in (primary, pod1, pod2)]
    for pod in (primary, pod1, pod2):
        assert pod.probe("liveness").returncode == 0
        assert pod.probe("startup").returncode == 0
        assert pod.probe("backup").returncode == 0, pod.probe("backup").stderr
        assert_no_password_in_environments(pod)
    assert [streams_served(pod) for pod in (primary, pod1, pod2)] == served, \
        "a probe connected to a backup port"


def test_killed_replica_restarts_without_reclone_and_resumes(
        make_cluster: Callable[..., PodCluster]) -> None:
    cluster = make_cluster()
    primary = cluster.start_pod(0)
    create_schema(primary)
    replica = cluster.start_pod(1)
    # Not something a clone would bring back: if it survives, the data dir was not re-cloned.
    sentinel = replica.data_dir / "sentinel-from-before-the-crash"
    sentinel.write_text("kept")
    marker_before = (replica.data_dir / CLONE_COMPLETE).read_text()
    served_before = streams_served(primary)

    writer = Writer(primary)
    writer.start()
    try:
        writer.wait_for_more()
        replica.kill()  # kill -9 of every container of the pod
        assert replica.probe("readiness").returncode != 0
        assert replica.probe("liveness").returncode != 0
        assert "listener process" in replica.probe("backup").stderr
        writer.wait_for_more()  # the replica falls behind while it is down
        replica.restart()
        writer.wait_for_more()
    finally:
        committed = writer.stop()

    assert sentinel.read_text() == "kept"
    assert (replica.data_dir / CLONE_COMPLETE).read_text() == marker_before
    assert streams_served(primary) == served_before, "the restarted pod streamed a new clone"
    assert "holds a completed clone" in replica.clone_log()
    assert "configured for this clone already" in (replica.logs / "backup-2.log").read_text()
    assert_consistent(primary, [replica], committed)


def test_sidecar_crash_mid_setup_neither_skips_nor_rewinds_replication(
        make_cluster: Callable[..., PodCluster]) -> None:
    cluster = make_cluster()
    primary = cluster.start_pod(0)
    create_schema(primary)
    replica = cluster.start_pod(1)
    committed = bulk_load(primary, 500, first_seq=1)
    replica.wait_for_gtid(primary.gtid_binlog_pos())
    clone_gtid = clone_marker(replica)["gtid"]

    # Crash after step 1, before START REPLICA's marker: only START runs again. The crash came
    # inside write_marker and write_client_options: their temp files are left (one holds
    # root's password), and the next sidecar removes them.
    replica.kill_sidecar()
    replica.query("STOP REPLICA")
    (replica.data_dir / REPLICATION_STARTED).unlink()
    stranded = [replica.data_dir / f"{REPLICATION_STARTED}.Ab12Cd",
                replica.run_dir / "root-client.cnf.Ef34Gh",
                replica.run_dir / "backup-listener.pid.Ij56Kl"]
    for temp in stranded:
        temp.write_text("left by a SIGKILL\n")
    committed += bulk_load(primary, 500, first_seq=10_000)
    replica.start_sidecar()
    replica.wait_serving()
    assert_consistent(primary, [replica], committed)
    assert not [temp for temp in stranded if temp.exists()]

    # Crash after CHANGE MASTER, before its marker, then a pod restart that let the server
    # start the replica by itself: the position has moved on and must not be set back.
    replica.kill_sidecar()
    for marker in (REPLICATION_CONFIGURED, REPLICATION_STARTED):
        (replica.data_dir / marker).unlink()
    committed += bulk_load(primary, 500, first_seq=20_000)
    replica.wait_for_gtid(primary.gtid_binlog_pos())
    assert replica.query("SELECT @@GLOBAL.gtid_slave_pos AS g")[0]["g"] != clone_gtid
    replica.start_sidecar()
    replica.wait_serving()
    assert replica.sidecar is not None
    assert "not rewinding it" in replica.sidecar.log_tail()
    committed += bulk_load(primary, 500, first_seq=30_000)
    assert_consistent(primary, [replica], committed)


def test_donor_killed_mid_stream_partial_clone_is_wiped_and_redone(
        make_cluster: Callable[..., PodCluster]) -> None:
    cluster = make_cluster()
    primary = cluster.start_pod(0)
    create_schema(primary)
    seqs = bulk_load(primary, 100_000, first_seq=1)
    donor = cluster.start_pod(1)
    recipient = cluster.pod(2)
    recipient.init_config()

    clone = recipient.start_clone()
    # Freeze the recipient once it holds real data: the donor then blocks on a full socket,
    # so it is certainly in the middle of its stream when it is killed.
    threshold = 2 * 1024 * 1024
    wait_until(lambda: directory_bytes(recipient.data_dir) >= threshold or not clone.running(),
               timeout=120, what="the recipient to receive 2 MiB", interval=0.002)
    os.killpg(clone.pid, signal.SIGSTOP)
    received = directory_bytes(recipient.data_dir)
    assert clone.running(), f"the clone ended before it was interrupted:\n{clone.log_tail()}"
    assert any(comm == "mariadb-backup" for _pid, comm in donor.sidecar_group()), \
        "the donor's backup was not running: the stream was not interrupted in the middle"
    donor.kill_sidecar()
    os.killpg(clone.pid, signal.SIGCONT)
    assert clone.process is not None
    assert clone.process.wait(120) != 0, "a clone from a killed donor must not succeed"
    assert (recipient.data_dir / CLONE_IN_PROGRESS).exists()
    assert not (recipient.data_dir / CLONE_COMPLETE).exists()
    assert received < directory_bytes(donor.data_dir), "the whole data dir had arrived"

    # The next start of the init container: wipe the partial clone and clone again. Pod 1's
    # sidecar is gone, so it falls back to the primary.
    assert recipient.clone() == 0, recipient.clone_log()
    log = recipient.clone_log()
    assert "clone that never completed: wiping it" in log
    assert "ordinal 1 could not be reached" in log
    assert clone_marker(recipient)["donor"] == "0"
    assert not (recipient.data_dir / CLONE_IN_PROGRESS).exists()
    recipient.start_server()
    recipient.start_sidecar()
    recipient.wait_serving()
    more = bulk_load(primary, 1_000, first_seq=200_000)
    assert_consistent(primary, [donor, recipient], seqs + more)


def _chunk_offset(stream: bytes, path: bytes) -> int:
    """Offset of the first xbstream chunk for ``path`` (magic, flags, type, path length, path)."""
    offset = 0
    while (offset := stream.find(b"XBSTCK01", offset)) >= 0:
        (length,) = struct.unpack("<I", stream[offset + 10:offset + 14])
        if stream[offset + 14:offset + 14 + length] == path:
            return offset
        offset += 8
    raise AssertionError(f"no chunk for {path!r} in the stream")


def _cut_before_last_file(stream: bytes, _work: Path) -> bytes:
    """Everything but the file the backup tool writes last, cut cleanly between chunks."""
    return stream[:_chunk_offset(stream, b"xtrabackup_info")]


def _redo_log_destroyed(stream: bytes, work: Path) -> bytes:
    """A complete, well-formed stream whose redo log was lost: only --prepare can tell."""
    extracted = work / "restream"
    extracted.mkdir()
    subprocess.run(["mbstream", "-x", "-C", str(extracted)], input=stream, check=True,
                   capture_output=True, timeout=120)
    redo = extracted / "ib_logfile0"
    header = 12 * 1024  # keep the header, lose every record after the checkpoint
    redo.write_bytes(redo.read_bytes()[:header] + bytes(redo.stat().st_size - header))
    files = [str(p.relative_to(extracted)) for p in extracted.rglob("*") if p.is_file()]
    return subprocess.run(["mbstream", "-c", *files], cwd=extracted, check=True,
                          capture_output=True, timeout=120).stdout


@pytest.mark.parametrize(("defect", "detected_by"), [
    (_cut_before_last_file, "stream incomplete: no info file"),
    (_redo_log_destroyed, "mariadb-backup --prepare failed"),
], ids=["stream-cut-at-chunk-boundary", "prepare-fails"])
def test_bad_stream_is_never_taken_for_a_clone(
        make_cluster: Callable[..., PodCluster], tmp_path: Path,
        defect: Callable[[bytes, Path], bytes], detected_by: str) -> None:
    cluster = make_cluster()
    primary = cluster.start_pod(0)
    create_schema(primary)
    seqs = bulk_load(primary, 2_000, first_seq=1)
    stream = subprocess.run(["ncat", "--recv-only", LOCALHOST, str(primary.backup_port)],
                            capture_output=True, check=True, timeout=120).stdout
    bad_stream = tmp_path / "bad.xbstream"
    bad_stream.write_bytes(defect(stream, tmp_path))
    extracted = tmp_path / "extracted"
    extracted.mkdir()
    with bad_stream.open("rb") as source:
        mbstream = subprocess.run(["mbstream", "-x", "-C", str(extracted)], stdin=source,
                                  capture_output=True, check=False, timeout=120)
    assert mbstream.returncode == 0, "premise: the extractor does not notice the defect"

    # A donor at ordinal 1 that serves the bad stream once, then is gone.
    donor_port = cluster.pod(1).backup_port
    fake_donor = ManagedProcess("bad-donor", ["bash", "-c", 'exec ncat --listen --send-only '
                                              f'{LOCALHOST} {donor_port} < "$0"', str(bad_stream)],
                                log_dir=tmp_path)
    recipient = cluster.pod(2)
    try:
        fake_donor.start()
        wait_until(lambda: listening(donor_port), timeout=30, what="the bad-stream donor")
        recipient.init_config()
        assert recipient.clone() != 0
        assert detected_by in recipient.clone_log()
        assert (recipient.data_dir / CLONE_IN_PROGRESS).exists()
        assert not (recipient.data_dir / CLONE_COMPLETE).exists()
    finally:
        fake_donor.stop()

    # The next start wipes it and clones again (from the primary: the bad donor is gone).
    assert recipient.clone() == 0, recipient.clone_log()
    assert "clone that never completed: wiping it" in recipient.clone_log()
    assert clone_marker(recipient)["donor"] == "0"
    recipient.start_server()
    recipient.start_sidecar()
    recipient.wait_serving()
    assert_consistent(primary, [recipient], seqs)


def test_scale_up_fourth_pod_joins_after_100k_rows(
        make_cluster: Callable[..., PodCluster]) -> None:
    cluster = make_cluster()
    primary = cluster.start_pod(0)
    create_schema(primary)
    cluster.start_pod(1)
    cluster.start_pod(2)
    seqs = bulk_load(primary, 100_000, first_seq=1)
    assert primary.query("SELECT COUNT(*) AS n FROM app.events")[0]["n"] == 100_000

    writer = Writer(primary)
    writer.start()
    try:
        fourth = cluster.start_pod(3)
        writer.wait_for_more()
    finally:
        committed = writer.stop()
    assert clone_marker(fourth)["donor"] == "2"
    assert_consistent(primary, [cluster.pod(1), cluster.pod(2), fourth], seqs + committed)


def test_replica_refuses_writes_from_admin_and_application_accounts(
        make_cluster: Callable[..., PodCluster]) -> None:
    cluster = make_cluster()
    primary = cluster.start_pod(0)
    create_schema(primary)
    # An application account as an operator would create it with admin; it replicates.
    primary.query_as("admin", "CREATE USER 'app'@'%' IDENTIFIED BY 'app-secret-1'")
    primary.query_as("admin", "GRANT SELECT, INSERT, UPDATE, DELETE ON app.* TO 'app'@'%'")
    primary.query_as("admin", "INSERT INTO app.events (seq, payload) VALUES (1, 'primary')")
    replica = cluster.start_pod(1)
    replica.wait_for_gtid(primary.gtid_binlog_pos())
    gtid_before = replica.query("SELECT @@GLOBAL.gtid_binlog_pos AS g")[0]["g"]

    def write_refused(user: str, password: str, sql: str) -> int:
        conn = replica.server.connect(user=user, password=password, host=LOCALHOST)
        with conn, pytest.raises(pymysql.err.MySQLError) as refused:
            conn.cursor().execute(sql)
        return int(refused.value.args[0])

    admin = cluster.secrets.admin
    insert = "INSERT INTO app.events (seq, payload) VALUES (2, 'replica')"
    assert write_refused("admin", admin, insert) == READ_ONLY_ERROR
    assert write_refused("admin", admin, "CREATE DATABASE errant") == READ_ONLY_ERROR
    assert write_refused("admin", admin, "CREATE USER 'x'@'%' IDENTIFIED BY 'y-secret-1'") \
        == READ_ONLY_ERROR
    assert write_refused("app", "app-secret-1", insert) == READ_ONLY_ERROR
    # Nor can admin lift read_only: it holds no SUPER / READ ONLY ADMIN.
    assert write_refused("admin", admin, "SET GLOBAL read_only = OFF") in (1227, 1045)

    grants = " ".join(next(iter(row.values())) for row in primary.query_as(
        "admin", "SHOW GRANTS FOR 'admin'@'%'"))
    for forbidden in ("ALL PRIVILEGES", "SUPER", "READ ONLY ADMIN"):
        assert forbidden not in grants
    assert replica.query("SELECT COUNT(*) AS n FROM app.events")[0]["n"] == 1
    assert replica.query("SELECT @@GLOBAL.gtid_binlog_pos AS g")[0]["g"] == gtid_before, \
        "an errant transaction reached the replica's binary log"


def test_replica_behind_purged_binlogs_says_why_it_is_not_ready(
        make_cluster: Callable[..., PodCluster]) -> None:
    """The README's limit: a retained PVC whose GTIDs the primary has purged shows as a
    readiness failure naming error 1236, and the probe's own message says so (issue 16 item
    7: it said only "IO thread is 'No'")."""
    cluster = make_cluster()
    primary = cluster.start_pod(0)
    create_schema(primary)
    replica = cluster.start_pod(1)
    replica.wait_for_gtid(primary.gtid_binlog_pos())
    replica.kill()  # scaled down; its PVC is retained
    bulk_load(primary, 100, first_seq=1)
    # A binlog a dump thread still reads is silently kept by PURGE: wait for the killed
    # replica's dump thread to notice (it does when it sends the rows above).
    wait_until(lambda: not primary.query("SELECT ID FROM information_schema.PROCESSLIST "
                                         "WHERE COMMAND = 'Binlog Dump'"),
               timeout=60, what="the primary's dump thread for the killed replica to end")
    primary.query("FLUSH BINARY LOGS")
    current = primary.query("SHOW MASTER STATUS")[0]["File"]

    def purged() -> bool:
        # PURGE also keeps the previous binlog until its binlog checkpoint follows the flush.
        primary.query("PURGE BINARY LOGS TO %s", (current,))
        return [row["Log_name"] for row in primary.query("SHOW BINARY LOGS")] == [current]

    wait_until(purged, timeout=60, what="the primary to purge every binlog before the current")
    replica.restart()  # scaled up again: the old data dir, no re-clone

    wait_until(lambda: replica.query("SHOW REPLICA STATUS")[0]["Last_IO_Errno"] == 1236,
               timeout=60, what="the replica's IO thread to fail with error 1236")
    ready = replica.probe("readiness")
    assert ready.returncode != 0
    assert "replica not ready: IO thread is 'No'; last IO error 1236: " in ready.stderr
    assert "purged" in ready.stderr


def test_sidecar_that_cannot_reach_its_server_says_why(
        make_cluster: Callable[..., PodCluster]) -> None:
    pod = make_cluster().pod(1)
    (pod.data_dir / CLONE_COMPLETE).write_text("donor=0\n")  # no server runs on it
    result = pod.run_script("backup-server.sh", extra_env={"SERVER_WAIT_SECONDS": "1"},
                            timeout=60)
    assert result.returncode != 0
    assert "did not accept connections within 1s; last error: ERROR 2002" in result.stderr
    assert not list(pod.run_dir.iterdir()), "root's option file outlived the failure"
    for password in pod.cluster.secrets.passwords():
        assert password not in result.stdout + result.stderr


# --- refusals: bad input changes nothing ----------------------------------------------------------

def test_init_config_fails_loudly_without_an_ordinal(
        make_cluster: Callable[..., PodCluster]) -> None:
    pod = make_cluster().pod(1)
    result = pod.run_script("init-config.sh", extra_env={"POD_NAME": "orders-mysql"})
    assert result.returncode != 0
    assert "cannot read the ordinal from POD_NAME='orders-mysql'" in result.stderr
    assert list(pod.conf_dir.iterdir()) == []

    assert pod.run_script("init-config.sh").returncode == 0
    assert "server_id = 7001" in (pod.conf_dir / "server-id.cnf").read_text()
    assert sorted(p.name for p in pod.conf_dir.iterdir()) == ["replica.cnf", "server-id.cnf"]


def test_clone_refuses_a_data_dir_it_did_not_make(
        make_cluster: Callable[..., PodCluster]) -> None:
    pod = make_cluster().pod(1)
    precious = pod.data_dir / "ibdata1"
    precious.write_text("somebody's data")
    result = pod.run_script("clone.sh")
    assert result.returncode != 0
    assert "refusing to touch it" in result.stderr
    assert precious.read_text() == "somebody's data"
    assert sorted(p.name for p in pod.data_dir.iterdir()) == ["ibdata1"]


@pytest.mark.parametrize("marker", [".bootstrap-complete", ".restore-complete"])
def test_clone_keeps_the_first_primarys_own_data_when_the_primary_moved(
        make_cluster: Callable[..., PodCluster], marker: str) -> None:
    """A data dir the first primary bootstrapped, or restore-init.sh restored at deploy, is
    kept on a pod that is a replica now (its replication is the switchover's): a restored
    primary demoted by a switchover must not be refused as foreign data."""
    pod = make_cluster().pod(1)  # no record: ordinal 0 is the primary, so 1 is a replica
    precious = pod.data_dir / "ibdata1"
    precious.write_text("the cluster's data")
    (pod.data_dir / marker).write_text("at=2026-12-03T00:00:00Z\n")
    result = pod.run_script("clone.sh")
    assert result.returncode == 0, result.stderr
    assert "keeping it" in result.stderr
    assert precious.read_text() == "the cluster's data"


@pytest.mark.parametrize(("secret_env", "message"), [
    ({"ADMIN_PASSWORD_FILE": "{empty}"}, "ADMIN_PASSWORD_FILE: {empty} is empty"),
    ({"MONITOR_PASSWORD_FILE": "{missing}"}, "MONITOR_PASSWORD_FILE: no file at {missing}"),
    ({"BACKUP_PASSWORD_FILE": ""}, "BACKUP_PASSWORD_FILE is unset or empty"),
    ({"ROOT_PASSWORD": "from-the-env-1"}, "ROOT_PASSWORD is set in the environment"),
], ids=["empty-file", "missing-file", "no-path", "password-in-env"])
def test_scripts_refuse_missing_empty_or_environment_secrets(
        make_cluster: Callable[..., PodCluster], tmp_path: Path, secret_env: dict[str, str],
        message: str) -> None:
    paths = {"empty": str(tmp_path / "empty-password"), "missing": str(tmp_path / "nowhere")}
    Path(paths["empty"]).write_text("\n")  # a trailing newline is dropped: still empty
    pod = make_cluster().pod(0)
    result = pod.run_script("bootstrap-users.sh", extra_env={
        "SOCKET": "/nonexistent.sock",
        **{name: value.format(**paths) for name, value in secret_env.items()}})
    assert result.returncode != 0
    assert message.format(**paths) in result.stderr
    assert not list(pod.run_dir.iterdir()), "nothing may be written before the input is valid"
    for password in pod.cluster.secrets.passwords():
        assert password not in result.stdout + result.stderr


def test_backup_probe_follows_the_listener_without_connecting(
        make_cluster: Callable[..., PodCluster]) -> None:
    """`probe.sh backup` (the sidecar's startup and liveness probe): fails while the sidecar
    configures replication, passes while its listener serves, fails when the listener is gone
    or the PID file names any other process, and never opens a connection to a backup port."""
    cluster = make_cluster()
    primary = cluster.start_pod(0)
    create_schema(primary)
    replica = cluster.pod(1)
    replica.init_config()
    assert replica.clone() == 0, replica.clone_log()
    served_by_primary = streams_served(primary)

    # Setup phase: the sidecar waits for its server before it configures replication, so
    # there is no listener yet (the startup probe waits this out; liveness does not run).
    sidecar = replica.start_sidecar()
    wait_until(lambda: "waiting for the local server" in sidecar.log_tail(), timeout=30,
               what="the sidecar to wait for its server")
    setting_up = replica.probe("backup")
    assert setting_up.returncode != 0
    assert "no listener yet" in setting_up.stderr
    # A stale PID file naming the very process that is still setting up (in a container,
    # PID 1 of the next instance) does not pass either: that PID holds no listening socket.
    pid_file = replica.run_dir / "backup-listener.pid"
    pid_file.write_text(f"{sidecar.pid}\n")
    assert "nothing listens on port" in replica.probe("backup").stderr
    pid_file.unlink()

    replica.start_server()
    replica.wait_serving()
    serving = replica.probe("backup")
    assert serving.returncode == 0, serving.stderr
    assert int(pid_file.read_text()) == sidecar.pid, "the PID file must name the exec'd listener"
    assert any(comm == "ncat" for _pid, comm in replica.sidecar_group())

    # The port still listens, but the file names another live process.
    pid_file.write_text(f"{os.getpid()}\n")
    assert f"not in process {os.getpid()}" in replica.probe("backup").stderr
    pid_file.write_text(f"{sidecar.pid}\n")
    assert replica.probe("backup").returncode == 0

    # The listener dies: the probe fails, and a new sidecar passes again once it serves.
    replica.kill_sidecar()
    assert "listener process" in replica.probe("backup").stderr
    replica.start_sidecar()
    replica.wait_serving()
    assert replica.probe("backup").returncode == 0

    assert streams_served(replica) == 0, "a probe connected to the replica's backup port"
    assert streams_served(primary) == served_by_primary, "a probe connected to the primary's"


# --- kills at any instant (issue 16 item 4) -------------------------------------------------------

KILL_SEED = 16_4
# Steps that change the data dir (or hand it to a tool that does): the instants before and
# after each are where a kill can strand a half-done change.
_CHANGING_STEP = re.compile(
    r"^(mkdir|mktemp|mv|rm|find|sync|wipe_partial_clone|mbstream|ncat|mariadb-backup)\b"
    r"|>\s*\"")  # a redirection into a file (not /dev/null)


def _kill_points(trace: str, stream_bytes: int) -> list[tuple[str, int]]:
    """Deterministic instants to kill the clone at: its first steps, the steps just before
    and after every step that changes the data dir, a seeded spread of the others, and a
    seeded spread of byte counts of the stream (the first byte and the last included)."""
    steps = {int(number): command for number, _, command in
             (line.partition(" ") for line in trace.splitlines()) if number.isdigit()}
    rng = random.Random(KILL_SEED)  # noqa: S311 - chooses test instants, nothing secret
    chosen = {1, 2, 3}
    for number, command in steps.items():
        if _CHANGING_STEP.search(command):
            chosen |= {number, number + 1}
    chosen &= steps.keys()
    chosen |= set(rng.sample(sorted(steps.keys() - chosen), 6))
    byte_counts = {1, 4096, stream_bytes - 1, *rng.sample(range(4097, stream_bytes - 1), 5)}
    return [("step", n) for n in sorted(chosen)] + [("byte", n) for n in sorted(byte_counts)]


def _killed_clone(pod: Pod, donor: Pod, relay: ByteLimitRelay, how: str, point: int) -> int:
    """Run the clone container and SIGKILL its process group at the point; its exit code.
    Returns once the donor's backup has ended too, as the next start of a real init container
    comes seconds later (a donor serves one stream at a time)."""
    if how == "step":
        pod.start_clone(kill_at_step=point)
    else:
        relay.limit = point
        clone = pod.start_clone()
        wait_until(lambda: relay.held.is_set() or not clone.running(), timeout=120,
                   what=f"the relay to pass on {point} bytes")
        if clone.running():
            os.killpg(clone.pid, signal.SIGKILL)
    try:
        return pod.wait_clone_group_gone()
    finally:
        relay.limit = None
        relay.release()
        wait_until(lambda: all(comm != "mariadb-backup" for _pid, comm in donor.sidecar_group()),
                   timeout=60, what="the donor's backup to end")


def test_clone_killed_at_any_instant_is_wiped_and_redone(
        make_cluster: Callable[..., PodCluster], tmp_path: Path) -> None:
    """The README's promise, at every instant: a clone container SIGKILLed (its whole process
    group, as a node loss or an OOM kill of the container) on an empty data dir, then killed
    again at the same point of its next run, never leaves a data dir that a later start
    refuses; the start after that clones and yields a valid replica."""
    cluster = make_cluster()
    primary = cluster.start_pod(0)
    create_schema(primary)
    seqs = bulk_load(primary, 2_000, first_seq=1)
    # Pod 2 clones from "ordinal 1", which is this relay of the primary's sidecar: it can stop
    # any stream after an exact number of bytes.
    relay = ByteLimitRelay(cluster.pod(1).backup_port, primary.backup_port)
    recipient = cluster.pod(2)
    try:
        recipient.init_config()
        trace = tmp_path / "clone-steps"
        recipient.start_clone(trace_steps_to=trace)
        assert recipient.wait_clone_group_gone() == 0, recipient.clone_log()
        points = _kill_points(trace.read_text(), relay.relayed[-1])
        assert len(points) >= 30
        killed = 0
        for how, point in points:
            recipient.replace_volume()
            recipient.init_config()
            first = _killed_clone(recipient, primary, relay, how, point)
            assert first == -signal.SIGKILL, f"{how} {point}: not killed ({first})"
            killed += 1
            # The restarted init container is killed at the same point of its own run (the
            # wipe, when there is one); one that finishes first is fine too.
            second = _killed_clone(recipient, primary, relay, how, point)
            assert second in (0, -signal.SIGKILL), f"{how} {point}: {recipient.clone_log()}"
            assert recipient.clone() == 0, f"{how} {point}:\n{recipient.clone_log()}"
            assert "refusing to touch it" not in recipient.clone_log()
            recipient.start_server()
            recipient.start_sidecar()
            recipient.wait_serving()
            assert_consistent(primary, [recipient], seqs)
            # Nothing of the interrupted runs is left: no marker temp files, no stale marker.
            assert sorted(p.name for p in recipient.data_dir.glob(".*")) == sorted(
                [CLONE_COMPLETE, REPLICATION_CONFIGURED, REPLICATION_STARTED]), f"{how} {point}"
        assert killed == len(points)
    finally:
        relay.close()
