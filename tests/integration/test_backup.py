"""Backups to a real S3-compatible server, binlog archiving and point-in-time restore (issue 14).

Everything here is real: SeaweedFS's ``weed server -s3`` built from its Go module
(tests/support/seaweedfs.py), MariaDB 10.11's mariadbd, mariadb-backup, mbstream and
mariadb-binlog, the pod scripts (backup.sh, binlog-archive.sh, restore.sh) run unmodified in
the environment of the container that runs them (tests/support/pods.py), boto3 against
the server, and distlock over a real etcd for the lock case. MariaDB 10.11 only: the 11.4
server available here ships no mariadb-backup (tests/support/mariadb.py), and a backup is a
mariadb-backup stream.

Each test proves one promise a restore makes, by checking what would be wrong if the
feature were broken: rows that should not be there, rows that are missing, a restore that
silently used an incomplete backup or skipped binlogs, a corrupted object that restored.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from components.mysql import _backup
from mysqlbackup import catalog
from mysqlbackup.store import Store as StoreClient
from mysqlbackup.store import StoreConfig
from tests.support.backups import (
    Agents,
    Archiver,
    Restore,
    Store,
    archive,
    backup,
    etcd_binaries,
    lock_etcd,
    scheduled_job,
)
from tests.support.mocks import manifests, run_program, stack_with
from tests.support.pods import Pod, PodCluster
from tests.support.procs import LOCALHOST, free_ports, require_binary, wait_until
from tests.support.rendered_jobs import LocalJob, cron_job_container, local_job

pytestmark = pytest.mark.integration


# --- fixtures ------------------------------------------------------------------------------------

@pytest.fixture
def source(tmp_path: Path) -> Iterator[Pod]:
    """The cluster being backed up: a real primary pod with the bootstrap accounts."""
    require_binary("mariadb-binlog", "gzip")
    with PodCluster(tmp_path / "source", name="orders-mysql") as cluster:
        primary = cluster.start_pod(0)
        primary.query("CREATE DATABASE shop")
        primary.query("CREATE TABLE shop.items (id INT PRIMARY KEY, name VARCHAR(64))")
        primary.query("INSERT INTO shop.items VALUES (1, 'one'), (2, 'two'), (3, 'three')")
        primary.query("CREATE TABLE shop.events (id INT AUTO_INCREMENT PRIMARY KEY, "
                      "seq BIGINT NOT NULL, note VARCHAR(64))")
        yield primary


@pytest.fixture
def restores(tmp_path: Path, source: Pod, store: Store) -> Iterator[list[Restore]]:
    made: list[Restore] = []
    yield made
    for restore in made:
        restore.close()


def new_restore(restores: list[Restore], source: Pod, store: Store) -> Restore:
    restore = Restore(source, store)
    restores.append(restore)
    return restore


def insert_event(pod: Pod, note: str) -> str:
    """One transaction; returns its GTID."""
    with pod.server.connect(host=None) as conn, conn.cursor() as cursor:
        cursor.execute("INSERT INTO shop.events (seq, note) VALUES (0, %s)", (note,))
        cursor.execute("SELECT @@last_gtid")
        (gtid,) = cursor.fetchone()
        return str(gtid)


def notes(pod: Pod) -> list[str]:
    return [str(row["note"]) for row in pod.query("SELECT note FROM shop.events ORDER BY id")]


def seq_of(gtid: str) -> int:
    return int(gtid.rsplit("-", 1)[1])


# --- the eight cases -----------------------------------------------------------------------------

def test_backup_under_a_live_writer_restores_exactly_its_gtid_position(
        source: Pod, store: Store, restores: list[Restore], tmp_path: Path) -> None:
    """Every row the writer committed up to the manifest's GTID is restored, none after it,
    and the untouched table's checksum equals the source's."""
    committed: list[tuple[int, int]] = []  # (row id, GTID seq)
    stop = threading.Event()
    failures: list[BaseException] = []

    def writer() -> None:
        try:
            with source.server.connect(host=None) as conn, conn.cursor() as cursor:
                while not stop.is_set():
                    cursor.execute("INSERT INTO shop.events (seq, note) VALUES (0, 'live')")
                    row_id = cursor.lastrowid
                    cursor.execute("SELECT @@last_gtid")
                    (gtid,) = cursor.fetchone()
                    committed.append((int(row_id), seq_of(str(gtid))))
        except BaseException as error:  # noqa: BLE001 - reported by the test below
            failures.append(error)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    wait_until(lambda: len(committed) >= 50, timeout=60, what="the writer to commit 50 rows")
    try:
        summary = backup(source, store)
        wait_until(lambda: committed and committed[-1][1] > seq_of(summary["gtid"]), timeout=60,
                   what="the writer to commit past the backup's position")
    finally:
        stop.set()
        thread.join(30)
    assert not failures, failures
    position = seq_of(summary["gtid"])
    expected = sorted(row for row, seq in committed if seq <= position)
    assert expected, "the backup ran before any writer commit: nothing is proven"
    assert len(expected) < len(committed), "the writer never wrote past the backup"

    restore = new_restore(restores, source, store)
    reached = restore.run()
    assert reached == summary["gtid"]
    restored = [int(r["id"]) for r in restore.pod.query("SELECT id FROM shop.events ORDER BY id")]
    assert restored == expected
    assert restore.pod.checksum("shop.items") == source.checksum("shop.items")


def test_pitr_to_a_timestamp_and_to_a_gtid_gives_exactly_the_rows_before_it(
        source: Pod, store: Store, restores: list[Restore], tmp_path: Path) -> None:
    insert_event(source, "before-backup")
    backup(source, store)
    gtid_a = insert_event(source, "a")
    committed_a = dt.datetime.now(dt.UTC)
    # Binary-log times have one-second resolution: the point is the next whole second after
    # A, and B is committed once the clock has reached it (a condition, polled).
    point = committed_a.replace(microsecond=0) + dt.timedelta(seconds=1)
    wait_until(lambda: dt.datetime.now(dt.UTC) >= point, timeout=5, what="the next second")
    insert_event(source, "b")
    archive(source, store)

    at_time = new_restore(restores, source, store)
    at_time.run(point=catalog.iso(point))
    assert notes(at_time.pod) == ["before-backup", "a"]

    at_gtid = new_restore(restores, source, store)
    assert at_gtid.run(point=gtid_a) == gtid_a
    assert notes(at_gtid.pod) == ["before-backup", "a"]

    everything = new_restore(restores, source, store)
    everything.run(point=source.gtid_binlog_pos())
    assert notes(everything.pod) == ["before-backup", "a", "b"]


def test_the_archive_loop_uploads_each_rotation_from_one_long_lived_python_process(
        source: Pod, store: Store) -> None:
    """The loop's passes are answered by one coprocess (no interpreter start per pass, which
    is what pushed the recovery point past the interval), and each transaction reaches the
    store after the next rotation without anything else happening."""

    def archived(gtid: str) -> bool:
        return any(record["last"] == gtid for record in archiver.records())

    with Archiver(source, store, interval=1) as archiver:
        first = insert_event(source, "first")
        wait_until(lambda: archived(first), timeout=60, what=f"{first} archived by the loop")
        pythons = archiver.pythons()
        assert len(pythons) == 1, f"python processes of the loop: {pythons}"
        second = insert_event(source, "second")
        wait_until(lambda: archived(second), timeout=60, what=f"{second} archived by the loop")
        assert archiver.pythons() == pythons, "the loop started another python process"
        log = archiver.stop()
    assert "archive pass failed" not in log, log
    assert not archiver.pythons(), "the coprocess outlived its loop"


def test_the_archiver_probe_fails_when_its_loop_hangs_in_an_upload(
        source: Pod, store: Store) -> None:
    """A pass that never returns (here: the upload process stopped mid-loop, as a store that
    accepted a connection and never answers leaves it) keeps every process alive; only the
    heartbeat shows it, and the liveness probe must fail on it, naming its age. Resumed, the
    loop beats again and the probe passes."""
    with Archiver(source, store, interval=1, extra_env={"ARCHIVE_STALL_SECONDS": "3"}
                  ) as archiver:
        insert_event(source, "before the hang")
        wait_until(archiver.records, timeout=60, what="a first pass of the loop")
        wait_until(lambda: archiver.probe().returncode == 0, timeout=60, interval=0.5,
                   what="the probe to pass while the loop runs")
        (uploader,) = archiver.pythons()
        os.kill(uploader, signal.SIGSTOP)
        try:
            insert_event(source, "during the hang")  # the next pass has work: it blocks

            def probe_failure() -> subprocess.CompletedProcess[str] | None:
                result = archiver.probe()
                return result if result.returncode != 0 else None

            failed = wait_until(probe_failure, timeout=60, interval=0.5,
                                what="the probe to notice the hung loop")
            assert "last heartbeat is" in failed.stderr, failed.stderr
            assert "stuck in a pass" in failed.stderr, failed.stderr
            assert archiver.process.poll() is None, "the loop should be hung, not dead"
        finally:
            os.kill(uploader, signal.SIGCONT)
        wait_until(lambda: archiver.probe().returncode == 0, timeout=60, interval=0.5,
                   what="the probe to pass once the loop beats again")
        archiver.stop()
    # A new pod (a fresh `run` emptyDir) before its loop's first tick: nothing vouches for it.
    fresh = source.dir / "run-of-a-new-pod"
    fresh.mkdir(mode=0o700)
    result = source.run_script("binlog-archive.sh", "alive", container="backup",
                               extra_env={"RUN_DIR": str(fresh)})
    assert result.returncode != 0
    assert "no heartbeat yet" in result.stderr


def test_the_archive_loop_archives_only_while_its_pod_is_the_recorded_primary(
        source: Pod, store: Store) -> None:
    """Every pod runs the archiver sidecar; the record decides which one archives, at every
    tick, so a switchover moves the archiving without restarting anything."""
    record = source.dir / "record"
    record.mkdir(exist_ok=True)
    (record / "primary").write_text("1\n")
    with Archiver(source, store, interval=1) as archiver:
        wait_until(lambda: archiver.logged("recorded replica"), timeout=60,
                   what="the loop reading that another pod is the recorded primary")
        gtid = insert_event(source, "written while the record names pod 1")
        promoted_at = catalog.utc_now().replace(microsecond=0)
        (record / "primary").write_text("0\n")
        wait_until(lambda: any(r["last"] == gtid for r in archiver.records()), timeout=60,
                   what=f"{gtid} archived once the record names this pod")
        log = archiver.stop()
    assert log.index("recorded replica") < log.index("recorded primary"), log
    # Nothing was archived while the pod was a replica.
    assert all(catalog.parse_time(r["closed_at"]) >= promoted_at for r in archiver.records())


def test_the_restore_init_step_restores_the_first_primary_and_the_replicas_clone_from_it(
        source: Pod, store: Store, restores: list[Restore]) -> None:
    """mysql.restore's init container: ordinal 0's empty data dir gets the backup plus the
    archived binlogs up to the point, replayed by a private server that is gone before the
    pod's own starts; re-running it does nothing; ordinal 1 restores nothing and clones from
    the restored primary as usual."""
    insert_event(source, "before-backup")
    backup(source, store)
    gtid_a = insert_event(source, "a")
    insert_event(source, "b")
    archive(source, store)

    restore = new_restore(restores, source, store)
    result = restore.init_step(point=gtid_a)
    assert result.returncode == 0, result.stderr
    assert (restore.pod.data_dir / ".restore-complete").exists()
    private_sockets = list(restore.pod.scratch_dir.rglob("mysqld.sock"))
    assert not private_sockets, f"the private server outlived the init step: {private_sockets}"
    again = restore.init_step(point=gtid_a)
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stderr
    # The pod's own server, on its own config, starts exactly at the point.
    restore.pod.start_server()
    assert notes(restore.pod) == ["before-backup", "a"]
    assert restore.pod.gtid_binlog_pos() == gtid_a
    restore.pod.start_sidecar()
    restore.pod.wait_serving()

    replica = restore.cluster.pod(1)
    skipped = restore.init_step(point=gtid_a, pod=replica)
    assert skipped.returncode == 0, skipped.stderr
    assert "clones from the restored one" in skipped.stderr
    assert list(replica.data_dir.iterdir()) == []
    replica.start()
    assert notes(replica) == ["before-backup", "a"]
    # Replication continues the restored GTID sequence.
    gtid_c = insert_event(restore.pod, "c")
    replica.wait_for_gtid(gtid_c)
    assert notes(replica) == ["before-backup", "a", "c"]


def test_the_restore_init_step_never_restores_over_data_it_did_not_write(
        source: Pod, store: Store, restores: list[Restore]) -> None:
    backup(source, store)
    restore = new_restore(restores, source, store)
    foreign = restore.pod.data_dir / "ibdata1"
    foreign.write_bytes(b"someone else's data")
    result = restore.init_step()
    assert result.returncode != 0
    assert "already holds data that no restore of ours wrote" in result.stderr
    assert sorted(p.name for p in restore.pod.data_dir.iterdir()) == ["ibdata1"]
    assert foreign.read_bytes() == b"someone else's data"

    # What an init step stopped between fetch and the end of its replay leaves (the replay
    # cannot be resumed, the new pod's /tmp is empty): ours, never served, restored anew.
    interrupted = new_restore(restores, source, store)
    assert interrupted.fetch().returncode == 0
    assert (interrupted.pod.data_dir / ".restore-prepared").exists()
    result = interrupted.init_step()
    assert result.returncode == 0, result.stderr
    assert "restoring anew" in result.stderr
    assert (interrupted.pod.data_dir / ".restore-complete").exists()


def test_a_backup_killed_mid_upload_leaves_no_manifest_and_is_never_used(
        source: Pod, store: Store, restores: list[Restore], tmp_path: Path) -> None:
    first = backup(source, store)
    # Enough data that the stream is still uploading when the kill comes.
    source.query("CREATE TABLE shop.bulk (id INT AUTO_INCREMENT PRIMARY KEY, pad LONGBLOB)")
    for _ in range(12):
        source.query("INSERT INTO shop.bulk (pad) VALUES (REPEAT(SHA2(RAND(), 512), 8000))")
    env = {**os.environ, **source.env("backup"), **store.env, "BACKUP_ID": "killed-backup",
           "BACKUP_COMPRESSION": "none"}
    process = subprocess.Popen(["bash", str(source.cluster.config_dir / "backup.sh")], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               start_new_session=True)
    try:
        def uploading() -> bool:
            answer = store.client.list_multipart_uploads(Bucket=store.bucket)
            return any("killed-backup" in u["Key"] for u in answer.get("Uploads", []))

        wait_until(uploading, timeout=60, what="the killed backup's multipart upload to start")
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)
    assert not any(key.startswith("backups/killed-backup/manifest") for key in store.objects())
    # A backup tool that fails after streaming part of a backup: the uploader sees an
    # ordinary end of input and completes its upload, and only pipefail keeps the manifest out.
    shim = tmp_path / "failing-tool"
    shim.mkdir()
    (shim / "mariadb-backup").write_text("#!/bin/sh\nhead -c 300000 /dev/urandom\nexit 1\n")
    (shim / "mariadb-backup").chmod(0o755)
    failed = source.run_script("backup.sh", container="backup", extra_env={
        **store.env, "BACKUP_ID": "99991231T000000Z-late",
        "PATH": f"{shim}:{source.env('backup')['PATH']}"})
    assert failed.returncode != 0
    assert "no manifest written" in failed.stderr
    assert "backups/99991231T000000Z-late/data.xbstream.gzip" in store.objects()

    listing = store.listing()
    assert [m["id"] for m in listing["complete"]] == [first["id"]]
    assert "99991231T000000Z-late" in listing["incomplete"]
    restore = new_restore(restores, source, store)
    assert restore.run() == first["gtid"]
    assert store.cli("retention", "--keep", "1").returncode == 0
    assert [m["id"] for m in store.listing()["complete"]] == [first["id"]]
    assert "backups/99991231T000000Z-late/data.xbstream.gzip" in store.objects()


def test_a_corrupted_object_fails_the_checksum_naming_the_object(
        source: Pod, store: Store, restores: list[Restore], tmp_path: Path) -> None:
    summary = backup(source, store)
    data = f"backups/{summary['id']}/data.xbstream.gzip"
    original = store.get(data)
    body = bytearray(original)
    body[len(body) // 2] ^= 0xFF
    store.put(data, bytes(body))

    restore = new_restore(restores, source, store)
    result = restore.fetch()
    assert result.returncode != 0
    assert f"checksum mismatch in s3://{store.bucket}/orders/{data}" in result.stderr
    assert list(restore.pod.data_dir.iterdir()) == [], "a failed restore kept data"
    assert not restore.pod.server.running()

    # A corrupted archived binlog is named the same way.
    insert_event(source, "after")
    archived = archive(source, store)["archived"]
    fixed = new_restore(restores, source, store)
    store.put(data, original)
    binlog = next(k for k in store.objects("binlogs/") if k.endswith(archived[-1]["file"]))
    store.put(binlog, store.get(binlog)[:-1] + b"\x00")
    result = fixed.fetch(point=source.gtid_binlog_pos())
    assert result.returncode != 0
    assert f"checksum mismatch in s3://{store.bucket}/orders/{binlog}" in result.stderr


def test_a_missing_archived_binlog_fails_the_restore_naming_the_gtid_gap(
        source: Pod, store: Store, restores: list[Restore], tmp_path: Path) -> None:
    backup(source, store)
    gtids, files = [], []
    for note in ("one", "two", "three"):
        gtids.append(insert_event(source, note))
        files.append(archive(source, store)["archived"][-1]["file"])
    server_id = source.query("SELECT @@server_id AS s")[0]["s"]
    store.delete(f"binlogs/{server_id}/{files[1]}")
    store.delete(f"binlogs/{server_id}/{files[1]}.json")

    restore = new_restore(restores, source, store)
    result = restore.fetch(point=gtids[2])
    assert result.returncode != 0
    assert f"GTIDs {gtids[1]} to {gtids[1]} are in no archived binlog" in result.stderr
    assert list(restore.pod.data_dir.iterdir()) == []
    # Up to the last GTID before the gap still restores.
    assert new_restore(restores, source, store).run(point=gtids[0]) == gtids[0]


def test_retention_deletes_only_complete_backups_past_the_policy_never_the_newest(
        source: Pod, store: Store) -> None:
    ids = [backup(source, store)["id"] for _ in range(3)]
    store.put("backups/00000101T000000Z-incomplete/data.xbstream.gzip", b"partial")
    result = store.cli("retention", "--keep", "2")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["deleted"] == [ids[0]]
    listing = store.listing()
    assert [m["id"] for m in listing["complete"]] == ids[1:]
    assert listing["incomplete"] == ["00000101T000000Z-incomplete"]
    assert not [k for k in store.objects() if k.startswith(f"backups/{ids[0]}/")]

    # An age every backup exceeds: all but the newest complete one go.
    result = store.cli("retention", "--max-age-seconds", "0")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["deleted"] == [ids[1]]
    assert [m["id"] for m in store.listing()["complete"]] == [ids[2]]
    assert "backups/00000101T000000Z-incomplete/data.xbstream.gzip" in store.objects()


def test_two_backups_scheduled_at_once_one_waits_on_the_lock_none_overlap(
        source: Pod, store: Store, tmp_path: Path) -> None:
    etcd = lock_etcd(tmp_path / "etcd")
    try:
        env = {**os.environ, **source.env("backup"), **store.env}
        argv = [sys.executable, "-m", "distlock", "run", "--backend", "etcd", "--endpoints",
                etcd.client_url, "--ttl", "10", "mysql-cluster/orders-mysql", "--",
                "bash", str(source.cluster.config_dir / "backup.sh")]
        jobs = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for _ in range(2)]
        outputs = [job.communicate(timeout=600) for job in jobs]
        for job, (_out, err) in zip(jobs, outputs, strict=True):
            assert job.returncode == 0, err
    finally:
        etcd.stop()
    manifests = sorted(store.listing()["complete"], key=lambda m: m["started_at"])
    assert len(manifests) == 2
    first, second = manifests
    # started_at is taken after the lock is held, ended_at when the manifest is written.
    assert catalog.parse_time(second["started_at"]) >= catalog.parse_time(first["ended_at"])


def _replica_of(source: Pod) -> Pod:
    """Ordinal 1, cloned from ``source`` and caught up (so its readiness holds)."""
    replica = source.cluster.start_pod(1)
    replica.wait_for_gtid(source.gtid_binlog_pos())
    replica.wait_caught_up()
    return replica


def _server_id(pod: Pod) -> int:
    return int(pod.query("SELECT @@server_id AS s")[0]["s"])


def _processes_running(text: str) -> list[int]:
    """PIDs whose command line holds ``text``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue  # gone meanwhile
    return found


