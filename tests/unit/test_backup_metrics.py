"""The backup gauges (mysqlbackup/metrics.py) and their wiring (issues 14 and 15).

The schedule's interval is a pure function of the cron expression; the archive lag and the
catalog's refresh are checked on a clock the test moves, so "at most every N s, not on every
scrape" is a count of catalog reads. The wiring runs the program under mocks: with backups
and metrics both on, the archiver serves the gauges on a port the metrics Service, the
ServiceMonitor and the NetworkPolicy all name; with either off, nothing of it appears.
tests/integration/test_backup_metrics.py scrapes the real process against a real store.
"""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from components._validate import cron_interval_seconds
from components.mysql import _backup
from components.mysql._metrics import AlertSettings, alert_rules
from mysqlbackup import catalog, metrics
from mysqlbackup.store import StoreError
from tests.support.mocks import ProgramResult, manifests, run_program, stack_with
from tests.support.promtool import promtool_test, series_text
from tests.support.schemas import VERSIONS, schema_failures

HOUR = 3600
STORE = {"enabled": True, "endpoint": "https://s3.eu-west-1.amazonaws.com",
         "bucket": "db-backups", "credentialsSecret": "backup-store",
         "schedule": "0 1,23 * * *"}


@pytest.mark.parametrize(("schedule", "seconds"), [
    ("0 */6 * * *", 6 * HOUR),
    ("*/7 * * * *", 7 * 60),         # 56 -> 0 of the next hour is 4 min; 7 is the longest
    ("* * * * *", 60),
    ("0 1,23 * * *", 22 * HOUR),     # 2 h, then 22 h
    ("@daily", 24 * HOUR),
    ("@weekly", 7 * 24 * HOUR),
    ("0 0 * * 1-5", 3 * 24 * HOUR),  # Friday to Monday
    ("30 2 * * 0,7", 7 * 24 * HOUR),  # 7 is Sunday too
    ("@monthly", 31 * 24 * HOUR),
    ("0 0 1 * 1", 7 * 24 * HOUR),    # both days named: the 1st or a Monday (robfig/cron)
    ("0 0 */2 * *", 2 * 24 * HOUR),  # 31 -> 1 is one day; 29 -> 1 (non-leap Feb) two
    ("0 0 29 2 *", (3 * 365 + 366) * 24 * HOUR),  # leap days only: four years
])
def test_the_interval_is_the_longest_gap_between_runs(schedule: str, seconds: int) -> None:
    assert cron_interval_seconds(schedule) == seconds


@pytest.mark.parametrize("schedule", ["0 0 31 2 *", "every day", ""])
def test_a_schedule_that_never_runs_or_is_not_cron_is_refused(schedule: str) -> None:
    with pytest.raises(ValueError, match="schedule"):
        cron_interval_seconds(schedule)


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_archive_lag_grows_from_the_last_successful_pass_and_is_zero_off_primary() -> None:
    clock = Clock()
    state = metrics.ArchiveState(clock)
    assert state.lag_seconds() == 0  # no tick yet
    started = state.pass_started()
    clock.now += 5
    assert state.lag_seconds() == 5  # primary since the first pass, none succeeded yet
    state.pass_succeeded(started)
    clock.now += 10
    failed = state.pass_started()
    clock.now += 20
    # from the start of the pass that succeeded; a failed pass moves nothing
    assert failed == 1_000_015
    assert state.lag_seconds() == 35
    state.idle()
    assert state.lag_seconds() == 0  # replica: nothing to archive
    clock.now += 100
    state.pass_started()  # primary again: counted from now, not from the old success
    clock.now += 3
    assert state.lag_seconds() == 3


def _manifest(ended_at: str) -> catalog.Manifest:
    return catalog.Manifest(
        id=f"b-{ended_at}", flavor="mariadb", server_version="10.11.10", gtid="0-1-5",
        data_key="backups/x/data.xb.gz", compression="gzip", size=1, sha256="0" * 64,
        started_at=ended_at, ended_at=ended_at, source_host="mysql-1", source_server_id=2,
        source_server_uuid=None, slot=None, fencing_token=None)


