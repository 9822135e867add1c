"""etcd-snapshot.sh (the snapshot CronJob's script) leaves no partial files behind.

Run by busybox sh against a real etcd with the real etcdctl: a run stopped by the kubelet's
SIGTERM while etcdctl still runs removes its partial snapshot and ends etcdctl with it; the
partial files a SIGKILLed run left are removed by a later run once they are older than any
run lasts, while those of a run going on beside it are left alone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from components.etcd.cluster import SCRIPTS_DIR, SNAPSHOT_SCRIPT
from tests.support.etcd import etcdctl_binary
from tests.support.procs import ManagedProcess, run, wait_until

pytestmark = pytest.mark.integration

# A saver that has written its snapshot but does not exit (etcd stopped answering, say):
# the real etcdctl does the work, then the process blocks opening a FIFO nobody writes.
_HUNG_ETCDCTL = """#!/bin/sh
"$REAL_ETCDCTL" "$@" || exit
: >"$SAVED"
read -r _ <"$HOLD"
"""


@dataclass
class Snapshots:
    directory: Path
    env: dict[str, str]
    logs: Path

    def command(self) -> list[str]:
        busybox = shutil.which("busybox")
        if busybox is None:
            pytest.fail("busybox is not installed (the snapshot job's shell)")
        return [busybox, "sh", str(SCRIPTS_DIR / SNAPSHOT_SCRIPT)]

    def partials(self) -> list[str]:
        return sorted(p.name for p in self.directory.iterdir() if ".partial" in p.name)

    def saved(self) -> list[str]:
        return sorted(p.name for p in self.directory.glob("etcd-*.db"))


@pytest.fixture
def snapshots(etcd: str, tmp_path: Path) -> Snapshots:
    directory = tmp_path / "snapshots"
    directory.mkdir()
    return Snapshots(directory, {"SNAPSHOT_ENDPOINT": etcd, "SNAPSHOT_DIR": str(directory),
                                 "SNAPSHOT_RETAIN": "3", "SNAPSHOT_ETCDCTL": etcdctl_binary()},
                     tmp_path / "logs")


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_run_stopped_by_sigterm_removes_its_partial_snapshot(snapshots: Snapshots,
                                                               tmp_path: Path) -> None:
    hung = tmp_path / "etcdctl"
    hung.write_text(_HUNG_ETCDCTL)
    hung.chmod(0o755)
    saved, hold = tmp_path / "saved", tmp_path / "hold"
    os.mkfifo(hold)
    job = ManagedProcess("snapshot", snapshots.command(), log_dir=snapshots.logs, env={
        **snapshots.env, "SNAPSHOT_ETCDCTL": str(hung), "REAL_ETCDCTL": etcdctl_binary(),
        "SAVED": str(saved), "HOLD": str(hold)}).start()
    try:
        wait_until(lambda: saved.exists() or None, timeout=60,
                   what="etcdctl to save the snapshot under its partial name")
        assert len(snapshots.partials()) == 1, snapshots.partials()
        job.signal(signal.SIGTERM)
        assert job.process is not None
        code = job.process.wait(timeout=30)
        assert code == 143, job.log_tail()
        assert snapshots.partials() == []
        assert snapshots.saved() == []
        wait_until(lambda: _group_gone(job.pid) or None, timeout=30,
                   what="the stopped run's etcdctl to end with it")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(job.pid, signal.SIGKILL)


def test_a_later_run_removes_what_a_killed_run_left_and_nothing_younger(
        snapshots: Snapshots) -> None:
    stale = [snapshots.directory / ".etcd-20260101T000000Z-10.db.partial",
             snapshots.directory / ".etcd-20260101T000000Z-11.db.partial.part"]
    in_flight = snapshots.directory / ".etcd-20260101T000100Z-10.db.partial.part"
    hour_ago = time.time() - 3600
    for path in [*stale, in_flight]:
        path.write_bytes(b"\0" * 4096)
    for path in stale:
        os.utime(path, (hour_ago, hour_ago))
    run(snapshots.command(), env=snapshots.env, timeout=120)
    assert snapshots.partials() == [in_flight.name]
    assert len(snapshots.saved()) == 1
