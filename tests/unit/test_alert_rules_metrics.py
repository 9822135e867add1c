"""Every alert rule, firing and staying quiet, on synthetic series through ``promtool``.

The series recorded from a real exporter and a real etcd are in
tests/integration/test_metrics.py; here each rule gets the edge cases no healthy local server
produces (lag, a missing leader, stale backups, a stuck binlog archive, semisync, distlock
metrics); tests/integration/test_backup_metrics.py has the backup series scraped for real.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from components.mysql._metrics import AlertSettings, alert_rules
from tests.support.promtool import promtool_test, series_text

SETTINGS = AlertSettings(mysql_job="mysql-metrics", etcd_job="etcd-client",
                         max_replica_lag_seconds=30, lock_held_max_seconds=300)
NS = "mysql-dev"


def s(metric: str, values: str, *, pod: str = "mysql-1", job: str = "mysql-metrics",
      **labels: str) -> dict[str, str]:
    return {"series": series_text(metric, {"job": job, "namespace": NS, "pod": pod, **labels}),
            "values": values}


def summary(alert: str, labels: dict[str, str]) -> str:
    """The rule's summary as Prometheus renders it for ``labels``."""
    rules = [r for g in alert_rules(SETTINGS)["groups"] for r in g["rules"] if r["alert"] == alert]
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)],
                  str(rules[0]["annotations"]["summary"]))


def fired(alert: str, *labels: dict[str, str]) -> list[dict[str, Any]]:
    return [{"exp_labels": label, "exp_annotations": {"summary": summary(alert, label)}}
            for label in labels]


def mysql_labels(pod: str, severity: str = "critical") -> dict[str, str]:
    return {"job": "mysql-metrics", "namespace": NS, "pod": pod, "severity": severity}


def etcd_labels(pod: str, severity: str = "critical") -> dict[str, str]:
    return {"job": "etcd-client", "namespace": NS, "pod": pod, "severity": severity}


WRITABLE = [s("mysql_global_variables_read_only", "0x10", pod="mysql-0"),
            s("mysql_global_variables_read_only", "1x10", pod="mysql-1")]