def _scrape(collector: metrics.BackupCollector) -> dict[str, float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    values = {}
    for line in generate_latest(registry).decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.split()
            values[name] = float(value)
    return values


def test_the_catalog_is_read_at_most_every_refresh_seconds() -> None:
    clock, reads = Clock(), []
    backups = [_manifest("2026-12-03T01:00:00Z"), _manifest("2026-12-03T03:00:00Z")]

    def list_complete() -> list[catalog.Manifest]:
        reads.append(clock.now)
        return backups

    collector = metrics.BackupCollector(
        list_complete, metrics.MetricsSettings(port=9106, interval_seconds=6 * HOUR,
                                               refresh_seconds=60),
        metrics.ArchiveState(clock), clock=clock)
    first = _scrape(collector)
    assert first == {metrics.LAST_SUCCESS: 1796266800.0, metrics.INTERVAL: 6 * HOUR,
                     metrics.ARCHIVE_LAG: 0.0}
    backups.append(_manifest("2026-12-03T09:00:00Z"))
    for _ in range(5):
        clock.now += 10
        assert _scrape(collector)[metrics.LAST_SUCCESS] == 1796266800.0
    assert len(reads) == 1
    clock.now += 10
    assert _scrape(collector)[metrics.LAST_SUCCESS] == 1796288400.0
    assert len(reads) == 2


def test_no_backup_is_0_and_an_unreadable_catalog_keeps_what_was_read() -> None:
    clock = Clock()
    answers: list[StoreError | list[catalog.Manifest]] = [
        StoreError("store down"), [], StoreError("store down again")]

    def list_complete() -> list[catalog.Manifest]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    collector = metrics.BackupCollector(
        list_complete, metrics.MetricsSettings(port=9106, interval_seconds=60,
                                               refresh_seconds=1),
        metrics.ArchiveState(clock), clock=clock)
    assert metrics.LAST_SUCCESS not in _scrape(collector)  # never read: no made-up time
    clock.now += 1
    assert _scrape(collector)[metrics.LAST_SUCCESS] == 0  # read: no complete backup
    clock.now += 1
    assert _scrape(collector)[metrics.LAST_SUCCESS] == 0


def test_the_newest_verification_is_read_with_the_catalog_and_absent_before_the_first() -> None:
    clock, reads = Clock(), []
    answers: list[StoreError | catalog.Verification | None] = [
        None,
        catalog.Verification("b-1", ok=True, verified_at="2026-12-03T04:00:00Z"),
        StoreError("store down"),
        catalog.Verification("b-2", ok=False, verified_at="2026-12-04T04:00:00Z")]

    def newest_verification() -> catalog.Verification | None:
        reads.append(clock.now)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    collector = metrics.BackupCollector(
        list, metrics.MetricsSettings(port=9106, interval_seconds=60, refresh_seconds=60),
        metrics.ArchiveState(clock), clock=clock, newest_verification=newest_verification)
    # Verification is optional: none recorded, no series (the alert cannot fire on nothing).
    first = _scrape(collector)
    assert metrics.VERIFICATION_OK not in first
    assert metrics.VERIFICATION_TIME not in first
    clock.now += 60
    assert _scrape(collector)[metrics.VERIFICATION_OK] == 1
    clock.now += 30
    _scrape(collector)
    assert len(reads) == 2, "read at the catalog's pace, not per scrape"
    clock.now += 30
    kept = _scrape(collector)  # the store is down: what was read stays
    assert (kept[metrics.VERIFICATION_OK], kept[metrics.VERIFICATION_TIME]) == (1, 1796270400)
    clock.now += 60
    failed = _scrape(collector)
    assert (failed[metrics.VERIFICATION_OK], failed[metrics.VERIFICATION_TIME]) == (
        0, 1796270400 + 86400)


@pytest.mark.parametrize(("field", "value"), [("port", 0), ("port", 70000),
                                              ("interval_seconds", 0),
                                              ("refresh_seconds", -1)])
def test_bad_metrics_settings_name_the_field(field: str, value: int) -> None:
    args: dict[str, Any] = {"port": 9106, "interval_seconds": 60, field: value}
    with pytest.raises(ValueError, match=field):
        metrics.MetricsSettings(**args)


def test_too_old_fires_once_per_cluster_whatever_the_pod_count() -> None:
    """Every pod exports the same catalog; a pod whose store read failed exports no
    timestamp. Both must still give one alert (and not a many-to-many matching error)."""
    def series(metric: str, pod: str, values: str) -> dict[str, str]:
        return {"series": series_text(metric, {"job": "mysql-metrics", "namespace": "ns",
                                               "pod": pod}), "values": values}

    pods = ["mysql-0", "mysql-1", "mysql-2"]
    stale = [*(series(metrics.LAST_SUCCESS, pod, "0x80") for pod in pods[:2]),
             *(series(metrics.INTERVAL, pod, "60x80") for pod in pods)]
    promtool_test(alert_rules(AlertSettings(mysql_job="mysql-metrics", etcd_job="etcd")),
                  stale, [{"eval_time": "80m", "alertname": "MySQLBackupTooOld",
                           "exp_alerts": [{"exp_labels": {
                               "job": "mysql-metrics", "namespace": "ns",
                               "severity": "critical"},
                               "exp_annotations": {"summary": "the newest complete backup is "
                                                   "older than its schedule plus 3600 s"}}]}])


# --- wiring ---------------------------------------------------------------------------------------

def with_metrics(config: dict[str, Any]) -> dict[str, Any]:
    return {**config, "mysql-cluster:metrics": {
        "enabled": True, "scrapeNamespaces": ["monitoring"],
        "serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}}


@pytest.fixture(scope="module")
def both_on() -> ProgramResult:
    return run_program(with_metrics(stack_with("dev", backup=STORE)))


def _archiver(result: ProgramResult) -> dict[str, Any]:
    pod = result.one("StatefulSet", "mysql").inputs["spec"]["template"]["spec"]
    archiver: dict[str, Any] = next(c for c in pod["containers"]
                                    if c["name"] == _backup.ARCHIVER_CONTAINER)
    return archiver


def test_the_archiver_serves_the_gauges_where_prometheus_scrapes(both_on: ProgramResult) -> None:
    archiver = _archiver(both_on)
    env = {e["name"]: e.get("value") for e in archiver["env"]}
    assert env["ARCHIVE_METRICS_PORT"] == "9106"
    assert env["BACKUP_INTERVAL_SECONDS"] == str(22 * HOUR)
    assert archiver["ports"] == [{"name": "backup-metrics", "containerPort": 9106,
                                  "protocol": "TCP"}]
    objects = {(m["kind"], m["metadata"]["name"]): m for m in manifests(both_on)}
    service = objects[("Service", "mysql-metrics")]["spec"]
    assert {"name": "backup-metrics", "port": 9106, "targetPort": "backup-metrics",
            "protocol": "TCP"} in service["ports"]
    monitor = objects[("ServiceMonitor", "mysql-metrics")]["spec"]
    assert [e["port"] for e in monitor["endpoints"]] == ["metrics", "backup-metrics"]
    policy = both_on.one("NetworkPolicy", "mysql").inputs["spec"]
    monitoring = {"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "monitoring"}}}
    scraped = [r for r in policy["ingress"] if {"port": 9106, "protocol": "TCP"} in r["ports"]]
    assert scraped
    assert all(monitoring in r["from"] for r in scraped)
    assert {"port": 9104, "protocol": "TCP"} in scraped[0]["ports"]


@pytest.mark.parametrize("which", ["backups off", "metrics off"])
def test_no_backup_metrics_port_unless_both_are_on(which: str) -> None:
    config = (with_metrics(stack_with("dev")) if which == "backups off"
              else stack_with("dev", backup=STORE))
    result = run_program(config)
    for manifest in manifests(result):
        where = (manifest["kind"], manifest["metadata"]["name"])
        assert "9106" not in str(manifest), where
        assert "backup-metrics" not in str(manifest), where
    if which == "metrics off":
        env = {e["name"] for e in _archiver(result)["env"]}
        assert not {"ARCHIVE_METRICS_PORT", "BACKUP_INTERVAL_SECONDS"} & env


@pytest.mark.parametrize("version", VERSIONS)
def test_the_objects_validate_against_the_official_schemas(both_on: ProgramResult,
                                                           version: str) -> None:
    failures = schema_failures(manifests(both_on), version)
    assert not failures, "\n".join(failures)
