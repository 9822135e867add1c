"""What differs between MySQL 8.4 and MariaDB: versions, images and tools.

Everything flavor-specific lives here so the component, the ReplicationInit provider
and the tests never branch on a flavor name themselves. SQL dialect differences are
the sharpest edge: MySQL 8.4 removed CHANGE MASTER TO, START/STOP SLAVE and SHOW SLAVE
STATUS, while MariaDB 10.11 rejects CHANGE REPLICATION SOURCE TO.

The pod-level facts (the image's user, socket directory and root-password variables)
live here too: the StatefulSet must match what each image's entrypoint expects, and
getting one wrong only shows up on a real cluster.

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
class ReplicaStatusColumns:
    """Column names of ``SHOW REPLICA STATUS``: MariaDB kept the Slave_/Master_ names."""

    io_running: str
    sql_running: str
    seconds_behind: str
    source_host: str
    last_error: str


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
    client_binary: str
    change_source_sql: str
    start_replica_sql: str
    stop_replica_sql: str
    replica_status_sql: str
    binary_log_status_sql: str
    replica_status: ReplicaStatusColumns

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
        client_binary="mysql",
        # pymysql placeholders; GTID auto-positioning, and the source's RSA key because
        # caching_sha2_password over a non-TLS connection needs it.
        change_source_sql=(
            "CHANGE REPLICATION SOURCE TO SOURCE_HOST=%(host)s, SOURCE_PORT=%(port)s, "
            "SOURCE_USER=%(user)s, SOURCE_PASSWORD=%(password)s, SOURCE_AUTO_POSITION=1, "
            "GET_SOURCE_PUBLIC_KEY=1"
        ),
        start_replica_sql="START REPLICA",
        stop_replica_sql="STOP REPLICA",
        replica_status_sql="SHOW REPLICA STATUS",
        binary_log_status_sql="SHOW BINARY LOG STATUS",
        replica_status=ReplicaStatusColumns(
            io_running="Replica_IO_Running",
            sql_running="Replica_SQL_Running",
            seconds_behind="Seconds_Behind_Source",
            source_host="Source_Host",
            last_error="Last_Error",
        ),
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
        client_binary="mariadb",
        # MariaDB rejects CHANGE REPLICATION SOURCE TO; GTID positioning is slave_pos,
        # set beforehand with SET GLOBAL gtid_slave_pos.
        change_source_sql=(
            "CHANGE MASTER TO MASTER_HOST=%(host)s, MASTER_PORT=%(port)s, "
            "MASTER_USER=%(user)s, MASTER_PASSWORD=%(password)s, MASTER_USE_GTID=slave_pos"
        ),
        start_replica_sql="START REPLICA",
        stop_replica_sql="STOP REPLICA",
        replica_status_sql="SHOW REPLICA STATUS",
        binary_log_status_sql="SHOW MASTER STATUS",
        replica_status=ReplicaStatusColumns(
            io_running="Slave_IO_Running",
            sql_running="Slave_SQL_Running",
            seconds_behind="Seconds_Behind_Master",
            source_host="Master_Host",
            last_error="Last_Error",
        ),
    ),
}
