"""Replica seeding: the project's clone path against a raw copy and a logical dump.

A new replica is useless until it holds the primary's data, so the time to seed it is
the time a scale-up or a lost-PVC rebuild leaves the cluster one replica short. We
measure, on the same primary holding ``size_mb`` of InnoDB data, in one run:

* **raw copy**: ``tar | ncat -l`` -> ``ncat | tar -x`` of the primary's data dir. No
  tool can move the files faster through the same kind of pipe: the physical limit.
* **mariadb-backup, hand-wired**: ``mariadb-backup --stream | ncat`` -> ``ncat | mbstream
  -x`` then ``--prepare``: what the project scripts wrap, without the scripts.
* **project clone path**: the real ``backup-server.sh`` sidecar of the primary pod
  serving and a new replica pod's ``clone.sh`` init container cloning (stream, extract,
  prepare, verify, completion marker), as the pod harness (``tests/support/pods.py``)
  runs them.
* **dump and restore**: ``mariadb-dump | mariadb``, what many charts do.

Every method starts from the same warm page cache (the primary's files are read once
before each), and its clock stops only after ``sync``: a seed is done when it is on
disk, and a method that leaves gigabytes dirty in memory must not look faster for it.
Throughput is bytes that landed in the new data dir per second (a backup moves only
the redo tail, a raw copy the whole redo log: each is credited what it moved); the
dump/restore comparison is by time, since a logical copy moves different bytes.

The primary is the project's primary pod (init-config.sh, the image's first start with
bootstrap-users.sh, the backup sidecar), so all four methods copy the same data dir.
The data is one InnoDB table with a secondary index, rows of ~1 KB of random text,
generated with the Sequence engine in 100k-row statements and ``sql_log_bin=0`` (the
benchmark is the copy, not the load; binary logs would add bytes only the raw copy
moves). The restore target gets a larger buffer pool and redo log and
``innodb_flush_log_at_trx_commit=2``, which favours dump and restore: the comparison
is, if anything, generous to the alternative.
"""

from __future__ import annotations

import functools
import importlib
import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._procs import (
    BenchUnavailable,
    finish_pipeline,
    listening,
    need,
    read_through,
    start_pipeline,
    stop_all,
    tree_bytes,
    workdir,
)
from bench._report import Cell, Report, Table, Target, ratio
from tests.support.mariadb import MariaDBServer, random_password
from tests.support.procs import LOCALHOST, ManagedProcess, free_port, wait_until

MB = 1024 * 1024
# The restore target's (and, without the pod harness, the primary's): big enough that
# loading is not flush-bound, so the dump/restore baseline is not starved.
SERVER_CONFIG = """
innodb-buffer-pool-size=512M
innodb-log-file-size=128M
innodb-flush-log-at-trx-commit=2
log-bin=mysql-bin
binlog-format=ROW
"""
# The primary pod keeps its own server config (conf/mariadb/primary.cnf: durable commits);
# only memory and redo size are raised so that generating the data is quick.
_POD_TUNING = "innodb_buffer_pool_size = 512M\ninnodb_log_file_size = 128M\n"
_BINLOG_PREFIX = "mysql-bin"
_ROWS_PER_STATEMENT = 100_000
_FIRST_GUESS_ROW_BYTES = 1300  # measured: ~1.25 KB of .ibd per row with its index
_COPY_TIMEOUT = 1800.0

RAW = "raw copy (tar | ncat)"
HAND = "mariadb-backup | ncat (hand-wired)"
PROJECT = "project clone path (clone.sh + backup-server.sh)"
DUMP = "mariadb-dump | mariadb"


@dataclass(frozen=True)
class SeedingOptions:
    size_mb: int = 1024
    """InnoDB data on the primary, in MiB (the table's .ibd; the data dir is larger)."""
    workdir: Path | None = None
    """Where the servers and copies live; a fresh temp dir under /tmp by default."""
    repeats: int = 3
    """Runs of each physical copy (median reported); dump and restore runs once."""

    def __post_init__(self) -> None:
        if self.size_mb < 1:
            raise ValueError(f"seeding size must be at least 1 MiB, got {self.size_mb}")
        if self.repeats < 1:
            raise ValueError(f"seeding repeats must be at least 1, got {self.repeats}")


