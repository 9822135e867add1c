"""Planned switchover through the real provider server against three real MariaDB servers.

Every test runs on MariaDB 10.11 and 11.4 (the ``mariadb_version`` fixture). The record
lives in a ConfigMap of a real kube-apiserver (tests/support/controlplane.py), reached by
the provider process through the official client and a kubeconfig; the role labels are
moved on real Pod objects there (pods only pretend to run: kwok). A writer thread commits
continuously as an application account (no READ ONLY ADMIN), always to the primary the
record names (none while the record is fenced), and logs every acknowledged commit with
the epoch and server it saw. The accounts are bootstrap-users.sh's own statements.
"""

from __future__ import annotations

import os
import statistics
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
from kubernetes import client as k8s

import distlock
from components.mysql._record import KubernetesRecordStore, lock_epoch
from components.mysql._replication import _spec, _TopologyServers, cluster_lock_name
from components.mysql._replication_sql import DIALECTS
from components.mysql._switchover import Source, make_writable, repoint
from distlock.kube import GROUP, PLURAL, VERSION, object_name
from tests.support.controlplane import ControlPlane
from tests.support.lock_backends import install_lock_crd
from tests.support.procs import LOCALHOST, wait_until
from tests.support.provider_server import ProviderError, ProviderServer, ResourceDriver
from tests.support.switchover import (
    APP,
    NAMESPACE,
    Cluster,
    Template,
    Writer,
    check_history,
    make_template,
    median_interval,
    new_driver,
    start_cluster,
)

pytestmark = pytest.mark.integration

@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, mariadb_version: str) -> Template:
    return make_template(tmp_path_factory.mktemp(f"template-{mariadb_version}"),
                         mariadb_version)


@pytest.fixture
def cluster(tmp_path: Path, template: Template,
            control_plane: ControlPlane) -> Iterator[Cluster]:
    with start_cluster(tmp_path, template, control_plane) as made:
        yield made


@pytest.fixture
def server(tmp_path: Path, control_plane: ControlPlane) -> Iterator[ProviderServer]:
    kubeconfig = control_plane.write_kubeconfig(tmp_path / "kubeconfig")
    with ProviderServer(log_path=tmp_path / "provider.log",
                        env={"KUBECONFIG": str(kubeconfig)}) as srv:
        srv.configure()
        yield srv


def test_switchover_round_trip_under_a_writer_loses_nothing(
        server: ProviderServer, cluster: Cluster) -> None:
    driver = new_driver(server)
    assert all(cluster.read_only(o) for o in range(3))
    result = driver.up(cluster.inputs(0))
    assert cluster.record() == (0, 1)
    assert result.outputs["epoch"] == 1
    assert not cluster.read_only(0)  # opened by the first up, under epoch 1
    # The first up labels the pods from the record too (the Services select on them).
    assert cluster.roles() == [("primary", "1"), ("replica", "1"), ("replica", "1")]
    gaps: list[float] = []
    # SWITCHOVER_ROUNDS repeats the round trip (the benchmark: median and max of many).
    rounds = int(os.environ.get("SWITCHOVER_ROUNDS", "1"))
    with Writer(cluster) as writer:
        for target in (1, 2, 0) * rounds:
            before = len(writer.commits)
            result = driver.up(cluster.inputs(target))
            assert result.operation == "update"
            assert result.outputs["recorded_primary"] == target
            assert cluster.record() == (target, result.outputs["epoch"])
            assert not cluster.read_only(target)
            assert all(cluster.read_only(o) for o in range(3) if o != target)
            assert result.outputs["in_sync"] is True
            epoch = str(int(result.outputs["epoch"]))
            assert cluster.roles() == [("primary" if o == target else "replica", epoch)
                                       for o in range(3)]
            writer.wait_commits_on(target, after=before)
    gaps = check_history(writer, cluster)
    assert len(gaps) == 3 * rounds
    wait_until(lambda: len(set(cluster.checksums())) == 1, timeout=30,
               what="every server checksum-identical")
    print(f"\nwrite unavailability per switchover: {[f'{g:.3f}' for g in gaps]} s; "
          f"median {statistics.median(gaps):.3f} s, max {max(gaps):.3f} s; "
          f"{len(writer.commits)} commits, {writer.errors} refused")


