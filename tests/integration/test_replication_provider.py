"""ReplicationInit through the real provider server against a real MariaDB primary and two replicas.

Every call goes through ``python -m pulumi.dynamic`` exactly as ``pulumi up``, ``preview``,
``refresh`` and ``destroy`` make it (numbers as floats, secrets stripped, the provider
unpickled in another process). The servers are real mariadbd processes on 127.0.0.1.

The cluster is seeded the way a clone leaves it: every server starts from a copy of
one data dir holding the accounts (admin as CONTRACT.md grants it), binary logs are
empty and so are the GTID positions. Replication itself is not configured: that is the
provider's job.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql
import pytest

import distlock
from components.mysql._replication import _ReplicationProvider
from tests.support.accounts import create_accounts
from tests.support.etcd import EtcdCluster
from tests.support.mariadb import MariaDBServer, random_password
from tests.support.procs import LOCALHOST, free_port, wait_until
from tests.support.provider_server import (
    CheckFailedError,
    ProviderError,
    ProviderServer,
    ResourceDriver,
)

pytestmark = pytest.mark.integration

ADMIN_USER = "admin"
REPLICATION_USER = "repl"
SECRET_INPUTS = frozenset({"admin_password", "replication_password"})
TYPE_NAME = "pulumi-python:dynamic/mysql:ReplicationInit"


@dataclass
class Cluster:
    primary: MariaDBServer
    replicas: list[MariaDBServer]
    admin_password: str

    @property
    def servers(self) -> list[MariaDBServer]:
        return [self.primary, *self.replicas]

    def inputs(self, *, replication_password: str, **overrides: Any) -> dict[str, Any]:
        inputs: dict[str, Any] = {
            "flavor": "mariadb",
            "primary": {"host": LOCALHOST, "port": self.primary.port},
            "replicas": [{"host": LOCALHOST, "port": r.port} for r in self.replicas],
            "source_host": LOCALHOST,
            "source_port": self.primary.port,
            "admin_user": ADMIN_USER,
            "admin_password": self.admin_password,
            "replication_user": REPLICATION_USER,
            "replication_password": replication_password,
            "max_lag_seconds": 30,
            "timeout_seconds": 60,
            "lock_endpoints": [],
        }
        inputs.update(overrides)
        return inputs

    def replica_status(self, replica: MariaDBServer) -> dict[str, Any]:
        rows = replica.query("SHOW REPLICA STATUS")
        return rows[0] if rows else {}

    def write_and_wait(self, marker: str) -> None:
        """A row written on the primary shows up on every replica (replication runs)."""
        self.primary.query("CREATE DATABASE IF NOT EXISTS app")
        self.primary.query("CREATE TABLE IF NOT EXISTS app.markers (name VARCHAR(64) PRIMARY KEY)")
        self.primary.query("INSERT INTO app.markers VALUES (%s)", (marker,))
        for replica in self.replicas:
            wait_until(lambda r=replica: r.query(  # type: ignore[misc]
                "SELECT 1 FROM app.markers WHERE name=%s", (marker,)),
                timeout=30, what=f"{marker!r} to reach {replica.name}")

    def snapshot(self) -> dict[str, Any]:
        """Everything a converge could change: positions, replication config, connections."""
        state: dict[str, Any] = {}
        for server in self.servers:
            state[server.name] = server.query(
                "SELECT @@GLOBAL.gtid_binlog_pos AS binlog, @@GLOBAL.gtid_current_pos AS cur, "
                "@@GLOBAL.gtid_slave_pos AS slave")[0]
        for replica in self.replicas:
            status = self.replica_status(replica)
            state[f"{replica.name}-replication"] = {k: status.get(k) for k in (
                "Master_Host", "Master_Port", "Master_User", "Using_Gtid", "Slave_IO_Running",
                "Slave_SQL_Running", "Relay_Log_File", "Master_Log_File")}
        # The primary's binlog dump threads: a replica that reconnected gets a new one.
        state["dump_threads"] = sorted(r["ID"] for r in self.primary.query(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%%'"))
        state["repl_account"] = self.primary.query(
            "SELECT authentication_string AS a FROM mysql.user WHERE User=%s",
            (REPLICATION_USER,))
        return state


@dataclass(frozen=True)
class Template:
    """A stopped, initialized data dir with the accounts; every server starts as a copy.

    Copying is what a finished clone amounts to (identical data, empty binary logs), and
    it is ten times faster than mariadb-install-db per server.
    """

    data_dir: Path
    root_password: str
    admin_password: str
    version: str


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, mariadb_version: str) -> Template:
    base = tmp_path_factory.mktemp("template")
    admin_password = random_password()
    server = MariaDBServer(base, name="template", version=mariadb_version).initialize()
    try:
        # The admin account exactly as the pods' bootstrap-users.sh creates it.
        create_accounts(server, users={ADMIN_USER}, passwords={
            "ADMIN": admin_password, "REPLICATION": random_password(),
            "MONITOR": random_password(), "BACKUP": random_password(),
            "TOPOLOGY": random_password()})
    finally:
        server.stop()
    return Template(server.data_dir, server.root_password, admin_password, mariadb_version)


@pytest.fixture
def cluster(tmp_path: Path, template: Template) -> Iterator[Cluster]:
    servers: list[MariaDBServer] = []
    for ordinal in range(3):
        base = tmp_path / f"m{ordinal}"
        shutil.copytree(template.data_dir, base / "data")
        replica_config = "read-only=ON\n" if ordinal else ""
        server = MariaDBServer(base, name=f"m{ordinal}", server_id=1 + ordinal,
                               data_dir=base / "data", version=template.version,
                               extra_config=f"log-bin=mysql-bin\nlog-slave-updates\n"
                                            f"{replica_config}")
        server.root_password = template.root_password
        servers.append(server)
    started: list[MariaDBServer] = []
    try:
        for server in servers:
            server.start()
            started.append(server)
        yield Cluster(servers[0], servers[1:], template.admin_password)
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProviderServer]:
    log = tmp_path_factory.mktemp("provider") / "provider.log"
    with ProviderServer(log_path=log) as srv:
        srv.configure()
        yield srv


def _driver(server: ProviderServer) -> ResourceDriver:
    return ResourceDriver(server, _ReplicationProvider(), type_name=TYPE_NAME,
                          name="orders-replication", secret_inputs=SECRET_INPUTS,
                          additional_secret_outputs=SECRET_INPUTS)


def _converged(server: ProviderServer, cluster: Cluster,
               **overrides: Any) -> tuple[ResourceDriver, dict[str, Any]]:
    """A driver whose first up converged the cluster, and the inputs it used."""
    driver = _driver(server)
    inputs = cluster.inputs(replication_password=random_password(), **overrides)
    driver.up(inputs)
    return driver, inputs


def _login(server: MariaDBServer, user: str, password: str) -> bool:
    try:
        with server.connect(user=user, password=password):
            return True
    except pymysql.err.OperationalError as error:
        if error.args[0] == 1045:
            return False
        raise


def test_create_configures_gtid_replication_with_exact_grants(
        server: ProviderServer, cluster: Cluster) -> None:
    password = random_password()
    driver = _driver(server)
    result = driver.up(cluster.inputs(replication_password=password))
    assert result.operation == "create"
    for replica in cluster.replicas:
        status = cluster.replica_status(replica)
        assert (status["Master_Host"], status["Master_Port"]) == (LOCALHOST, cluster.primary.port)
        assert status["Master_User"] == REPLICATION_USER
        assert status["Using_Gtid"] == "Slave_Pos"
        assert (status["Slave_IO_Running"], status["Slave_SQL_Running"]) == ("Yes", "Yes")
    grants = cluster.primary.query("SHOW GRANTS FOR %s@'%%'", (REPLICATION_USER,))
    assert len(grants) == 1
    assert next(iter(grants[0].values())).startswith(
        f"GRANT REPLICATION SLAVE ON *.* TO `{REPLICATION_USER}`@`%`")
    # The account creation replicated, so the replicas applied the primary's position.
    position = cluster.primary.query("SELECT @@GLOBAL.gtid_binlog_pos AS p")[0]["p"]
    assert result.outputs["primary_gtid_position"] == position
    assert result.outputs["in_sync"] is True
    statuses = result.outputs["replica_status"]
    assert [s["endpoint"] for s in statuses] == [f"{LOCALHOST}:{r.port}" for r in cluster.replicas]
    for status in statuses:
        assert status["io_thread"] == "Yes"
        assert status["sql_thread_running"] is True
        assert status["gtid_position"] == position
        assert status["read_only"] is True
        assert status["drift"] == []
    cluster.write_and_wait("after-create")
    driver.assert_no_plaintext([password, cluster.admin_password])
    assert {"admin_password", "replication_password"} <= driver.state.secret_outputs  # type: ignore[union-attr]


def test_second_up_changes_nothing_on_any_server(server: ProviderServer, cluster: Cluster) -> None:
    password = random_password()
    driver = _driver(server)
    inputs = cluster.inputs(replication_password=password)
    driver.up(inputs)
    before = cluster.snapshot()
    again = driver.up(inputs)
    assert again.operation == "same"
    assert again.diff is not None
    assert again.diff.changes is False
    assert cluster.snapshot() == before
    # Even a forced update (as after a targeted up) leaves a converged cluster untouched.
    assert driver.state is not None
    outputs = server.update(driver.urn, driver.state.id, driver.state.outputs,
                            driver.check(inputs).inputs)
    assert outputs["in_sync"] is True
    assert cluster.snapshot() == before


def test_password_rotation_reconnects_replicas_with_the_new_password(
        server: ProviderServer, cluster: Cluster) -> None:
    old, new = random_password(), random_password()
    driver = _driver(server)
    driver.up(cluster.inputs(replication_password=old))
    dump_threads = cluster.snapshot()["dump_threads"]
    assert _login(cluster.primary, REPLICATION_USER, old)
    preview = driver.preview(cluster.inputs(replication_password=new))
    assert preview is not None
    assert preview.changes is True
    assert _login(cluster.primary, REPLICATION_USER, old), "preview must not change anything"
    assert driver.up(cluster.inputs(replication_password=new)).operation == "update"
    assert not _login(cluster.primary, REPLICATION_USER, old)
    assert _login(cluster.primary, REPLICATION_USER, new)
    # Both replicas logged in again (new dump threads), necessarily with the new password.
    after = cluster.snapshot()["dump_threads"]
    assert len(after) == 2
    assert not set(after) & set(dump_threads)
    cluster.write_and_wait("after-rotation")
    driver.assert_no_plaintext([old, new, cluster.admin_password])


def test_renaming_the_replication_account_moves_replicas_then_drops_the_old_one(
        server: ProviderServer, cluster: Cluster) -> None:
    driver = _driver(server)
    password = random_password()
    driver.up(cluster.inputs(replication_password=password))
    assert driver.up(cluster.inputs(replication_password=password,
                                    replication_user="repl2")).operation == "update"
    for replica in cluster.replicas:
        status = cluster.replica_status(replica)
        assert status["Master_User"] == "repl2"
        assert (status["Slave_IO_Running"], status["Slave_SQL_Running"]) == ("Yes", "Yes")
    assert not _login(cluster.primary, REPLICATION_USER, password)
    assert _login(cluster.primary, "repl2", password)
    cluster.write_and_wait("after-rename")


def test_account_drift_on_the_primary_is_repaired(server: ProviderServer,
                                                   cluster: Cluster) -> None:
    """Someone widened the replication account and changed its password by hand."""
    driver = _driver(server)
    password = random_password()
    inputs = cluster.inputs(replication_password=password)
    driver.up(inputs)
    cluster.primary.query("GRANT SELECT ON *.* TO %s@'%%'", (REPLICATION_USER,))
    cluster.primary.query("ALTER USER %s@'%%' IDENTIFIED BY %s",
                          (REPLICATION_USER, random_password()))
    preview = driver.preview(inputs)
    assert preview is not None
    assert preview.changes is True
    assert driver.up(inputs).operation == "update"
    grants = cluster.primary.query("SHOW GRANTS FOR %s@'%%'", (REPLICATION_USER,))
    assert len(grants) == 1
    assert next(iter(grants[0].values())).startswith("GRANT REPLICATION SLAVE ON *.* TO")
    assert _login(cluster.primary, REPLICATION_USER, password)
    cluster.write_and_wait("after-account-repair")
    assert driver.up(inputs).operation == "same"


def test_a_writable_replica_is_reported_not_fought(server: ProviderServer,
                                                   cluster: Cluster) -> None:
    """read_only comes from replica.cnf; the admin account cannot and does not change it."""
    driver, inputs = _converged(server, cluster)
    writable = cluster.replicas[0]
    writable.query("SET GLOBAL read_only=OFF")
    status = driver.refresh()["replica_status"][0]
    assert status["read_only"] is False
    assert "read_only is OFF" in status["drift"]
    with pytest.raises(ProviderError) as failed:
        driver.up(inputs)
    assert f"replica 1 ({LOCALHOST}:{writable.port}): read_only is OFF" in failed.value.details
    assert "replica.cnf" in failed.value.details
    assert writable.query("SELECT @@GLOBAL.read_only AS r") == [{"r": 0}]
    cluster.write_and_wait("replication-still-runs")


def test_stopped_replica_is_repaired(server: ProviderServer, cluster: Cluster) -> None:
    driver, inputs = _converged(server, cluster)
    stopped = cluster.replicas[0]
    stopped.query("STOP REPLICA")
    cluster.primary.query("CREATE DATABASE while_stopped")
    preview = driver.preview(inputs)
    assert preview is not None
    assert preview.changes is True
    assert cluster.replica_status(stopped)["Slave_IO_Running"] == "No", "preview repaired"
    result = driver.up(inputs)
    assert result.operation == "update"
    status = cluster.replica_status(stopped)
    assert (status["Slave_IO_Running"], status["Slave_SQL_Running"]) == ("Yes", "Yes")
    # The update waited for the replica to apply what was written while it was stopped.
    assert stopped.query("SHOW DATABASES LIKE 'while_stopped'")
    assert result.outputs["in_sync"] is True
    cluster.write_and_wait("after-repair")


def test_replica_pointed_at_the_wrong_source_is_repointed(
        server: ProviderServer, cluster: Cluster) -> None:
    driver, inputs = _converged(server, cluster)
    wrong = cluster.replicas[1]
    wrong.query("STOP REPLICA")
    wrong.query("CHANGE MASTER TO MASTER_HOST=%s, MASTER_PORT=%s",
                (LOCALHOST, free_port()))
    wrong.query("START REPLICA")
    assert driver.up(inputs).operation == "update"
    status = cluster.replica_status(wrong)
    assert status["Master_Port"] == cluster.primary.port
    assert (status["Slave_IO_Running"], status["Slave_SQL_Running"]) == ("Yes", "Yes")
    assert status["Using_Gtid"] == "Slave_Pos"
    cluster.write_and_wait("after-repoint")


def test_refresh_reports_drift_without_repairing(server: ProviderServer, cluster: Cluster) -> None:
    driver = _driver(server)
    driver.up(cluster.inputs(replication_password=random_password()))
    drifted, _healthy = cluster.replicas
    drifted.query("STOP REPLICA SQL_THREAD")
    outputs = driver.refresh()
    assert outputs["in_sync"] is False
    first, second = outputs["replica_status"]
    assert first["sql_thread_running"] is False
    assert any("SQL thread is stopped" in d for d in first["drift"])
    assert second["drift"] == []
    assert second["io_thread"] == "Yes"
    assert cluster.replica_status(drifted)["Slave_SQL_Running"] == "No", "refresh repaired"
    # Read output numbers cross as floats; the next diff still parses its olds.
    preview = driver.preview(cluster.inputs(replication_password=driver.state.outputs[  # type: ignore[union-attr]
        "replication_password"]))
    assert preview is not None
    assert preview.changes is True


def test_a_replica_that_is_down_is_reported_and_named(server: ProviderServer,
                                                      cluster: Cluster) -> None:
    driver, inputs = _converged(server, cluster)
    down = cluster.replicas[1]
    down.stop()
    outputs = driver.refresh()
    assert outputs["in_sync"] is False
    status = outputs["replica_status"][1]
    assert status["reachable"] is False
    assert f"replica 2 ({LOCALHOST}:{down.port}): cannot connect as 'admin'" in status["error"]
    assert outputs["replica_status"][0]["drift"] == []
    with pytest.raises(ProviderError) as failed:
        driver.up({**inputs, "timeout_seconds": 61})
    assert f"replica 2 ({LOCALHOST}:{down.port}): cannot connect as 'admin'" in (
        failed.value.details)
    assert "error 2003" in failed.value.details


def test_delete_stops_replication_and_drops_the_account_keeping_data(
        server: ProviderServer, cluster: Cluster) -> None:
    driver = _driver(server)
    password = random_password()
    driver.up(cluster.inputs(replication_password=password))
    cluster.write_and_wait("before-delete")
    primary_position = cluster.primary.query("SELECT @@GLOBAL.gtid_binlog_pos AS p")[0]["p"]
    driver.destroy()
    for replica in cluster.replicas:
        assert replica.query("SHOW REPLICA STATUS") == []
        assert replica.query("SELECT name FROM app.markers") == [{"name": "before-delete"}]
    assert not _login(cluster.primary, REPLICATION_USER, password)
    assert cluster.primary.query("SELECT name FROM app.markers") == [{"name": "before-delete"}]
    # Only the DROP USER was written on the primary.
    after = cluster.primary.query("SELECT @@GLOBAL.gtid_binlog_pos AS p")[0]["p"]
    domain, server_id, seq = primary_position.split("-")
    assert after == f"{domain}-{server_id}-{int(seq) + 1}"


def test_bad_inputs_are_refused_by_check_before_anything_changes(
        server: ProviderServer, cluster: Cluster) -> None:
    driver = _driver(server)
    before = cluster.snapshot()
    bad = cluster.inputs(
        replication_password="",
        flavor="postgres",
        primary={"host": LOCALHOST, "port": 70000},
        replicas=[{"host": LOCALHOST, "port": cluster.primary.port}],
        max_lag_seconds=2.5,
        replication_user=ADMIN_USER,
    )
    with pytest.raises(CheckFailedError) as refused:
        driver.up(bad)
    properties = {f.property for f in refused.value.failures}
    assert {"flavor", "primary.port", "replication_password", "max_lag_seconds",
            "replication_user"} <= properties
    assert driver.calls == ["check"]
    assert cluster.snapshot() == before


def test_errors_name_the_replica_the_statement_and_the_server_message(
        server: ProviderServer, cluster: Cluster) -> None:
    driver = _driver(server)
    password = random_password()
    broken = cluster.replicas[1]
    with broken.cursor() as cur:
        cur.execute("SET SESSION sql_log_bin=0")
        cur.execute("REVOKE REPLICATION SLAVE ADMIN ON *.* FROM %s@'%%'", (ADMIN_USER,))
    with pytest.raises(ProviderError) as failed:
        driver.up(cluster.inputs(replication_password=password))
    message = failed.value.details
    assert f"replica 2 ({LOCALHOST}:{broken.port})" in message
    assert "CHANGE MASTER TO MASTER_HOST=" in message
    assert "MASTER_PASSWORD='***'" in message
    assert "error 1227" in message
    assert password not in message
    assert cluster.admin_password not in message
    # The healthy replica was still converged.
    assert cluster.replica_status(cluster.replicas[0])["Slave_IO_Running"] == "Yes"


def test_the_primary_listed_as_a_replica_is_never_touched(
        server: ProviderServer, cluster: Cluster) -> None:
    """Two port-forwards to the primary pod: the second address must not be repointed."""
    driver = _driver(server)
    inputs = cluster.inputs(replication_password=random_password())
    inputs["replicas"] = [inputs["replicas"][0], {"host": "localhost",
                                                  "port": cluster.primary.port}]
    before = cluster.snapshot()
    with pytest.raises(ProviderError) as refused:
        driver.up(inputs)
    assert f"replica 2 (localhost:{cluster.primary.port}): is the primary itself" in (
        refused.value.details)
    # Refused before the first change: not even replica 1 or the account was touched.
    assert cluster.snapshot() == before
    assert not _login(cluster.primary, REPLICATION_USER, inputs["replication_password"])


def test_one_replica_reached_twice_is_refused_before_any_change(
        server: ProviderServer, cluster: Cluster) -> None:
    inputs = cluster.inputs(replication_password=random_password())
    twice = cluster.replicas[0]
    inputs["replicas"] = [inputs["replicas"][0], {"host": "localhost", "port": twice.port}]
    before = cluster.snapshot()
    with pytest.raises(ProviderError) as refused:
        _driver(server).up(inputs)
    assert (f"replica 2 (localhost:{twice.port}): is the same server as replica 1 "
            "(server_id 2)") in refused.value.details
    assert cluster.snapshot() == before


def test_replica_that_cannot_apply_fails_with_its_sql_error(
        server: ProviderServer, cluster: Cluster) -> None:
    driver = _driver(server)
    inputs = cluster.inputs(replication_password=random_password(), timeout_seconds=30)
    driver.up(inputs)
    cluster.write_and_wait("seed")
    conflicted = cluster.replicas[0]
    # An errant row on the replica (root bypasses read_only) makes the next insert collide.
    with conflicted.cursor() as cur:
        cur.execute("SET SESSION sql_log_bin=0")
        cur.execute("INSERT INTO app.markers VALUES ('collides')")
    cluster.primary.query("INSERT INTO app.markers VALUES ('collides')")
    wait_until(lambda: cluster.replica_status(conflicted)["Slave_SQL_Running"] == "No",
               timeout=30, what="the SQL thread to stop on the duplicate key")
    with pytest.raises(ProviderError) as failed:
        driver.up({**inputs, "timeout_seconds": 31})
    message = failed.value.details
    assert f"replica 1 ({LOCALHOST}:{conflicted.port})" in message
    assert "1062" in message
    assert "never skips transactions" in message
    # Nothing was skipped: the replica is still stopped on the same transaction.
    assert cluster.replica_status(conflicted)["Last_SQL_Errno"] == 1062


def test_update_to_new_endpoints_changes_no_server(server: ProviderServer,
                                                  cluster: Cluster) -> None:
    """Switching from a laptop's port-forward to pod DNS only changes how we connect."""
    driver, inputs = _converged(server, cluster)
    before = cluster.snapshot()
    moved = {**inputs, "primary": {"host": "localhost", "port": cluster.primary.port}}
    assert driver.up(moved).operation == "update"
    assert cluster.snapshot() == before


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdCluster]:
    members = EtcdCluster(tmp_path / "etcd", size=1).start()
    try:
        yield members
    finally:
        members.stop()


