"""What differs between MySQL 8.4 and MariaDB: versions, images and tools.

Everything flavor-specific lives here so the component, the ReplicationInit provider
and the tests never branch on a flavor name themselves. SQL dialect differences are
the sharpest edge: MySQL 8.4 removed CHANGE MASTER TO, START/STOP SLAVE and SHOW SLAVE
STATUS, while MariaDB 10.11 rejects CHANGE REPLICATION SOURCE TO.

Images are pinned to exact versions. For MySQL the backup tool is Percona XtraBackup,
whose 8.4 series (8.4.0-N) is the one that reads MySQL 8.4 data files; the default pair
is the one Percona's own operator certifies together. MariaDB ships mariadb-backup and
mbstream in its server image, so one image serves every container.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Flavor = Literal["mysql", "mariadb"]


@dataclass(frozen=True)
class FlavorSpec:
    name: Flavor
    default_version: str
    version_pattern: re.Pattern[str]
    versions_text: str
    server_repository: str
    # None: the server image carries the backup tool itself.
    backup_image_pinned: str | None

    def server_image(self, version: str) -> str:
        return f"{self.server_repository}:{version}"

    def backup_image(self, version: str) -> str:
        return self.backup_image_pinned or self.server_image(version)


FLAVORS: dict[Flavor, FlavorSpec] = {
    "mysql": FlavorSpec(
        name="mysql",
        default_version="8.4.5",
        version_pattern=re.compile(r"^8\.4\.\d+$"),
        versions_text="8.4.x (the LTS series; 5.7 is end of life), such as 8.4.5",
        server_repository="mysql",
        backup_image_pinned="percona/percona-xtrabackup:8.4.0-3.1",
    ),
    "mariadb": FlavorSpec(
        name="mariadb",
        default_version="11.4.8",
        version_pattern=re.compile(r"^(10\.11|11\.4)\.\d+$"),
        versions_text="the LTS series 10.11.x and 11.4.x, such as 11.4.8 or 10.11.14",
        server_repository="mariadb",
        backup_image_pinned=None,
    ),
}
