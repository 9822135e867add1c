"""A real MariaDB server as a local process: its own data dir, socket and port on 127.0.0.1.

Debian's mariadbd, mariadb-install-db, mariadb-backup and mbstream are the real tools the
MariaDB image runs; only the container is missing. ``include_dir`` lets a test point the
server at a conf.d directory written by the pod scripts, exactly as the image reads
/etc/mysql/conf.d.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pymysql
import pymysql.cursors

from tests.support.procs import (
    LOCALHOST,
    ManagedProcess,
    free_port,
    require_binary,
    run,
    wait_until,
)

BINARIES = ("mariadbd", "mariadb-install-db", "mariadb", "mariadb-backup", "mbstream")


def random_password() -> str:
    return secrets.token_urlsafe(18)


class MariaDBServer:
    """One mariadbd. ``initialize()`` once, then ``start()``/``stop()``/``kill()`` freely."""

    def __init__(self, base: Path, *, name: str = "mariadb", port: int | None = None,
                 server_id: int = 1, include_dir: Path | None = None,
                 extra_config: str = "", data_dir: Path | None = None) -> None:
        require_binary(*BINARIES)
        self.name = name
        self.base = base
        self.port = port or free_port()
        self.data_dir = data_dir or base / "data"
        self.socket = base / "mysqld.sock"
        self.defaults_file = base / "my.cnf"
        self.root_password = random_password()
        include = f"!includedir {include_dir}\n" if include_dir else ""
        # server-id here is a fallback; a conf.d file written by init scripts overrides it
        # because !includedir comes after the [mysqld] section.
        base.mkdir(parents=True, exist_ok=True)
        self.defaults_file.write_text(
            "[mysqld]\n"
            f"datadir={self.data_dir}\n"
            f"socket={self.socket}\n"
            f"port={self.port}\n"
            f"bind-address={LOCALHOST}\n"
            f"pid-file={base / 'mysqld.pid'}\n"
            f"log-error={base / 'error.log'}\n"
            "user=root\n"
            f"server-id={server_id}\n"
            "skip-name-resolve\n"
            "innodb-buffer-pool-size=64M\n"
            "innodb-log-file-size=48M\n"
            f"{extra_config}\n"
            f"{include}"
        )
        self.process = ManagedProcess(name, ["mariadbd", f"--defaults-file={self.defaults_file}"],
                                      log_dir=base)

    def initialize(self) -> MariaDBServer:
        """mariadb-install-db, then a root password and no anonymous users (as the image does)."""
        run(["mariadb-install-db", f"--defaults-file={self.defaults_file}", "--user=root",
             "--auth-root-authentication-method=normal", "--skip-test-db"], timeout=120)
        self.start(password="")
        try:
            self._secure_accounts()
        except BaseException:
            self.stop()
            raise
        return self

    def _secure_accounts(self) -> None:
        with self.connect(password="", host=None) as conn, conn.cursor() as cur:
            cur.execute("DELETE FROM mysql.global_priv WHERE User='' OR "
                        "(User='root' AND Host NOT IN ('localhost', '127.0.0.1'))")
            cur.execute("FLUSH PRIVILEGES")
            cur.execute("ALTER USER 'root'@'localhost' IDENTIFIED BY %s", (self.root_password,))
            cur.execute("CREATE OR REPLACE USER 'root'@'127.0.0.1' IDENTIFIED BY %s",
                        (self.root_password,))
            cur.execute("GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION")
            cur.execute("FLUSH PRIVILEGES")

    def start(self, *, password: str | None = None, timeout: float = 60) -> MariaDBServer:
        """Start and wait until root can connect (``password=""`` before initialization)."""
        self.process.start()

        def ready() -> bool:
            if not self.process.running():
                raise RuntimeError(f"{self.name} exited:\n{self.error_log_tail()}")
            with self.connect(password=password, host=None):
                return True

        wait_until(ready, timeout=timeout, what=f"{self.name} to accept connections")
        return self

    def stop(self) -> None:
        self.process.stop(timeout=60)

    def kill(self) -> None:
        self.process.kill()

    def running(self) -> bool:
        return self.process.running()

    def error_log_tail(self, lines: int = 30) -> str:
        path = self.base / "error.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def connect(self, *, user: str = "root", password: str | None = None,
                host: str | None = LOCALHOST, database: str | None = None,
                autocommit: bool = True) -> pymysql.connections.Connection[Any]:
        """TCP on 127.0.0.1 by default; ``host=None`` uses the unix socket.

        ``password=None`` means root's own password (only meaningful for root).
        """
        pw = self.root_password if password is None else password
        # ssl_disabled: pymysql builds a fresh TLS context on every connect (~100 ms);
        # loopback test servers gain nothing from it.
        kwargs: dict[str, Any] = {"user": user, "password": pw, "database": database,
                                  "autocommit": autocommit, "connect_timeout": 5,
                                  "ssl_disabled": True}
        if host is None:
            kwargs["unix_socket"] = str(self.socket)
        else:
            kwargs.update(host=host, port=self.port)
        return pymysql.connect(**kwargs)

    @contextmanager
    def cursor(self, **connect_args: Any) -> Iterator[pymysql.cursors.DictCursor]:
        with self.connect(**connect_args) as conn, conn.cursor(pymysql.cursors.DictCursor) as cur:
            yield cur

    def query(self, sql: str, args: Any = None, **connect_args: Any) -> list[dict[str, Any]]:
        with self.cursor(**connect_args) as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())

    def client_env(self) -> dict[str, str]:
        """Environment for the `mariadb` CLI to reach this server as root without argv secrets."""
        return {"MYSQL_PWD": self.root_password, "MYSQL_HOST": LOCALHOST,
                "MYSQL_TCP_PORT": str(self.port)}


def mariadb_version() -> str:
    return run(["mariadbd", "--version"]).stdout.strip()


__all__ = ["BINARIES", "MariaDBServer", "mariadb_version", "random_password"]