def _lock_name(cluster: Cluster) -> str:
    return f"mysql-cluster/{LOCALHOST}:{cluster.primary.port}/replication"


def test_concurrent_ups_wait_for_the_cluster_lock(server: ProviderServer, cluster: Cluster,
                                                  etcd: EtcdCluster) -> None:
    """Two `pulumi up` queue behind whoever holds the cluster's lock and touch nothing."""
    inputs = cluster.inputs(replication_password=random_password(),
                            lock_endpoints=etcd.endpoints)
    errors: list[BaseException] = []

    def up() -> None:
        try:
            _driver(server).up(inputs)
        except BaseException as error:  # noqa: BLE001 - asserted below
            errors.append(error)

    options = distlock.BackendOptions(endpoints=tuple(etcd.endpoints), ttl=10)
    with distlock.open_backend("etcd", options) as session:
        runs = [threading.Thread(target=up) for _ in range(2)]
        with session.lock(_lock_name(cluster), timeout=10):
            for run in runs:
                run.start()
            wait_until(lambda: len(session.inspect(_lock_name(cluster)).waiters) == 2,
                       timeout=30, what="both converges to queue for the cluster lock")
            # Queued, so nothing was changed yet on any server.
            assert not _login(cluster.primary, REPLICATION_USER, inputs["replication_password"])
            assert all(r.query("SHOW REPLICA STATUS") == [] for r in cluster.replicas)
        for run in runs:
            run.join()
        assert session.inspect(_lock_name(cluster)).holder is None, "a lock was left behind"
    assert not errors, errors
    cluster.write_and_wait("after-locked-ups")


