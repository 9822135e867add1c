"""The replication SQL of each flavor, and the rules that judge a replica's live state.

Everything here is pure: statements are data (:class:`Statement`), the replica's live
state is a normalized :class:`ReplicaStatus`, and :func:`replica_drift` /
:func:`replica_repair` decide what is wrong and what to do about it. The provider
(``replication.py``) only runs what these functions return, so the exact SQL sent to
MySQL 8.4 (which only exists in unit tests here) and MariaDB (which the integration
tests run) is checked statement by statement without a server.

Why statements mark their ``hidden`` parameter instead of being formatted: passwords travel
only as driver parameters, and an error message shows the statement with the secret
replaced, so a failing ``CHANGE MASTER TO`` names itself without leaking the password.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from components.mysql.flavor import FLAVORS, Flavor, FlavorSpec

# The account host of the replication user: replicas connect from pod IPs that change
# with every reschedule, so no narrower host pattern is stable.
REPLICATION_HOST = "%"


@dataclass(frozen=True)
class Statement:
    """One SQL statement with its driver parameters; ``hidden`` marks the password one.

    ``args`` is positional (``%s``) or named (``%(name)s``, as the flavor table writes
    CHANGE ... TO); ``hidden`` is then an index or a name.
    """

    sql: str
    args: tuple[object, ...] | Mapping[str, object] = ()
    hidden: int | str | None = None

    def display(self) -> str:
        """The statement as it would run, with the password (if any) replaced by ***."""
        if isinstance(self.args, Mapping):
            named = {k: "'***'" if k == self.hidden else _literal(v)
                     for k, v in self.args.items()}
            return self.sql % named
        shown = tuple("'***'" if i == self.hidden else _literal(a)
                      for i, a in enumerate(self.args))
        return self.sql % shown if shown else self.sql


def _literal(value: object) -> str:
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return str(value)


@dataclass(frozen=True)
class Limits:
    """Length limits the servers enforce (checked before anything runs)."""

    user: int
    password: int
    host: int = 255


@dataclass(frozen=True)
class ReplicaStatus:
    """One replica's replication state, the same shape for both flavors.

    ``configured`` is false when the replica has no replication source at all.
    ``io_state`` is ``Yes``, ``No`` or ``Connecting`` as the server reports it.
    """

    configured: bool
    source_host: str
    source_port: int
    source_user: str
    gtid_positioning: bool
    io_state: str
    sql_running: bool
    lag_seconds: int | None
    gtid_position: str
    last_io_errno: int
    last_io_error: str
    last_sql_errno: int
    last_sql_error: str
    read_only: bool
    super_read_only: bool | None  # MySQL only; MariaDB has no such variable
    server_id: int

    @property
    def running(self) -> bool:
        return self.io_state == "Yes" and self.sql_running

    def to_output(self) -> dict[str, Any]:
        return {
            "configured": self.configured,
            "source": f"{self.source_host}:{self.source_port}" if self.configured else "",
            "source_user": self.source_user,
            "gtid_positioning": self.gtid_positioning,
            "io_thread": self.io_state,
            "sql_thread_running": self.sql_running,
            "lag_seconds": self.lag_seconds,
            "gtid_position": self.gtid_position,
            "last_io_error": _error_text(self.last_io_errno, self.last_io_error),
            "last_sql_error": _error_text(self.last_sql_errno, self.last_sql_error),
            "read_only": self.read_only,
        }


def _error_text(errno: int, message: str) -> str:
    return f"{errno}: {message}" if errno else ""


@dataclass(frozen=True)
class Desired:
    """What a replica's replication source must be."""

    source_host: str
    source_port: int
    user: str
    max_lag_seconds: int


# Server errors that mean the replica holds a wrong password or user for its source;
# reconfiguring the source with the current credentials repairs them.
_AUTH_ERRORS = frozenset({1045, 1044, 2061, 1251})


def replica_drift(status: ReplicaStatus, desired: Desired) -> list[str]:
    """Every way the live replica differs from the stack; empty when it is as declared."""
    if not status.configured:
        return ["replication is not configured"]
    problems: list[str] = []
    if (status.source_host, status.source_port) != (desired.source_host, desired.source_port):
        problems.append(f"replicates from {status.source_host}:{status.source_port}, "
                        f"not {desired.source_host}:{desired.source_port}")
    if status.source_user != desired.user:
        problems.append(f"connects as {status.source_user!r}, not {desired.user!r}")
    if not status.gtid_positioning:
        problems.append("does not use GTID positioning")
    if status.io_state != "Yes":
        reason = f" ({_error_text(status.last_io_errno, status.last_io_error)})" if (
            status.last_io_errno) else ""
        problems.append(f"IO thread is {status.io_state}{reason}")
    if not status.sql_running:
        reason = f" ({_error_text(status.last_sql_errno, status.last_sql_error)})" if (
            status.last_sql_errno) else ""
        problems.append(f"SQL thread is stopped{reason}")
    if status.lag_seconds is not None and status.lag_seconds > desired.max_lag_seconds:
        problems.append(f"lags {status.lag_seconds}s behind (max {desired.max_lag_seconds}s)")
    if not status.read_only:
        problems.append("read_only is OFF")
    if status.super_read_only is False:
        problems.append("super_read_only is OFF")
    return problems