@dataclass(frozen=True)
class _Seeded:
    seconds: float
    landed_bytes: int
    runs: int = 1
    prepare_seconds: float | None = None
    """Of ``seconds``, the time ``--prepare`` took (where it can be timed on its own)."""
    phases: dict[str, float] | None = None
    """The project clone path only: seconds per phase of clone.sh (see :data:`PHASES`)."""


# Where the project clone path's time goes, from clone.sh's own trace: the tools'
# work (the same commands the hand-wired pipe runs), the sync both paths end with,
# and the rest, which is the scripts' own (markers, checks, donor choice, logging).
PHASES = ("stream + extract (ncat | mbstream)", "prepare (mariadb-backup --prepare)",
          "sync (the clone on disk before its marker)", "scripts' own work")
_STREAM, _PREPARE, _SYNC, _SCRIPTS = PHASES
# Each command clone.sh runs, with the time it starts, appended to the file in $1; the
# trap's own cost (a printf per command, ~330 of them) is charged to the scripts.
_TIMED_TRACE = ("__trace=$1; "
                """trap 'printf "%s %s\\n" "$EPOCHREALTIME" "$BASH_COMMAND" >>"$__trace"' DEBUG; """
                'source "$0"')


class _NotLanded(Exception):
    """The project path this row measures is not in the tree yet (or cannot run)."""


def run(options: SeedingOptions) -> Report:
    need("mariadbd", "mariadb-install-db", "mariadb", "mariadb-dump", "mariadb-backup",
         "mbstream", "ncat", "tar")
    base = workdir("bench-seeding-", options.workdir)
    try:
        _check_disk(base, options.size_mb)
        return _run(base, options)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _check_disk(base: Path, size_mb: int) -> None:
    # primary (data + redo + ibdata) + one copy at a time + the restore target.
    needed = 4 * size_mb * MB + 512 * MB
    free = shutil.disk_usage(base).free
    if free < needed:
        raise BenchUnavailable(f"seeding {size_mb} MiB needs about {needed // MB} MiB free "
                               f"under {base}, only {free // MB} MiB free; pass --size-mb "
                               "smaller or --workdir on a bigger disk")


@dataclass
class _Primary:
    server: MariaDBServer
    bench_password: str
    """Of ``bench``@localhost/127.0.0.1: the baselines' account (pods keep root on the socket)."""
    clone: Callable[[], _Seeded] | None
    """Seed a new replica pod through clone.sh; None when the pod harness could not run."""
    clone_unavailable: str = ""


@contextmanager
def _primary(base: Path) -> Iterator[_Primary]:
    """The primary pod as the project runs it, or a plain server if the pods cannot run."""
    with ExitStack() as stack:
        clone: Callable[[], _Seeded] | None = None
        why = ""
        try:
            pods = importlib.import_module("tests.support.pods")
            cluster = stack.enter_context(pods.PodCluster(base / "pods", max_pods=2))
            pod = cluster.pod(0)
            pod.init_config()
            # Sorted after init-config's files, so these win; sized for the load only.
            (pod.conf_dir / "zz-bench.cnf").write_text(f"[mysqld]\n{_POD_TUNING}")
            pod.initialize_primary()
            pod.start_sidecar()
            pod.wait_serving()
            server: MariaDBServer = pod.server
            clone = functools.partial(_project_clone, cluster.pod(1))
        except ModuleNotFoundError as error:
            why = f"pod harness not in the tree ({error.name})"
        except Exception as error:  # noqa: BLE001 - reported in the table, baselines still run
            why = f"pod harness failed: {str(error).splitlines()[0][:200]}"
        if clone is None:
            stack.close()
            server = MariaDBServer(base / "primary", name="primary", server_id=1,
                                   extra_config=SERVER_CONFIG)
            server.initialize()
            stack.callback(server.stop)
        password = random_password()
        with server.connect(host=None) as conn, conn.cursor() as cur:
            cur.execute("SET SESSION sql_log_bin = 0")
            for host in ("localhost", LOCALHOST):
                cur.execute("CREATE USER %s@%s IDENTIFIED BY %s", ("bench", host, password))
                cur.execute("GRANT ALL PRIVILEGES ON *.* TO %s@%s", ("bench", host))
        yield _Primary(server, password, clone, why)


