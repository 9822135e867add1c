"""components.mysql.credentials: where each password lives, and who may read it.

The names here are the contract between the Secret, the pod spec and the scripts
(scripts/CONTRACT.md, Credentials); a typo on either side only shows on a real cluster.
"""

from __future__ import annotations

import pytest

from components.mysql import credentials


def test_every_account_has_a_key_a_file_and_a_variable() -> None:
    assert credentials.file_variables("/run/secrets/x") == {
        "ROOT_PASSWORD_FILE": "/run/secrets/x/root-password",
        "ADMIN_PASSWORD_FILE": "/run/secrets/x/admin-password",
        "REPLICATION_PASSWORD_FILE": "/run/secrets/x/replication-password",
        "MONITOR_PASSWORD_FILE": "/run/secrets/x/monitor-password",
        "BACKUP_PASSWORD_FILE": "/run/secrets/x/backup-password",
        "TOPOLOGY_PASSWORD_FILE": "/run/secrets/x/topology-password",
    }


def test_an_unknown_account_is_refused_by_name() -> None:
    with pytest.raises(KeyError, match="unknown account 'roto'; known: root, admin"):
        credentials.file_variable("roto")


def test_containers_read_only_known_accounts_and_the_backup_container_fewer() -> None:
    for accounts in credentials.CONTAINER_PASSWORDS.values():
        assert set(accounts) <= set(credentials.PASSWORD_VARIABLES)
    assert set(credentials.CONTAINER_PASSWORDS["backup"]) < set(
        credentials.CONTAINER_PASSWORDS["mysql"])
    assert "admin" not in credentials.CONTAINER_PASSWORDS["backup"]
    assert credentials.FILE_MODE == 0o440  # group-readable for the images' mysql group only