@dataclass(frozen=True)
class Repair:
    """What converge does to one replica: nothing, start the threads, or set the source."""

    set_source: bool
    start: bool

    @property
    def noop(self) -> bool:
        return not (self.set_source or self.start)


def replica_repair(status: ReplicaStatus, desired: Desired, *, rewrite_password: bool) -> Repair:
    """The smallest change that makes the replica replicate as declared.

    ``rewrite_password``: the replica may hold an old password (first create, rotation),
    and no server exposes the stored one, so it is set again.
    """
    wrong_source = (
        not status.configured
        or (status.source_host, status.source_port) != (desired.source_host, desired.source_port)
        or status.source_user != desired.user
        or not status.gtid_positioning
        or status.last_io_errno in _AUTH_ERRORS
    )
    if wrong_source or rewrite_password:
        return Repair(set_source=True, start=True)
    # A Connecting IO thread is already retrying on its own; START would change nothing.
    threads_up = status.io_state in ("Yes", "Connecting") and status.sql_running
    return Repair(set_source=False, start=not threads_up)


def _int(value: object, default: int = 0) -> int:
    if value is None or value == "":
        return default
    return int(str(value))


def _optional_int(value: object) -> int | None:
    return None if value is None or value == "" else int(str(value))


# MariaDB accepts REPLICATION REPLICA as a synonym and may print either.
_PRIVILEGE_SYNONYMS = {"REPLICATION REPLICA": "REPLICATION SLAVE"}
_GRANT = re.compile(r"^GRANT (?P<privileges>.+?) ON (?P<scope>\S+) TO ", re.IGNORECASE)


class Dialect:
    """The SQL one flavor speaks.

    Statements the flavor table (``flavor.py``) already spells are taken from there;
    what only replication management needs (account checks, GTID waits, the rest of the
    status columns) is added by the two subclasses.
    """

    flavor: Flavor
    limits: Limits
    primary_position: Statement
    replica_variables: Statement
    # The rest of SHOW REPLICA STATUS that flavor.ReplicaStatusColumns does not name.
    _port_column: str
    _user_column: str

    def __init__(self) -> None:
        self.spec: FlavorSpec = FLAVORS[self.flavor]
        self.columns = self.spec.replica_status
        self.stop = Statement(self.spec.stop_replica_sql)
        self.start = Statement(self.spec.start_replica_sql)
        self.status = Statement(self.spec.replica_status_sql)

    # --- primary: the replication account -------------------------------------------
    def create_user(self, user: str, password: str) -> Statement:
        return Statement("CREATE USER IF NOT EXISTS %s@%s IDENTIFIED BY %s",
                         (user, REPLICATION_HOST, password), hidden=2)

    def set_password(self, user: str, password: str) -> Statement:
        return Statement("ALTER USER %s@%s IDENTIFIED BY %s",
                         (user, REPLICATION_HOST, password), hidden=2)

    def revoke_all(self, user: str) -> Statement:
        return Statement("REVOKE ALL PRIVILEGES, GRANT OPTION FROM %s@%s",
                         (user, REPLICATION_HOST))

    def grant_replication(self, user: str) -> Statement:
        return Statement("GRANT REPLICATION SLAVE ON *.* TO %s@%s", (user, REPLICATION_HOST))

    def drop_user(self, user: str) -> Statement:
        return Statement("DROP USER IF EXISTS %s@%s", (user, REPLICATION_HOST))

    # The replication account lists its own grants (no privilege on mysql.* needed).
    own_grants = Statement("SHOW GRANTS")
    server_id = Statement("SELECT @@GLOBAL.server_id AS server_id")
    reset_all = Statement("RESET REPLICA ALL")

    @staticmethod
    def grants_exact(grant_lines: list[str]) -> bool:
        """True when the account holds REPLICATION SLAVE on *.* and nothing else."""
        found: set[tuple[str, str]] = set()
        for line in grant_lines:
            match = _GRANT.match(line)
            if match is None:
                return False  # a role grant or a proxy grant: more than replication
            if "WITH GRANT OPTION" in line.upper():
                return False
            scope = match["scope"].replace("`", "")
            for privilege in match["privileges"].split(","):
                name = _PRIVILEGE_SYNONYMS.get(privilege.strip().upper(),
                                               privilege.strip().upper())
                if name != "USAGE":
                    found.add((name, scope))
        return found == {("REPLICATION SLAVE", "*.*")}

    def position_from(self, row: Mapping[str, Any] | None) -> str:
        raise NotImplementedError

    # --- replicas -----------------------------------------------------------------------
    def change_source(self, host: str, port: int, user: str, password: str) -> Statement:
        return Statement(self.spec.change_source_sql,
                         {"host": host, "port": port, "user": user, "password": password},
                         hidden="password")

    def wait_for(self, position: str, seconds: int) -> Statement:
        raise NotImplementedError

    @staticmethod
    def wait_reached(result: object) -> bool:
        """Both wait functions return 0 once the position is applied (timeout: -1 or 1)."""
        return result is not None and int(str(result)) == 0

    def _gtid_positioning(self, row: Mapping[str, Any]) -> bool:
        raise NotImplementedError

    def parse_status(self, row: Mapping[str, Any] | None,
                     variables: Mapping[str, Any]) -> ReplicaStatus:
        row = row or {}
        columns = self.columns
        host = str(row.get(columns.source_host) or "")
        super_read_only = variables.get("super_read_only")
        return ReplicaStatus(
            configured=bool(host),
            source_host=host,
            source_port=_int(row.get(self._port_column)),
            source_user=str(row.get(self._user_column) or ""),
            gtid_positioning=self._gtid_positioning(row),
            io_state=str(row.get(columns.io_running) or "No"),
            sql_running=str(row.get(columns.sql_running) or "No") == "Yes",
            lag_seconds=_optional_int(row.get(columns.seconds_behind)),
            # MySQL prints long GTID sets across lines; the servers accept them without.
            gtid_position=str(variables.get("gtid_position") or "").replace("\n", ""),
            last_io_errno=_int(row.get("Last_IO_Errno")),
            last_io_error=str(row.get("Last_IO_Error") or ""),
            last_sql_errno=_int(row.get("Last_SQL_Errno")),
            last_sql_error=str(row.get("Last_SQL_Error") or ""),
            read_only=bool(_int(variables.get("read_only"))),
            super_read_only=None if super_read_only is None else bool(_int(super_read_only)),
            server_id=_int(variables.get("server_id")),
        )