def test_candidate_that_cannot_catch_up_is_rolled_back(
        server: ProviderServer, cluster: Cluster) -> None:
    driver = new_driver(server)
    driver.up(cluster.inputs(0))
    # The candidate's SQL thread applies nothing while it holds this lock, so it can
    # receive but never apply the writes below.
    blocker = cluster.servers[1].connect()
    blocker.cursor().execute("FLUSH TABLES WITH READ LOCK")
    try:
        with Writer(cluster) as writer:
            with pytest.raises(ProviderError) as failure:
                driver.up(cluster.inputs(1, switchover_timeout_seconds=2))
            message = str(failure.value)
            assert "rolled back" in message
            assert "did not apply the old primary's position" in message
            assert "lacks 0-1-" in message  # how far behind, in GTIDs
            assert not cluster.read_only(0)
            assert cluster.read_only(1)
            assert cluster.record() == (0, 2)
            count = len(writer.commits)
            wait_until(lambda: len(writer.commits) > count + 20, timeout=30,
                       what="writes to resume on the old primary")
    finally:
        blocker.close()
    check_history(writer, cluster)


def test_a_slowed_candidate_is_waited_for_fenced_and_nothing_is_lost(
        server: ProviderServer, cluster: Cluster) -> None:
    """The candidate's applier is held up (a table lock on it blocks the SQL thread), for
    less than switchoverTimeoutSeconds: the switchover waits with the record fenced (no
    primary) and the old primary read-only, then completes once the candidate caught up."""
    driver = new_driver(server)
    driver.up(cluster.inputs(0))
    blocker = cluster.servers[1].connect()
    blocker.cursor().execute("LOCK TABLES app.log WRITE")
    outcome: dict[str, Any] = {}

    def switch() -> None:
        try:
            outcome["result"] = driver.up(cluster.inputs(1, switchover_timeout_seconds=120))
        except ProviderError as error:
            outcome["error"] = str(error)

    thread = threading.Thread(target=switch, daemon=True)
    try:
        with Writer(cluster) as writer:
            thread.start()
            wait_until(lambda: (cluster.record() or (0, 0))[0] is None and cluster.read_only(0),
                       timeout=60, what="the switchover to fence the record and demote")
            # Still waiting: the candidate lacks the old primary's last commits, so the
            # record names nobody, and no server accepts a write.
            primary_position = cluster.servers[0].query(
                "SELECT @@GLOBAL.gtid_binlog_pos AS p")[0]["p"]
            assert cluster.servers[1].query(
                "SELECT @@GLOBAL.gtid_slave_pos AS p")[0]["p"] != primary_position
            assert thread.is_alive()
            assert all(cluster.read_only(o) for o in range(3))
            fenced_at = len(writer.commits)
            blocker.cursor().execute("UNLOCK TABLES")
            thread.join(timeout=120)
            assert "error" not in outcome, outcome
            assert cluster.record() == (1, outcome["result"].outputs["epoch"])
            writer.wait_commits_on(1, after=fenced_at)
    finally:
        blocker.close()
    check_history(writer, cluster)


def test_a_candidate_whose_applier_stopped_is_refused_before_anything_changes(
        server: ProviderServer, cluster: Cluster) -> None:
    driver = new_driver(server)
    driver.up(cluster.inputs(0))
    cluster.servers[1].query("STOP REPLICA SQL_THREAD")
    with Writer(cluster) as writer:
        with pytest.raises(ProviderError) as failure:
            driver.up(cluster.inputs(1))
        message = str(failure.value)
        assert "switchover refused before changing anything" in message
        assert "SQL thread is stopped" in message
        assert cluster.record() == (0, 1)
        assert not cluster.read_only(0)
        count = len(writer.commits)
        wait_until(lambda: len(writer.commits) > count + 20, timeout=30,
                   what="writes to go on on the primary")
    cluster.servers[1].query("START REPLICA SQL_THREAD")
    check_history(writer, cluster)