def test_up_gives_up_when_the_lock_stays_held(server: ProviderServer, cluster: Cluster,
                                              etcd: EtcdCluster) -> None:
    inputs = cluster.inputs(replication_password=random_password(),
                            lock_endpoints=etcd.endpoints, timeout_seconds=1)
    options = distlock.BackendOptions(endpoints=tuple(etcd.endpoints), ttl=10)
    with distlock.open_backend("etcd", options) as session, session.lock(
            _lock_name(cluster), timeout=10):
        with pytest.raises(ProviderError) as refused:
            _driver(server).up(inputs)
        assert "another `pulumi up` is converging this cluster" in refused.value.details
        # The holder is named (an etcd holder is its key, ending in the session's lease).
        assert f"; held by {_lock_name(cluster)}" in refused.value.details
        assert f"/{session.identity} (another" in refused.value.details
        assert session.inspect(_lock_name(cluster)).waiters == (), "a queue slot was left"
    assert not _login(cluster.primary, REPLICATION_USER, inputs["replication_password"])
    assert all(r.query("SHOW REPLICA STATUS") == [] for r in cluster.replicas)


def test_an_unreachable_lock_service_stops_the_up_before_any_change(
        server: ProviderServer, cluster: Cluster) -> None:
    inputs = cluster.inputs(replication_password=random_password(),
                            lock_endpoints=[f"http://{LOCALHOST}:{free_port()}"])
    with pytest.raises(ProviderError) as refused:
        _driver(server).up(inputs)
    assert "cannot open an etcd session" in refused.value.details
    assert not _login(cluster.primary, REPLICATION_USER, inputs["replication_password"])
    assert all(r.query("SHOW REPLICA STATUS") == [] for r in cluster.replicas)


