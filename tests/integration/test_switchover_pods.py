"""After a switchover, pods that restart follow the primary record, not their ordinal.

The pods are the pod-script harness (tests/support/pods.py): the unmodified scripts
as local processes around real MariaDB 10.11 servers, cloned with mariadb-backup (the
clone path runs on 10.11 only; see the README). The switchover is the engine itself
(components/mysql/_switchover.py) over pymysql as the topology account that
bootstrap-users.sh created, with the in-memory record store; each pod then sees the
record as the kubelet would present the ConfigMap: files in its RECORD_DIR.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from components.config import Endpoint
from components.mysql._record import ROLE_LABEL, MemoryRecordStore, PrimaryRecord
from components.mysql._replication import _session
from components.mysql._replication_sql import DIALECTS
from components.mysql._switchover import Plan, Source, make_writable, switchover
from tests.support.mariadb import DEBIAN
from tests.support.pods import CLONE_COMPLETE, Pod, PodCluster
from tests.support.procs import LOCALHOST, wait_until

pytestmark = pytest.mark.integration

DIALECT = DIALECTS["mariadb"]


class HarnessServers:
    """The engine's Servers over pymysql, as the topology account (what the provider does)."""

    def __init__(self, cluster: PodCluster) -> None:
        self.cluster = cluster

    def session(self, ordinal: int, *, read_timeout: int = 60) -> Any:
        return _session(self.label(ordinal),
                        Endpoint(LOCALHOST, self.cluster.pod(ordinal).mysql_port),
                        "topology", self.cluster.secrets.topology, read_timeout=read_timeout)

    def label(self, ordinal: int) -> str:
        return self.cluster.pod(ordinal).name


def publish(cluster: PodCluster, record: PrimaryRecord) -> None:
    """The record ConfigMap as every pod's volume shows it (one file per key)."""
    for pod in cluster.pods.values():
        directory = pod.dir / "record"
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir()
        for key, value in record.data().items():
            (directory / key).write_text(value)


def role_labels(pod: Pod) -> dict[str, str]:
    labels: dict[str, str] = json.loads(
        (pod.scratch_dir / "role-labels.json").read_text())["metadata"]["labels"]
    return labels


def replica_source(pod: Pod) -> int | None:
    rows = pod.query("SHOW REPLICA STATUS")
    return int(rows[0]["Master_Port"]) if rows else None


def read_only(pod: Pod) -> bool:
    return bool(pod.query("SELECT @@GLOBAL.read_only AS r")[0]["r"])


@pytest.fixture
def pods(tmp_path: Path) -> Iterator[PodCluster]:
    with PodCluster(tmp_path / "cluster", max_pods=3, version=DEBIAN) as cluster:
        primary = cluster.start_pod(0)
        primary.query_as("admin", "CREATE DATABASE app")
        primary.query_as("admin", "CREATE TABLE app.items (id INT PRIMARY KEY)")
        primary.query_as("admin", "INSERT INTO app.items VALUES (1)")
        for ordinal in (1, 2):
            cluster.start_pod(ordinal).wait_for_gtid(primary.gtid_binlog_pos())
        yield cluster


def _switch(cluster: PodCluster, store: MemoryRecordStore, old: int, new: int,
            epoch: int) -> None:
    target = cluster.pod(new)
    plan = Plan(old=old, new=new, ordinals=(0, 1, 2), epoch=epoch, grace_seconds=0,
                timeout_seconds=30, topology_user="topology",
                source=Source(LOCALHOST, target.mysql_port, "repl",
                              cluster.secrets.replication))
    outcome = switchover(HarnessServers(cluster), DIALECT, plan, store, record=store.read())
    publish(cluster, outcome.record)


def test_restarted_pods_follow_the_record(pods: PodCluster) -> None:
    store = MemoryRecordStore()
    store.write(0, 1, None)
    publish(pods, PrimaryRecord(0, 1))
    _switch(pods, store, 0, 1, epoch=2)
    new, old = pods.pod(1), pods.pod(0)
    new.query_as("admin", "INSERT INTO app.items VALUES (2)")

    # The old primary, SIGKILLed and started again with the unchanged scripts: a read-only
    # replica of the recorded primary, its own data kept, labelled replica.
    old.restart(open_primary=False)
    assert role_labels(old) == {ROLE_LABEL: "replica", "mysql-cluster.io/epoch": "2"}
    assert sorted(p.name for p in old.conf_dir.iterdir()) == ["replica.cnf", "server-id.cnf"]
    assert "data dir is the first primary's own" in old.clone_log().splitlines()[-1]
    assert read_only(old)
    assert replica_source(old) == new.mysql_port
    old.wait_for_gtid(new.gtid_binlog_pos())
    assert old.query("SELECT id FROM app.items ORDER BY id") == [{"id": 1}, {"id": 2}]
    wait_until(lambda: old.probe("readiness").returncode == 0, timeout=60,
               what="the demoted primary to be a ready replica")

    # The recorded primary SIGKILLed right after a commit its replica applied: InnoDB had
    # flushed only that commit's prepare (the binlog is what vouches for it), and a server
    # started with init-rpl-role=SLAVE would truncate it from its binlog and roll it back
    # (MDEV-33465), coming back behind its replica and reusing the GTID. primary.cnf
    # starts it as MASTER: it keeps the commit.
    new.query_as("admin", "INSERT INTO app.items VALUES (3)")
    committed = new.gtid_binlog_pos()
    old.wait_for_gtid(committed)
    new.restart(open_primary=False)
    assert new.gtid_binlog_pos() == committed
    assert new.query("SELECT COUNT(*) AS n FROM app.items") == [{"n": 3}]
    # Restarted: read-only (only the epoch's holder opens it), no replication of its own,
    # labelled primary, Ready; the next holder opens it.
    assert role_labels(new)[ROLE_LABEL] == "primary"
    assert read_only(new)
    assert replica_source(new) is None
    assert new.probe("readiness").returncode == 0
    make_writable(HarnessServers(pods), DIALECT, 1, 2, store)
    new.query_as("admin", "INSERT INTO app.items VALUES (4)")

    # A pod that lost its PVC clones again, from a peer, and replicates from the recorded
    # primary, wherever its ordinal is.
    for ordinal in (2, 0):
        pod = pods.pod(ordinal)
        pod.replace_volume()
        pod.start(open_primary=False)
        marker = dict(line.split("=", 1) for line in (
            pod.data_dir / CLONE_COMPLETE).read_text().splitlines() if "=" in line)
        # Pod 2: the previous ordinal first; pod 0: no lower ordinal, so the recorded primary.
        assert marker["donor"] == "1", marker
        assert replica_source(pod) == new.mysql_port
        pod.wait_for_gtid(new.gtid_binlog_pos())
        assert pod.query("SELECT COUNT(*) AS n FROM app.items") == [{"n": 4}]
        assert read_only(pod)


def test_a_pod_restarted_while_the_record_is_fenced_is_nobodys_primary(
        pods: PodCluster) -> None:
    """Mid-switchover (record: no primary, previous 0), a restarted pod labels itself a
    replica and still replicates from the one holding the data."""
    publish(pods, PrimaryRecord(None, 5, previous=0))
    for ordinal in (0, 2):
        pod = pods.pod(ordinal)
        pod.restart(open_primary=False)
        assert role_labels(pod)[ROLE_LABEL] == "replica"
        assert read_only(pod)
    assert replica_source(pods.pod(0)) is None  # it holds the data: it replicates from no one
    assert replica_source(pods.pod(2)) == pods.pod(0).mysql_port
