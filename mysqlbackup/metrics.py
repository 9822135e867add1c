"""The backup gauges the alert rules read, served by ``archive-serve`` over HTTP.

Why the archiver exports them: it is the one long-lived process of the backup path that runs
in every pod, already holds a store client, and is the only one that knows when the last
archive pass succeeded. The rules (components/mysql/_metrics.py, MySQLBackupTooOld,
MySQLBackupVerificationFailed and MySQLBinlogArchiveBehind) read:

- ``mysql_cluster_backup_last_success_timestamp_seconds``: the newest complete backup's end
  time, from the store's catalog (catalog.list_backups: a backup counts once its manifest is
  written). Listing the store costs a LIST and a GET per backup, so it is read at most every
  ``refresh_seconds``, never per scrape (every pod is scraped every 30 s). 0 when the store
  holds no complete backup: a cluster that has never been backed up is as stale as it gets,
  and the alert must say so rather than wait for a first backup that may never come. Until
  the catalog has been read once (the store unreachable since the start) the gauge is absent:
  a made-up time would be worse, and the archive lag alert covers an unreachable store on the
  primary.
- ``mysql_cluster_backup_interval_seconds``: the schedule's interval, which the component
  derives from the CronJob schedule (components/_validate.py, cron_interval_seconds) and hands
  over as ``BACKUP_INTERVAL_SECONDS``.
- ``mysql_cluster_backup_verification_ok`` and ``..._verification_timestamp_seconds``: what
  the newest recorded verification (``backups/<id>/verification.json``, written by the
  verification CronJob's verify.sh) found, 1 or 0, and when. Read with the catalog, at the
  same pace. Absent while no backup has been verified (verification is optional), so
  MySQLBackupVerificationFailed fires only on a verification that failed.
- ``mysql_cluster_binlog_archive_lag_seconds``: on the recorded primary, now minus the start
  of the last successful archive pass (a pass archives everything closed when it started),
  counted from when the pod became primary if no pass has succeeded since: a pass that hangs
  or keeps failing makes it grow. 0 on every other pod: binlog-archive.sh archives only on the
  recorded primary, so a replica (or every pod, while the record is fenced) has nothing it
  should have archived, and reporting its idle time as lag would fire the alert on every
  replica. The loop tells the process which it is at every tick (``pass`` or ``idle``).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from mysqlbackup import catalog
from mysqlbackup.store import StoreError

LAST_SUCCESS = "mysql_cluster_backup_last_success_timestamp_seconds"
INTERVAL = "mysql_cluster_backup_interval_seconds"
ARCHIVE_LAG = "mysql_cluster_binlog_archive_lag_seconds"
VERIFICATION_OK = "mysql_cluster_backup_verification_ok"
VERIFICATION_TIME = "mysql_cluster_backup_verification_timestamp_seconds"


@dataclass(frozen=True)
class MetricsSettings:
    """What the exporter serves, from archive-serve's options."""

    port: int
    interval_seconds: int
    refresh_seconds: float = 60.0
    address: str = "0.0.0.0"  # noqa: S104 (a pod's port, scraped from other pods)

    def __post_init__(self) -> None:
        problems = [f"{name}: got {value!r}; must be positive"
                    for name, value in (("port", self.port),
                                        ("interval_seconds", self.interval_seconds),
                                        ("refresh_seconds", self.refresh_seconds))
                    if value <= 0]
        if self.port > 65535:
            problems.append(f"port: got {self.port!r}; must be at most 65535")
        if problems:
            raise ValueError("invalid backup metrics settings: " + "; ".join(problems))


