"""The alert rules on series recorded from a real mysqld_exporter and a real etcd.

A primary and a replica run the real pod scripts (tests/support/pods.py); Debian's
``prometheus-mysqld-exporter`` (0.14, the release the sidecar image pins) scrapes each with the
option file ``exporter-config.sh`` writes (the ``exporter`` account bootstrap-users.sh creates,
through the socket) and the sidecar's flags; a 3-member etcd serves its own ``/metrics``.
Each scrape becomes constant promtool input series labelled as a ServiceMonitor labels them
(job, namespace, pod), plus ``up`` (1 when the scrape answered), and ``promtool test rules``
evaluates the deployed rule document on them: healthy, every rule is quiet; after a real fault
(a replication thread stopped, a replica made writable, etcd members killed) the matching rule
fires and the rest stay quiet.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pymysql
import pytest
import requests

from components.mysql._metrics import EXPORTER_FLAGS, AlertSettings, alert_rules
from components.mysql._replication import _ReplicationProvider
from tests.support.etcd import EtcdCluster
from tests.support.pods import Pod, PodCluster
from tests.support.procs import LOCALHOST, ManagedProcess, free_port, require_binary, wait_until
from tests.support.promtool import promtool_test, series_text
from tests.support.provider_server import ProviderServer, ResourceDriver

EXPORTER = "prometheus-mysqld-exporter"
NS = "mysql-test"
SETTINGS = AlertSettings(mysql_job="mysql-metrics", etcd_job="etcd-client")
RULES = alert_rules(SETTINGS)
ALERTS = [rule["alert"] for group in RULES["groups"] for rule in group["rules"]]
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
def rule_metrics() -> set[str]:
    names = set()
    for group in RULES["groups"]:
        for rule in group["rules"]:
            names.update(re.findall(r"\b((?:mysql|etcd)_[a-z0-9_]+)\{", rule["expr"]))
    return names


def scrape(url: str) -> list[tuple[str, dict[str, str], float]] | None:
    """Parsed samples, or None when the target does not answer (``up`` 0)."""
    try:
        response = requests.get(url, timeout=5)
        response.raise_for_status()
    except requests.RequestException:
        return None
    samples = []
    for line in response.text.splitlines():
        match = SAMPLE.match(line)
        if match and not line.startswith("#"):
            labels = dict(LABEL.findall(match.group(2) or ""))
            samples.append((match.group(1), labels, float(match.group(3))))
    return samples


class Target:
    def __init__(self, job: str, pod: str, url: str) -> None:
        self.job, self.pod, self.url = job, pod, url

    def series(self, wanted: set[str]) -> list[dict[str, str]]:
        samples = scrape(self.url)
        target = {"job": self.job, "namespace": NS, "pod": self.pod}
        out = [{"series": series_text("up", target), "values": f"{int(samples is not None)}x15"}]
        for name, labels, value in samples or []:
            if name in wanted:
                out.append({"series": series_text(name, {**labels, **target}),
                            "values": f"{value:g}x15"})
        return out


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    require_binary(EXPORTER, "promtool")
    base = tmp_path_factory.mktemp("metrics")
    cluster = PodCluster(base / "pods", max_pods=2)
    etcd = EtcdCluster(base / "etcd", size=3)
    exporters: list[ManagedProcess] = []
    try:
        pods = [cluster.start_pod(0)]
        pods.append(cluster.start_pod(1))
        pods[1].wait_for_gtid(pods[0].gtid_binlog_pos())
        etcd.start()
        targets = []
        for pod in pods:
            port = free_port()
            run_dir = base / f"{pod.name}-exporter-run"
            written = pod.run_script("exporter-config.sh",
                                     extra_env={"EXPORTER_RUN_DIR": str(run_dir)})
            assert written.returncode == 0, written.stderr
            cnf = run_dir / "exporter.cnf"
            process = ManagedProcess(f"{pod.name}-exporter", [
                EXPORTER, f"--web.listen-address={LOCALHOST}:{port}",
                f"--config.my-cnf={cnf}", *EXPORTER_FLAGS], log_dir=base).start()
            exporters.append(process)
            url = f"http://{LOCALHOST}:{port}/metrics"
            wait_until(lambda u=url: scrape(u), timeout=30,  # type: ignore[misc]
                       what=f"{pod.name}'s exporter")
            targets.append(Target("mysql-metrics", pod.name, url))
        for member in etcd.members:
            targets.append(Target("etcd-client", member.name, f"{member.client_url}/metrics"))
        yield {"pods": pods, "etcd": etcd, "targets": targets}
    finally:
        for process in exporters:
            process.stop()
        etcd.stop()
        cluster.close()


def record(system: dict[str, Any]) -> list[dict[str, str]]:
    wanted = rule_metrics()
    return [s for target in system["targets"] for s in target.series(wanted)]


def firing(series: list[dict[str, str]]) -> set[str]:
    """The alerts that fire at 10m on ``series``: each asserted quiet, failures collected."""
    fired = set()
    for alert in ALERTS:
        try:
            promtool_test(RULES, series, [{"eval_time": "10m", "alertname": alert,
                                           "exp_alerts": []}])
        except AssertionError:
            fired.add(alert)
    return fired


def test_the_exporter_reads_every_series_the_replication_rules_need(
        system: dict[str, Any]) -> None:
    replica = {name for name, _, _ in scrape(system["targets"][1].url) or []}
    needed = {"mysql_up", "mysql_global_variables_read_only",
              "mysql_slave_status_slave_io_running", "mysql_slave_status_slave_sql_running",
              "mysql_slave_status_seconds_behind_master", "mysql_slave_status_last_io_errno",
              "mysql_slave_status_last_sql_errno"}
    assert needed <= replica, sorted(needed - replica)
    samples = scrape(system["targets"][1].url) or []
    # 0.14 has no per-collector success series: a collector refused for lack of a privilege
    # shows as a scrape error.
    errors = [value for name, _, value in samples if name == "mysql_exporter_last_scrape_error"]
    assert errors == [0], f"the exporter account could not scrape everything: {errors}"
    assert any(name == "mysql_up" and value == 1 for name, _, value in samples)
    etcd = {name for name, _, _ in scrape(system["targets"][2].url) or []}
    assert {"etcd_server_has_leader", "etcd_mvcc_db_total_size_in_bytes",
            "etcd_server_quota_backend_bytes"} <= etcd


def test_a_healthy_cluster_fires_nothing(system: dict[str, Any]) -> None:
    assert firing(record(system)) == set()


@pytest.mark.parametrize(("thread", "alert"), [("SQL_THREAD", "MySQLReplicaSQLThreadDown"),
                                               ("IO_THREAD", "MySQLReplicaIOThreadDown")])
def test_a_stopped_replication_thread_fires_its_rule(system: dict[str, Any], thread: str,
                                                     alert: str) -> None:
    replica: Pod = system["pods"][1]
    replica.query(f"STOP SLAVE {thread}")
    try:
        assert firing(record(system)) == {alert}
    finally:
        replica.query(f"START SLAVE {thread}")


def test_a_writable_replica_fires_not_exactly_one_primary(system: dict[str, Any]) -> None:
    replica: Pod = system["pods"][1]
    replica.query("SET GLOBAL read_only = OFF")
    try:
        assert firing(record(system)) == {"MySQLNotExactlyOneWritablePrimary"}
    finally:
        replica.query("SET GLOBAL read_only = ON")


def test_killed_etcd_members_fire_member_down_and_no_leader(system: dict[str, Any]) -> None:
    etcd: EtcdCluster = system["etcd"]
    for member in etcd.members[1:]:
        member.kill()
    survivor = system["targets"][2]

    def leaderless() -> bool:
        samples = scrape(survivor.url) or []
        return any(n == "etcd_server_has_leader" and v == 0 for n, _, v in samples)

    wait_until(leaderless, timeout=30, what="the surviving etcd member to lose its leader")
    assert firing(record(system)) == {"EtcdMemberDown", "EtcdNoLeader"}


# --- the exporter account on a cluster bootstrapped before metrics existed --------------------

EXPORTER_ACCOUNT = ("SELECT COUNT(*) AS n FROM mysql.user "
                    "WHERE User = 'exporter' AND Host = 'localhost'")
SECRET_INPUTS = frozenset({"admin_password", "replication_password", "exporter_password"})


@pytest.fixture(scope="module")
def unmetered(tmp_path_factory: pytest.TempPathFactory,
              mariadb_version: str) -> Iterator[tuple[PodCluster, str]]:
    """A primary and a replica without the exporter account, as a cluster bootstrapped before
    bootstrap-users.sh created it is; and the account's grants as that bootstrap gives them."""
    cluster = PodCluster(tmp_path_factory.mktemp(f"no-exporter-{mariadb_version}"), max_pods=2,
                         version=mariadb_version)
    try:
        primary = cluster.start_pod(0)
        bootstrapped = _grants(primary)
        primary.query("DROP USER 'exporter'@'localhost'")  # replicated, as the rest
        replica = cluster.start_pod(1)
        replica.wait_for_gtid(primary.gtid_binlog_pos())
        yield cluster, bootstrapped
    finally:
        cluster.close()


