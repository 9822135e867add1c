"""All the SQL each flavor speaks (flavor.py holds none), and the rules that judge a replica.

Everything here is pure: statements are data (:class:`Statement`), the replica's live
state is a normalized :class:`ReplicaStatus`, and :func:`replica_drift` /
:func:`replica_repair` decide what is wrong and what to do about it. The provider
(``_replication.py``) only runs what these functions return, so the exact SQL sent to
MySQL 8.4 (which only exists in unit tests here) and MariaDB (which the integration
tests run) is checked statement by statement without a server.

Why the GTID sets are compared here, in Python, and not with the server's GTID_SUBTRACT:
MariaDB has no such function (its positions are ``domain-server-seq`` lists, one entry
per domain and server), and the two sets live on two servers anyway. One pure function,
:func:`missing_gtids`, answers "which transactions does this replica hold that the
primary never had" for both flavors, so the errant-transaction rule is one rule.

Why :func:`identity_problems` and :func:`replica_refusals` exist: every reason to refuse
a server (wrong flavor or version, another cluster's server_id, the primary reached
twice, a writable or errant replica) is decided from what was read on every server
before the provider changes anything on any of them.

Why statements mark their ``hidden`` parameter instead of being formatted: passwords travel
only as driver parameters, and an error message shows the statement with the secret
replaced, so a failing ``CHANGE MASTER TO`` names itself without leaking the password.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import pymysql
import pymysql.cursors

from components.mysql.flavor import FLAVORS, Flavor

# The account host of the replication user: replicas connect from pod IPs that change
# with every reschedule, so no narrower host pattern is stable.
REPLICATION_HOST = "%"
# The exporter sidecar's account (metrics.enabled), as lib.sh's bootstrap_users_sql creates it:
# through the pod-local socket only, a few connections at most, the replication-status
# privilege the probes hold (Dialect.monitor_privilege). ReplicationInit gives it to clusters
# bootstrapped before it existed (bootstrap-users.sh runs on the first start only);
# tests/unit/test_replication_sql.py keeps the two equal.
EXPORTER_HOST = "localhost"
EXPORTER_MAX_CONNECTIONS = 3


def replication_tls_clause(flavor: str, ca_file: str) -> str:
    """The CHANGE MASTER TO / CHANGE REPLICATION SOURCE TO options for verified TLS against
    ``ca_file`` on the replica (mysql.tls: _tls.TLS_DIR/ca.crt); lib.sh's
    replication_tls_sql writes the same clause for the pods."""
    if "'" in ca_file or "\\" in ca_file:
        raise ValueError(f"CA file path {ca_file!r} must not contain quotes or backslashes")
    if flavor == "mariadb":
        return f"MASTER_SSL = 1, MASTER_SSL_CA = '{ca_file}', MASTER_SSL_VERIFY_SERVER_CERT = 1"
    if flavor == "mysql":
        return f"SOURCE_SSL = 1, SOURCE_SSL_CA = '{ca_file}', SOURCE_SSL_VERIFY_SERVER_CERT = 1"
    raise ValueError(f"unknown flavor {flavor!r}: expected 'mysql' or 'mariadb'")


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
    # Every GTID the replica holds (MariaDB: binlog state and slave position; MySQL:
    # gtid_executed), and those of them the primary does not have, once compared.
    executed: str = ""
    errant_gtids: str = ""
    # GTIDs received into the relay log from its source, applied or not (RETRIEVED_COLUMN).
    retrieved: str = ""

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
            "errant_gtids": self.errant_gtids,
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
    if status.errant_gtids:
        problems.append(errant_text(status.errant_gtids))
    return problems


def errant_text(errant: str) -> str:
    return (f"holds errant GTIDs {errant}: transactions written on the replica itself that "
            "the primary never had. Nothing resets or skips them; re-clone the replica "
            "(delete its PVC and pod) or apply the same change on the primary by hand")


@dataclass(frozen=True)
class Repair:
    """What converge does to one replica: nothing, (re)start the threads, or set the source."""

    set_source: bool
    start: bool
    stop: bool = False  # before setting the source or restarting a Connecting IO thread

    @property
    def noop(self) -> bool:
        return not (self.set_source or self.start or self.stop)


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
        return Repair(set_source=True, start=True, stop=status.configured)
    if status.io_state == "Connecting":
        # START alone changes nothing on a Connecting thread, and it retries only every
        # MASTER_CONNECT_RETRY (60 s by default): restarting makes it connect now.
        return Repair(set_source=False, start=True, stop=True)
    return Repair(set_source=False, start=not status.running)


# --- identity: what may be touched at all --------------------------------------------


@dataclass(frozen=True)
class Identity:
    """What every server says about itself, in SQL both flavors accept."""

    version: str
    server_id: int
    read_only: bool

    @property
    def flavor(self) -> Flavor:
        return "mariadb" if "mariadb" in self.version.lower() else "mysql"


IDENTITY = Statement("SELECT @@GLOBAL.version AS version, @@GLOBAL.server_id AS server_id, "
                     "@@GLOBAL.read_only AS read_only")
_VERSION_NUMBER = re.compile(r"^\d+\.\d+\.\d+")
_FLAVOR_NAMES: dict[Flavor, str] = {"mysql": "MySQL", "mariadb": "MariaDB"}


def parse_identity(row: Mapping[str, Any] | None) -> Identity:
    row = row or {}
    return Identity(str(row.get("version") or ""), _int(row.get("server_id")),
                    bool(_int(row.get("read_only"))))


def identity_problems(flavor: Flavor, identity: Identity) -> list[str]:
    """Why a server of this flavor and version is not one this stack may manage."""
    if identity.flavor != flavor:
        return [f"is {_FLAVOR_NAMES[identity.flavor]} {identity.version}, but the stack's "
                f"flavor is {flavor!r}"]
    number = _VERSION_NUMBER.match(identity.version)
    spec = FLAVORS[flavor]
    if number is None or not spec.version_pattern.match(number.group()):
        return [f"runs {_FLAVOR_NAMES[flavor]} {identity.version!r}; supported: "
                f"{spec.versions_text}"]
    return []


def replica_refusals(ordinal: int, identity: Identity, primary_server_id: int,
                     earlier: Mapping[int, int], *, primary_ordinal: int = 0) -> list[str]:
    """Why the server reached as replica ``ordinal`` must not be touched.

    The pods take server_id = the cluster's base + ordinal (the primary, at
    ``primary_ordinal``, has base + primary_ordinal), so any other id is another
    cluster's server, a shuffled endpoint list or the primary reached twice.
    ``earlier``: server_id -> ordinal of the replicas already checked.
    """
    server_id = identity.server_id
    base = primary_server_id - primary_ordinal
    if server_id == primary_server_id:
        return [f"is the primary itself (both have server_id {primary_server_id}): check the "
                "endpoints"]
    if server_id in earlier:
        return [f"is the same server as replica {earlier[server_id]} (server_id {server_id}): "
                "two endpoints reach one pod"]
    if server_id != base + ordinal:
        return [f"has server_id {server_id}, but ordinal {ordinal} of this cluster has "
                f"{base + ordinal} (the cluster's base {base} + {ordinal}, from the primary's "
                f"{primary_server_id}): another cluster's server or a shuffled endpoint list"]
    return []


# --- GTID sets ---------------------------------------------------------------------------


class GtidSetError(ValueError):
    """A GTID set as a server printed it that this module cannot read."""


_MARIADB_GTID = re.compile(r"^(\d+)-(\d+)-(\d+)$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_TAG = re.compile(r"^[a-z_][a-z0-9_]{0,31}$")
_INTERVAL = re.compile(r"^(\d+)(?:-(\d+))?$")
_Interval = tuple[int, int]


def _gtid_items(text: str) -> list[str]:
    # MySQL prints long sets across lines; both flavors separate entries with commas.
    return [item for item in re.sub(r"\s+", "", text).split(",") if item]


def _mariadb_positions(text: str) -> dict[tuple[int, int], int]:
    """domain-server-seq entries as {(domain, server): highest seq}."""
    positions: dict[tuple[int, int], int] = {}
    for item in _gtid_items(text):
        match = _MARIADB_GTID.match(item)
        if match is None:
            raise GtidSetError(f"{item!r} is not a MariaDB GTID (domain-server-sequence)")
        domain, server, seq = (int(g) for g in match.groups())
        positions[(domain, server)] = max(seq, positions.get((domain, server), 0))
    return positions


def _mysql_set(text: str) -> dict[tuple[str, str], list[_Interval]]:
    """uuid[:tag]:intervals entries as {(uuid, tag): sorted, merged intervals}."""
    found: dict[tuple[str, str], list[_Interval]] = {}
    for item in _gtid_items(text):
        uuid, *parts = item.lower().split(":")
        if not _UUID.match(uuid) or not parts:
            raise GtidSetError(f"{item!r} is not a MySQL GTID set entry (uuid:intervals)")
        tag = ""
        for part in parts:
            interval = _INTERVAL.match(part)
            if interval is not None:
                start = int(interval[1])
                end = int(interval[2] or start)
                if not 0 < start <= end:
                    raise GtidSetError(f"{item!r} has an empty interval {part!r}")
                found.setdefault((uuid, tag), []).append((start, end))
            elif _TAG.match(part):
                tag = part
            else:
                raise GtidSetError(f"{item!r}: {part!r} is neither an interval nor a tag")
    return {key: _merged(intervals) for key, intervals in found.items()}


def _merged(intervals: list[_Interval]) -> list[_Interval]:
    merged: list[_Interval] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _subtract(have: list[_Interval], base: list[_Interval]) -> list[_Interval]:
    left: list[_Interval] = []
    for first, end in have:
        start = first  # moves past each base interval that overlaps
        for base_start, base_end in base:
            if base_end < start or base_start > end:
                continue
            if base_start > start:
                left.append((start, base_start - 1))
            start = base_end + 1
            if start > end:
                break
        if start <= end:
            left.append((start, end))
    return left


def _mysql_text(gtids: dict[tuple[str, str], list[_Interval]]) -> str:
    by_uuid: dict[str, list[str]] = {}
    for (uuid, tag), intervals in sorted(gtids.items()):
        parts = by_uuid.setdefault(uuid, [uuid])
        if tag:
            parts.append(tag)
        parts += [f"{a}" if a == b else f"{a}-{b}" for a, b in intervals]
    return ",".join(":".join(parts) for parts in by_uuid.values())


def missing_gtids(flavor: Flavor, have: str, base: str) -> str:
    """The GTIDs in ``have`` that ``base`` does not contain, in the flavor's own syntax.

    MySQL: a set difference of uuid[:tag]:interval sets (what GTID_SUBTRACT computes).
    MariaDB keeps the last sequence number per domain and server, so an entry of
    ``have`` is missing when ``base`` has no entry for its domain and server or an
    older one; the result lists those entries (the newest missing GTID of each).
    Raises :class:`GtidSetError` on a set it cannot read.
    """
    if flavor == "mariadb":
        base_positions = _mariadb_positions(base)
        return ",".join(f"{domain}-{server}-{seq}" for (domain, server), seq
                        in sorted(_mariadb_positions(have).items())
                        if base_positions.get((domain, server), 0) < seq)
    base_set = _mysql_set(base)
    left = {key: _subtract(intervals, base_set.get(key, []))
            for key, intervals in _mysql_set(have).items()}
    return _mysql_text({key: intervals for key, intervals in left.items() if intervals})


_Key = TypeVar("_Key")

# The relay-log position each flavor reports in SHOW REPLICA STATUS: what a replica
# received from its source, applied or not.
RETRIEVED_COLUMN: dict[Flavor, str] = {"mariadb": "Gtid_IO_Pos", "mysql": "Retrieved_Gtid_Set"}


def held_gtids(executed: str, retrieved: str) -> str:
    """Every GTID a server holds: what it executed plus what its relay log received.

    The retrieved part counts wherever "who has the most" is decided: a commit the primary
    acknowledged under semi-sync (AFTER_SYNC) may be only in a replica's relay log."""
    return ",".join(part for part in (executed, retrieved) if part)