# --- issue 16: errant GTIDs, refusals before changes, an up that did not converge ---------


def _errant_write(replica: MariaDBServer, database: str) -> str:
    """A write made on the replica as root (READ ONLY ADMIN passes read_only), binlogged.

    Returns the GTID it created: the replica's own server_id in the binlog state, which
    the primary never had.
    """
    replica.query(f"CREATE DATABASE {database}")
    state = replica.query("SELECT @@GLOBAL.gtid_binlog_state AS s, @@GLOBAL.server_id AS i")[0]
    own = [g for g in state["s"].split(",") if g.split("-")[1] == str(state["i"])]
    assert len(own) == 1, state
    return str(own[0])


def test_an_errant_transaction_is_drift_and_fails_the_up_untouched(
        server: ProviderServer, cluster: Cluster) -> None:
    driver, inputs = _converged(server, cluster)
    cluster.write_and_wait("before-errant")
    errant_replica = cluster.replicas[1]
    gtid = _errant_write(errant_replica, "written_on_the_replica")
    label = f"replica 2 ({LOCALHOST}:{errant_replica.port})"

    outputs = driver.refresh()
    assert outputs["in_sync"] is False
    clean, errant = outputs["replica_status"]
    assert errant["errant_gtids"] == gtid
    assert any(gtid in d and "errant" in d for d in errant["drift"]), errant["drift"]
    assert clean["errant_gtids"] == ""
    assert clean["drift"] == []
    preview = driver.preview(inputs)
    assert preview is not None
    assert preview.changes is True

    before = cluster.snapshot()
    with pytest.raises(ProviderError) as failed:
        driver.up(inputs)
    assert label in failed.value.details
    assert gtid in failed.value.details
    # Refused, not repaired: no server changed, nothing was reset or skipped.
    assert cluster.snapshot() == before
    assert errant_replica.query("SHOW DATABASES LIKE 'written_on_the_replica'")