def _run(base: Path, options: SeedingOptions) -> Report:
    with _primary(base) as primary:
        started = time.monotonic()
        rows = _generate(primary.server, options.size_mb * MB)
        generate_seconds = time.monotonic() - started
        data_dir = primary.server.data_dir
        data_bytes = tree_bytes(data_dir, exclude_prefixes=(_BINLOG_PREFIX,))
        clone = primary.clone
        methods: list[tuple[str, Callable[[Path], _Seeded]]] = [
            (RAW, lambda target: _raw_copy(data_dir, target)),
            (HAND, lambda target: _backup_copy(primary, target, base)),
            (PROJECT, lambda _target: _unavailable(primary.clone_unavailable)
             if clone is None else clone()),
            (DUMP, lambda target: _dump_restore(primary, target)),
        ]
        samples: dict[str, list[_Seeded]] = {}
        skipped: dict[str, str] = {}
        # Physical copies take seconds and a busy machine makes any one of them noisy, so
        # they are repeated, interleaved, and the median kept; dump and restore runs once.
        for round_ in range(options.repeats):
            for name, method in methods:
                if name in skipped or (name == DUMP and round_ > 0):
                    continue
                target = base / "target"
                read_through(data_dir)
                try:
                    seeded = method(target)
                    samples.setdefault(name, []).append(seeded)
                except _NotLanded as reason:
                    skipped[name] = str(reason)
                finally:
                    shutil.rmtree(target, ignore_errors=True)
        results = {name: _median(runs) for name, runs in samples.items()}
    return _report(options, rows, generate_seconds, data_bytes, results=results,
                   skipped=skipped)


def _median(runs: list[_Seeded]) -> _Seeded:
    seconds = statistics.median(r.seconds for r in runs)
    prepares = [r.prepare_seconds for r in runs if r.prepare_seconds is not None]
    traced = [r.phases for r in runs if r.phases is not None]
    phases = {name: statistics.median(p[name] for p in traced) for name in PHASES} \
        if traced else None
    return _Seeded(seconds, max(r.landed_bytes for r in runs), len(runs),
                   statistics.median(prepares) if prepares else None, phases)


def _unavailable(why: str) -> _Seeded:
    raise _NotLanded(why)


