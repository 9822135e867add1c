"""The pod scripts follow the primary record, not the ordinal.

The record (components/mysql/_record.py) reaches a pod as the ConfigMap mounted at
RECORD_DIR, files named after its keys, exactly as ``PrimaryRecord.data()`` writes them.
These tests write those files the way the kubelet presents them (each key a symlink into
a ``..data`` directory) and run the real scripts' functions and init-config.sh.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from components.mysql._record import EPOCH_LABEL, ROLE_LABEL, PrimaryRecord
from tests.support.pod_scripts import SCRIPTS, bash, output


def _record_dir(tmp_path: Path, record: PrimaryRecord | None) -> Path:
    """A ConfigMap volume as the kubelet writes it; empty when there is no record."""
    volume = tmp_path / "record"
    volume.mkdir()
    if record is None:
        return volume
    data = volume / "..2026_12_03_08_00_00.000000001"
    data.mkdir()
    for key, value in record.data().items():
        (data / key).write_text(value)
        (volume / key).symlink_to(Path("..data") / key)
    (volume / "..data").symlink_to(data.name)
    return volume


CASES = [
    # record, ordinal -> authority, role of that ordinal, epoch
    (None, 0, "0", "primary", "0"),
    (None, 2, "0", "replica", "0"),
    (PrimaryRecord(2, 9), 2, "2", "primary", "9"),
    (PrimaryRecord(2, 9), 0, "2", "replica", "9"),
    # Fenced: nobody is primary; the one moved away from holds the data.
    (PrimaryRecord(None, 10, previous=2), 2, "2", "replica", "10"),
    (PrimaryRecord(None, 10, previous=2), 1, "2", "replica", "10"),
]


@pytest.mark.parametrize("case", CASES)
def test_record_functions(tmp_path: Path,
                          case: tuple[PrimaryRecord | None, int, str, str, str]) -> None:
    record, ordinal, authority, role, epoch = case
    env = {"RECORD_DIR": str(_record_dir(tmp_path, record))}
    assert output("recorded_authority", env=env).strip() == authority
    assert output(f"recorded_role {ordinal}", env=env).strip() == role
    assert output("recorded_epoch", env=env).strip() == epoch


def test_without_a_record_dir_ordinal_0_starts_the_cluster() -> None:
    assert output("recorded_authority; recorded_role 0; recorded_epoch").split() == [
        "0", "primary", "0"]


@pytest.mark.parametrize("bad", ["one", "-1", ""])
def test_a_malformed_record_is_an_error_naming_it(tmp_path: Path, bad: str) -> None:
    volume = tmp_path / "record"
    volume.mkdir()
    (volume / "primary").write_text("none")
    (volume / "previous").write_text(bad)
    (volume / "epoch").write_text("3")
    result = bash("recorded_authority", env={"RECORD_DIR": str(volume)})
    assert result.returncode != 0
    assert "the primary record's previous" in result.stderr
    assert result.stdout == ""


def _init_config(tmp_path: Path, record: PrimaryRecord | None,
                 ordinal: int) -> subprocess.CompletedProcess[str]:
    bash_path = shutil.which("bash")
    assert bash_path is not None
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CONFIG_DIR": str(tmp_path / "cm"),
           "POD_NAME": f"orders-db-{ordinal}", "SERVER_ID_BASE": "5000",
           "CONF_DIR": str(tmp_path / "conf"), "MYSQL_PORT": "3306",
           "PEER_HOST_TEMPLATE": "orders-db-{ordinal}.orders-db-headless",
           "ROLE_LABEL": ROLE_LABEL, "EPOCH_LABEL": EPOCH_LABEL,
           "ROLE_LABELS_FILE": str(tmp_path / "role-labels.json"),
           "RECORD_DIR": str(_record_dir(tmp_path, record))}
    # The ConfigMap as the pod sees it: the scripts and one flavor's server configs.
    shutil.copytree(SCRIPTS, tmp_path / "cm")
    for cnf in (SCRIPTS.parent / "conf" / "mariadb").glob("*.cnf"):
        shutil.copy(cnf, tmp_path / "cm" / cnf.name)
    return subprocess.run([bash_path, str(tmp_path / "cm" / "init-config.sh")], env=env,
                          capture_output=True, text=True, check=False, timeout=30)


@pytest.mark.parametrize(("record", "ordinal", "role"), [
    (None, 0, "primary"), (PrimaryRecord(1, 4), 0, "replica"),
    (PrimaryRecord(1, 4), 1, "primary"), (PrimaryRecord(None, 5, previous=1), 1, "replica"),
])
def test_init_config_takes_the_role_and_labels_from_the_record(
        tmp_path: Path, record: PrimaryRecord | None, ordinal: int, role: str) -> None:
    result = _init_config(tmp_path, record, ordinal)
    assert result.returncode == 0, result.stderr
    conf = tmp_path / "conf"
    assert sorted(p.name for p in conf.iterdir()) == sorted(["server-id.cnf", f"{role}.cnf"])
    assert f"server_id = {5000 + ordinal}" in (conf / "server-id.cnf").read_text()
    epoch = str(record.epoch) if record else "0"
    patch = json.loads((tmp_path / "role-labels.json").read_text())
    assert patch == {"metadata": {"labels": {ROLE_LABEL: role, EPOCH_LABEL: epoch}}}


@pytest.mark.parametrize(("current", "wanted", "reached"), [
    ("0-1-40", "0-2-33", True),      # replication ran past the clone's position
    ("0-1-31", "0-2-33", False),     # a promoted donor's old replica position: behind
    ("0-2-33", "0-2-33", True),
    ("0-1-40,1-1-5", "0-2-33,1-3-7", False),  # behind in one domain
    ("0-1-40,1-1-9", "0-2-33,1-3-7", True),
    ("1-1-40", "0-2-33", False),     # the domain is missing
    ("", "0-2-33", False),
])
def test_mariadb_gtid_reached(current: str, wanted: str, reached: bool) -> None:
    result = bash(f"mariadb_gtid_reached '{current}' '{wanted}'", flavor="mariadb")
    assert (result.returncode == 0) is reached, result.stderr
