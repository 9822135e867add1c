"""The pods' accounts, server configs and probes on both MariaDB versions (10.11 and 11.4).

The stacks deploy 11.4; Debian ships 10.11. Every test here runs on both (the
``mariadb_version`` fixture, tests/conftest.py), against a primary and a replica started by the
unmodified pod scripts (tests/support/pods.py): ``init-config.sh`` writes conf.d from
``conf/mariadb/*.cnf``, ``bootstrap-users.sh`` creates the accounts, the sidecar configures
replication, ``probe.sh`` is run as the kubelet runs it. On 11.4 there is no backup tool, so its
replica starts empty and applies the primary's whole binary log (``Pod.seed_without_backup``);
the clone path is tested on 10.11 in test_pod_scripts.py.

What is expected comes from the project's own files, never from a list kept here: the grants
from lib.sh's ``bootstrap_users_sql``, the settings from the ``.cnf`` files, so a grant or a
setting that one server version spells or applies differently fails here.
"""

from __future__ import annotations

import configparser
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from tests.support.accounts import bootstrap_statements
from tests.support.mariadb import MAVEN
from tests.support.pods import CONF_ROOT, Pod, PodCluster
from tests.support.procs import LOCALHOST, wait_until

pytestmark = pytest.mark.integration

READ_ONLY_ERROR = 1290  # ER_OPTION_PREVENTS_STATEMENT
ACCESS_DENIED = {1044, 1045, 1142, 1227}  # db / user / table / privilege ("SUPER or ...")
FORBIDDEN_FOR_ADMIN = ("ALL PRIVILEGES", "SUPER", "READ ONLY ADMIN")
# What replication and durability rely on, per role, whatever the .cnf files say: a .cnf edit
# that the server would apply faithfully but that breaks the design fails here.
INTENDED = {
    # The primary as ReplicationInit leaves it (opened); it starts read-only (primary.cnf).
    "primary": {"read_only": 0, "log_bin": 1, "binlog_format": "ROW", "log_slave_updates": 1,
                "gtid_strict_mode": 1, "sync_binlog": 1, "innodb_flush_log_at_trx_commit": 1},
    "replica": {"read_only": 1, "log_bin": 1, "binlog_format": "ROW", "log_slave_updates": 1,
                "gtid_strict_mode": 1, "sync_binlog": 1, "innodb_flush_log_at_trx_commit": 1,
                "relay_log_recovery": 1},
}


@pytest.fixture(scope="module")
def pods(tmp_path_factory: pytest.TempPathFactory, mariadb_version: str) -> Iterator[PodCluster]:
    """A primary and one replica, replicating; tests that change them put them back."""
    cluster = PodCluster(tmp_path_factory.mktemp(f"pods-{mariadb_version}"), max_pods=2,
                         version=mariadb_version)
    try:
        primary = cluster.start_pod(0)
        primary.query_as("admin", "CREATE DATABASE app")
        primary.query_as("admin", "CREATE TABLE app.items (id INT PRIMARY KEY, note TEXT)")
        primary.query_as("admin", "CREATE USER 'app'@'%' IDENTIFIED BY 'app-secret-1'")
        primary.query_as("admin", "GRANT SELECT, INSERT, UPDATE, DELETE ON app.* TO 'app'@'%'")
        replica = cluster.start_pod(1)
        replica.wait_for_gtid(primary.gtid_binlog_pos())
        yield cluster
    finally:
        cluster.close()


def error_code(pod: Pod, user: str, password: str, sql: str) -> int:
    """The server's error number for ``sql`` run as ``user`` over TCP; fails if it succeeds."""
    with pod.server.connect(user=user, password=password, host=LOCALHOST) as conn, \
            pytest.raises(pymysql.err.MySQLError) as refused:
        conn.cursor().execute(sql)
    return int(refused.value.args[0])


def privilege_names(listed: str) -> set[str]:
    """``"SELECT, READ_ONLY ADMIN"`` -> names; SHOW GRANTS on both versions spells READ ONLY
    ADMIN as ``READ_ONLY ADMIN``, the GRANT statement takes either."""
    return {name.strip().replace("_", " ") for name in listed.split(",")}


def granted(pod: Pod, account: str) -> set[str]:
    """The global privileges SHOW GRANTS lists for ``account`` (``'user'@'host'``)."""
    privileges: set[str] = set()
    for row in pod.query(f"SHOW GRANTS FOR {account}"):
        grant = next(iter(row.values()))
        match = re.match(r"GRANT (.+?) ON \*\.\* TO ", grant)
        if match:
            privileges |= privilege_names(match.group(1))
    return privileges