class ArchiveState:
    """When this pod last archived successfully, as the archive loop reports it."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._primary_since: float | None = None
        self._last_success: float | None = None

    def idle(self) -> None:
        """Not the recorded primary at this tick: nothing to archive."""
        with self._lock:
            self._primary_since = None
            self._last_success = None

    def pass_started(self) -> float:
        """A pass as primary begins; returns its start, for :meth:`pass_succeeded`."""
        started = self._clock()
        with self._lock:
            if self._primary_since is None:
                self._primary_since = started
        return started

    def pass_succeeded(self, started: float) -> None:
        with self._lock:
            self._last_success = started

    def lag_seconds(self) -> float:
        with self._lock:
            if self._primary_since is None:
                return 0.0
            since = max(self._primary_since, self._last_success or self._primary_since)
        return max(0.0, self._clock() - since)


def _read_failed(what: str, error: Exception) -> None:
    sys.stderr.write(f"mysqlbackup metrics: reading {what} failed: {error}\n")
    sys.stderr.flush()


class BackupCollector(Collector):
    """The gauges, the store's part (catalog, newest verification) cached for
    ``refresh_seconds``."""

    def __init__(self, list_complete: Callable[[], Sequence[catalog.Manifest]],
                 settings: MetricsSettings, archive: ArchiveState,
                 clock: Callable[[], float] = time.monotonic, *,
                 newest_verification: Callable[[], catalog.Verification | None] | None = None
                 ) -> None:
        self._list_complete = list_complete
        self._newest_verification = newest_verification
        self._settings = settings
        self._archive = archive
        self._clock = clock
        self._lock = threading.Lock()
        self._read_at: float | None = None
        self._last_success: float | None = None
        self._verification: catalog.Verification | None = None

    def _read_store(self) -> tuple[float | None, catalog.Verification | None]:
        with self._lock:
            now = self._clock()
            if self._read_at is None or now - self._read_at >= self._settings.refresh_seconds:
                # A failed read is retried only after the same wait: a store that is down
                # must not be hammered by every scrape; it keeps what was read last.
                self._read_at = now
                try:
                    complete = self._list_complete()
                except (StoreError, ValueError, OSError) as error:
                    _read_failed("the backup catalog", error)
                else:
                    self._last_success = max(
                        (manifest.ended.timestamp() for manifest in complete), default=0.0)
                if self._newest_verification is not None:
                    try:
                        self._verification = self._newest_verification()
                    except (StoreError, ValueError, OSError) as error:
                        _read_failed("the newest verification", error)
            return self._last_success, self._verification

    def collect(self) -> Iterable[GaugeMetricFamily]:
        newest, verification = self._read_store()
        if newest is not None:
            yield GaugeMetricFamily(LAST_SUCCESS, "End time of the newest complete backup in "
                                    "the store (0: none)", value=newest)
        if verification is not None:
            yield GaugeMetricFamily(VERIFICATION_OK, "1 if the newest recorded backup "
                                    "verification restored what the archive promises, else 0",
                                    value=1.0 if verification.ok else 0.0)
            yield GaugeMetricFamily(VERIFICATION_TIME, "When the newest recorded backup "
                                    "verification ran", value=verification.verified.timestamp())
        yield GaugeMetricFamily(INTERVAL, "The backup schedule's longest gap between runs",
                                value=self._settings.interval_seconds)
        yield GaugeMetricFamily(ARCHIVE_LAG, "Seconds since the last successful binlog archive "
                                "pass on the recorded primary (0 elsewhere)",
                                value=self._archive.lag_seconds())


def serve(list_complete: Callable[[], Sequence[catalog.Manifest]], settings: MetricsSettings,
          archive: ArchiveState, *,
          newest_verification: Callable[[], catalog.Verification | None] | None = None) -> None:
    """Starts the HTTP endpoint on a daemon thread; it ends with the process."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BackupCollector(list_complete, settings, archive,
                                      newest_verification=newest_verification))
    start_http_server(settings.port, addr=settings.address, registry=registry)


__all__ = ["ARCHIVE_LAG", "INTERVAL", "LAST_SUCCESS", "VERIFICATION_OK", "VERIFICATION_TIME",
           "ArchiveState", "BackupCollector", "MetricsSettings", "serve"]