def _finish(job: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = job.communicate(timeout=600)
    return job.returncode, out, err


def test_two_scheduled_jobs_racing_for_one_slot_make_one_backup_from_the_replica(
        source: Pod, store: Store, restores: list[Restore], tmp_path: Path) -> None:
    """The CronJob's Job, twice at once for one slot (a retried pod, a manual trigger): the
    cluster lock puts them one after the other; the first asks the agents, the primary's
    refuses a replica backup, the replica's runs backup.sh; the second finds the slot's
    manifest and does nothing. Exactly one complete backup, from the replica, restorable."""
    insert_event(source, "before the slot")
    replica = _replica_of(source)
    etcd = lock_etcd(tmp_path / "etcd")
    try:
        with Agents([source, replica], store) as agents:
            jobs = [scheduled_job(etcd.client_url, agents, "orders-mysql-backup-29400180")
                    for _ in range(2)]
            results = [_finish(job) for job in jobs]
    finally:
        etcd.stop()
    for code, _out, err in results:
        assert code == 0, err
    answers = [json.loads(out.strip().splitlines()[-1]) for _code, out, _err in results]
    assert sorted(bool(a.get("already")) for a in answers) == [False, True], answers
    made = next(a for a in answers if not a.get("already"))
    assert made["mode"] == "replica"
    assert made["from"].endswith(f":{agents.port(replica)}")
    doer_log = next(err for (_c, _o, err), a in zip(results, answers, strict=True)
                    if not a.get("already"))
    assert "is the recorded primary, not a replica" in doer_log, doer_log

    complete = store.listing()["complete"]
    assert len(complete) == 1, complete
    (manifest,) = complete
    assert manifest["slot"] == "orders-mysql-backup-29400180"
    assert manifest["source_server_id"] == _server_id(replica)
    assert manifest["fencing_token"] is not None
    assert store.listing()["incomplete"] == [], "the second Job started no backup at all"

    restore = new_restore(restores, source, store)
    assert restore.run() == manifest["gtid"]
    assert notes(restore.pod) == notes(source) == ["before the slot"]
    assert restore.pod.checksum("shop.items") == source.checksum("shop.items")


def test_the_agent_liveness_probe_checks_its_listener_without_asking_it_anything(
        source: Pod, store: Store) -> None:
    """``probe.sh agent``, the backup-agent container's liveness probe: passes while the
    agent's listener holds its port, fails naming it once the listener is gone, and never
    connects (a connection would be read as a backup request)."""
    with Agents([source], store) as agents:
        env = {**store.env, "BACKUP_AGENT_PORT": str(agents.base)}
        serving = source.run_script("probe.sh", "agent", container="backup", extra_env=env,
                                    timeout=60)
        assert serving.returncode == 0, serving.stderr
        assert "refused" not in agents.log(source), "the probe connected to the agent"
        agents.stop(source)
        gone = source.run_script("probe.sh", "agent", container="backup", extra_env=env,
                                 timeout=60)
    assert gone.returncode != 0
    assert "backup agent not serving" in gone.stderr, gone.stderr


def test_the_primary_is_backed_up_only_without_a_healthy_replica_and_failures_fail_the_job(
        source: Pod, store: Store, tmp_path: Path) -> None:
    replica = _replica_of(source)
    # A replica that stopped replicating is a stale copy: never the backup's source.
    replica.query("STOP REPLICA")
    etcd = lock_etcd(tmp_path / "etcd")
    try:
        with Agents([source, replica], store) as agents:
            code, out, err = _finish(scheduled_job(etcd.client_url, agents, "slot-a"))
            assert code == 0, err
            assert json.loads(out.strip().splitlines()[-1])["mode"] == "primary"
            assert "orders-mysql-1 is not a healthy replica" in err, err
            assert "IO thread is 'No'" in err, err
            (manifest,) = store.listing()["complete"]
            assert manifest["source_server_id"] == _server_id(source)
            assert manifest["slot"] == "slot-a"

            # Nobody answers: the Job fails, naming each pod's answer (the CronJob keeps
            # failed Jobs and their logs).
            agents.close()
            code, _out, err = _finish(scheduled_job(etcd.client_url, agents, "slot-b"))
    finally:
        etcd.stop()
    assert code == 1, err
    assert "no backup for slot slot-b" in err
    for pod in (source, replica):
        assert f"{LOCALHOST}:{agents.port(pod)} as replica: failed: no answer" in err
    assert [m["slot"] for m in store.listing()["complete"]] == ["slot-a"]


def test_a_job_that_goes_away_mid_backup_stops_the_backup_before_its_manifest(
        source: Pod, store: Store, tmp_path: Path) -> None:
    """The Job holds the lock for the backup; once it is gone (its lease lapsed and distlock
    stopped it, or its pod died) nothing holds the lock for the backup any more, so the agent
    stops it at its next progress line, before any manifest."""
    shim = tmp_path / "stalling-tool"
    shim.mkdir()
    require_binary("mariadb-backup")
    real = shutil.which("mariadb-backup")
    # The real backup tool, then a stall (this shell stays, its command line naming the
    # shim): the upload stays open until someone ends it.
    (shim / "mariadb-backup").write_text(f'#!/bin/sh\n"{real}" "$@" || exit\nsleep 3600\n')
    (shim / "mariadb-backup").chmod(0o755)
    etcd = lock_etcd(tmp_path / "etcd")
    try:
        with Agents([source], store, extra_env={
                "BACKUP_AGENT_BEAT_SECONDS": "1",
                "PATH": f"{shim}:{source.env('backup')['PATH']}"}) as agents:
            job = scheduled_job(etcd.client_url, agents, "slot-gone")

            def uploading() -> bool:
                answer = store.client.list_multipart_uploads(Bucket=store.bucket)
                return bool(answer.get("Uploads"))

            wait_until(uploading, timeout=120, what="the scheduled backup's upload to start")
            os.killpg(job.pid, signal.SIGKILL)
            job.wait(30)
            wait_until(lambda: "the Job went away" in agents.log(source), timeout=60,
                       what="the agent to notice the Job is gone")
            wait_until(lambda: not _processes_running(str(shim)), timeout=60,
                       what="the stopped backup's processes to end")
            assert store.listing()["complete"] == []
            assert agents.processes[0].running(), "the agent serves on"
    finally:
        etcd.stop()


def test_a_lapsed_lock_holder_is_fenced_and_writes_no_manifest(
        source: Pod, store: Store) -> None:
    """A holder whose lease lapsed carries an older fencing token than the holder after it:
    once the newer holder has written a manifest, the older one's is refused."""
    newer = backup(source, store, BACKUP_SLOT="slot-new", BACKUP_FENCING_TOKEN="12")
    result = source.run_script("backup.sh", container="backup", extra_env={
        **store.env, "BACKUP_ID": "lapsed-holder", "BACKUP_SLOT": "slot-old",
        "BACKUP_FENCING_TOKEN": "11"})
    assert result.returncode != 0
    assert "fenced: backup" in result.stderr
    assert "newer than this backup's 11" in result.stderr
    listing = store.listing()
    assert [m["id"] for m in listing["complete"]] == [newer["id"]]
    assert "lapsed-holder" in listing["incomplete"]


def test_an_etcd_snapshot_in_the_store_restores_a_new_cluster_with_the_same_keys(
        store: Store, tmp_path: Path) -> None:
    _, etcdctl = etcd_binaries()
    ctl_env = {**os.environ, "ETCDCTL_API": "3"}
    source = lock_etcd(tmp_path / "source", name="source")
    try:
        for index in range(20):
            subprocess.run([etcdctl, f"--endpoints={source.client_url}", "put",
                            f"/locks/key-{index:02d}", f"value-{index}"], env=ctl_env,
                           check=True, capture_output=True)
        snapshot = tmp_path / "snapshot.db"
        subprocess.run([etcdctl, f"--endpoints={source.client_url}", "snapshot", "save",
                        str(snapshot)], env=ctl_env, check=True, capture_output=True)
    finally:
        source.stop()
    uploaded = store.cli("upload-snapshot", "--file", str(snapshot), "--source", "source")
    assert uploaded.returncode == 0, uploaded.stderr
    # A snapshot whose manifest never came is never chosen, even when it is newer.
    store.put("etcd/99991231T000000Z-partial/snapshot.db", b"half a snapshot")

    fetched = tmp_path / "fetched.db"
    result = store.cli("fetch-snapshot", "--id", "latest", "--out", str(fetched))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["id"] == json.loads(uploaded.stdout)["id"]
    restored_dir = tmp_path / "restored" / "data"
    _client, peer = free_ports(2)
    peer_url = f"http://{LOCALHOST}:{peer}"
    subprocess.run([etcdctl, "snapshot", "restore", str(fetched), f"--data-dir={restored_dir}",
                    "--name=restored", f"--initial-cluster=restored={peer_url}",
                    f"--initial-advertise-peer-urls={peer_url}"], env=ctl_env, check=True,
                   capture_output=True)
    restored = lock_etcd(tmp_path / "restored", data_dir=restored_dir, name="restored")
    try:
        keys = subprocess.run([etcdctl, f"--endpoints={restored.client_url}", "get", "/locks/",
                               "--prefix"], env=ctl_env, check=True, capture_output=True,
                              text=True).stdout.split()
    finally:
        restored.stop()
    assert keys == [item for index in range(20)
                    for item in (f"/locks/key-{index:02d}", f"value-{index}")]


def test_verification_restores_the_newest_backup_and_records_what_it_holds(
        source: Pod, store: Store) -> None:
    summary = backup(source, store)
    for note in ("x", "y"):
        insert_event(source, note)
    archived = archive(source, store)["archived"]

    def verify() -> subprocess.CompletedProcess[str]:
        work = tempfile.mkdtemp(prefix="verify-")  # short: the scratch server's socket lives here
        return source.run_script("verify.sh", container="backup",
                                 extra_env={**store.env, "VERIFY_WORK_DIR": work}, timeout=600)

    result = verify()
    assert result.returncode == 0, result.stderr
    recorded = json.loads(store.get(f"backups/{summary['id']}/verification.json"))
    assert recorded["ok"] is True
    assert recorded["gtid"] == recorded["promised_gtid"] == source.gtid_binlog_pos()
    assert recorded["checksums"]["shop.items"] == source.checksum("shop.items")
    assert recorded["checksums"]["shop.events"] == source.checksum("shop.events")

    # A damaged archive fails the verification, and the failure is recorded.
    binlog = next(k for k in store.objects("binlogs/") if k.endswith(archived[-1]["file"]))
    store.put(binlog, store.get(binlog)[:-1] + b"\x00")
    result = verify()
    assert result.returncode != 0
    recorded = json.loads(store.get(f"backups/{summary['id']}/verification.json"))
    assert recorded["ok"] is False


def test_bad_input_is_refused_before_anything_is_created(
        source: Pod, store: Store, restores: list[Restore], tmp_path: Path) -> None:
    missing_bucket = {**store.env, "S3_BUCKET": "no-such-bucket"}
    result = source.run_script("backup.sh", container="backup", extra_env=missing_bucket)
    assert result.returncode != 0
    assert "bucket 'no-such-bucket' does not exist" in result.stderr
    unreachable = {**store.env, "S3_ENDPOINT": f"http://{LOCALHOST}:{free_ports(1)[0]}"}
    result = source.run_script("backup.sh", container="backup", extra_env=unreachable)
    assert "is unreachable" in result.stderr
    summary = backup(source, store)
    restore = new_restore(restores, source, store)
    assert summary["id"]
    before = catalog.iso(catalog.utc_now() - dt.timedelta(hours=1))
    result = restore.fetch(point=before)
    assert result.returncode != 0
    assert "is before the oldest usable backup" in result.stderr
    result = restore.fetch(point=catalog.iso(catalog.utc_now() + dt.timedelta(hours=1)))
    assert "is after the newest archived binlog" in result.stderr
    assert list(restore.pod.data_dir.iterdir()) == []


def test_credentials_never_reach_argv_or_the_environment(source: Pod, store: Store) -> None:
    """While a backup runs, no process's argv or environment holds a store key or password."""
    secrets_ = [store.server.secret_key, store.server.access_key,
                source.cluster.secrets.backup]
    env = {**os.environ, **source.env("backup"), **store.env}
    process = subprocess.Popen(["bash", str(source.cluster.config_dir / "backup.sh")], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    leaks: list[str] = []
    seen: set[int] = set()
    while process.poll() is None:
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                if os.getpgid(int(proc.name)) != process.pid:
                    continue
                blob = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
            except (OSError, ProcessLookupError):
                continue
            seen.add(int(proc.name))
            leaks += [proc.name for secret in secrets_ if secret.encode() in blob]
        time.sleep(0.01)  # pacing the sampling loop; the loop ends when the backup does
    out, err = process.communicate()
    assert process.returncode == 0, err
    assert len(seen) > 3, "sampled too few of the backup's processes to mean anything"
    assert not leaks
    for secret in secrets_:
        assert secret not in out + err



# --- the verification CronJob, as rendered ------------------------------------------------------

def _verify_job(source: Pod, store: Store, etcd_url: str, base: Path) -> LocalJob:
    """The CronJob ``<name>-backup-verify`` of a stack whose store is this test's (the real
    program under mocks), as a local process: its command, environment and volumes, with
    the image's Python, the cluster's etcd and the image's PATH swapped for this machine's."""
    name = source.cluster.name
    result = run_program(stack_with("dev", name=name, backup={
        "enabled": True, "endpoint": store.server.endpoint, "bucket": store.bucket,
        "prefix": "orders", "credentialsSecret": "backup-store", "verify": {"enabled": True}}))
    (cron_job,) = [m for m in manifests(result) if m["kind"] == "CronJob"
                   and m["metadata"]["name"] == f"{name}-backup-verify"]
    _pod, container = cron_job_container(cron_job)
    command = container["command"]
    rendered = {e["name"]: e["value"] for e in container["env"]}
    return local_job(
        cron_job, base,
        config_maps={f"{name}-config": source.cluster.config_dir},
        secrets={f"{name}-credentials": {"root-password": source.cluster.secrets.password("root")},
                 "backup-store": {"access-key": store.server.access_key,
                                  "secret-key": store.server.secret_key}},
        replace={rendered["MYSQLBACKUP_PYTHON"]: sys.executable,
                 command[command.index("--endpoints") + 1]: etcd_url},
        env={"PATH": source.env("backup")["PATH"], "PYTHONPATH": store.env["PYTHONPATH"]})


def _lock_name(job: LocalJob) -> str:
    return job.argv[job.argv.index("--") - 1]


def _verification(store: Store, backup_id: str) -> dict[str, Any] | None:
    key = f"backups/{backup_id}/verification.json"
    if key not in store.objects(f"backups/{backup_id}/"):
        return None
    recorded: dict[str, Any] = json.loads(store.get(key))
    return recorded


def test_the_verification_cron_job_records_a_good_backup_and_fails_on_an_archive_gap(
        source: Pod, store: Store, tmp_path: Path) -> None:
    summary = backup(source, store)
    gtids, files = [], []
    for note in ("one", "two", "three"):
        gtids.append(insert_event(source, note))
        files.append(archive(source, store)["archived"][-1]["file"])
    etcd = lock_etcd(tmp_path / "etcd")
    # Short: the scratch server's socket lives in the run volume.
    base = Path(tempfile.mkdtemp(prefix="vjob-"))
    try:
        code, out, err = _finish(_verify_job(source, store, etcd.client_url, base / "a").start())
        assert code == 0, err
        recorded = _verification(store, summary["id"])
        assert recorded is not None
        assert recorded["ok"] is True, recorded
        assert recorded["gtid"] == recorded["promised_gtid"] == gtids[-1]
        assert recorded["gtid"] == source.gtid_binlog_pos()
        for table in ("shop.items", "shop.events"):
            assert recorded["checksums"][table] == source.checksum(table)
        assert json.loads(out.strip().splitlines()[-1]) == {
            k: v for k, v in recorded.items() if k != "verified_at"}

        # The middle binlog gone: the archive has a gap, the Job fails, the record says so.
        server_id = _server_id(source)
        store.delete(f"binlogs/{server_id}/{files[1]}")
        store.delete(f"binlogs/{server_id}/{files[1]}.json")
        code, _out, err = _finish(_verify_job(source, store, etcd.client_url, base / "b").start())
        assert code != 0, err
        recorded = _verification(store, summary["id"])
        assert recorded is not None
        assert recorded["ok"] is False
        assert f"GTIDs {gtids[1]} to {gtids[1]} are in no archived binlog" in recorded["error"]
        assert f"backup {summary['id']} did not verify" in err
        # What the archiver's gauges (and MySQLBackupVerificationFailed) read of it.
        newest = catalog.newest_verification(StoreClient(StoreConfig.from_env(store.env)))
        assert newest is not None
        assert (newest.backup_id, newest.ok) == (summary["id"], False)
        assert newest.verified_at == recorded["verified_at"]
    finally:
        etcd.stop()
        shutil.rmtree(base, ignore_errors=True)
    assert not _processes_running(str(base)), "the scratch server outlived the Job"


def test_the_verification_cron_job_waits_while_another_holder_has_the_cluster_lock(
        source: Pod, store: Store, tmp_path: Path) -> None:
    """The backup Job's lock: while it is held (a backup running, its retention deleting
    old backups) the verification restores nothing, and it runs once the lock is free."""
    summary = backup(source, store)
    insert_event(source, "after the backup")
    archive(source, store)
    etcd = lock_etcd(tmp_path / "etcd")
    base = Path(tempfile.mkdtemp(prefix="vjob-"))
    holder: subprocess.Popen[str] | None = None
    try:
        job = _verify_job(source, store, etcd.client_url, base)
        lock = ["--backend", "etcd", "--endpoints", etcd.client_url, _lock_name(job)]

        def state() -> dict[str, Any]:
            status = subprocess.run([sys.executable, "-m", "distlock", "status", *lock],
                                    capture_output=True, text=True, check=True, timeout=60)
            answer: dict[str, Any] = json.loads(status.stdout)
            return answer

        # Another holder (a backup Job) holds the lock until its stdin closes.
        holder = subprocess.Popen(
            [sys.executable, "-m", "distlock", "run", "--ttl", "10", *lock, "--",
             sys.executable, "-c", "import sys; sys.stdin.read()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True)
        wait_until(lambda: state()["holder"] is not None, timeout=60,
                   what="the other holder to hold the cluster lock")
        verifying = job.start()
        wait_until(lambda: len(state()["waiters"]) == 1, timeout=60,
                   what="the verification Job to queue on the cluster lock")
        assert verifying.poll() is None, verifying.communicate()
        assert _verification(store, summary["id"]) is None
        for scratch in (_backup.VERIFY_SCRATCH_VOLUME, _backup.VERIFY_RUN_VOLUME):
            assert not list(job.volumes[scratch].iterdir()), (
                f"the Job wrote to {scratch} before it held the lock")

        assert holder.stdin is not None
        holder.stdin.close()
        assert holder.wait(60) == 0
        code, _out, err = _finish(verifying)
        assert code == 0, err
    finally:
        if holder is not None and holder.poll() is None:
            os.killpg(holder.pid, signal.SIGTERM)
            holder.wait(30)
        etcd.stop()
        shutil.rmtree(base, ignore_errors=True)
    recorded = _verification(store, summary["id"])
    assert recorded is not None
    assert recorded["ok"] is True
    assert recorded["gtid"] == source.gtid_binlog_pos()
