"""etcd snapshots in the object store and a new cluster restored from one (issue 14).

Real parts: etcd 3.5 and etcdctl (built from their Go modules), SeaweedFS's S3 gateway, the
rendered pods' exact commands and environments (tests/support/etcd_pods.py runs the
StatefulSet's and the CronJob's containers as local processes, with the same scripts), and
``python -m mysqlbackup`` against the store. What differs from the pods is only paths: the
agent image's Python is this one, and etcdctl's ``snapshot restore`` stands in for etcdutl's
(same flags; the build here has no etcdutl, the etcd image has both).

Each test checks what a broken restore would get wrong: keys missing or from another
snapshot, a cluster of one instead of three, a data dir overwritten, a corrupted or missing
snapshot restored (or a data dir written before the failure).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from components.etcd._membership import DESIRED_MEMBERS_KEY
from components.etcd.cluster import DATA_MOUNT, SCRIPTS_DIR, SCRIPTS_MOUNT, SHELL_MOUNT
from tests.support.backups import Store
from tests.support.etcd_pods import (
    LocalStatefulSet,
    listed,
    put,
    read_prefix,
    run_containers,
    run_init_containers,
    start_initial,
    voters,
)
from tests.support.etcd_stack import Rendered, render
from tests.support.procs import wait_until

pytestmark = pytest.mark.integration

AGENT = "ghcr.io/mysql-cluster/backup-agent:test-1"
STORE = {"enabled": True, "endpoint": "https://s3.example.com", "bucket": "etcd-snapshots",
         "credentialsSecret": "etcd-store", "image": AGENT}
KEYS = {f"/locks/key-{index:02d}": f"value-{index}" for index in range(20)}
MEMBERS = ["etcd-0", "etcd-1", "etcd-2"]


def _statefulset(base: Path, store: Store, **etcd: Any) -> LocalStatefulSet:
    # The rendered S3_* name the config's store; the test store's replace them (its keys
    # are files, as the Secret volume's are).
    return LocalStatefulSet(base, render(replicas=3, snapshot={"store": STORE}, **etcd),
                            init_overrides=store.env)


@pytest.fixture
def source(tmp_path: Path, store: Store) -> Iterator[LocalStatefulSet]:
    """A running 3-member cluster holding KEYS."""
    pods = _statefulset(tmp_path / "source", store)
    try:
        start_initial(pods)
        for key, value in KEYS.items():
            put(pods.client_url(0), key, value)
        yield pods
    finally:
        pods.stop_all()


def snapshot_job(pods: LocalStatefulSet, store: Store, base: Path, *, job: str = "1",
                 rendered: Rendered | None = None) -> str:
    """One Job of the snapshot CronJob (``rendered``'s, default the cluster's own) against
    ``pods``: its init containers (the busybox copy, the save) and its container (the
    upload), in order, with fresh emptyDirs and the PVC under ``base`` kept from earlier
    Jobs; returns the name of the PVC file the save recorded."""
    cron_job = (rendered or pods.rendered).one("kubernetes:batch/v1:CronJob")
    spec = cron_job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    volumes = {"/snapshots": base / "snapshots", "/handoff": base / f"handoff-{job}",
               SHELL_MOUNT: base / f"shell-{job}", SCRIPTS_MOUNT: SCRIPTS_DIR}
    for name in ("/snapshots", "/handoff", SHELL_MOUNT):
        volumes[name].mkdir(parents=True, exist_ok=True)
    # The client Service: any member.
    overrides = {**store.env, "SNAPSHOT_ENDPOINT": pods.client_url(0)}
    pod_name = f"etcd-snapshot-{job}"
    run_init_containers(spec, volumes, pod_name=pod_name, overrides=overrides)
    run_containers(spec["containers"], volumes, pod_name=pod_name, overrides=overrides)
    return Path((volumes["/handoff"] / "saved").read_text().strip()).name


def snapshot_ids(store: Store) -> list[str]:
    return sorted(key.split("/")[1] for key in store.objects("etcd/")
                  if key.endswith("/manifest.json"))


def test_a_snapshot_uploaded_by_the_cronjob_restores_a_new_three_member_cluster(
        source: LocalStatefulSet, store: Store, tmp_path: Path) -> None:
    # What EtcdMembership records in a cluster of another namespace: the snapshot carries it.
    put(source.client_url(0), DESIRED_MEMBERS_KEY, ",".join(
        f"http://etcd-{o}.etcd-peer.prod.svc:2380" for o in range(3)))
    saved = snapshot_job(source, store, tmp_path / "job")
    snapshot_id = saved.removeprefix("etcd-").removesuffix(".db")
    assert snapshot_ids(store) == [snapshot_id]
    assert [p.name for p in (tmp_path / "job" / "snapshots").glob("etcd-*.db")] == [saved]
    manifest = json.loads(store.get(f"etcd/{snapshot_id}/manifest.json"))
    assert manifest["size"] == (tmp_path / "job" / "snapshots" / saved).stat().st_size
    assert manifest["source"] == "db/etcd"
    # Written after the snapshot: a restore of it must not hold this key.
    put(source.client_url(0), "/locks/after-the-snapshot", "x")

    restored = _statefulset(tmp_path / "restored", store, restore={"snapshot": "latest"})
    try:
        # A restore that died halfway (its directory and a partial data set left on the
        # volume) is redone, not taken for data.
        leftovers = restored.volumes(2)[DATA_MOUNT] / "restore"
        (leftovers / "data" / "member").mkdir(parents=True)
        (leftovers / "planned").touch()
        # Two restored members have a quorum before the third starts (a slow node): the
        # third finds itself listed as a member that never started, and restores too.
        for ordinal in range(2):
            restored.start(ordinal)
        restored.wait_healthy(0, 1)
        restored.start(2)
        assert "(the restored members list this one as not started yet)" \
            in restored.init_logs[2]
        restored.wait_healthy(2)
        wait_until(lambda: voters(restored.client_url(0)) == MEMBERS, timeout=60,
                   what="the restored members to form one 3-member cluster")
        for ordinal in range(3):
            assert read_prefix(restored.client_url(ordinal), "/locks/", serializable=True) \
                == KEYS, restored.pod(ordinal)
            volume = restored.volumes(ordinal)[DATA_MOUNT]
            assert snapshot_id in (volume / "restore.done").read_text()
            assert not (volume / "restore").exists()
            assert "planned: snapshot latest" in restored.init_logs[ordinal]
        assert "removing a half-finished restore's leftovers" in restored.init_logs[2]

        # The restored cluster takes writes, and a member restarted on its data dir keeps
        # them: a completed restore is left alone.
        put(restored.client_url(0), "/locks/after-the-restore", "y")
        restored.stop(1)
        restored.start(1)
        restored.wait_healthy(1)
        assert "restored before" in restored.init_logs[1]
        wait_until(lambda: read_prefix(restored.client_url(1), "/locks/after-the-restore",
                                       serializable=True) == {"/locks/after-the-restore": "y"},
                   timeout=30, what="the restarted member to keep its data")

        # Data without the marker (the restore key added to a cluster that already has
        # data): the restore steps do not touch it.
        restored.stop(2)
        (restored.volumes(2)[DATA_MOUNT] / "restore.done").unlink()
        db = restored.data_dir(2) / "member" / "snap" / "db"
        before = db.stat().st_ino
        restored.start(2)
        restored.wait_healthy(2)
        assert db.stat().st_ino == before
        assert "the data dir holds data: a restore never overwrites it" in restored.init_logs[2]
        wait_until(lambda: voters(restored.client_url(0)) == MEMBERS, timeout=60,
                   what="all three to be voting members again")
        assert read_prefix(restored.client_url(2), "/locks/after-the-restore",
                           serializable=True) == {"/locks/after-the-restore": "y"}

        # A member of the running restored cluster whose volume is lost (marker and all)
        # does not restore a second time: it rejoins (etcd-member.sh removes its old ID and
        # adds it back, the source's desired list ignored as another cluster's) and gets the
        # data, later writes included, from the leader.
        lost = listed(restored.client_url(0), restored.peer_url(1))
        assert lost is not None
        restored.kill(1)
        shutil.rmtree(restored.volumes(1)[DATA_MOUNT])
        restored.start(1)
        assert "it joins (etcd-member.sh), no second restore" in restored.init_logs[1]

        def rejoined() -> bool:
            entry = listed(restored.client_url(0), restored.peer_url(1))
            return entry is not None and entry["ID"] != lost["ID"] \
                and not entry.get("isLearner")

        wait_until(rejoined, timeout=90,
                   what=f"etcd-1 to rejoin under a new ID as a voter\n{restored.log(1)}")
        assert voters(restored.client_url(0)) == MEMBERS
        wait_until(lambda: read_prefix(restored.client_url(1), "/locks/", serializable=True)
                   == {**KEYS, "/locks/after-the-restore": "y"}, timeout=30,
                   what="the rejoined member to hold every key")
        assert "ignoring mysql-cluster.io/etcd-membership/desired-peer-urls" in restored.log(1)
    finally:
        restored.stop_all()


def _restore_fails(base: Path, store: Store, snapshot: str) -> str:
    """Pod 0's init containers of a cluster restoring ``snapshot``; returns the failure."""
    pods = _statefulset(base, store, restore={"snapshot": snapshot})
    for path in (pods.volumes(0)[DATA_MOUNT], pods.volumes(0)[SHELL_MOUNT]):
        path.mkdir(parents=True, exist_ok=True)
    with pytest.raises(RuntimeError) as failure:
        pods.run_init(0)
    assert not pods.data_dir(0).exists(), "a failed restore wrote a data dir"
    assert not (pods.volumes(0)[DATA_MOUNT] / "restore" / "snapshot.db").exists()
    return str(failure.value)


