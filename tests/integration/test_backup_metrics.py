"""The backup gauges scraped from the real archiver, and the real alert rules on what was scraped
(issues 14 and 15).

Real: SeaweedFS's S3 gateway (tests/support/seaweedfs.py), MariaDB 10.11 with a backup taken
by backup.sh (so the manifest is one the backup path wrote), and binlog-archive.sh's loop
with its ``archive-serve`` coprocess, which serves the gauges over HTTP, exactly as the
sidecar runs it (tests/support/backups.py's Archiver). What was scraped is handed to
``promtool test rules`` with the rule document the program deploys, so an exporter whose
names, labels or values did not fit the rules would fail here, not in production.
"""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from components._validate import cron_interval_seconds
from components.mysql._metrics import AlertSettings, alert_rules
from mysqlbackup import catalog, metrics
from tests.support.backups import Archiver, Store, backup
from tests.support.pods import Pod, PodCluster
from tests.support.procs import LOCALHOST, free_ports, require_binary, wait_until
from tests.support.promtool import promtool_test, series_text
from tests.support.seaweedfs import SeaweedS3

pytestmark = pytest.mark.integration

SCHEDULE = "0 */6 * * *"
# Small, so that a store that went away shows within seconds; the rule is the deployed one.
MAX_ARCHIVE_LAG = 3
SETTINGS = AlertSettings(mysql_job="mysql-metrics", etcd_job="etcd-metrics",
                         binlog_archive_max_lag_seconds=MAX_ARCHIVE_LAG)
LABELS = {"job": "mysql-metrics", "namespace": "orders", "pod": "orders-mysql-0"}
EVAL_MINUTES = 10  # where the scrape sits on promtool's clock


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[SeaweedS3]:
    """A server of this test's own: the test stops it to break the store."""
    server = SeaweedS3(tmp_path / "seaweedfs").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def source(tmp_path: Path) -> Iterator[Pod]:
    require_binary("mariadb-binlog", "gzip")
    with PodCluster(tmp_path / "source", name="orders-mysql") as cluster:
        yield cluster.start_pod(0)


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://{LOCALHOST}:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {sample.name: sample.value for family in text_string_to_metric_families(text)
            for sample in family.samples}


def series(scraped: dict[str, float], scraped_at: float, minutes: int) -> list[dict[str, str]]:
    """The scraped values as promtool input, held for ``minutes``; the timestamp gauge moved
    onto promtool's clock, on which the scrape happened at EVAL_MINUTES."""
    values = dict(scraped)
    if metrics.LAST_SUCCESS in values:
        values[metrics.LAST_SUCCESS] += EVAL_MINUTES * 60 - scraped_at
    return [{"series": series_text(name, LABELS), "values": f"{value}x{minutes}"}
            for name, value in values.items()]


def alerts(alert: str, input_series: list[dict[str, str]], at_minutes: int, *,
           fires: bool) -> None:
    rule = next(r for g in alert_rules(SETTINGS)["groups"] for r in g["rules"]
                if r["alert"] == alert)
    labels = {"job": LABELS["job"], "namespace": LABELS["namespace"],
              "severity": rule["labels"]["severity"]}
    if alert == "MySQLBinlogArchiveBehind":
        labels["pod"] = LABELS["pod"]
    expected = [{"exp_labels": labels, "exp_annotations": rule["annotations"]}] if fires else []
    promtool_test(alert_rules(SETTINGS), input_series,
                  [{"eval_time": f"{at_minutes}m", "alertname": alert, "exp_alerts": expected}])


def test_the_archiver_serves_the_backup_gauges_the_alert_rules_read(
        s3: SeaweedS3, source: Pod) -> None:
    store = Store(s3, f"metrics-{os.getpid()}")
    summary = backup(source, store)
    (manifest,) = [catalog.Manifest.from_json(m) for m in store.listing()["complete"]]
    assert manifest.id == summary["id"]
    interval = cron_interval_seconds(SCHEDULE)
    record = source.dir / "record"
    record.mkdir(exist_ok=True)
    (record / "primary").write_text("0\n")
    (port,) = free_ports(1)
    with Archiver(source, store, interval=1, extra_env={
            "ARCHIVE_METRICS_PORT": str(port), "BACKUP_INTERVAL_SECONDS": str(interval),
            "BACKUP_CATALOG_REFRESH_SECONDS": "1"}) as archiver:
        source.query("CREATE DATABASE shop")  # a transaction for the loop to archive
        wait_until(archiver.records, timeout=60, what="a first archive pass of the loop")

        def healthy() -> tuple[dict[str, float], float] | None:
            try:
                at, scraped = catalog.utc_now().timestamp(), scrape(port)
            except OSError:
                return None  # not listening yet
            return (scraped, at) if scraped[metrics.ARCHIVE_LAG] < MAX_ARCHIVE_LAG else None

        fresh, fresh_at = wait_until(healthy, timeout=60, interval=0.5,
                                     what="a scrape of the archiver with a small lag")
        assert fresh[metrics.LAST_SUCCESS] == manifest.ended.timestamp()
        assert fresh[metrics.INTERVAL] == interval == 6 * 3600

        # A fresh backup is quiet now; the same backup, never followed by another, fires
        # once the schedule's interval plus the margin has passed.
        stale_at = EVAL_MINUTES + (interval + SETTINGS.backup_margin_seconds) // 60 + 1
        held = series(fresh, fresh_at, stale_at + 10)
        alerts("MySQLBackupTooOld", held, EVAL_MINUTES, fires=False)
        alerts("MySQLBackupTooOld", held, stale_at, fires=True)
        alerts("MySQLBinlogArchiveBehind", held, EVAL_MINUTES, fires=False)

        # The store goes away: every pass fails, the lag grows, the last catalog read stays.
        s3.stop()

        def lagging() -> dict[str, float] | None:
            scraped = scrape(port)
            return scraped if scraped[metrics.ARCHIVE_LAG] > MAX_ARCHIVE_LAG else None

        behind = wait_until(lagging, timeout=120, interval=0.5,
                            what="the archive lag to pass the limit")
        assert behind[metrics.LAST_SUCCESS] == manifest.ended.timestamp()
        alerts("MySQLBinlogArchiveBehind", series(behind, fresh_at, EVAL_MINUTES + 10),
               EVAL_MINUTES, fires=True)

        # Another pod becomes the recorded primary: this one has nothing to archive, so its
        # lag is 0 (the store is still down: it is the role, not a pass, that decides).
        (record / "primary").write_text("1\n")
        wait_until(lambda: scrape(port)[metrics.ARCHIVE_LAG] == 0, timeout=60, interval=0.5,
                   what="a replica's archive lag to be 0")
        log = archiver.stop()
    assert "archive pass failed" in log, log  # the passes did fail while the store was down