def not_contained(flavor: Flavor, base: str, holders: Mapping[_Key, str]) -> dict[_Key, str]:
    """Each holder whose GTIDs ``base`` lacks, with the GTIDs it lacks (:func:`missing_gtids`).

    The one containment test of the project: the failover arbiter's choice (a candidate
    must contain every survivor) and ReplicationInit's refusal to open a read-only primary
    that lacks what a replica holds both ask it."""
    return {key: gap for key, held in holders.items()
            if (gap := missing_gtids(flavor, held, base))}


@dataclass(frozen=True)
class SemisyncState:
    """One server's semi-sync settings, and whether its primary side is really waiting."""

    source_enabled: bool
    replica_enabled: bool
    source_active: bool     # OFF while enabled: fell back to async after the timeout
    timeout_ms: int
    wait_count: int


def _on(value: object) -> bool:
    return str(value).upper() in ("1", "ON", "YES", "TRUE")


def _int(value: object, default: int = 0) -> int:
    if value is None or value == "":
        return default
    return int(str(value))


def _optional_int(value: object) -> int | None:
    return None if value is None or value == "" else int(str(value))


# MariaDB accepts REPLICATION REPLICA (and REPLICA MONITOR) as synonyms and may print either.
_PRIVILEGE_SYNONYMS = {"REPLICATION REPLICA": "REPLICATION SLAVE",
                       "REPLICA MONITOR": "SLAVE MONITOR"}