def test_an_unrelated_writable_server_is_refused_before_any_server_changes(
        server: ProviderServer, cluster: Cluster, template: Template, tmp_path: Path) -> None:
    """A replica endpoint that reaches another, writable server (another server_id)."""
    shutil.copytree(template.data_dir, tmp_path / "stranger" / "data")
    stranger = MariaDBServer(tmp_path / "stranger", name="stranger", server_id=77,
                             data_dir=tmp_path / "stranger" / "data",
                             version=template.version, extra_config="log-bin=mysql-bin\n")
    stranger.root_password = template.root_password
    stranger.start()
    try:
        before = cluster.snapshot()
        inputs = cluster.inputs(replication_password=random_password())
        inputs["replicas"] = [inputs["replicas"][0], {"host": LOCALHOST, "port": stranger.port}]
        with pytest.raises(ProviderError) as refused:
            _driver(server).up(inputs)
        message = refused.value.details
        assert f"replica 2 ({LOCALHOST}:{stranger.port})" in message
        assert "server_id 77" in message
        assert "read_only is OFF" in message
        assert stranger.query("SHOW REPLICA STATUS") == []
        assert cluster.snapshot() == before
        assert not _login(cluster.primary, REPLICATION_USER, inputs["replication_password"])
    finally:
        stranger.stop()