def test_errant_candidate_is_refused_naming_its_gtids(
        server: ProviderServer, cluster: Cluster) -> None:
    driver = new_driver(server)
    driver.up(cluster.inputs(0))
    # root holds READ ONLY ADMIN: a write on the replica itself.
    cluster.servers[2].query("INSERT INTO app.log VALUES (999999, 0, 2)")
    refreshed = driver.refresh()
    errant = refreshed["replica_status"][1]["errant_gtids"]
    assert errant.startswith("0-3-")
    with pytest.raises(ProviderError) as failure:
        driver.up(cluster.inputs(2))
    assert errant in str(failure.value)
    assert "nothing was changed" in str(failure.value)
    assert cluster.record() == (0, 1)
    assert not cluster.read_only(0)


def test_concurrent_switchovers_one_wins_one_fails_naming_the_epoch(
        server: ProviderServer, cluster: Cluster) -> None:
    driver = new_driver(server)
    driver.up(cluster.inputs(0))
    assert driver.state is not None
    other = new_driver(server)
    other.state = driver.state  # both runs start from the same state
    errors: list[str] = []

    def run(d: ResourceDriver, target: int) -> None:
        try:
            d.up(cluster.inputs(target))
        except ProviderError as error:
            errors.append(str(error))

    threads = [threading.Thread(target=run, args=(d, t)) for d, t in ((driver, 1), (other, 2))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(errors) == 1, errors
    assert "epoch" in errors[0]
    record = cluster.record()
    assert record is not None
    assert record[0] in (1, 2)
    assert [cluster.read_only(o) for o in range(3)].count(False) == 1
    assert not cluster.read_only(record[0])


def test_semisync_falls_back_to_async_when_no_replica_acknowledges_and_refresh_says_so(
        server: ProviderServer, cluster: Cluster) -> None:
    driver = new_driver(server)
    result = driver.up(cluster.inputs(0))
    assert result.outputs["durability_status"]["actual"] == "async"
    with Writer(cluster) as async_writer:
        async_writer.wait_commits_on(0, after=0, count=300)
    result = driver.up(cluster.inputs(0, durability="semisync", semisync_timeout_seconds=1))
    assert result.outputs["durability_status"]["actual"] == "semisync"
    with Writer(cluster, first_seq=len(async_writer.commits)) as writer:
        writer.wait_commits_on(0, after=0, count=300)
    semisync_commits = len(writer.commits)
    print(f"\ncommit latency (one writer, sequential acks): async median "
          f"{median_interval(async_writer) * 1000:.2f} ms, semisync median "
          f"{median_interval(writer) * 1000:.2f} ms")
    assert cluster.servers[0].query(
        "SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_yes_tx'")[0]["Value"] != "0"
    for replica in cluster.servers[1:]:
        replica.query("STOP REPLICA")
    # The documented choice: after semisync_timeout_seconds without an acknowledgement the
    # primary commits anyway (availability over blocking forever) and runs async.
    cluster.servers[0].query("INSERT INTO app.log VALUES (1000000, 0, 0)",
                             user=APP, password=cluster.template.passwords[APP])
    refreshed = driver.refresh()
    status = refreshed["durability_status"]
    assert status["declared"] == "semisync"
    assert status["actual"] == "async (semisync enabled, fallen back)"
    assert "declared semisync but the primary runs async" in status["drift"][0]
    assert refreshed["in_sync"] is False
    preview = driver.preview(cluster.inputs(0, durability="semisync",
                                            semisync_timeout_seconds=1))
    assert preview is not None
    assert preview.changes is True
    # An up restarts the replicas; once one acknowledges again the primary is semisync.
    result = driver.up(cluster.inputs(0, durability="semisync", semisync_timeout_seconds=1))
    cluster.servers[0].query("INSERT INTO app.log VALUES (1000001, 0, 0)",
                             user=APP, password=cluster.template.passwords[APP])
    assert driver.refresh()["durability_status"]["actual"] == "semisync"
    assert semisync_commits > 0


def test_restarted_old_primary_comes_back_read_only_replicating_from_the_new_one(
        server: ProviderServer, cluster: Cluster) -> None:
    driver = new_driver(server)
    driver.up(cluster.inputs(0))
    driver.up(cluster.inputs(1))
    old = cluster.servers[0]
    old.kill()  # SIGKILL: no clean shutdown
    old.start()
    assert cluster.read_only(0)
    wait_until(lambda: (old.query("SHOW REPLICA STATUS") or [{}])[0].get(
        "Slave_IO_Running") == "Yes", timeout=30, what="the old primary to replicate")
    status = old.query("SHOW REPLICA STATUS")[0]
    assert status["Master_Port"] == cluster.servers[1].port
    assert status["Using_Gtid"] == "Slave_Pos"
    with pytest.raises(pymysql.err.OperationalError) as refused:
        old.query("INSERT INTO app.log VALUES (5, 0, 0)", user=APP,
                  password=cluster.template.passwords[APP])
    assert refused.value.args[0] == 1290  # read-only
    # It is a healthy replica again: the next up finds nothing to change.
    assert driver.up(cluster.inputs(1)).operation == "same"


def _fail_over_as_the_arbiter(cluster: Cluster, kubeconfig: Path, *, new: int,
                              rejoin: tuple[int, ...]) -> int:
    """SIGKILL the recorded primary and promote ``new`` with the engine's own steps, as
    the arbiter does (record first, under a newer epoch; then writable; then repoint),
    rejoining only ``rejoin``: the others are left for the next up to converge."""
    record = KubernetesRecordStore(NAMESPACE, cluster.record_name,
                                   kubeconfig=str(kubeconfig))
    current = record.read()
    assert current is not None
    assert current.primary is not None
    old = current.primary
    cluster.servers[old].kill()
    spec = _spec(cluster.inputs(new))
    servers, dialect = _TopologyServers(spec), DIALECTS["mariadb"]
    epoch = current.epoch + 1
    record.write(new, epoch, current)
    with servers.session(new) as candidate:
        candidate.run(dialect.stop)
        candidate.run(dialect.reset_all)
    make_writable(servers, dialect, new, epoch, record)
    cluster.servers[old].start()  # back read-only, as every server starts
    source = Source(LOCALHOST, cluster.servers[new].port, "repl", "repl-" + "x" * 20)
    for ordinal in rejoin:
        repoint(servers, dialect, ordinal, source=source, epoch=epoch, store=record,
                demote=ordinal == old)
    return epoch


def test_an_up_after_a_failover_adopts_the_recorded_primary_and_never_moves_it_back(
        server: ProviderServer, cluster: Cluster, control_plane: ControlPlane,
        tmp_path: Path) -> None:
    """The arbiter moved the primary 0 -> 1 and repointed the old primary but died before
    repointing server 2 and moving the labels. An up with mysql.primary still 0 finishes
    that (server 2 onto 1, labels) and leaves 1 primary; only a changed mysql.primary
    switches over."""
    driver = new_driver(server)
    driver.up(cluster.inputs(0))
    for seq in range(20):
        cluster.servers[0].query("INSERT INTO app.log VALUES (%s, 1, 0)", (seq,), user=APP,
                                 password=cluster.template.passwords[APP])
    wait_until(lambda: len(set(cluster.checksums())) == 1, timeout=30,
               what="the replicas to apply the primary's writes")
    kubeconfig = control_plane.write_kubeconfig(tmp_path / "kubeconfig-arbiter")
    epoch = _fail_over_as_the_arbiter(cluster, kubeconfig, new=1, rejoin=(0,))
    assert cluster.record() == (1, epoch)

    preview = driver.preview(cluster.inputs(0))
    assert preview is not None
    assert preview.changes is True  # server 2 and the labels lag, the outputs too
    assert preview.replaces == ()
    result = driver.up(cluster.inputs(0))
    assert result.operation == "update"
    assert cluster.record() == (1, epoch)  # adopted: no new epoch, no switchover
    assert result.outputs["recorded_primary"] == 1
    assert result.outputs["epoch"] == epoch
    assert "set mysql.primary to 1" in result.outputs["primary_decision"]
    assert result.outputs["in_sync"] is True
    assert not cluster.read_only(1)
    assert cluster.read_only(0)
    assert cluster.read_only(2)
    for ordinal in (0, 2):
        status = cluster.servers[ordinal].query("SHOW REPLICA STATUS")[0]
        assert status["Master_Port"] == cluster.servers[1].port
    assert cluster.roles() == [("replica", str(epoch)), ("primary", str(epoch)),
                               ("replica", str(epoch))]
    # Converged: the same config again changes nothing (the two never fight).
    assert driver.up(cluster.inputs(0)).operation == "same"
    # Setting mysql.primary to the adopted one moves nothing either.
    result = driver.up(cluster.inputs(1))
    assert cluster.record() == (1, epoch)
    assert result.outputs["recorded_primary"] == 1
    # A changed mysql.primary is a switchover, from the recorded primary.
    result = driver.up(cluster.inputs(2))
    assert result.outputs["recorded_primary"] == 2
    assert cluster.record() == (2, result.outputs["epoch"])
    assert not cluster.read_only(2)
    assert cluster.read_only(0)
    assert cluster.read_only(1)
    wait_until(lambda: len(set(cluster.checksums())) == 1, timeout=30,
               what="every server checksum-identical")


def test_a_read_only_primary_is_opened_only_when_it_holds_every_replicas_gtids(
        server: ProviderServer, cluster: Cluster) -> None:
    """A primary restarted in place comes back read-only; the next up opens it, unless a
    replica holds a transaction it lacks (what a promoted replica, restarted with its
    replica role file's init-rpl-role=SLAVE, can drop in crash recovery although its
    replicas received it): then the up refuses before changing anything, naming the GTID
    per domain and the replica, and the primary stays read-only."""
    driver = new_driver(server)
    driver.up(cluster.inputs(0))
    primary = cluster.servers[0]
    primary.kill()
    primary.start()
    assert cluster.read_only(0)
    driver.up(cluster.inputs(0))  # the normal case: nothing is missing, it is opened
    assert not cluster.read_only(0)
    assert cluster.record() == (0, 2)
    # The commit the primary "lost": written on replica 1 under the primary's server_id,
    # so it carries the GTID the primary's next commit would have had.
    replica = cluster.servers[1].connect()
    try:
        replica.cursor().execute("SET SESSION server_id = 1")
        replica.cursor().execute("INSERT INTO app.log VALUES (777777, 0, 0)")
        cursor = replica.cursor()
        cursor.execute("SELECT @@SESSION.last_gtid AS gtid")
        row = cursor.fetchone()
    finally:
        replica.close()
    assert row is not None
    gtid = str(row[0])
    assert gtid.startswith("0-1-")
    primary.kill()
    primary.start()
    with pytest.raises(ProviderError) as failure:
        driver.up(cluster.inputs(0))
    message = str(failure.value)
    assert "nothing was changed" in message
    assert "holds GTIDs the read-only primary" in message
    assert f"(domain 0: {gtid})" in message
    assert "replica 1 (" in message
    assert "replica 2 (" not in message
    assert cluster.read_only(0)
    assert cluster.record() == (0, 2)  # no epoch was claimed
    # Only in a relay log counts too (a commit acknowledged under semi-sync, not yet
    # applied): replica 2 receives it from replica 1 with its applier stopped.
    other = cluster.servers[2]
    other.query("STOP SLAVE")
    other.query("CHANGE MASTER TO MASTER_PORT = %s", (cluster.servers[1].port,))
    other.query("START SLAVE IO_THREAD")
    wait_until(lambda: gtid in str(other.query("SHOW SLAVE STATUS")[0]["Gtid_IO_Pos"]),
               timeout=30, what="replica 2 to receive the commit into its relay log")
    assert gtid not in str(other.query("SELECT @@GLOBAL.gtid_slave_pos AS p")[0]["p"])
    with pytest.raises(ProviderError) as failure:
        driver.up(cluster.inputs(0))
    assert f"replica 2 ({LOCALHOST}:{other.port}) holds GTIDs the read-only primary" in str(
        failure.value)
    assert cluster.read_only(0)
    assert cluster.record() == (0, 2)


def test_without_etcd_an_up_takes_the_arbiters_kubernetes_lock_and_numbers_its_epoch_from_it(
        server: ProviderServer, cluster: Cluster, control_plane: ControlPlane,
        tmp_path: Path) -> None:
    """kubernetes_lock (no lock_endpoints): the converge holds the per-cluster lock as the
    Lock object the failover arbiter's Kubernetes backend takes. While another session
    holds it, an up waits, and times out naming the holder with nothing changed; once
    released, a waiting up proceeds, and its epoch is the record's plus its grant's token
    (lock_epoch, the arbiter's numbering)."""
    install_lock_crd(control_plane, "tests/switchover")
    kubeconfig = control_plane.write_kubeconfig(tmp_path / "kubeconfig-other")
    driver = new_driver(server)
    result = driver.up(cluster.inputs(0, kubernetes_lock=True))
    lock_name = cluster_lock_name(LOCALHOST, cluster.servers[0].port)
    assert cluster.record() == (0, lock_epoch("kubernetes", _lock_token(control_plane,
                                                                        lock_name), 0))
    options = distlock.BackendOptions(namespace=NAMESPACE, kubeconfig=str(kubeconfig),
                                      identity="other-runner")
    with distlock.open_backend("kubernetes", options) as other:
        held = other.lock(lock_name)
        held.acquire(timeout=30)
        with pytest.raises(ProviderError) as failure:
            driver.up(cluster.inputs(1, kubernetes_lock=True, timeout_seconds=2))
        message = str(failure.value)
        assert "held by other-runner" in message
        assert "nothing was changed" in message
        assert cluster.record() == (0, result.outputs["epoch"])
        assert not cluster.read_only(0)

        outcome: dict[str, Any] = {}

        def up() -> None:
            try:
                outcome["result"] = driver.up(cluster.inputs(1, kubernetes_lock=True))
            except ProviderError as error:
                outcome["error"] = error

        waiting = threading.Thread(target=up)
        waiting.start()
        wait_until(lambda: any(w.startswith("pulumi-replication-init")
                               for w in other.inspect(lock_name).waiters),
                   timeout=60, what="the up to queue for the lock")
        assert cluster.record() == (0, result.outputs["epoch"])  # it waits, changing nothing
        before = cluster.record()
        held.release()
        waiting.join(timeout=120)
    assert "error" not in outcome, outcome.get("error")
    assert before is not None
    token = _lock_token(control_plane, lock_name)
    assert token > 1
    assert cluster.record() == (1, lock_epoch("kubernetes", token, before[1]))
    assert outcome["result"].outputs["epoch"] == before[1] + token
    assert not cluster.read_only(1)


def _lock_token(control_plane: ControlPlane, lock_name: str) -> int:
    """The last token the Lock object granted (kept after a release)."""
    objects: Any = k8s.CustomObjectsApi(control_plane.admin_client())
    lock = objects.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL,
                                                object_name(lock_name))
    return int(lock["status"]["fencingToken"])