_REPLICATION_GRANTS = frozenset({("REPLICATION SLAVE", "*.*")})
_GRANT = re.compile(r"^GRANT (?P<privileges>.+?) ON (?P<scope>\S+) TO ", re.IGNORECASE)


@dataclass(frozen=True)
class ReplicaStatusColumns:
    """Column names of ``SHOW REPLICA STATUS``: MariaDB kept the Slave_/Master_ names."""

    io_running: str
    sql_running: str
    seconds_behind: str
    source_host: str
    source_port: str
    source_user: str


class Dialect:
    """The SQL one flavor speaks: every statement the provider sends, and the names of
    what the servers answer, are spelled here and in the two subclasses."""

    flavor: Flavor
    limits: Limits
    primary_position: Statement
    read_only_state: Statement
    replica_variables: Statement
    # Every GTID a server holds, in columns executed_set() reads (also in replica_variables).
    executed: Statement
    columns: ReplicaStatusColumns
    # pymysql placeholders (%(name)s); the password is the hidden one.
    _change_source_sql: str
    # Both flavors accept the REPLICA spellings (MariaDB since 10.5).
    stop = Statement("STOP REPLICA")
    start = Statement("START REPLICA")
    status = Statement("SHOW REPLICA STATUS")

    # --- primary: the replication account (and the exporter's: ``host``) --------------
    def create_user(self, user: str, password: str, host: str = REPLICATION_HOST) -> Statement:
        return Statement("CREATE USER IF NOT EXISTS %s@%s IDENTIFIED BY %s",
                         (user, host, password), hidden=2)

    def set_password(self, user: str, password: str, host: str = REPLICATION_HOST) -> Statement:
        return Statement("ALTER USER %s@%s IDENTIFIED BY %s", (user, host, password), hidden=2)

    def revoke_all(self, user: str, host: str = REPLICATION_HOST) -> Statement:
        return Statement("REVOKE ALL PRIVILEGES, GRANT OPTION FROM %s@%s", (user, host))

    # --- primary: the exporter's account (metrics.enabled) --------------------------------
    # SHOW REPLICA STATUS, what the exporter's slave_status collector runs.
    monitor_privilege: str

    def exporter_limit(self, user: str) -> Statement:
        """The account's connection limit; no row when the account does not exist."""
        return Statement("SELECT max_user_connections AS max_connections FROM mysql.user "
                         "WHERE User = %s AND Host = %s", (user, EXPORTER_HOST))

    def exporter_grants(self, user: str) -> Statement:
        return Statement("SHOW GRANTS FOR %s@%s", (user, EXPORTER_HOST))

    def exporter_account(self, user: str, password: str) -> tuple[Statement, ...]:
        """The account with the Secret's password and its connection limit (no grants)."""
        return (self.create_user(user, password, EXPORTER_HOST),
                self.set_password(user, password, EXPORTER_HOST),
                Statement(f"ALTER USER %s@%s WITH MAX_USER_CONNECTIONS "
                          f"{EXPORTER_MAX_CONNECTIONS}", (user, EXPORTER_HOST)))

    def grant_exporter(self, user: str) -> Statement:
        return Statement(f"GRANT {self.monitor_privilege} ON *.* TO %s@%s",
                         (user, EXPORTER_HOST))

    def exporter_grants_exact(self, grant_lines: list[str]) -> bool:
        """True when the exporter holds its one privilege on *.* and nothing else."""
        return self.grants_exact(grant_lines, frozenset({(self.monitor_privilege, "*.*")}))

    def grant_replication(self, user: str) -> Statement:
        return Statement("GRANT REPLICATION SLAVE ON *.* TO %s@%s", (user, REPLICATION_HOST))

    def drop_user(self, user: str) -> Statement:
        return Statement("DROP USER IF EXISTS %s@%s", (user, REPLICATION_HOST))

    # --- topology (switchover): run as the topology account, never as admin -------------
    # Client sessions a switchover ends on the old primary: not ours, not a replica's
    # binlog dump, not a server thread.
    client_sessions = Statement(
        "SELECT ID AS id, USER AS user FROM information_schema.PROCESSLIST "
        "WHERE ID <> CONNECTION_ID() AND COMMAND NOT LIKE 'Binlog Dump%%' "
        "AND COMMAND NOT IN ('Daemon', 'Killed') "
        "AND USER NOT IN ('system user', 'event_scheduler') AND USER <> %s")
    read_only_on: tuple[Statement, ...]
    writable: tuple[Statement, ...]
    # What a demoted primary runs before it replicates (MariaDB positions from slave_pos).
    demote: tuple[Statement, ...] = ()

    # --- durability: semi-synchronous replication ----------------------------------------
    semisync_state: Statement
    _semisync_source: tuple[str, ...]      # variable names: enabled, timeout, wait point
    _semisync_replica: str
    _semisync_wait_count: str | None = None  # MariaDB waits for exactly one replica

    def semisync_source(self, enabled: bool, timeout_seconds: int,
                        wait_count: int) -> tuple[Statement, ...]:
        """Primary side. AFTER_SYNC: a commit is visible only once a replica holds it."""
        enabled_var, timeout_var, wait_point_var = self._semisync_source
        if not enabled:
            return (Statement(f"SET GLOBAL {enabled_var} = OFF"),)
        statements = [Statement(f"SET GLOBAL {wait_point_var} = 'AFTER_SYNC'"),
                      Statement(f"SET GLOBAL {timeout_var} = %s", (timeout_seconds * 1000,))]
        if self._semisync_wait_count is not None:
            statements.append(Statement(f"SET GLOBAL {self._semisync_wait_count} = %s",
                                        (wait_count,)))
        statements.append(Statement(f"SET GLOBAL {enabled_var} = ON"))
        return tuple(statements)

    def semisync_replica(self, enabled: bool) -> tuple[Statement, ...]:
        """Replica side; the IO thread reads the setting when it (re)connects."""
        return (Statement(f"SET GLOBAL {self._semisync_replica} = {'ON' if enabled else 'OFF'}"),
                Statement(f"{self.stop.sql} IO_THREAD"), Statement(f"{self.start.sql} IO_THREAD"))

    @staticmethod
    def parse_semisync(row: Mapping[str, Any] | None) -> SemisyncState:
        row = row or {}
        return SemisyncState(
            source_enabled=_on(row.get("source_enabled")),
            replica_enabled=_on(row.get("replica_enabled")),
            source_active=_on(row.get("source_active")),
            timeout_ms=_int(row.get("timeout_ms")),
            wait_count=_int(row.get("wait_count"), 1))

    def sessions_of_others(self, own_user: str) -> Statement:
        return Statement(self.client_sessions.sql, (own_user,))

    @staticmethod
    def kill(connection_id: int) -> Statement:
        return Statement("KILL CONNECTION %s", (connection_id,))

    def is_read_only(self, row: Mapping[str, Any] | None) -> bool:
        """Whether the server refuses every client write (MySQL: super_read_only too)."""
        raise NotImplementedError

    # The replication account lists its own grants (no privilege on mysql.* needed).
    own_grants = Statement("SHOW GRANTS")
    reset_all = Statement("RESET REPLICA ALL")

    @staticmethod
    def grants_exact(grant_lines: list[str],
                     expected: frozenset[tuple[str, str]] = _REPLICATION_GRANTS) -> bool:
        """True when the account holds exactly ``expected`` ((privilege, scope) pairs; by
        default REPLICATION SLAVE on *.*, the replication account's) and nothing else."""
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
        return found == expected

    def position_from(self, row: Mapping[str, Any] | None) -> str:
        raise NotImplementedError

    def executed_set(self, row: Mapping[str, Any] | None) -> str:
        raise NotImplementedError

    # --- replicas -----------------------------------------------------------------------
    def change_source(self, host: str, port: int, user: str, password: str,
                      tls_ca: str = "") -> Statement:
        """``tls_ca``: the CA file on the replica (mysql.tls), whose certificate check of the
        primary is then required; the clause is the pods' own (lib.sh replication_tls_sql)."""
        sql = self._change_source_sql
        if tls_ca:
            sql += ", " + replication_tls_clause(self.flavor, tls_ca).replace("%", "%%")
        return Statement(sql,
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
            source_port=_int(row.get(columns.source_port)),
            source_user=str(row.get(columns.source_user) or ""),
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
            executed=self.executed_set(variables),
            retrieved=str(row.get(RETRIEVED_COLUMN[self.flavor]) or "").replace("\n", ""),
        )


