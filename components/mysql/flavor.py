"""What differs between MySQL 8.4 and MariaDB outside SQL: versions, images, pods, tools.

Every flavor fact the component and the pods need lives here, so nothing else branches on
a flavor name for them: the StatefulSet follows what each image's entrypoint expects (the
image's user, socket directory and root-password variables; getting one wrong only shows
up on a real cluster), and the pods get the tool names and the socket as environment
(:meth:`FlavorSpec.pod_environment`, documented in scripts/CONTRACT.md) instead of each
script deciding them. The SQL each flavor speaks is the other half, all of it in one
module: :mod:`components.mysql._replication_sql` (MySQL 8.4 removed CHANGE MASTER TO,
START/STOP SLAVE and SHOW SLAVE STATUS, while MariaDB 10.11 rejects CHANGE REPLICATION
SOURCE TO).

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
    # The official images run as mysql:mysql, uid and gid 999; every container of the pod
    # runs as that user so the data volume has one owner.
    uid: int
    gid: int
    # Where the server puts its socket and pid file; an emptyDir, as the root fs is read-only.
    socket_dir: str
    # The image entrypoint's variables: <PREFIX>_ROOT_PASSWORD[_FILE], <PREFIX>_ROOT_HOST.
    env_prefix: str
    # The pods' tools: the SQL client and admin tool of the server image, the backup and
    # stream tool of the backup image, and the backup_type the backup tool writes into its
    # checkpoints file once --prepare has succeeded.
    client_tool: str
    admin_tool: str
    backup_tool: str
    stream_tool: str
    prepared_backup_type: str

    def server_image(self, version: str) -> str:
        return f"{self.server_repository}:{version}"

    def backup_image(self, version: str) -> str:
        return self.backup_image_pinned or self.server_image(version)

    @property
    def root_password_env(self) -> str:
        return f"{self.env_prefix}_ROOT_PASSWORD"

    @property
    def root_password_file_env(self) -> str:
        """``<PREFIX>_ROOT_PASSWORD_FILE``: both official entrypoints' file_env reads the root
        password from this file (trailing newlines dropped), so it never sits in the pod spec;
        setting the plain variable too is an error there."""
        return f"{self.root_password_env}_FILE"

    @property
    def root_host_env(self) -> str:
        return f"{self.env_prefix}_ROOT_HOST"

    @property
    def socket(self) -> str:
        """The server's unix socket, where the image's own config puts it."""
        return f"{self.socket_dir}/mysqld.sock"

    def pod_environment(self) -> dict[str, str]:
        """What the pod scripts need to know of the flavor besides its SQL (CONTRACT.md)."""
        return {"MYSQL_SOCKET": self.socket, "MYSQL_CLIENT": self.client_tool,
                "MYSQL_ADMIN_TOOL": self.admin_tool, "BACKUP_TOOL": self.backup_tool,
                "BACKUP_STREAM_TOOL": self.stream_tool,
                "BACKUP_PREPARED_TYPE": self.prepared_backup_type}


FLAVORS: dict[Flavor, FlavorSpec] = {
    "mysql": FlavorSpec(
        name="mysql",
        default_version="8.4.5",
        version_pattern=re.compile(r"^8\.4\.\d+$"),
        versions_text="8.4.x (the LTS series; 5.7 is end of life), such as 8.4.5",
        server_repository="mysql",
        backup_image_pinned="percona/percona-xtrabackup:8.4.0-3.1",
        uid=999,
        gid=999,
        socket_dir="/var/run/mysqld",
        env_prefix="MYSQL",
        client_tool="mysql",
        admin_tool="mysqladmin",
        backup_tool="xtrabackup",
        stream_tool="xbstream",
        prepared_backup_type="full-prepared",
    ),
    "mariadb": FlavorSpec(
        name="mariadb",
        default_version="11.4.8",
        version_pattern=re.compile(r"^(10\.11|11\.4)\.\d+$"),
        versions_text="the LTS series 10.11.x and 11.4.x, such as 11.4.8 or 10.11.14",
        server_repository="mariadb",
        backup_image_pinned=None,
        uid=999,
        gid=999,
        socket_dir="/run/mysqld",
        env_prefix="MARIADB",
        client_tool="mariadb",
        admin_tool="mariadb-admin",
        backup_tool="mariadb-backup",
        stream_tool="mbstream",
        prepared_backup_type="log-applied",
    ),
}
