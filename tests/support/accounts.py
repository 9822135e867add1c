"""The accounts the pod scripts create, for tests of what uses them.

The ReplicationInit provider logs in as the admin account that bootstrap-users.sh
creates. Tests of the provider must give it exactly those privileges, not a list of
their own, or a grant the provider needs but the pods never give would pass here and
fail in a cluster. So the statements come from lib.sh's ``bootstrap_users_sql`` itself.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.mariadb import MariaDBServer
from tests.support.procs import run

SCRIPTS = Path(__file__).resolve().parents[2] / "components" / "mysql" / "scripts"


def bootstrap_statements(*, flavor: str, passwords: dict[str, str]) -> list[str]:
    """What bootstrap-users.sh runs, one statement per item.

    ``passwords`` maps ADMIN/REPLICATION/MONITOR/BACKUP/TOPOLOGY to their passwords.
    """
    env = {"MYSQL_FLAVOR": flavor, "CONFIG_DIR": str(SCRIPTS),
           "ADMIN_USER": "admin", "REPLICATION_USER": "repl", "MONITOR_USER": "monitor",
           "BACKUP_USER": "backup", "TOPOLOGY_USER": "topology",
           **{f"{role}_PASSWORD": password for role, password in passwords.items()}}
    script = f'set -euo pipefail; source "{SCRIPTS}/lib.sh"; bootstrap_users_sql'
    sql = run(["bash", "-c", script], env=env).stdout
    return [line for line in sql.splitlines() if line.strip()]


def create_accounts(server: MariaDBServer, *, users: set[str],
                    passwords: dict[str, str]) -> None:
    """Run the bootstrap statements that concern ``users`` (e.g. {"admin"}) on ``server``."""
    statements = bootstrap_statements(flavor="mariadb", passwords=passwords)
    chosen = [s for s in statements if any(f"'{user}'@" in s for user in users)]
    assert chosen, f"bootstrap_users_sql creates none of {sorted(users)}"
    with server.cursor() as cursor:
        for statement in chosen:
            cursor.execute(statement)