def _grants(pod: Pod) -> str:
    return "\n".join(str(next(iter(row.values())))
                     for row in pod.query("SHOW GRANTS FOR 'exporter'@'localhost'"))


def _logs_in_as_exporter(pod: Pod, password: str) -> bool:
    try:
        pod.server.query("SELECT 1", user="exporter", password=password, host=None)
    except pymysql.err.OperationalError as error:
        if error.args[0] == 1045:
            return False
        raise
    return True


def _inputs(cluster: PodCluster, exporter_password: str) -> dict[str, Any]:
    """What MySQLCluster gives ReplicationInit with metrics on (port-forward-like endpoints)."""
    primary, replica = cluster.primary, cluster.pod(1)
    return {
        "flavor": "mariadb",
        "primary": {"host": LOCALHOST, "port": primary.mysql_port},
        "replicas": [{"host": LOCALHOST, "port": replica.mysql_port}],
        "source_host": LOCALHOST, "source_port": primary.mysql_port,
        "admin_user": "admin", "admin_password": cluster.secrets.admin,
        "replication_user": "repl", "replication_password": cluster.secrets.replication,
        "max_lag_seconds": 30, "timeout_seconds": 60, "lock_endpoints": [],
        "exporter_user": "exporter", "exporter_password": exporter_password,
    }