def expected_grants(cluster: PodCluster) -> dict[str, set[str]]:
    """Account -> global privileges, from the statements bootstrap-users.sh runs."""
    secrets = cluster.secrets
    expected: dict[str, set[str]] = {}
    for statement in bootstrap_statements(flavor="mariadb", passwords={
            "ADMIN": secrets.admin, "REPLICATION": secrets.replication,
            "MONITOR": secrets.monitor, "BACKUP": secrets.backup,
            "TOPOLOGY": secrets.topology, "EXPORTER": secrets.exporter}):
        match = re.match(r"GRANT (.+?) ON \*\.\* TO ('[^']+'@'[^']+')", statement)
        if match:
            expected[match.group(2)] = privilege_names(match.group(1))
    return expected


def test_the_pods_run_the_version_asked_for(pods: PodCluster, mariadb_version: str) -> None:
    for pod in (pods.primary, pods.pod(1)):
        version = str(pod.query("SELECT VERSION() AS v")[0]["v"])
        assert version.startswith(f"{mariadb_version}."), (pod.name, version)
    # The one replication difference seen: 11.4's CHANGE MASTER defaults to TLS with the
    # primary's certificate verified (against the replication password: MDEV-31855); the
    # sidecar's CHANGE MASTER names neither, and replication runs on both.
    status = pods.pod(1).query("SHOW REPLICA STATUS")[0]
    tls = "Yes" if mariadb_version == MAVEN else "No"
    assert (status["Master_SSL_Allowed"], status["Master_SSL_Verify_Server_Cert"]) == (tls, tls)
    assert status["Slave_IO_Running"] == "Yes"


def test_every_account_holds_exactly_the_privileges_bootstrap_users_grants(
        pods: PodCluster) -> None:
    expected = expected_grants(pods)
    assert set(expected) == {"'admin'@'%'", "'repl'@'%'", "'monitor'@'localhost'",
                             "'monitor'@'127.0.0.1'", "'backup'@'localhost'",
                             "'backup'@'127.0.0.1'", "'topology'@'%'",
                             "'exporter'@'localhost'"}
    replica = pods.pod(1)
    for account, privileges in expected.items():
        # The replica got its accounts from the primary (clone or binary log), not its own run.
        for pod in (pods.primary, replica):
            assert granted(pod, account) == privileges, (pod.name, account)
    admin = granted(pods.primary, "'admin'@'%'")
    assert not admin & set(FORBIDDEN_FOR_ADMIN)
    rows = pods.primary.query("SHOW GRANTS FOR 'admin'@'%'")
    assert any(next(iter(row.values())).endswith("WITH GRANT OPTION") for row in rows)


def test_each_account_can_do_its_job_and_nothing_else(pods: PodCluster) -> None:
    primary, replica, secrets = pods.primary, pods.pod(1), pods.secrets
    # monitor: replication status for the probes, no data.
    with replica.server.cursor(user="monitor", password=secrets.monitor) as cursor:
        cursor.execute("SHOW REPLICA STATUS")
        assert cursor.fetchone()["Slave_SQL_Running"] == "Yes"  # type: ignore[index]
    assert error_code(primary, "monitor", secrets.monitor, "SELECT * FROM app.items") in (
        ACCESS_DENIED)
    # backup: the locks and binary-log position mariadb-backup takes, no data changes.
    with primary.server.cursor(user="backup", password=secrets.backup) as cursor:
        cursor.execute("FLUSH TABLES WITH READ LOCK")
        cursor.execute("SHOW BINARY LOGS")
        assert cursor.fetchall()
        cursor.execute("UNLOCK TABLES")
    assert error_code(primary, "backup", secrets.backup,
                      "INSERT INTO app.items VALUES (1, 'x')") in ACCESS_DENIED
    # repl: replicates, reads nothing.
    assert error_code(primary, "repl", secrets.replication, "SELECT * FROM app.items") in (
        ACCESS_DENIED)
    # admin: what ReplicationInit does with it: accounts, the replication grant, replication
    # control on a replica; but it cannot change read_only.
    primary.query_as("admin", "CREATE USER 'repl-probe'@'%' IDENTIFIED BY 'probe-secret-1'")
    try:
        primary.query_as("admin", "GRANT REPLICATION SLAVE ON *.* TO 'repl-probe'@'%'")
    finally:
        primary.query_as("admin", "DROP USER 'repl-probe'@'%'")
    replica.query_as("admin", "STOP REPLICA")
    replica.query_as("admin", "START REPLICA")
    assert error_code(primary, "admin", secrets.admin, "SET GLOBAL read_only = ON") in (
        ACCESS_DENIED)
    replica.wait_for_gtid(primary.gtid_binlog_pos())