class MariaDB(Dialect):
    """MariaDB 10.11/11.4: CHANGE MASTER TO with MASTER_USE_GTID=slave_pos.

    The primary's position is ``gtid_binlog_pos`` (SHOW MASTER STATUS has no GTID
    column in MariaDB). A replica's applied position is ``gtid_slave_pos``: the GTIDs
    replicated from the source, which is what MASTER_GTID_WAIT compares against.
    """

    flavor: Flavor = "mariadb"
    limits = Limits(user=80, password=96)
    primary_position = Statement("SELECT @@GLOBAL.gtid_binlog_pos AS position")
    replica_variables = Statement(
        "SELECT @@GLOBAL.read_only AS read_only, @@GLOBAL.gtid_slave_pos AS gtid_position, "
        "@@GLOBAL.server_id AS server_id")
    _port_column = "Master_Port"
    _user_column = "Master_User"

    def position_from(self, row: Mapping[str, Any] | None) -> str:
        return str((row or {}).get("position") or "")

    def wait_for(self, position: str, seconds: int) -> Statement:
        return Statement("SELECT MASTER_GTID_WAIT(%s, %s) AS result", (position, seconds))

    def _gtid_positioning(self, row: Mapping[str, Any]) -> bool:
        return str(row.get("Using_Gtid") or "") == "Slave_Pos"


class MySQL(Dialect):
    """MySQL 8.4: CHANGE REPLICATION SOURCE TO with SOURCE_AUTO_POSITION=1.

    8.4 removed CHANGE MASTER TO, SHOW SLAVE STATUS and SHOW MASTER STATUS. Replicas
    must also be super_read_only, or an account with CONNECTION_ADMIN leaves errant
    GTIDs behind.
    """

    flavor: Flavor = "mysql"
    limits = Limits(user=32, password=32)
    replica_variables = Statement(
        "SELECT @@GLOBAL.read_only AS read_only, @@GLOBAL.super_read_only AS super_read_only, "
        "@@GLOBAL.gtid_executed AS gtid_position, @@GLOBAL.server_id AS server_id")
    _port_column = "Source_Port"
    _user_column = "Source_User"

    def __init__(self) -> None:
        super().__init__()
        self.primary_position = Statement(self.spec.binary_log_status_sql)

    def position_from(self, row: Mapping[str, Any] | None) -> str:
        return str((row or {}).get("Executed_Gtid_Set") or "").replace("\n", "")

    def wait_for(self, position: str, seconds: int) -> Statement:
        return Statement("SELECT WAIT_FOR_EXECUTED_GTID_SET(%s, %s) AS result",
                         (position, seconds))

    def _gtid_positioning(self, row: Mapping[str, Any]) -> bool:
        return _int(row.get("Auto_Position")) == 1


DIALECTS: dict[Flavor, Dialect] = {"mariadb": MariaDB(), "mysql": MySQL()}
