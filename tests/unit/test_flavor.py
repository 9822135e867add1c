"""components.mysql.flavor: the facts of each flavor outside SQL, and what the pods get.

What the StatefulSet and the pod scripts rely on is pinned per flavor: the images each
container runs, the uid the images' entrypoints run as, and the environment the scripts
read instead of deciding tools and paths by flavor themselves (scripts/CONTRACT.md).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from components.mysql.flavor import FLAVORS

CONTRACT = Path(__file__).resolve().parents[2] / "components" / "mysql" / "scripts" / "CONTRACT.md"


def test_images_are_pinned_and_mysql_backs_up_with_its_own_image() -> None:
    mysql, mariadb = FLAVORS["mysql"], FLAVORS["mariadb"]
    assert mysql.server_image("8.4.5") == "mysql:8.4.5"
    assert mysql.backup_image("8.4.5") == "percona/percona-xtrabackup:8.4.0-3.1"
    assert mariadb.server_image("11.4.8") == "mariadb:11.4.8"
    assert mariadb.backup_image("11.4.8") == "mariadb:11.4.8"  # mariadb-backup ships in it


@pytest.mark.parametrize("name", sorted(FLAVORS))
def test_the_default_version_is_one_the_flavor_accepts(name: str) -> None:
    spec = FLAVORS[name]  # type: ignore[index]
    assert spec.version_pattern.fullmatch(spec.default_version)
    assert not spec.version_pattern.fullmatch(spec.default_version + "\n")


@pytest.mark.parametrize("name", sorted(FLAVORS))
def test_the_entrypoints_variables(name: str) -> None:
    spec = FLAVORS[name]  # type: ignore[index]
    prefix = name.upper()
    assert spec.root_password_file_env == f"{prefix}_ROOT_PASSWORD_FILE"
    assert spec.root_host_env == f"{prefix}_ROOT_HOST"
    assert (spec.uid, spec.gid) == (999, 999)


@pytest.mark.parametrize("name", sorted(FLAVORS))
def test_the_pod_environment_is_documented_in_the_contract(name: str) -> None:
    spec = FLAVORS[name]  # type: ignore[index]
    environment = spec.pod_environment()
    assert environment["MYSQL_SOCKET"].startswith(spec.socket_dir + "/")
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", CONTRACT.read_text(), re.MULTILINE))
    assert set(environment) <= documented, set(environment) - documented