def test_no_admin_or_application_write_reaches_a_read_only_replica(pods: PodCluster) -> None:
    primary, replica, secrets = pods.primary, pods.pod(1), pods.secrets
    primary.query_as("admin", "INSERT INTO app.items VALUES (1, 'primary')")
    replica.wait_for_gtid(primary.gtid_binlog_pos())
    before = replica.query("SELECT @@GLOBAL.gtid_binlog_pos AS g")[0]["g"]
    for user, password in (("admin", secrets.admin), ("app", "app-secret-1")):
        assert error_code(replica, user, password,
                          "INSERT INTO app.items VALUES (2, 'replica')") == READ_ONLY_ERROR
    assert error_code(replica, "admin", secrets.admin, "CREATE DATABASE errant") == (
        READ_ONLY_ERROR)
    assert error_code(replica, "admin", secrets.admin,
                      "CREATE USER 'x'@'%' IDENTIFIED BY 'x-secret-1'") == READ_ONLY_ERROR
    assert error_code(replica, "admin", secrets.admin, "SET GLOBAL read_only = OFF") in (
        ACCESS_DENIED)
    assert replica.query("SELECT id FROM app.items") == [{"id": 1}]
    assert replica.query("SELECT @@GLOBAL.gtid_binlog_pos AS g")[0]["g"] == before


def test_read_only_admin_is_what_lets_an_account_write_on_a_replica(
        tmp_path: Path, mariadb_version: str) -> None:
    """Why admin must never hold READ ONLY ADMIN (or ALL, which includes it): on both versions
    such an account writes through read_only, and the write is an errant GTID of the replica's
    own server-id. A cluster of its own: that GTID would break strict mode for later tests."""
    with PodCluster(tmp_path / "errant", max_pods=2, version=mariadb_version) as cluster:
        primary = cluster.start_pod(0)
        primary.query_as("admin", "CREATE DATABASE app")
        primary.query_as("admin", "CREATE TABLE app.items (id INT PRIMARY KEY)")
        # Created by root, as a careless operator would: the grant replicates.
        primary.query("CREATE USER 'ops'@'%' IDENTIFIED BY 'ops-secret-1'")
        primary.query("GRANT INSERT, READ ONLY ADMIN ON *.* TO 'ops'@'%'")
        replica = cluster.start_pod(1)
        replica.wait_for_gtid(primary.gtid_binlog_pos())
        assert replica.query("SELECT @@GLOBAL.read_only AS r") == [{"r": 1}]
        replica.server.query("INSERT INTO app.items VALUES (7)", user="ops",
                             password="ops-secret-1")
        own_id = replica.query("SELECT @@GLOBAL.server_id AS s")[0]["s"]
        assert f"-{own_id}-" in replica.query("SELECT @@GLOBAL.gtid_binlog_pos AS g")[0]["g"]
        # root holds ALL PRIVILEGES, hence READ ONLY ADMIN: read_only does not stop it either.
        replica.query("INSERT INTO app.items VALUES (8)")
        assert replica.query("SELECT id FROM app.items ORDER BY id") == [{"id": 7}, {"id": 8}]


def cnf_settings(role: str) -> dict[str, str]:
    """The [mysqld] settings of conf/mariadb/<role>.cnf, names as the server spells them
    (``loose_``, which only lets a server that lacks the option start, dropped)."""
    parser = configparser.ConfigParser()
    parser.read(CONF_ROOT / "mariadb" / f"{role}.cnf")
    return {name.replace("-", "_").removeprefix("loose_"): value
            for name, value in parser["mysqld"].items()}


def reported(pod: Pod, name: str) -> Any:
    return pod.query(f"SELECT @@GLOBAL.{name} AS v")[0]["v"]


@pytest.mark.parametrize(("ordinal", "role"), [(0, "primary"), (1, "replica")])
def test_the_server_reports_what_its_role_config_sets(pods: PodCluster, ordinal: int,
                                                      role: str) -> None:
    pod = pods.pod(ordinal)
    settings = cnf_settings(role)
    assert {"read_only", "log_bin", "gtid_strict_mode", "log_slave_updates"} <= set(settings)
    for name, value in settings.items():
        if name in ("log_bin", "log_bin_index", "relay_log", "relay_log_index"):
            # File names: the server reports them as paths in its data dir.
            variable = {"log_bin": "log_bin_basename", "relay_log": "relay_log_basename"}.get(
                name, name)
            assert str(reported(pod, variable)) == str(pod.data_dir / value), name
            continue
        if (role, name) == ("primary", "read_only"):
            continue  # started ON like every server, then opened (test below)
        if name == "init_rpl_role":
            continue  # a startup option, no variable on these versions (test below)
        want: Any = {"ON": 1, "OFF": 0}.get(value.upper(), value)
        if isinstance(want, str) and want.isdigit():
            want = int(want)
        assert reported(pod, name) == want, (name, value)
    for name, intended in INTENDED[role].items():
        assert reported(pod, name) == intended, name
    assert reported(pod, "server_id") == pods.server_id_base + ordinal
    assert reported(pod, "report_port") == pod.mysql_port


