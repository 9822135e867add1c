"""``venv/bin/python -m bench.backup [--size-mb N] [--interval S] [--seconds T]``: what the
backup path costs and what it promises, measured against a real store.

- Backup throughput: ``backup.sh`` (mariadb-backup | compression | multipart upload, manifest
  last) of a primary holding ``--size-mb`` MiB of InnoDB data, against uploading the very bytes
  of that backup's stream raw to the same server with the same client (``mysqlbackup
  upload-data < file``): the ratio is what the backup tool and the pipeline cost beyond the
  transfer. Target: at least 0.8x. Run with ``none`` and ``gzip`` compression.
- Restore: ``restore.sh fetch`` + ``apply`` of that backup plus ``--transactions`` archived
  transactions, wall time.
- Recovery point under a writer: ``binlog-archive.sh`` runs its loop (``--interval`` seconds)
  while a writer commits continuously for ``--seconds``; every 0.25 s the newest archived
  transaction's commit time is read from the store's records, and ``now - that`` is the data
  a disaster at that instant would lose. Target: max <= interval + 2 s.

The store is SeaweedFS's ``weed server -s3`` on 127.0.0.1 (tests/support/seaweedfs.py); the
servers and scripts are the integration tests' (tests/support/pods.py). Prints tables and
writes bench/results/backup.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench._report import RESULTS_DIR, machine
from mysqlbackup import catalog
from tests.support.backups import Restore, Store
from tests.support.pods import Pod, PodCluster
from tests.support.seaweedfs import SeaweedS3


def _fill(pod: Pod, size_mb: int) -> None:
    """About ``size_mb`` MiB in rows of 1 MiB: half random bytes, half hex text, so that
    compression has work to do but no easy win."""
    pod.query("CREATE DATABASE IF NOT EXISTS bench")
    pod.query("CREATE TABLE bench.blob (id INT AUTO_INCREMENT PRIMARY KEY, pad LONGBLOB)")
    with pod.server.connect(host=None) as conn, conn.cursor() as cursor:
        for _ in range(size_mb):
            cursor.execute("INSERT INTO bench.blob (pad) VALUES (%s)",
                           (os.urandom(2**19) + os.urandom(2**18).hex().encode(),))


def _backup_seconds(pod: Pod, store: Store, compression: str) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    result = pod.run_script("backup.sh", container="backup",
                            extra_env={**store.env, "BACKUP_COMPRESSION": compression},
                            timeout=3600)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    summary: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return seconds, summary


def _raw_upload_seconds(store: Store, source: Path) -> float:
    started = time.perf_counter()
    with source.open("rb") as stdin:
        subprocess.run([sys.executable, "-m", "mysqlbackup", "upload-data", "--id",
                        f"raw-{time.time_ns()}", "--compression", "raw"], stdin=stdin,
                       env={**os.environ, **store.env}, check=True, capture_output=True)
    return time.perf_counter() - started


def throughput(pod: Pod, store: Store, work: Path, repeats: int) -> list[dict[str, Any]]:
    rows = []
    for compression in ("none", "gzip"):
        backups, raws = [], []
        size = 0
        for _ in range(repeats):
            seconds, summary = _backup_seconds(pod, store, compression)
            backups.append(seconds)
            size = int(summary["size"])
            key = f"backups/{summary['id']}/data.xbstream.{compression}"
            copy = work / "stream.copy"
            copy.write_bytes(store.get(key))
            raws.append(_raw_upload_seconds(store, copy))
            copy.unlink()
        mib = size / 2**20
        backup_rate = mib / statistics.median(backups)
        raw_rate = mib / statistics.median(raws)
        rows.append({"compression": compression, "object_mib": round(mib, 1),
                     "backup_s": round(statistics.median(backups), 2),
                     "raw_upload_s": round(statistics.median(raws), 2),
                     "backup_mib_s": round(backup_rate, 1), "raw_mib_s": round(raw_rate, 1),
                     "ratio": round(backup_rate / raw_rate, 2)})
    return rows


def restore_time(pod: Pod, store: Store, work: Path, transactions: int) -> dict[str, Any]:
    with pod.server.connect(host=None) as conn, conn.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS bench.tx (id INT AUTO_INCREMENT PRIMARY KEY, "
                       "v INT)")
        for value in range(transactions):
            cursor.execute("INSERT INTO bench.tx (v) VALUES (%s)", (value,))
    archived = pod.run_script("binlog-archive.sh", "once", container="backup",
                              extra_env=store.env)
    if archived.returncode != 0:
        raise RuntimeError(archived.stderr)
    target = pod.gtid_binlog_pos()
    restore = Restore(pod, store)
    try:
        started = time.perf_counter()
        reached = restore.run(point=target)
        seconds = time.perf_counter() - started
        rows = restore.pod.query("SELECT COUNT(*) AS n FROM bench.tx")[0]["n"]
    finally:
        restore.close()
    if reached != target or rows != transactions:
        raise RuntimeError(f"restore reached {reached} with {rows} rows; wanted {target}")
    return {"transactions": transactions, "restore_s": round(seconds, 1), "gtid": reached}


def recovery_point(pod: Pod, store: Store, interval: int, seconds: float) -> dict[str, Any]:
    env = {**os.environ, **pod.env("backup"), **store.env,
           "ARCHIVE_INTERVAL_SECONDS": str(interval)}
    archiver = subprocess.Popen(["bash", str(pod.cluster.config_dir / "binlog-archive.sh")],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
    stop = threading.Event()

    def writer() -> None:
        with pod.server.connect(host=None) as conn, conn.cursor() as cursor:
            while not stop.is_set():
                cursor.execute("INSERT INTO bench.tx (v) VALUES (1)")

    thread = threading.Thread(target=writer, daemon=True)
    lags: list[float] = []
    try:
        thread.start()
        # Let the first rotation and upload happen before sampling.
        deadline = time.monotonic() + seconds
        warmup = time.monotonic() + interval + 2
        while time.monotonic() < deadline:
            records = [json.loads(store.get(key)) for key in store.objects("binlogs/")
                       if key.endswith(".json")]
            newest = max((catalog.parse_time(r["last_event_at"]) for r in records
                          if r.get("last_event_at")), default=None)
            if newest is not None and time.monotonic() > warmup:
                lags.append((catalog.utc_now() - newest).total_seconds())
            time.sleep(0.25)  # the sampling period of the measurement itself
    finally:
        stop.set()
        thread.join(10)
        os.killpg(archiver.pid, 15)
        archiver.wait(30)
    if not lags:
        raise RuntimeError("no archived binlog appeared while the writer ran")
    return {"interval_s": interval, "samples": len(lags),
            "median_s": round(statistics.median(lags), 2), "max_s": round(max(lags), 2),
            "target_s": interval + 2, "met": max(lags) <= interval + 2}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.backup", description=__doc__)
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--transactions", type=int, default=1000)
    parser.add_argument("--interval", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=40)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-backup-"))
    server = SeaweedS3(work / "seaweedfs").start()
    try:
        store = Store(server, "bench")
        with PodCluster(work / "source", name="bench-mysql") as cluster:
            pod = cluster.start_pod(0)
            _fill(pod, args.size_mb)
            load = os.getloadavg()
            results: dict[str, Any] = {
                "machine": machine(), "load_before": [round(x, 2) for x in load],
                "size_mb": args.size_mb,
                "throughput": throughput(pod, store, work, args.repeats),
                "restore": restore_time(pod, store, work, args.transactions),
                "recovery_point": recovery_point(pod, store, args.interval, args.seconds),
                "load_after": [round(x, 2) for x in os.getloadavg()]}
    finally:
        server.stop()
    print(json.dumps(results, indent=1))
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / "backup.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
