"""The alert rules on series recorded from a real mysqld_exporter and a real etcd.

A primary and a replica run the real pod scripts (tests/support/pods.py); Debian's
``prometheus-mysqld-exporter`` (0.14, the release the sidecar image pins) scrapes each as the
``monitor`` account bootstrap-users.sh creates; a 3-member etcd serves its own ``/metrics``.
Each scrape becomes constant promtool input series labelled as a ServiceMonitor labels them
(job, namespace, pod), plus ``up`` (1 when the scrape answered), and ``promtool test rules``
evaluates the deployed rule document on them: healthy, every rule is quiet; after a real fault
(a replication thread stopped, a replica made writable, etcd members killed) the matching rule
fires and the rest stay quiet.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from components.mysql._metrics import AlertSettings, alert_rules
from tests.support.etcd import EtcdCluster
from tests.support.pods import Pod, PodCluster
from tests.support.procs import LOCALHOST, ManagedProcess, free_port, require_binary, wait_until
from tests.support.promtool import promtool_test, series_text

EXPORTER = "prometheus-mysqld-exporter"
NS = "mysql-test"
SETTINGS = AlertSettings(mysql_job="mysql-metrics", etcd_job="etcd-client")
RULES = alert_rules(SETTINGS)
ALERTS = [rule["alert"] for group in RULES["groups"] for rule in group["rules"]]
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
# Collectors whose series the rules read; the others need privileges the monitor account
# deliberately lacks (PROCESS for InnoDB status), so the sidecar turns them off.
EXPORTER_FLAGS = ("--collect.global_status", "--collect.global_variables",
                  "--collect.slave_status", "--no-collect.info_schema.innodb_cmp",
                  "--no-collect.info_schema.innodb_cmpmem",
                  "--no-collect.info_schema.query_response_time")


def rule_metrics() -> set[str]:
    names = set()
    for group in RULES["groups"]:
        for rule in group["rules"]:
            names.update(re.findall(r"\b((?:mysql|etcd)_[a-z0-9_]+)\{", rule["expr"]))
    return names


def exporter_cnf(path: Path, user: str, password: str, port: int) -> Path:
    """go-ini (the exporter's parser) reads a backquoted value verbatim: no escapes."""
    if "`" in password or "\n" in password:
        raise ValueError(f"{user}'s password cannot be written to {path}: it contains a "
                         "backquote or a newline")
    path.write_text(f"[client]\nuser={user}\npassword=`{password}`\nhost={LOCALHOST}\n"
                    f"port={port}\n")
    path.chmod(0o600)
    return path


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
            cnf = exporter_cnf(base / f"{pod.name}-exporter.cnf", "monitor",
                               cluster.secrets.password("monitor"), pod.mysql_port)
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
    failed = [labels for name, labels, value in samples
              if name == "mysql_exporter_collector_success" and value != 1]
    assert not failed, f"collectors failing as the monitor account: {failed}"
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