def test_replication_init_gives_an_old_cluster_the_exporter_account_on_the_primary(
        unmetered: tuple[PodCluster, str]) -> None:
    """Created on the primary with the Secret's password and exactly the bootstrap's grants,
    replicated to the replica (never run there: no errant GTID); a second up changes nothing,
    a dropped account is drift that the next up repairs, a new password is set."""
    cluster, bootstrapped = unmetered
    primary, replica = cluster.primary, cluster.pod(1)
    for pod in (primary, replica):
        assert pod.query(EXPORTER_ACCOUNT) == [{"n": 0}], pod.name
    password = cluster.secrets.exporter
    with ProviderServer() as server:
        driver = ResourceDriver(server, _ReplicationProvider(),
                                type_name="pulumi-python:dynamic/mysql:ReplicationInit",
                                name="metered", secret_inputs=SECRET_INPUTS,
                                additional_secret_outputs=SECRET_INPUTS)
        result = driver.up(_inputs(cluster, password))
        assert result.outputs["in_sync"] is True, result.outputs
        for pod in (primary, replica):
            assert _grants(pod) == bootstrapped, pod.name
            assert _logs_in_as_exporter(pod, password), pod.name
        # Run on the primary only: the replica logged nothing under its own server_id.
        (status,) = result.outputs["replica_status"]
        assert (status["errant_gtids"], status["drift"]) == ("", [])
        replica_server_id = replica.query("SELECT @@GLOBAL.server_id AS id")[0]["id"]
        state = replica.query("SELECT @@GLOBAL.gtid_binlog_state AS s")[0]["s"]
        assert f"-{replica_server_id}-" not in state, state
        driver.assert_no_plaintext([password, cluster.secrets.admin])

        position = primary.gtid_binlog_pos()
        again = driver.up(_inputs(cluster, password))
        assert (again.operation, again.diff and again.diff.changes) == ("same", False)
        assert driver.state is not None
        forced = server.update(driver.urn, driver.state.id, driver.state.outputs,
                               driver.check(_inputs(cluster, password)).inputs)
        assert forced["in_sync"] is True
        assert primary.gtid_binlog_pos() == position, "a no-op up wrote to the binary log"

        primary.query("DROP USER 'exporter'@'localhost'")
        repaired = driver.up(_inputs(cluster, password))
        assert repaired.operation == "update"
        assert _grants(primary) == bootstrapped

        rotated = password + "-rotated"
        driver.up(_inputs(cluster, rotated))
        replica.wait_for_gtid(primary.gtid_binlog_pos())
        for pod in (primary, replica):
            assert _logs_in_as_exporter(pod, rotated), pod.name
            assert not _logs_in_as_exporter(pod, password), pod.name