def effective_options(pod: Pod) -> dict[str, str]:
    """What the pod's server takes from its option files (``mariadbd --verbose --help``
    reads them exactly as the running server did, then prints each option's value)."""
    server = pod.server
    listed = subprocess.run(
        [server.distribution.tool("mariadbd"), f"--defaults-file={server.defaults_file}",
         "--verbose", "--help"], capture_output=True, text=True, check=True, timeout=60)
    options: dict[str, str] = {}
    for line in listed.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and not line.startswith(" "):
            options[parts[0]] = parts[1]
    return options


@pytest.mark.parametrize(("ordinal", "role"), [(0, "MASTER"), (1, "SLAVE")])
def test_every_server_starts_with_its_roles_init_rpl_role(
        pods: PodCluster, ordinal: int, role: str) -> None:
    """A SIGKILLed primary that rejoins as a replica must come back without the commit no
    replica acknowledged (MDEV-33465), which the server does only when started with
    init-rpl-role=SLAVE: replica.cnf. The recorded primary starts as MASTER (primary.cnf):
    the same recovery would drop its last commit although its replicas hold it
    (test_switchover_pods.py). A startup option: 10.11 and 11.4 expose no
    @@init_rpl_role (MariaDB added one later, MDEV-38202), so the value is read from the
    option files the running server read."""
    pod = pods.pod(ordinal)
    assert pod.query("SELECT 1 AS up") == [{"up": 1}]  # it started with them
    assert effective_options(pod)["init-rpl-role"] == role
    names = {row["Variable_name"] for row in pod.query("SHOW GLOBAL VARIABLES LIKE 'init%'")}
    if "init_rpl_role" in names:  # a server that exposes it says the same
        assert reported(pod, "init_rpl_role") == role


def test_probes_follow_the_server_and_replication(pods: PodCluster) -> None:
    primary, replica = pods.primary, pods.pod(1)
    for pod in (primary, replica):
        for kind in ("startup", "liveness", "readiness"):
            result = pod.probe(kind)
            assert result.returncode == 0, (pod.name, kind, result.stderr)

    replica.query("STOP REPLICA SQL_THREAD")
    try:
        stopped = replica.probe("readiness")
        assert stopped.returncode != 0
        assert "SQL thread is 'No'" in stopped.stderr
        assert replica.probe("liveness").returncode == 0
    finally:
        replica.query("START REPLICA SQL_THREAD")
    wait_until(lambda: replica.probe("readiness").returncode == 0, timeout=30,
               what="the replica to be ready again")

    # A read-only primary is Ready: every server starts so and only ReplicationInit, after
    # the StatefulSet is Ready, opens it; a readiness that waited for it would deadlock.
    primary.query("SET GLOBAL read_only = ON")
    try:
        assert primary.probe("readiness").returncode == 0
    finally:
        primary.query("SET GLOBAL read_only = OFF")
    assert primary.probe("readiness").returncode == 0


def test_every_server_starts_read_only_the_primary_too(
        tmp_path: Path, mariadb_version: str) -> None:
    """Before ReplicationInit opens it, a new cluster's first primary refuses writes, even
    from admin; restarted, an opened primary is read-only again."""
    with PodCluster(tmp_path / "fresh", max_pods=1, version=mariadb_version) as cluster:
        primary = cluster.pod(0).start(open_primary=False)
        assert primary.query("SELECT @@GLOBAL.read_only AS r") == [{"r": 1}]
        assert error_code(primary, "admin", cluster.secrets.admin,
                          "CREATE DATABASE early") == READ_ONLY_ERROR
        assert primary.probe("readiness").returncode == 0
        primary.open_primary()
        primary.query_as("admin", "CREATE DATABASE opened")
        primary.stop()
        primary.start(open_primary=False)
        assert primary.query("SELECT @@GLOBAL.read_only AS r") == [{"r": 1}]


def test_liveness_fails_only_when_the_server_does_not_answer(
        pods: PodCluster, tmp_path: Path) -> None:
    replica = pods.pod(1)
    wrong = tmp_path / "wrong-monitor-password"
    wrong.write_text("not-the-monitor-password")
    refused = {"MONITOR_PASSWORD_FILE": str(wrong)}
    # Access denied still proves the server answers: no restart for a credentials problem.
    assert replica.run_script("probe.sh", "liveness", extra_env=refused).returncode == 0
    assert replica.run_script("probe.sh", "readiness", extra_env=refused).returncode != 0

    replica.server.stop()
    try:
        assert replica.probe("liveness").returncode != 0
        assert replica.probe("startup").returncode != 0
    finally:
        replica.start_server()
    # The server resumes replication by itself from its crash-safe position.
    replica.wait_for_gtid(pods.primary.gtid_binlog_pos())
    wait_until(lambda: replica.probe("readiness").returncode == 0, timeout=30,
               what="the restarted replica to be ready")