class MariaDB(Dialect):
    """MariaDB 10.11/11.4: CHANGE MASTER TO with MASTER_USE_GTID=slave_pos.

    The primary's position is ``gtid_binlog_pos`` (SHOW MASTER STATUS has no GTID
    column in MariaDB). A replica's applied position is ``gtid_slave_pos``: the GTIDs
    replicated from the source, which is what MASTER_GTID_WAIT compares against.
    """

    flavor: Flavor = "mariadb"
    limits = Limits(user=80, password=96)
    monitor_privilege = "SLAVE MONITOR"
    primary_position = Statement("SELECT @@GLOBAL.gtid_binlog_pos AS position")
    replica_variables = Statement(
        "SELECT @@GLOBAL.read_only AS read_only, @@GLOBAL.gtid_slave_pos AS gtid_position, "
        "@@GLOBAL.server_id AS server_id, @@GLOBAL.gtid_binlog_state AS gtid_binlog_state")
    # gtid_binlog_state keeps the last GTID of every domain *and server* (gtid_binlog_pos
    # only the last per domain, which a later replicated event hides an errant one behind);
    # gtid_slave_pos adds what was applied without being logged.
    executed = Statement("SELECT @@GLOBAL.gtid_binlog_state AS gtid_binlog_state, "
                         "@@GLOBAL.gtid_slave_pos AS gtid_position")
    columns = ReplicaStatusColumns(
        io_running="Slave_IO_Running", sql_running="Slave_SQL_Running",
        seconds_behind="Seconds_Behind_Master", source_host="Master_Host",
        source_port="Master_Port", source_user="Master_User")
    # MariaDB rejects CHANGE REPLICATION SOURCE TO; GTID positioning is slave_pos, set
    # beforehand with SET GLOBAL gtid_slave_pos.
    _change_source_sql = (
        "CHANGE MASTER TO MASTER_HOST=%(host)s, MASTER_PORT=%(port)s, "
        "MASTER_USER=%(user)s, MASTER_PASSWORD=%(password)s, MASTER_USE_GTID=slave_pos")
    # No super_read_only: read_only stops every account without READ ONLY ADMIN.
    read_only_on = (Statement("SET GLOBAL read_only = ON"),)
    writable = (Statement("SET GLOBAL read_only = OFF"),)
    # A former primary's gtid_slave_pos is empty or older than its own binlog; slave_pos
    # positioning would ask the new primary for transactions it already holds.
    demote = (Statement("SET GLOBAL gtid_slave_pos = @@GLOBAL.gtid_binlog_pos"),)
    read_only_state = Statement("SELECT @@GLOBAL.read_only AS read_only")
    # Built into MariaDB (no plugin); it waits for one replica's acknowledgement.
    semisync_state = Statement(
        "SELECT @@GLOBAL.rpl_semi_sync_master_enabled AS source_enabled, "
        "@@GLOBAL.rpl_semi_sync_slave_enabled AS replica_enabled, "
        "@@GLOBAL.rpl_semi_sync_master_timeout AS timeout_ms, "
        "(SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS "
        "WHERE VARIABLE_NAME = 'RPL_SEMI_SYNC_MASTER_STATUS') AS source_active")
    _semisync_source = ("rpl_semi_sync_master_enabled", "rpl_semi_sync_master_timeout",
                        "rpl_semi_sync_master_wait_point")
    _semisync_replica = "rpl_semi_sync_slave_enabled"

    def is_read_only(self, row: Mapping[str, Any] | None) -> bool:
        return bool(_int((row or {}).get("read_only")))

    def position_from(self, row: Mapping[str, Any] | None) -> str:
        return str((row or {}).get("position") or "")

    def executed_set(self, row: Mapping[str, Any] | None) -> str:
        row = row or {}
        return ",".join(str(row[k]) for k in ("gtid_binlog_state", "gtid_position")
                        if row.get(k))

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
    monitor_privilege = "REPLICATION CLIENT"
    replica_variables = Statement(
        "SELECT @@GLOBAL.read_only AS read_only, @@GLOBAL.super_read_only AS super_read_only, "
        "@@GLOBAL.gtid_executed AS gtid_position, @@GLOBAL.server_id AS server_id")
    executed = Statement("SELECT @@GLOBAL.gtid_executed AS gtid_position")
    columns = ReplicaStatusColumns(
        io_running="Replica_IO_Running", sql_running="Replica_SQL_Running",
        seconds_behind="Seconds_Behind_Source", source_host="Source_Host",
        source_port="Source_Port", source_user="Source_User")
    # GTID auto-positioning, and the source's RSA key because caching_sha2_password over a
    # non-TLS connection needs it.
    _change_source_sql = (
        "CHANGE REPLICATION SOURCE TO SOURCE_HOST=%(host)s, SOURCE_PORT=%(port)s, "
        "SOURCE_USER=%(user)s, SOURCE_PASSWORD=%(password)s, SOURCE_AUTO_POSITION=1, "
        "GET_SOURCE_PUBLIC_KEY=1")
    # 8.4 removed SHOW MASTER STATUS.
    primary_position = Statement("SHOW BINARY LOG STATUS")
    # super_read_only=ON implies read_only=ON; OFF must be undone in the other order.
    read_only_on = (Statement("SET GLOBAL super_read_only = ON"),)
    writable = (Statement("SET GLOBAL super_read_only = OFF"),
                Statement("SET GLOBAL read_only = OFF"))
    read_only_state = Statement("SELECT @@GLOBAL.read_only AS read_only, "
                                "@@GLOBAL.super_read_only AS super_read_only")
    # The rpl_semi_sync_source/replica plugins (loaded by the server config, both on every
    # server: any of them may be promoted).
    semisync_state = Statement(
        "SELECT @@GLOBAL.rpl_semi_sync_source_enabled AS source_enabled, "
        "@@GLOBAL.rpl_semi_sync_replica_enabled AS replica_enabled, "
        "@@GLOBAL.rpl_semi_sync_source_timeout AS timeout_ms, "
        "@@GLOBAL.rpl_semi_sync_source_wait_for_replica_count AS wait_count, "
        "(SELECT VARIABLE_VALUE FROM performance_schema.global_status "
        "WHERE VARIABLE_NAME = 'Rpl_semi_sync_source_status') AS source_active")
    _semisync_source = ("rpl_semi_sync_source_enabled", "rpl_semi_sync_source_timeout",
                        "rpl_semi_sync_source_wait_point")
    _semisync_replica = "rpl_semi_sync_replica_enabled"
    _semisync_wait_count = "rpl_semi_sync_source_wait_for_replica_count"

    def is_read_only(self, row: Mapping[str, Any] | None) -> bool:
        return bool(_int((row or {}).get("super_read_only")))

    def position_from(self, row: Mapping[str, Any] | None) -> str:
        return str((row or {}).get("Executed_Gtid_Set") or "").replace("\n", "")

    def executed_set(self, row: Mapping[str, Any] | None) -> str:
        return str((row or {}).get("gtid_position") or "").replace("\n", "")

    def wait_for(self, position: str, seconds: int) -> Statement:
        return Statement("SELECT WAIT_FOR_EXECUTED_GTID_SET(%s, %s) AS result",
                         (position, seconds))

    def _gtid_positioning(self, row: Mapping[str, Any]) -> bool:
        return _int(row.get("Auto_Position")) == 1


DIALECTS: dict[Flavor, Dialect] = {"mariadb": MariaDB(), "mysql": MySQL()}


class Session:
    """One connection to one server, labelled so every error names the server and the
    statement. Shared by the ReplicationInit provider and the arbiter (which must not
    import pulumi); each subclass names the error its callers catch."""

    error: type[Exception] = RuntimeError

    def __init__(self, label: str, connection: pymysql.connections.Connection[Any]) -> None:
        self.label = label
        self.connection = connection

    def describe(self, error: pymysql.MySQLError) -> str:
        return str(error)

    def run(self, statement: Statement) -> list[dict[str, Any]]:
        try:
            with self.connection.cursor(pymysql.cursors.DictCursor) as cursor:
                cursor.execute(statement.sql, statement.args or None)
                return list(cursor.fetchall())
        except pymysql.MySQLError as error:
            raise self.error(f"{self.label}: {statement.display()} failed: "
                             f"{self.describe(error)}") from None

    def one(self, statement: Statement) -> dict[str, Any] | None:
        rows = self.run(statement)
        return rows[0] if rows else None
