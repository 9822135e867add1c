"""``mysql.backup`` / ``mysql.restore`` stack config: bad input stops the program with every
problem named, before any resource is registered (the config path of tests/unit/test_config.py).
"""

from __future__ import annotations

from typing import Any

import pytest

from components.config import ConfigError, StackConfig, parse
from tests.support import mocks

PROJECT = "mysql-cluster"


def _parse(mysql: dict[str, Any]) -> StackConfig:
    raw = {f"{PROJECT}:namespace": "apps", f"{PROJECT}:mysql": mysql}
    return parse(mocks.config_map(raw), stack="dev")


STORE = {"enabled": True, "endpoint": "http://store.storage:8333", "bucket": "db-backups",
         "credentialsSecret": "backup-store"}


def test_defaults_leave_backups_off_and_restore_unset() -> None:
    config = _parse({})
    assert not config.mysql.backup.enabled
    assert config.mysql.backup.archive_interval_seconds == 10
    assert config.mysql.restore.backup is None


def test_a_complete_store_and_a_restore_point_are_read() -> None:
    config = _parse({"backup": {**STORE, "retention": {"count": 3, "maxAgeDays": 14}},
                     "restore": {"backup": "latest", "pointInTime": "2026-12-03T08:00:00Z"}})
    assert config.mysql.backup.bucket == "db-backups"
    assert config.mysql.backup.retention.count == 3
    assert config.mysql.restore.point_in_time == "2026-12-03T08:00:00Z"
    assert _parse({"backup": STORE, "restore": {"backup": "latest",
                                                 "pointInTime": "0-1-42"}}).mysql.restore


def test_enabled_backups_need_endpoint_bucket_and_secret() -> None:
    with pytest.raises(ConfigError) as raised:
        _parse({"backup": {"enabled": True}})
    message = str(raised.value)
    for key in ("endpoint", "bucket", "credentialsSecret"):
        assert f"mysql.backup.{key}" in message


@pytest.mark.parametrize(("mysql", "fragment"), [
    ({"backup": {**STORE, "bucket": "Bad_Bucket"}}, "mysql.backup.bucket: got 'Bad_Bucket'"),
    ({"backup": {**STORE, "endpoint": "store:8333"}}, "must be an http(s) URL"),
    ({"backup": {**STORE, "archiveIntervalSeconds": 0}}, "must be between 1 and 3600"),
    ({"backup": STORE, "restore": {"backup": "latest", "pointInTime": "yesterday"}},
     "mysql.restore.pointInTime: got 'yesterday'"),
    ({"backup": STORE, "restore": {"backup": "latest",
                                    "pointInTime": "2026-12-03T08:00:00"}},
     "RFC 3339 time with a zone"),
    ({"restore": {"backup": "latest"}}, "a restore reads the store that mysql.backup names"),
    ({"backup": {**STORE, "enabled": False, "credentialsSecret": None},
      "restore": {"backup": "latest"}}, "a restore reads the store that mysql.backup names"),
    ({"flavor": "mysql", "backup": {**STORE, "enabled": False},
      "restore": {"backup": "latest"}}, "restores support MariaDB only so far"),
    ({"flavor": "mysql", "backup": STORE}, "support MariaDB only so far"),
    ({"backup": STORE, "restore": {"pointInTime": "0-1-4"}}, "needs restore.backup"),
])
def test_bad_backup_config_is_refused_naming_the_key(mysql: dict[str, Any],
                                                     fragment: str) -> None:
    with pytest.raises(ConfigError) as raised:
        _parse(mysql)
    assert fragment in str(raised.value)


def test_verification_is_off_by_default_and_runs_an_hour_after_the_backup() -> None:
    verify = _parse({"backup": STORE}).mysql.backup.verify
    assert not verify.enabled
    assert (verify.schedule, _parse({}).mysql.backup.schedule) == ("0 4 * * *", "0 3 * * *")
    chosen = _parse({"backup": {**STORE, "verify": {"enabled": True,
                                                     "schedule": "30 5 * * 0"}}})
    assert chosen.mysql.backup.verify.enabled
    assert chosen.mysql.backup.verify.schedule == "30 5 * * 0"


@pytest.mark.parametrize(("mysql", "fragment"), [
    ({"backup": {"verify": {"enabled": True}}},
     "mysql.backup.verify.enabled: got True; needs mysql-cluster:mysql.backup.enabled"),
    ({"backup": {**STORE, "enabled": False, "verify": {"enabled": True}}},
     "needs mysql-cluster:mysql.backup.enabled"),
    ({"backup": {**STORE, "verify": {"enabled": True, "schedule": "every night"}}},
     "mysql.backup.verify.schedule: got 'every night'; must be a cron schedule"),
    ({"name": "a" * 39, "backup": {**STORE, "verify": {"enabled": True}}},
     "is too long for the verification CronJob"),
])
def test_bad_verification_config_is_refused_naming_the_key(mysql: dict[str, Any],
                                                           fragment: str) -> None:
    with pytest.raises(ConfigError) as raised:
        _parse(mysql)
    assert fragment in str(raised.value)
    # A 38-character name leaves room for the CronJob's.
    assert _parse({"name": "a" * 38, "backup": {**STORE, "verify": {"enabled": True}}})