def test_a_missing_snapshot_id_fails_naming_it(
        source: LocalStatefulSet, store: Store, tmp_path: Path) -> None:
    snapshot_job(source, store, tmp_path / "job")
    error = _restore_fails(tmp_path / "restored", store, "20000101T000000Z-10")
    assert "no complete etcd snapshot '20000101T000000Z-10'" in error


def test_a_corrupted_snapshot_fails_its_checksum_before_any_data_dir_is_written(
        source: LocalStatefulSet, store: Store, tmp_path: Path) -> None:
    saved = snapshot_job(source, store, tmp_path / "job")
    snapshot_id = saved.removeprefix("etcd-").removesuffix(".db")
    key = f"etcd/{snapshot_id}/snapshot.db"
    body = bytearray(store.get(key))
    body[len(body) // 2] ^= 0xFF
    store.put(key, bytes(body))
    error = _restore_fails(tmp_path / "restored", store, "latest")
    assert f"checksum mismatch in s3://{store.bucket}/orders/{key}" in error


def test_the_store_keeps_as_many_complete_snapshots_as_the_volume(
        source: LocalStatefulSet, store: Store, tmp_path: Path) -> None:
    # A snapshot whose upload never finished (no manifest) is neither counted nor deleted.
    store.put("etcd/00000000T000000Z-10/snapshot.db", b"half a snapshot")
    job = render(replicas=3, snapshot={"store": STORE, "retain": 2})
    saved = [snapshot_job(source, store, tmp_path / "job", job=str(run), rendered=job)
             for run in range(3)]
    ids = [name.removeprefix("etcd-").removesuffix(".db") for name in saved]
    assert len(set(ids)) == 3
    assert snapshot_ids(store) == sorted(ids[1:])
    assert sorted(p.name for p in (tmp_path / "job" / "snapshots").glob("etcd-*.db")) \
        == sorted(saved[1:])
    assert store.objects("etcd/00000000T000000Z-10/") == ["etcd/00000000T000000Z-10/snapshot.db"]
