"""Prometheus alert rules for one cluster: MySQL/MariaDB replication, backups, etcd and locks.

Why the rules are built here, as data, rather than kept as a static YAML file: every threshold
comes from the stack (``maxReplicaLagSeconds``, the backup schedule, the lock bound) and every
selector from the objects the program names (the MySQL and etcd Services the ServiceMonitors
scrape, which become the ``job`` label). One function renders the ``groups`` document; the
PrometheusRule object carries it as its ``spec`` and the tests hand the very same document to
``promtool test rules``, so what is tested is what is deployed.

Metric sources and what is real today:

- ``mysql_*``: Debian's ``prometheus-mysqld-exporter`` 0.14 (the sidecar runs the same
  release's image). Replication threads are ``mysql_slave_status_slave_{io,sql}_running``
  (1 only for ``Yes``; ``Connecting`` is 0), lag ``mysql_slave_status_seconds_behind_master``
  (absent while the SQL thread is stopped, so the thread-down rule covers that case),
  writability ``mysql_global_variables_read_only``.
- Errant transactions: the exporter exports no GTID sets (they are strings), so the rule
  watches what an errant transaction does to a replica of a ``gtid_strict_mode`` primary: the
  IO thread is refused with error 1236 (the replica holds GTIDs the primary never had) or the SQL
  thread stops with 1950 (out-of-order GTID). It fires once the replica reconnects or applies,
  not at the moment of the stray write.
- Semisync: ``mysql_global_status_rpl_semi_sync_master_status`` (MariaDB's status variable;
  MySQL 8.4 renames it ``..._source_status``, matched too) with the plugin enabled. Semisync is
  not configured by this project yet; the rule is tested on synthetic series.
- Backups: ``mysql_cluster_backup_last_success_timestamp_seconds`` (the newest complete
  backup's end time in the store's catalog, 0 with none), ``mysql_cluster_backup_interval_seconds``
  (the CronJob schedule's longest gap between runs), ``mysql_cluster_binlog_archive_lag_seconds``
  (on the recorded primary, seconds since the last successful archive pass; 0 on the others)
  and ``mysql_cluster_backup_verification_ok`` (the newest recorded verification: 1 or 0;
  absent before the first, mysql.backup.verify), served by the ``binlog-archive`` sidecar's
  ``archive-serve`` process (mysqlbackup/metrics.py) on port ``backup-metrics`` (9106) when
  backups and metrics are both on, scraped through the same ``<mysql>-metrics`` Service.
  tests/integration/test_backup_metrics.py scrapes the real process against a real store and
  feeds the result to promtool with these rules.
- ``etcd_*``: etcd's own ``/metrics`` (3.4 and 3.5 use the same names).
- ``distlock_*``: distlock's optional metrics (``distlock_lock_held_since_timestamp_seconds``
  per held lock); the rule is tested on synthetic series.
- ``etcd_*`` is scraped from etcd's plain-HTTP metrics port (2381) through the ``<etcd>-metrics``
  Service, so it is the same with etcd TLS on.

The pod side (``exporter_containers``): an ``exporter-config`` init container (the server image,
for bash) writes the exporter's option file into a memory volume only the two share, from the
exporter account's Secret key; the ``exporter`` sidecar (the pinned mysqld_exporter image)
reads it and connects through the pod-local socket, which stays open under
``requireSecureTransport`` and needs no certificate.

The account itself: ``bootstrap-users.sh`` creates it on the primary's first start only, so a
cluster bootstrapped before metrics existed lacks it. With metrics on, ReplicationInit gets
the account's name and password (:func:`replication_init_exporter`) and makes sure the primary
has it exactly as the bootstrap gives it; the replicas get it by replication.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components import _kube

EXPORTER_PORT = 9104
EXPORTER_RUN_DIR = "/run/mysql-exporter"
# The collectors whose series the rules read; the others need privileges the exporter account
# deliberately lacks (PROCESS for InnoDB status, performance_schema), so they are off.
# tests/integration/test_metrics.py runs Debian's exporter with exactly these flags.
EXPORTER_FLAGS = ("--collect.global_status", "--collect.global_variables",
                  "--collect.slave_status", "--no-collect.info_schema.innodb_cmp",
                  "--no-collect.info_schema.innodb_cmpmem",
                  "--no-collect.info_schema.query_response_time")


@dataclass(frozen=True)
class AlertSettings:
    """What the rules need to know about one deployed cluster."""

    mysql_job: str
    etcd_job: str
    max_replica_lag_seconds: int = 30
    backup_margin_seconds: int = 3600
    binlog_archive_max_lag_seconds: int = 600
    etcd_quota_ratio: float = 0.8
    lock_held_max_seconds: int = 300
    for_duration: str = "2m"

    def __post_init__(self) -> None:
        problems = [f"{name}: got {value!r}; must be positive"
                    for name, value in (("max_replica_lag_seconds", self.max_replica_lag_seconds),
                                        ("backup_margin_seconds", self.backup_margin_seconds),
                                        ("binlog_archive_max_lag_seconds",
                                         self.binlog_archive_max_lag_seconds),
                                        ("lock_held_max_seconds", self.lock_held_max_seconds))
                    if value <= 0]
        if not 0 < self.etcd_quota_ratio < 1:
            problems.append(f"etcd_quota_ratio: got {self.etcd_quota_ratio!r}; must be in (0, 1)")
        for name, job in (("mysql_job", self.mysql_job), ("etcd_job", self.etcd_job)):
            if not job or '"' in job or "\\" in job:
                problems.append(f"{name}: got {job!r}; must be a non-empty label value "
                                "without quotes or backslashes")
        if problems:
            raise ValueError("invalid alert settings: " + "; ".join(problems))


def _alert(name: str, expr: str, summary: str, *, severity: str = "critical",
           duration: str | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"alert": name, "expr": expr,
                            "labels": {"severity": severity},
                            "annotations": {"summary": summary}}
    if duration:
        rule["for"] = duration
    return rule


def alert_rules(settings: AlertSettings) -> dict[str, Any]:
    """The Prometheus rule document (``groups``), also the PrometheusRule's ``spec``."""
    m = f'job="{settings.mysql_job}"'
    e = f'job="{settings.etcd_job}"'
    hold = settings.for_duration
    replication = [
        _alert("MySQLReplicaIOThreadDown",
               f"mysql_slave_status_slave_io_running{{{m}}} == 0",
               "replica {{ $labels.pod }}: replication IO thread is not running", duration=hold),
        _alert("MySQLReplicaSQLThreadDown",
               f"mysql_slave_status_slave_sql_running{{{m}}} == 0",
               "replica {{ $labels.pod }}: replication SQL thread is not running", duration=hold),
        _alert("MySQLReplicaLagging",
               f"mysql_slave_status_seconds_behind_master{{{m}}} > "
               f"{settings.max_replica_lag_seconds}",
               f"replica {{{{ $labels.pod }}}} is more than {settings.max_replica_lag_seconds} s "
               "behind the primary", severity="warning", duration=hold),
        _alert("MySQLSemisyncFallenBack",
               f"(mysql_global_variables_rpl_semi_sync_master_enabled{{{m}}} == 1 and on(pod) "
               f"mysql_global_status_rpl_semi_sync_master_status{{{m}}} == 0) or "
               f"(mysql_global_variables_rpl_semi_sync_source_enabled{{{m}}} == 1 and on(pod) "
               f"mysql_global_status_rpl_semi_sync_source_status{{{m}}} == 0)",
               "primary {{ $labels.pod }} has fallen back to asynchronous replication",
               duration=hold),
        # count() of nothing is no series, not 0: the second branch covers "no writable pod".
        _alert("MySQLNotExactlyOneWritablePrimary",
               f"(count by (namespace) (mysql_global_variables_read_only{{{m}}} == 0) != 1) or "
               f"(count by (namespace) (mysql_global_variables_read_only{{{m}}}) * 0 unless "
               f"count by (namespace) (mysql_global_variables_read_only{{{m}}} == 0))",
               "namespace {{ $labels.namespace }}: not exactly one writable MySQL server",
               duration=hold),
        _alert("MySQLErrantTransactions",
               f"mysql_slave_status_last_io_errno{{{m}}} == 1236 or "
               f"mysql_slave_status_last_sql_errno{{{m}}} == 1950",
               "replica {{ $labels.pod }} holds transactions the primary does not have "
               "(replication error 1236 or 1950)"),
    ]
    backups = [
        # Every pod's archiver exports the same catalog: one alert per cluster, not per pod
        # (and a pod that cannot read the store yet exports no timestamp, so max ignores it).
        _alert("MySQLBackupTooOld",
               f"time() - max by (namespace, job) "
               f"(mysql_cluster_backup_last_success_timestamp_seconds{{{m}}}) > "
               f"max by (namespace, job) (mysql_cluster_backup_interval_seconds{{{m}}}) + "
               f"{settings.backup_margin_seconds}",
               "the newest complete backup is older than its schedule plus "
               f"{settings.backup_margin_seconds} s"),
        # Absent until a verification ran (mysql.backup.verify is optional); a record does
        # not flap, so no hold: the newest backup did not restore as the archive promises.
        _alert("MySQLBackupVerificationFailed",
               f"min by (namespace, job) (mysql_cluster_backup_verification_ok{{{m}}}) == 0",
               "the newest backup verification failed: the newest backup plus the archived "
               "binlogs did not restore as promised (backups/<id>/verification.json and the "
               "failed verification Job's log say why)"),
        _alert("MySQLBinlogArchiveBehind",
               f"mysql_cluster_binlog_archive_lag_seconds{{{m}}} > "
               f"{settings.binlog_archive_max_lag_seconds}",
               f"binary log archive is more than {settings.binlog_archive_max_lag_seconds} s "
               "behind", severity="warning", duration=hold),
    ]
    etcd = [
        _alert("EtcdNoLeader", f"etcd_server_has_leader{{{e}}} == 0",
               "etcd member {{ $labels.pod }} has no leader", duration="1m"),
        _alert("EtcdMemberDown", f"up{{{e}}} == 0",
               "etcd member {{ $labels.pod }} cannot be scraped", duration=hold),
        _alert("EtcdDatabaseNearQuota",
               f"etcd_mvcc_db_total_size_in_bytes{{{e}}} / "
               f"etcd_server_quota_backend_bytes{{{e}}} > {settings.etcd_quota_ratio}",
               f"etcd member {{{{ $labels.pod }}}}: database above "
               f"{settings.etcd_quota_ratio:.0%} of its quota", severity="warning",
               duration=hold),
    ]
    locks = [
        _alert("DistlockHeldTooLong",
               f"time() - distlock_lock_held_since_timestamp_seconds > "
               f"{settings.lock_held_max_seconds}",
               f"lock {{{{ $labels.lock }}}} held for more than {settings.lock_held_max_seconds} s",
               severity="warning"),
    ]
    return {"groups": [
        {"name": "mysql-cluster.replication", "rules": replication},
        {"name": "mysql-cluster.backups", "rules": backups},
        {"name": "mysql-cluster.etcd", "rules": etcd},
        {"name": "mysql-cluster.locks", "rules": locks},
    ]}