# (alert, series that fire it, the labels of the fired alert, series that keep it quiet)
CASES: list[tuple[str, list[dict[str, str]], list[dict[str, str]], list[dict[str, str]]]] = [
    ("MySQLReplicaIOThreadDown", [s("mysql_slave_status_slave_io_running", "0x10")],
     [mysql_labels("mysql-1")], [s("mysql_slave_status_slave_io_running", "1x10")]),
    ("MySQLReplicaSQLThreadDown", [s("mysql_slave_status_slave_sql_running", "0x10")],
     [mysql_labels("mysql-1")], [s("mysql_slave_status_slave_sql_running", "1x10")]),
    ("MySQLReplicaLagging", [s("mysql_slave_status_seconds_behind_master", "31x10")],
     [mysql_labels("mysql-1", "warning")],
     [s("mysql_slave_status_seconds_behind_master", "30x10")]),
    ("MySQLSemisyncFallenBack",
     [s("mysql_global_variables_rpl_semi_sync_master_enabled", "1x10", pod="mysql-0"),
      s("mysql_global_status_rpl_semi_sync_master_status", "0x10", pod="mysql-0")],
     [mysql_labels("mysql-0")],
     [s("mysql_global_variables_rpl_semi_sync_master_enabled", "1x10", pod="mysql-0"),
      s("mysql_global_status_rpl_semi_sync_master_status", "1x10", pod="mysql-0"),
      # semisync switched off on purpose is not a fallback
      s("mysql_global_variables_rpl_semi_sync_master_enabled", "0x10", pod="mysql-1"),
      s("mysql_global_status_rpl_semi_sync_master_status", "0x10", pod="mysql-1")]),
    ("MySQLNotExactlyOneWritablePrimary",
     [*WRITABLE, s("mysql_global_variables_read_only", "0x10", pod="mysql-2")],
     [{"namespace": NS, "severity": "critical"}], WRITABLE),
    ("MySQLErrantTransactions", [s("mysql_slave_status_last_io_errno", "1236x10")],
     [mysql_labels("mysql-1")],
     [s("mysql_slave_status_last_io_errno", "2003x10"),
      s("mysql_slave_status_last_sql_errno", "0x10")]),
    ("MySQLBackupTooOld",
     # at 10m: backup at t=0, interval 5m, margin 3600 s: quiet; backup interval 1 s with
     # the last success at 0 cannot fire before 3601 s either, so a longer run is used below
     [s("mysql_cluster_backup_last_success_timestamp_seconds", "0x80", pod="backup"),
      s("mysql_cluster_backup_interval_seconds", "60x80", pod="backup")],
     # one alert per cluster (every pod exports the same catalog), so no pod label
     [{"job": "mysql-metrics", "namespace": NS, "severity": "critical"}],
     [s("mysql_cluster_backup_last_success_timestamp_seconds", "0+60x80", pod="backup"),
      s("mysql_cluster_backup_interval_seconds", "60x80", pod="backup")]),
    ("MySQLBackupVerificationFailed",
     # every pod exports the same record: one alert per cluster, and a pod that has not read
     # the store yet (no series) changes nothing
     [s("mysql_cluster_backup_verification_ok", "0x10", pod="mysql-0"),
      s("mysql_cluster_backup_verification_ok", "0x10", pod="mysql-1")],
     [{"job": "mysql-metrics", "namespace": NS, "severity": "critical"}],
     # verified, or never verified (verification is optional: no series at all)
     [s("mysql_cluster_backup_verification_ok", "1x10", pod="mysql-0"),
      s("mysql_cluster_backup_last_success_timestamp_seconds", "0+60x10", pod="mysql-1")]),
    ("MySQLBinlogArchiveBehind", [s("mysql_cluster_binlog_archive_lag_seconds", "601x10")],
     [mysql_labels("mysql-1", "warning")],
     [s("mysql_cluster_binlog_archive_lag_seconds", "600x10")]),
    ("EtcdNoLeader", [s("etcd_server_has_leader", "0x10", job="etcd-client", pod="etcd-0")],
     [etcd_labels("etcd-0")],
     [s("etcd_server_has_leader", "1x10", job="etcd-client", pod="etcd-0")]),
    ("EtcdMemberDown", [s("up", "0x10", job="etcd-client", pod="etcd-1")],
     [etcd_labels("etcd-1")], [s("up", "1x10", job="etcd-client", pod="etcd-1")]),
    ("EtcdDatabaseNearQuota",
     [s("etcd_mvcc_db_total_size_in_bytes", "81x10", job="etcd-client", pod="etcd-0"),
      s("etcd_server_quota_backend_bytes", "100x10", job="etcd-client", pod="etcd-0")],
     [etcd_labels("etcd-0", "warning")],
     [s("etcd_mvcc_db_total_size_in_bytes", "80x10", job="etcd-client", pod="etcd-0"),
      s("etcd_server_quota_backend_bytes", "100x10", job="etcd-client", pod="etcd-0")]),
    ("DistlockHeldTooLong",
     [{"series": series_text("distlock_lock_held_since_timestamp_seconds", {"lock": "a"}),
       "values": "0x10"}],
     [{"lock": "a", "severity": "warning"}],
     [{"series": series_text("distlock_lock_held_since_timestamp_seconds", {"lock": "a"}),
       "values": "0+60x10"}]),
]


def eval_time(alert: str) -> str:
    return "80m" if alert == "MySQLBackupTooOld" else "10m"


@pytest.mark.parametrize(("alert", "firing", "labels", "quiet"), CASES, ids=[c[0] for c in CASES])
def test_rule_fires_and_stays_quiet(alert: str, firing: list[dict[str, str]],
                                    labels: list[dict[str, str]],
                                    quiet: list[dict[str, str]]) -> None:
    rules = alert_rules(SETTINGS)
    at = eval_time(alert)
    promtool_test(rules, firing, [{"eval_time": at, "alertname": alert,
                                   "exp_alerts": fired(alert, *labels)}])
    promtool_test(rules, quiet, [{"eval_time": at, "alertname": alert, "exp_alerts": []}])


def test_no_writable_primary_fires() -> None:
    """count() over no series is empty, not 0: the rule must still fire with none writable."""
    series = [s("mysql_global_variables_read_only", "1x10", pod="mysql-0"),
              s("mysql_global_variables_read_only", "1x10", pod="mysql-1")]
    promtool_test(alert_rules(SETTINGS), series,
                  [{"eval_time": "10m", "alertname": "MySQLNotExactlyOneWritablePrimary",
                    "exp_alerts": fired("MySQLNotExactlyOneWritablePrimary",
                                       {"namespace": NS, "severity": "critical"})}])


def test_every_rule_has_a_case() -> None:
    names = {rule["alert"] for group in alert_rules(SETTINGS)["groups"] for rule in group["rules"]}
    assert names == {case[0] for case in CASES}


@pytest.mark.parametrize(("field", "value"), [("max_replica_lag_seconds", 0),
                                              ("lock_held_max_seconds", -1),
                                              ("etcd_quota_ratio", 1.5),
                                              ("mysql_job", 'a"b')])
def test_bad_settings_name_the_field(field: str, value: object) -> None:
    args: dict[str, Any] = {"mysql_job": "m", "etcd_job": "e", field: value}
    with pytest.raises(ValueError, match=field):
        AlertSettings(**args)
