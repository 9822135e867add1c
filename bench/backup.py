"""``venv/bin/python -m bench backup`` (or ``-m bench.backup [--size-mb N] [--interval S]
[--seconds T]``): what the backup path costs and what it promises, measured against a real
store.

- Backup throughput: ``backup.sh`` (mariadb-backup | compression | multipart upload, manifest
  last) of a primary holding ``--size-mb`` MiB of InnoDB data, against uploading the very bytes
  of that backup's stream raw to the same server with the same client (``mysqlbackup
  upload-data < file``): the ratio is what the backup tool and the pipeline cost beyond the
  transfer. Target: at least 0.8x. Run with ``none`` and ``gzip`` compression.
- Restore: ``restore.sh fetch`` + ``apply`` of that backup plus ``--transactions`` archived
  transactions, wall time.
- Recovery point under a writer: ``binlog-archive.sh`` runs its loop (``--interval`` seconds,
  one long-lived ``mysqlbackup archive-serve`` coprocess)
  while a writer commits continuously for ``--seconds``; every 0.25 s the newest archived
  transaction's commit time is read from the store's records, and ``now - that`` is the data
  a disaster at that instant would lose. Target: max <= interval + 2 s.

The store is SeaweedFS's ``weed server -s3`` on 127.0.0.1 (tests/support/seaweedfs.py); the
servers and scripts are the integration tests' (tests/support/pods.py). Returns a
:class:`bench._report.Report` like every other benchmark (``python -m bench`` prints it and
writes it under bench/results/).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._procs import need, workdir
from bench._report import RESULTS_DIR, Report, Table, Target
from mysqlbackup import catalog
from tests.support.backups import Archiver, Restore, Store
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
    stop = threading.Event()

    def writer() -> None:
        with pod.server.connect(host=None) as conn, conn.cursor() as cursor:
            while not stop.is_set():
                cursor.execute("INSERT INTO bench.tx (v) VALUES (1)")

    thread = threading.Thread(target=writer, daemon=True)
    lags: list[float] = []
    with Archiver(pod, store, interval) as archiver:
        try:
            thread.start()
            # Let the first rotation and upload happen before sampling.
            deadline = time.monotonic() + seconds
            warmup = time.monotonic() + interval + 2
            while time.monotonic() < deadline:
                newest = max((catalog.parse_time(r["last_event_at"]) for r in archiver.records()
                              if r.get("last_event_at")), default=None)
                if newest is not None and time.monotonic() > warmup:
                    lags.append((catalog.utc_now() - newest).total_seconds())
                time.sleep(0.25)  # the sampling period of the measurement itself
        finally:
            stop.set()
            thread.join(10)
    if not lags:
        raise RuntimeError("no archived binlog appeared while the writer ran")
    return {"interval_s": interval, "samples": len(lags),
            "median_s": round(statistics.median(lags), 2), "max_s": round(max(lags), 2),
            "target_s": interval + 2, "met": max(lags) <= interval + 2}


@dataclass(frozen=True)
class BackupOptions:
    size_mb: int = 256
    """InnoDB data on the primary, MiB."""
    repeats: int = 2
    """Backups (and raw uploads) per compression, median reported."""
    transactions: int = 1000
    """Archived transactions replayed by the timed restore."""
    interval: int = 10
    """archiveIntervalSeconds of the archive loop under the writer."""
    seconds: float = 40
    """How long the writer runs while the recovery point is sampled."""
    workdir: Path | None = None


def run(options: BackupOptions) -> Report:
    need("mariadbd", "mariadb-install-db", "mariadb-backup", "mbstream", "mariadb-binlog", "gzip")
    work = workdir("bench-backup-", options.workdir)
    server = SeaweedS3(work / "seaweedfs").start()
    try:
        store = Store(server, "bench")
        with PodCluster(work / "source", name="bench-mysql") as cluster:
            pod = cluster.start_pod(0)
            _fill(pod, options.size_mb)
            rates = throughput(pod, store, work, options.repeats)
            restore = restore_time(pod, store, work, options.transactions)
            point = recovery_point(pod, store, options.interval, options.seconds)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return _report(options, rates, restore, point)


def _report(options: BackupOptions, rates: list[dict[str, Any]], restore: dict[str, Any],
            point: dict[str, Any]) -> Report:
    columns = ("compression", "object_mib", "backup_s", "raw_upload_s", "backup_mib_s",
               "raw_mib_s", "ratio")
    report = Report("backup", {
        "size_mb": options.size_mb, "repeats": options.repeats,
        "transactions": options.transactions, "archive_interval_s": options.interval,
        "writer_s": options.seconds,
        "store": "SeaweedFS weed server -s3 on 127.0.0.1", "server": "mariadbd 10.11"}, [
        Table("backup.sh against a raw upload of the same object (median)", columns,
              tuple(tuple(row[c] for c in columns) for row in rates)),
        Table("restore (fetch, verify, extract, prepare, replay)",
              ("archived transactions", "restore s"),
              ((restore["transactions"], restore["restore_s"]),)),
        Table(f"recovery point under a writer, {point['samples']} samples",
              ("interval s", "median s", "max s"),
              ((point["interval_s"], point["median_s"], point["max_s"]),)),
    ])
    uncompressed = next(row for row in rates if row["compression"] == "none")
    report.targets = [
        Target("backup / raw upload, uncompressed", uncompressed["ratio"], 0.8, True, "x"),
        Target("recovery point, max", point["max_s"], options.interval + 2, False, " s"),
    ]
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.backup", description=__doc__)
    defaults = BackupOptions()
    parser.add_argument("--size-mb", type=int, default=defaults.size_mb)
    parser.add_argument("--repeats", type=int, default=defaults.repeats)
    parser.add_argument("--transactions", type=int, default=defaults.transactions)
    parser.add_argument("--interval", type=int, default=defaults.interval)
    parser.add_argument("--seconds", type=float, default=defaults.seconds)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    report = run(BackupOptions(size_mb=args.size_mb, repeats=args.repeats,
                               transactions=args.transactions, interval=args.interval,
                               seconds=args.seconds))
    print(report.render())
    print(f"\nresults: {report.save(args.results_dir)}")
    return 0


__all__ = ["BackupOptions", "run"]


if __name__ == "__main__":
    sys.exit(main())
