"""MariaDB 11.1+ backup file names, pinned: no 11.x mariadb-backup runs here.

From 11.1 mariadb-backup writes ``mariadb_backup_<kind>`` where older versions (and XtraBackup)
write ``xtrabackup_<kind>``. The clone path runs on 10.11 only (test_pod_scripts.py), so the
new names reach the scripts only here and through the 11.4 replica's seeded binlog info
(tests/support/pods.py); every kind the scripts read is pinned, for both names.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.pod_scripts import bash, output

# Every kind lib.sh's backup_meta_file is asked for (clone.sh and backup_gtid).
KINDS = ("binlog_info", "slave_info", "checkpoints", "info")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("prefix", ["mariadb_backup", "xtrabackup"])
def test_each_kind_is_found_under_either_name(tmp_path: Path, kind: str, prefix: str) -> None:
    (tmp_path / f"{prefix}_{kind}").write_text("x\n")
    found = output(f"backup_meta_file '{tmp_path}' {kind}", flavor="mariadb")
    assert found == f"{tmp_path}/{prefix}_{kind}\n"


@pytest.mark.parametrize("kind", KINDS)
def test_the_11_1_name_wins_when_both_are_present(tmp_path: Path, kind: str) -> None:
    for prefix in ("xtrabackup", "mariadb_backup"):
        (tmp_path / f"{prefix}_{kind}").write_text("x\n")
    found = output(f"backup_meta_file '{tmp_path}' {kind}", flavor="mariadb")
    assert found == f"{tmp_path}/mariadb_backup_{kind}\n"


def test_a_missing_kind_is_reported_as_missing(tmp_path: Path) -> None:
    (tmp_path / "mariadb_backup_info").write_text("x\n")
    assert bash(f"backup_meta_file '{tmp_path}' checkpoints", flavor="mariadb").returncode == 1


def test_an_11_1_replica_backup_positions_from_its_slave_info(tmp_path: Path) -> None:
    (tmp_path / "mariadb_backup_binlog_info").write_text("mysql-bin.000003\t77\t0-7001-4\n")
    (tmp_path / "mariadb_backup_slave_info").write_text(
        "SET GLOBAL gtid_slave_pos = '0-7000-31';\nCHANGE MASTER TO master_use_gtid = slave_pos;\n")
    assert output(f"backup_gtid '{tmp_path}' 2>/dev/null", flavor="mariadb") == "0-7000-31\n"