def exporter_volume() -> dict[str, Any]:
    # The option file holds the exporter's password: memory, never the node's disk.
    return dict(_kube.empty_dir("exporter-run", memory=True, size_limit="1Mi"))


def exporter_containers(*, server_image: str, exporter_image: str, config_dir: str,
                        socket_dir: str, env: list[Any], config_map_mount: Any,
                        credentials_mount: Any, tmp_mount: Any,
                        ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``exporter-config`` init container and the ``exporter`` sidecar (``tmp_mount``: the
    pod's scratch volume, the only writable path besides their own under a read-only root)."""
    secure = _kube.container_security_context()
    run = _kube.mount("exporter-run", EXPORTER_RUN_DIR)
    init = {
        "name": "exporter-config",
        "image": server_image,
        "command": ["bash", f"{config_dir}/exporter-config.sh"],
        "env": [*env, _kube.value_env("EXPORTER_RUN_DIR", EXPORTER_RUN_DIR)],
        "volume_mounts": [config_map_mount, run, credentials_mount, tmp_mount],
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"},
                      "limits": {"memory": "128Mi"}},
        "security_context": secure,
    }
    probe = {"http_get": {"path": "/", "port": "metrics"}, "period_seconds": 30,
             "timeout_seconds": 5, "failure_threshold": 3}
    sidecar = {
        "name": "exporter",
        "image": exporter_image,
        "args": [f"--config.my-cnf={EXPORTER_RUN_DIR}/exporter.cnf",
                 f"--web.listen-address=:{EXPORTER_PORT}", *EXPORTER_FLAGS],
        "ports": [{"name": "metrics", "container_port": EXPORTER_PORT, "protocol": "TCP"}],
        "volume_mounts": [_kube.mount("exporter-run", EXPORTER_RUN_DIR, read_only=True),
                          _kube.mount("socket", socket_dir, read_only=True), tmp_mount],
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"},
                      "limits": {"memory": "128Mi"}},
        # Not a readiness probe: the pod's readiness is its database's (see test_policy.py).
        "liveness_probe": probe,
        "security_context": secure,
    }
    return init, sidecar


def replication_init_exporter(enabled: bool, *, user: str,
                              password: Any) -> dict[str, Any]:
    """ReplicationInitArgs' exporter fields (``password``: the Secret's, a secret Output);
    none with metrics off, so such a stack keeps exactly the inputs it had."""
    return {"exporter_user": user, "exporter_password": password} if enabled else {}


def prometheus_rule(resource_name: str, *, name: str, namespace: str, labels: _kube.AppLabels,
                    settings: AlertSettings, opts: pulumi.ResourceOptions) -> None:
    """The PrometheusRule whose spec is exactly :func:`alert_rules` (what promtool tests)."""
    k8s.apiextensions.CustomResource(
        resource_name,
        api_version="monitoring.coreos.com/v1",
        kind="PrometheusRule",
        metadata=_kube.metadata(name, namespace, labels),
        spec=alert_rules(settings),
        opts=opts)


__all__ = [
    "EXPORTER_FLAGS",
    "EXPORTER_PORT",
    "AlertSettings",
    "alert_rules",
    "exporter_containers",
    "exporter_volume",
    "prometheus_rule",
    "replication_init_exporter",
]