def _generate(primary: MariaDBServer, size_bytes: int) -> int:
    """Insert 100k-row batches until the table's .ibd reaches ``size_bytes``."""
    ibd = primary.data_dir / "bench" / "seed_rows.ibd"
    rows = 0
    with primary.connect(host=None) as conn, conn.cursor() as cur:
        cur.execute("SET SESSION sql_log_bin = 0")
        cur.execute("CREATE DATABASE bench")
        cur.execute("CREATE TABLE bench.seed_rows (id BIGINT AUTO_INCREMENT PRIMARY KEY, "
                    "k INT NOT NULL, pad CHAR(32) NOT NULL, body VARCHAR(800) NOT NULL, "
                    "KEY k (k)) ENGINE=InnoDB DEFAULT CHARSET=latin1")
        while ibd.stat().st_size < size_bytes:
            # Size the last batch from the bytes per row seen so far, so a 1 GiB request
            # lands near 1 GiB instead of overshooting by a whole batch.
            batch = min(_ROWS_PER_STATEMENT, max(1000, size_bytes // _FIRST_GUESS_ROW_BYTES))
            if rows:
                per_row = ibd.stat().st_size / rows
                batch = max(1000, min(batch, int((size_bytes - ibd.stat().st_size) / per_row)))
            # The Sequence engine's table name carries the row count: an int, not input.
            statement = ("INSERT INTO bench.seed_rows (k, pad, body) "  # noqa: S608
                         "SELECT FLOOR(RAND() * 1000000000), MD5(RAND()), "
                         f"REPEAT(SHA2(RAND(), 256), 11) FROM bench.seq_1_to_{int(batch)}")
            cur.execute(statement)
            rows += batch
        # Write the dirty pages now: every method then copies a checkpointed data set, and
        # the backup is not charged for applying a load it did not have to copy.
        cur.execute("FLUSH TABLES bench.seed_rows FOR EXPORT")
        cur.execute("UNLOCK TABLES")
    return rows


def _raw_copy(data_dir: Path, target: Path) -> _Seeded:
    target.mkdir(parents=True)
    port = free_port()
    log = target.parent / "raw-copy.log"
    started = time.monotonic()
    sender = start_pipeline(
        [["tar", "-C", str(data_dir), "--warning=no-file-changed", "-cf", "-", "."],
         ["ncat", "-l", LOCALHOST, str(port), "--send-only"]], log=log)
    receiver: list[subprocess.Popen[bytes]] = []
    try:
        wait_until(lambda: listening(port), timeout=30, what="the raw-copy sender to listen")
        receiver = start_pipeline([["ncat", "--recv-only", LOCALHOST, str(port)],
                                   ["tar", "-C", str(target), "-xf", "-"]], log=log)
        # tar exits 1 when a file changed while read: the idle primary's logs may be touched.
        finish_pipeline(sender, what="raw copy sender", log=log, timeout=_COPY_TIMEOUT,
                        ok_codes={0: frozenset({0, 1})})
        finish_pipeline(receiver, what="raw copy receiver", log=log, timeout=_COPY_TIMEOUT)
        os.sync()
    finally:
        stop_all([*sender, *receiver])
    return _Seeded(time.monotonic() - started, tree_bytes(target))


def _backup_options(primary: _Primary, base: Path) -> Path:
    """The server's option file plus a [client] section: the password never in argv."""
    path = base / "backup-client.cnf"
    server = primary.server
    path.write_text(server.defaults_file.read_text() +
                    f"\n[client]\nuser=bench\npassword={primary.bench_password}\n"
                    f"socket={server.socket}\n")
    path.chmod(0o600)
    return path


def _backup_copy(primary: _Primary, target: Path, base: Path) -> _Seeded:
    target.mkdir(parents=True)
    options = _backup_options(primary, base)
    scratch = base / "backup-scratch"
    scratch.mkdir(exist_ok=True)
    port = free_port()
    log = target.parent / "backup-copy.log"
    started = time.monotonic()
    sender = start_pipeline(
        [["mariadb-backup", f"--defaults-file={options}", "--backup", "--stream=xbstream",
          f"--target-dir={scratch}"],
         ["ncat", "-l", LOCALHOST, str(port), "--send-only"]], log=log)
    receiver: list[subprocess.Popen[bytes]] = []
    try:
        wait_until(lambda: listening(port), timeout=30, what="the backup sender to listen")
        receiver = start_pipeline([["ncat", "--recv-only", LOCALHOST, str(port)],
                                   ["mbstream", "-x", "-C", str(target)]], log=log)
        finish_pipeline(sender, what="mariadb-backup sender", log=log, timeout=_COPY_TIMEOUT)
        finish_pipeline(receiver, what="mbstream receiver", log=log, timeout=_COPY_TIMEOUT)
        prepare_started = time.monotonic()
        prepare = start_pipeline([["mariadb-backup", "--prepare", f"--target-dir={target}"]],
                                 log=log)
        finish_pipeline(prepare, what="mariadb-backup --prepare", log=log,
                        timeout=_COPY_TIMEOUT)
        prepare_seconds = time.monotonic() - prepare_started
        os.sync()
    finally:
        stop_all([*sender, *receiver])
        shutil.rmtree(scratch, ignore_errors=True)
    return _Seeded(time.monotonic() - started, tree_bytes(target),
                   prepare_seconds=prepare_seconds)


def _project_clone(replica: Any) -> _Seeded:
    """A new replica pod's init containers: init-config, then clone.sh from the primary's
    backup-server.sh sidecar (streaming, extracting, preparing, marking complete), with
    each of its commands' start times traced (see :func:`_phases`)."""
    replica.init_config()
    trace = replica.logs / f"clone-trace-{time.monotonic_ns()}.txt"
    argv = ["bash", "-T", "-c", _TIMED_TRACE, replica._script("clone.sh")[1], str(trace)]
    process = ManagedProcess(f"clone-bench-{trace.stem}", argv, log_dir=replica.logs,
                             env=replica.env("clone"))
    started, wall = time.monotonic(), time.time()
    process.start()
    assert process.process is not None
    try:
        code = process.process.wait(_COPY_TIMEOUT)
    finally:
        process.stop()
    ended = time.time()
    if code != 0:
        raise RuntimeError(f"clone.sh exited {code}:\n{replica.clone_log()[-3000:]}")
    os.sync()
    seconds = time.monotonic() - started
    landed = tree_bytes(replica.data_dir)
    shutil.rmtree(replica.data_dir)  # the next method needs the disk space
    return _Seeded(seconds, landed, phases=_phases(trace.read_text(), wall, ended,
                                                   seconds - (ended - wall)))


def _phases(trace: str, started: float, ended: float, after: float) -> dict[str, float]:
    """Seconds per phase of one clone.sh run from its trace (``EPOCHREALTIME command``
    lines): each phase is the time from its command's start to the next command's.
    ``after``: what the benchmark's own sync after the script took (charged to sync)."""
    # A pipeline's commands trace from their own subshells: order by time, not by line.
    events = sorted((float(stamp), command) for stamp, _, command in
                    (line.partition(" ") for line in trace.splitlines() if line))
    spans = {name: 0.0 for name in PHASES}
    stops = [stamp for stamp, _ in events[1:]] + [ended]
    for (stamp, command), stop in zip(events, stops, strict=True):
        phase = (_STREAM if command.startswith(('"${receive[@]}"', '"${extract[@]}"')) else
                 _PREPARE if command.startswith('"${prepare[@]}"') else
                 _SYNC if command.startswith("sync -f") else _SCRIPTS)
        spans[phase] += stop - stamp
    spans[_SCRIPTS] += (events[0][0] - started if events else 0.0)  # bash starting
    spans[_SYNC] += max(after, 0.0)
    return spans


def _dump_restore(primary: _Primary, target: Path) -> _Seeded:
    restored = MariaDBServer(target, name="restore-target", server_id=2,
                             extra_config=SERVER_CONFIG)
    restored.initialize()
    try:
        log = target / "dump-restore.log"
        started = time.monotonic()
        stages = start_pipeline(
            [["mariadb-dump", "--user=bench", "--protocol=TCP", "--single-transaction",
              "--master-data=2", "--gtid", "--databases", "bench"],
             ["mariadb", "--user=root", "--protocol=TCP"]],
            envs=[{**primary.server.client_env(), "MYSQL_PWD": primary.bench_password},
                  restored.client_env()],
            log=log)
        try:
            finish_pipeline(stages, what="dump and restore", log=log, timeout=_COPY_TIMEOUT)
            os.sync()
        finally:
            stop_all(stages)
        seconds = time.monotonic() - started
        landed = tree_bytes(restored.data_dir / "bench")
    finally:
        restored.stop()
    return _Seeded(seconds, landed)


def _report(options: SeedingOptions, rows: int, generate_seconds: float, data_bytes: int,
            *, results: dict[str, _Seeded], skipped: dict[str, str]) -> Report:
    raw = results.get(RAW)
    table_rows: list[tuple[Cell, ...]] = []
    for name in (RAW, HAND, PROJECT, DUMP):
        seeded = results.get(name)
        if seeded is None:
            table_rows.append((name, None, None, None, None, None, None, skipped.get(name, "")))
            continue
        landed_mbps = seeded.landed_bytes / MB / seeded.seconds
        raw_mbps = raw.landed_bytes / MB / raw.seconds if raw else None
        note = (f"of which --prepare {seeded.prepare_seconds:.2f} s"
                if seeded.prepare_seconds is not None else "")
        table_rows.append((name, seeded.runs, seeded.seconds, seeded.landed_bytes / MB,
                           landed_mbps,
                           ratio(landed_mbps, raw_mbps), ratio(raw.seconds if raw else None,
                                                               seeded.seconds), note))
    table = Table(f"seeding a replica from a primary with {data_bytes / MB:.0f} MiB of data dir "
                  f"({rows} rows, generated in {generate_seconds:.1f} s)",
                  ("method", "runs", "median s", "landed MiB", "MiB/s", "MiB/s vs raw",
                   "speed vs raw", "note"), tuple(table_rows))
    report = Report("seeding", {"size_mb": options.size_mb, "repeats": options.repeats,
                                "data_dir_mib":
                                round(data_bytes / MB), "rows": rows}, [table])
    project, hand = results.get(PROJECT), results.get(HAND)
    scripts_share = None
    if project is not None and project.phases is not None:
        traced = sum(project.phases.values())
        scripts_share = project.phases[_SCRIPTS] / traced
        hand_prepare = hand.prepare_seconds if hand else None
        hand_stream = hand.seconds - hand_prepare if hand and hand_prepare is not None else None
        same_tools = {_STREAM: (hand_stream, "ncat | mbstream, after mariadb-backup | ncat -l "
                                             "started (hand: includes its final sync)"),
                      _PREPARE: (hand_prepare, "the same command")}
        report.tables.append(Table(
            f"where the project clone path's time goes (median of {project.runs}, from "
            "clone.sh's own trace)", ("phase", "seconds", "share", "hand-wired s", "note"),
            tuple((name, project.phases[name], project.phases[name] / traced,
                   *same_tools.get(name, (None, "")))
                  for name in PHASES)))

    def targets_for(path: str) -> list[Target]:
        seeded = results.get(path)
        dump = results.get(DUMP)
        throughput = speedup = None
        if seeded and raw:
            throughput = ratio(seeded.landed_bytes / seeded.seconds,
                               raw.landed_bytes / raw.seconds)
        if seeded and dump:
            speedup = ratio(dump.seconds, seeded.seconds)
        why = skipped.get(path, "")
        return [Target(f"{path}: MiB/s vs raw copy", throughput, 0.8, True, "x", why),
                Target(f"{path}: speed vs dump and restore", speedup, 5.0, True, "x", why)]

    report.targets = [
        *targets_for(PROJECT),
        Target("project clone path: scripts' own share of the clone", scripts_share, 0.03,
               False, "", skipped.get(PROJECT, "")),
        Target("project clone path: speed vs the hand-wired mariadb-backup pipe",
               ratio(hand.seconds, project.seconds) if hand and project else None, 0.97,
               True, "x", skipped.get(PROJECT, "")),
    ]
    if scripts_share is not None:
        report.notes.append("the speed against the hand-wired pipe is a ratio of two noisy "
                            "medians (either side moves by a fifth between rounds on a shared "
                            "machine); the scripts' share, from the clone's own trace, is the "
                            "direct measure of what the scripts add")
    if PROJECT not in results:
        report.notes.append("the hand-wired mariadb-backup rows show what the tool the clone "
                            "path wraps achieves: " + ", ".join(
                                f"{t.name.split(': ')[1]} {t.measured:.2f}x"
                                for t in targets_for(HAND) if t.measured is not None))
    return report


__all__ = ["SeedingOptions", "run"]