def test_the_wrong_flavor_is_refused_before_any_server_changes(
        server: ProviderServer, cluster: Cluster) -> None:
    inputs = cluster.inputs(replication_password=random_password(), flavor="mysql")
    before = cluster.snapshot()
    with pytest.raises(ProviderError) as refused:
        _driver(server).up(inputs)
    assert f"primary {LOCALHOST}:{cluster.primary.port}: is MariaDB" in refused.value.details
    assert cluster.snapshot() == before
    assert not _login(cluster.primary, REPLICATION_USER, inputs["replication_password"])


def test_an_up_after_the_primary_restarted_waits_until_the_replicas_reconnect(
        server: ProviderServer, cluster: Cluster) -> None:
    """Connecting is not caught up: the up ends converged or fails, never in between."""
    driver, inputs = _converged(server, cluster)
    cluster.primary.stop()

    def connecting() -> bool:
        return all(cluster.replica_status(r)["Slave_IO_Running"] == "Connecting"
                   for r in cluster.replicas)

    wait_until(connecting, timeout=30, what="the replicas to lose the primary")
    assert driver.refresh()["in_sync"] is False
    cluster.primary.start()
    # MASTER_CONNECT_RETRY is 60 s: the replicas are still waiting to retry.
    assert connecting(), "a replica reconnected by itself; the test proves nothing"
    result = driver.up(inputs)
    assert result.operation == "update"
    assert result.outputs["in_sync"] is True
    for status in result.outputs["replica_status"]:
        assert status["io_thread"] == "Yes"
        assert status["drift"] == []
    cluster.write_and_wait("after-primary-restart")


def test_an_up_that_cannot_converge_fails_naming_the_cause(
        server: ProviderServer, cluster: Cluster) -> None:
    """A replica that cannot reach the source stays Connecting: the up fails, not succeeds."""
    driver, inputs = _converged(server, cluster)
    unreachable = free_port()
    with pytest.raises(ProviderError) as failed:
        driver.up({**inputs, "source_port": unreachable, "timeout_seconds": 3})
    message = failed.value.details
    assert "IO thread is Connecting" in message
    assert f"{LOCALHOST}:{unreachable}" in message
