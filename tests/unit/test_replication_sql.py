"""The SQL each flavor speaks and the rules that judge a replica (``_replication_sql.py``).

MySQL 8.4's statements only ever run here (the integration suite runs MariaDB), so every
statement is pinned exactly, per flavor; the GTID comparison and the drift and repair rules
are pure functions, checked table by table.
"""

from __future__ import annotations

from typing import Any

import pytest

from components.mysql._replication_sql import (
    DIALECTS,
    IDENTITY,
    Desired,
    GtidSetError,
    Identity,
    ReplicaStatus,
    SemisyncState,
    Statement,
    identity_problems,
    missing_gtids,
    parse_identity,
    replica_drift,
    replica_refusals,
    replica_repair,
)

PASSWORD = "rotate-me-0123456789"


# --- SQL per flavor ----------------------------------------------------------------------


def test_mysql_statements_are_the_84_ones() -> None:
    mysql = DIALECTS["mysql"]
    change = mysql.change_source("orders-mysql-0.orders-mysql", 3306, "repl", PASSWORD)
    assert change.sql == ("CHANGE REPLICATION SOURCE TO SOURCE_HOST=%(host)s, "
                          "SOURCE_PORT=%(port)s, SOURCE_USER=%(user)s, "
                          "SOURCE_PASSWORD=%(password)s, SOURCE_AUTO_POSITION=1, "
                          "GET_SOURCE_PUBLIC_KEY=1")
    assert change.args == {"host": "orders-mysql-0.orders-mysql", "port": 3306,
                           "user": "repl", "password": PASSWORD}
    assert mysql.stop.sql == "STOP REPLICA"
    assert mysql.start.sql == "START REPLICA"
    assert mysql.status.sql == "SHOW REPLICA STATUS"
    assert mysql.reset_all.sql == "RESET REPLICA ALL"
    assert mysql.primary_position.sql == "SHOW BINARY LOG STATUS"
    assert mysql.wait_for("uuid:1-5", 2) == Statement(
        "SELECT WAIT_FOR_EXECUTED_GTID_SET(%s, %s) AS result", ("uuid:1-5", 2))
    assert mysql.position_from({"Executed_Gtid_Set": "a:1-5,\nb:1-2"}) == "a:1-5,b:1-2"
    assert "MASTER" not in " ".join(s.sql for s in (change, mysql.stop, mysql.status))


def test_mariadb_statements_use_change_master_with_slave_pos() -> None:
    mariadb = DIALECTS["mariadb"]
    change = mariadb.change_source("orders-mysql-0.orders-mysql", 3306, "repl", PASSWORD)
    assert change.sql == ("CHANGE MASTER TO MASTER_HOST=%(host)s, MASTER_PORT=%(port)s, "
                          "MASTER_USER=%(user)s, MASTER_PASSWORD=%(password)s, "
                          "MASTER_USE_GTID=slave_pos")
    assert mariadb.stop.sql == "STOP REPLICA"
    assert mariadb.start.sql == "START REPLICA"
    assert mariadb.primary_position.sql == "SELECT @@GLOBAL.gtid_binlog_pos AS position"
    assert mariadb.wait_for("0-1-5", 2) == Statement(
        "SELECT MASTER_GTID_WAIT(%s, %s) AS result", ("0-1-5", 2))
    assert mariadb.position_from({"position": "0-1-5"}) == "0-1-5"


@pytest.mark.parametrize("flavor", ["mysql", "mariadb"])
def test_account_statements_pass_the_password_as_a_parameter(flavor: str) -> None:
    dialect = DIALECTS[flavor]  # type: ignore[index]
    create = dialect.create_user("repl", PASSWORD)
    assert create.sql == "CREATE USER IF NOT EXISTS %s@%s IDENTIFIED BY %s"
    assert create.args == ("repl", "%", PASSWORD)
    assert dialect.set_password("repl", PASSWORD).sql == "ALTER USER %s@%s IDENTIFIED BY %s"
    assert dialect.grant_replication("repl").display() == (
        "GRANT REPLICATION SLAVE ON *.* TO 'repl'@'%'")
    assert dialect.revoke_all("repl").display() == (
        "REVOKE ALL PRIVILEGES, GRANT OPTION FROM 'repl'@'%'")
    assert dialect.drop_user("repl").display() == "DROP USER IF EXISTS 'repl'@'%'"


@pytest.mark.parametrize("flavor", ["mysql", "mariadb"])
def test_displayed_statements_hide_the_password(flavor: str) -> None:
    dialect = DIALECTS[flavor]  # type: ignore[index]
    for statement in (dialect.change_source("h", 1, "repl", PASSWORD),
                      dialect.create_user("repl", PASSWORD),
                      dialect.set_password("repl", PASSWORD)):
        shown = statement.display()
        assert PASSWORD not in shown
        assert "'***'" in shown


@pytest.mark.parametrize(("lines", "exact"), [
    (["GRANT REPLICATION SLAVE ON *.* TO `repl`@`%` IDENTIFIED BY PASSWORD '*AB12'"], True),
    (["GRANT REPLICATION SLAVE ON *.* TO `repl`@`%`"], True),
    (["GRANT REPLICATION REPLICA ON *.* TO `repl`@`%`"], True),
    (["GRANT USAGE ON *.* TO `repl`@`%`"], False),
    (["GRANT REPLICATION SLAVE, SELECT ON *.* TO `repl`@`%`"], False),
    (["GRANT REPLICATION SLAVE ON *.* TO `repl`@`%`", "GRANT ALL PRIVILEGES ON `app`.* TO "
      "`repl`@`%`"], False),
    (["GRANT REPLICATION SLAVE ON *.* TO `repl`@`%` WITH GRANT OPTION"], False),
    (["GRANT REPLICATION SLAVE ON *.* TO `repl`@`%`", "GRANT `dba`@`%` TO `repl`@`%`"], False),
])
def test_the_replication_account_must_hold_exactly_replication_slave(
        lines: list[str], exact: bool) -> None:
    assert DIALECTS["mariadb"].grants_exact(lines) is exact


MYSQL_ROW = {
    "Source_Host": "orders-mysql-0.orders-mysql", "Source_Port": 3306, "Source_User": "repl",
    "Auto_Position": 1, "Replica_IO_Running": "Yes", "Replica_SQL_Running": "Yes",
    "Seconds_Behind_Source": 0, "Last_IO_Errno": 0, "Last_IO_Error": "",
    "Last_SQL_Errno": 0, "Last_SQL_Error": "",
}
MARIADB_ROW = {
    "Master_Host": "orders-mysql-0.orders-mysql", "Master_Port": 3306, "Master_User": "repl",
    "Using_Gtid": "Slave_Pos", "Slave_IO_Running": "Yes", "Slave_SQL_Running": "Yes",
    "Seconds_Behind_Master": 0, "Last_IO_Errno": 0, "Last_IO_Error": "",
    "Last_SQL_Errno": 0, "Last_SQL_Error": "",
}
DESIRED = Desired("orders-mysql-0.orders-mysql", 3306, "repl", max_lag_seconds=30)


def test_status_rows_of_both_flavors_normalize_the_same() -> None:
    mysql = DIALECTS["mysql"].parse_status(
        MYSQL_ROW, {"read_only": 1, "super_read_only": 1, "gtid_position": "a:1-5",
                    "server_id": 2001})
    mariadb = DIALECTS["mariadb"].parse_status(
        MARIADB_ROW, {"read_only": 1, "gtid_position": "0-1-5"})
    for status in (mysql, mariadb):
        assert status.configured
        assert status.running
        assert replica_drift(status, DESIRED) == []
        assert replica_repair(status, DESIRED, rewrite_password=False).noop
    assert mysql.super_read_only is True
    assert mysql.server_id == 2001
    assert mariadb.super_read_only is None
    assert DIALECTS["mariadb"].parse_status(None, {"read_only": 1}).configured is False


def status(**changes: Any) -> ReplicaStatus:
    base = DIALECTS["mariadb"].parse_status(MARIADB_ROW, {"read_only": 1,
                                                          "gtid_position": "0-1-5"})
    return ReplicaStatus(**{**base.__dict__, **changes})


@pytest.mark.parametrize(("changes", "drift", "set_source", "start"), [
    ({"io_state": "No", "sql_running": False}, "IO thread is No", False, True),
    ({"sql_running": False, "last_sql_errno": 1062, "last_sql_error": "Duplicate"},
     "SQL thread is stopped (1062: Duplicate)", False, True),
    # Restarted: START alone does nothing, and the thread retries only every 60 s.
    ({"io_state": "Connecting", "last_io_errno": 2003, "last_io_error": "refused"},
     "IO thread is Connecting (2003: refused)", False, True),
    ({"io_state": "Connecting", "last_io_errno": 1045, "last_io_error": "denied"},
     "IO thread is Connecting", True, True),
    ({"source_port": 3307}, "replicates from orders-mysql-0.orders-mysql:3307", True, True),
    ({"source_host": "elsewhere"}, "replicates from elsewhere:3306", True, True),
    ({"source_user": "root"}, "connects as 'root'", True, True),
    ({"gtid_positioning": False}, "does not use GTID positioning", True, True),
    ({"configured": False}, "replication is not configured", True, True),
    ({"lag_seconds": 31}, "lags 31s behind (max 30s)", False, False),
    ({"read_only": False}, "read_only is OFF", False, False),
    ({"errant_gtids": "0-2-7"}, "holds errant GTIDs 0-2-7", False, False),
])
def test_drift_and_the_smallest_repair(changes: dict[str, Any], drift: str, set_source: bool,
                                       start: bool) -> None:
    current = status(**changes)
    assert any(d.startswith(drift) for d in replica_drift(current, DESIRED)), (
        replica_drift(current, DESIRED))
    repair = replica_repair(current, DESIRED, rewrite_password=False)
    assert (repair.set_source, repair.start) == (set_source, start)


def test_a_rotated_password_is_set_again_on_a_healthy_replica() -> None:
    repair = replica_repair(status(), DESIRED, rewrite_password=True)
    assert (repair.stop, repair.set_source, repair.start) == (True, True, True)


@pytest.mark.parametrize(("changes", "stop"), [
    ({"io_state": "Connecting"}, True),        # restart: connect now, not in 60 s
    ({"configured": False}, False),            # nothing to stop yet
    ({"io_state": "No", "sql_running": False}, False),
    ({}, False),
])
def test_only_a_running_or_connecting_replica_is_stopped(changes: dict[str, Any],
                                                         stop: bool) -> None:
    assert replica_repair(status(**changes), DESIRED, rewrite_password=False).stop is stop


def test_an_errant_replica_is_never_in_sync_and_never_repaired() -> None:
    errant = status(errant_gtids="0-2-7")
    assert errant.to_output()["errant_gtids"] == "0-2-7"
    assert any("0-2-7" in d and "re-clone" in d for d in replica_drift(errant, DESIRED))
    assert replica_repair(errant, DESIRED, rewrite_password=False).noop


# --- GTID sets: one comparison for both flavors ---------------------------------------

UUID_A = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
UUID_B = "8a94f357-aab4-11df-86ab-c80aa9429563"


@pytest.mark.parametrize(("have", "base", "missing"), [
    ("0-1-5", "0-1-5", ""),
    ("0-1-5", "0-1-9", ""),                          # behind is lag, not errant
    ("", "0-1-9", ""),
    ("0-1-5,0-2-7", "0-1-9", "0-2-7"),               # the replica's own server_id
    ("0-1-10", "0-1-9", "0-1-10"),                   # ahead of the primary
    ("0-1-5,1-2-3", "0-1-5,1-2-3", ""),
    ("0-1-5,1-2-4", "0-1-5,1-2-3", "1-2-4"),
    ("0-1-5,1-3-1", "0-1-5", "1-3-1"),               # a domain the primary never had
    ("0-2-7,0-1-5", "0-1-5,0-1-3", "0-2-7"),         # binlog state and slave pos together
    (" 0-1-5,\n0-2-7 ", "0-1-5", "0-2-7"),
])
def test_mariadb_gtids_the_primary_does_not_hold(have: str, base: str, missing: str) -> None:
    assert missing_gtids("mariadb", have, base) == missing


@pytest.mark.parametrize(("have", "base", "missing"), [
    (f"{UUID_A}:1-5", f"{UUID_A}:1-5", ""),
    (f"{UUID_A}:1-5", f"{UUID_A}:1-9", ""),
    (f"{UUID_A}:1-5,\n{UUID_B}:1-2", f"{UUID_A}:1-5", f"{UUID_B}:1-2"),
    (f"{UUID_A}:1-10", f"{UUID_A}:1-3:5-6:9", f"{UUID_A}:4:7-8:10"),
    (f"{UUID_A}:1-3:7", f"{UUID_A}:1-7", ""),
    (f"{UUID_A.upper()}:1-5", f"{UUID_A}:1-4", f"{UUID_A}:5"),
    (f"{UUID_A}:1-5:batch:1-3", f"{UUID_A}:1-5", f"{UUID_A}:batch:1-3"),  # 8.4 tagged GTIDs
    (f"{UUID_A}:1-5:Batch:1-3", f"{UUID_A}:1-5:batch:2", f"{UUID_A}:batch:1:3"),
    (f"{UUID_A}:1-2:4-5", f"{UUID_A}:3", f"{UUID_A}:1-2:4-5"),
    ("", f"{UUID_A}:1-5", ""),
])
def test_mysql_gtids_the_primary_does_not_hold(have: str, base: str, missing: str) -> None:
    assert missing_gtids("mysql", have, base) == missing


@pytest.mark.parametrize(("flavor", "text"), [
    ("mariadb", "0-1"),
    ("mariadb", f"{UUID_A}:1-5"),
    ("mysql", "0-1-5"),
    ("mysql", f"{UUID_A}:5-1"),
    ("mysql", f"{UUID_A}:1-5:not-a-tag"),
    ("mysql", UUID_A),
])
def test_an_unreadable_gtid_set_is_an_error_not_a_guess(flavor: str, text: str) -> None:
    with pytest.raises(GtidSetError):
        missing_gtids(flavor, text, "")  # type: ignore[arg-type]


def test_every_gtid_the_server_holds_is_compared() -> None:
    mariadb = DIALECTS["mariadb"]
    assert mariadb.executed.sql == ("SELECT @@GLOBAL.gtid_binlog_state AS gtid_binlog_state, "
                                    "@@GLOBAL.gtid_slave_pos AS gtid_position")
    assert mariadb.executed_set({"gtid_binlog_state": "0-1-5,0-2-7",
                                 "gtid_position": "0-1-5"}) == "0-1-5,0-2-7,0-1-5"
    assert "gtid_binlog_state" in mariadb.replica_variables.sql
    mysql = DIALECTS["mysql"]
    assert mysql.executed.sql == "SELECT @@GLOBAL.gtid_executed AS gtid_position"
    assert mysql.executed_set({"gtid_position": f"{UUID_A}:1-5,\n{UUID_B}:1"}) == (
        f"{UUID_A}:1-5,{UUID_B}:1")
    parsed = mysql.parse_status(MYSQL_ROW, {"read_only": 1, "gtid_position": f"{UUID_A}:1-5"})
    assert parsed.executed == f"{UUID_A}:1-5"


# --- identity: refused before anything changes ----------------------------------------


def test_identity_is_read_with_sql_both_flavors_accept() -> None:
    assert IDENTITY.sql == ("SELECT @@GLOBAL.version AS version, @@GLOBAL.server_id AS "
                            "server_id, @@GLOBAL.read_only AS read_only")
    assert parse_identity({"version": "8.4.5", "server_id": 3001, "read_only": 1}) == Identity(
        "8.4.5", 3001, True)


@pytest.mark.parametrize(("flavor", "version", "problem"), [
    ("mariadb", "10.11.19-MariaDB-0+deb12u1", ""),
    ("mariadb", "11.4.5-MariaDB", ""),
    ("mysql", "8.4.5", ""),
    ("mariadb", "8.4.5", "is MySQL 8.4.5, but the stack's flavor is 'mariadb'"),
    ("mysql", "11.4.5-MariaDB", "is MariaDB 11.4.5-MariaDB, but the stack's flavor is 'mysql'"),
    ("mariadb", "10.6.18-MariaDB", "runs MariaDB '10.6.18-MariaDB'; supported: the LTS"),
    ("mysql", "8.0.36", "runs MySQL '8.0.36'; supported: 8.4.x"),
])
def test_only_the_stacks_flavor_and_supported_versions_are_managed(
        flavor: str, version: str, problem: str) -> None:
    found = identity_problems(flavor, Identity(version, 1, False))  # type: ignore[arg-type]
    assert (found[0] if found else "").startswith(problem)
    assert len(found) == (1 if problem else 0)


@pytest.mark.parametrize(("ordinal", "server_id", "earlier", "problem"), [
    (1, 3001, {}, ""),
    (2, 3002, {3001: 1}, ""),
    (2, 3000, {3001: 1}, "is the primary itself (both have server_id 3000)"),
    (2, 3001, {3001: 1}, "is the same server as replica 1 (server_id 3001)"),
    (1, 77, {}, "has server_id 77, but ordinal 1 of this cluster has 3001"),
    (2, 3001, {}, "has server_id 3001, but ordinal 2 of this cluster has 3002"),
])
def test_a_replica_endpoint_must_reach_its_own_ordinal(
        ordinal: int, server_id: int, earlier: dict[int, int], problem: str) -> None:
    found = replica_refusals(ordinal, Identity("11.4.5-MariaDB", server_id, True), 3000, earlier)
    assert (found[0] if found else "").startswith(problem)
    assert len(found) == (1 if problem else 0)


# --- statements as they are shown, and the topology and durability ones -----------------


def test_display_quotes_positional_values_as_sql_literals() -> None:
    statement = Statement("SELECT %s, %s", ("it's a \\ path", 7))
    assert statement.display() == "SELECT 'it\\'s a \\\\ path', 7"
    assert Statement("SHOW REPLICA STATUS").display() == "SHOW REPLICA STATUS"


@pytest.mark.parametrize("flavor", ["mysql", "mariadb"])
def test_client_sessions_other_than_our_own_are_listed_and_killed(flavor: str) -> None:
    dialect = DIALECTS[flavor]  # type: ignore[index]
    shown = dialect.sessions_of_others("topology").display()
    assert shown.endswith("AND USER <> 'topology'")
    assert "COMMAND NOT LIKE 'Binlog Dump%'" in shown  # %% is a literal % once formatted
    assert dialect.kill(42).display() == "KILL CONNECTION 42"


@pytest.mark.parametrize(("flavor", "read_only_on", "writable", "demote"), [
    ("mysql", ["SET GLOBAL super_read_only = ON"],
     # super_read_only first: read_only = OFF is refused while it is ON.
     ["SET GLOBAL super_read_only = OFF", "SET GLOBAL read_only = OFF"], []),
    ("mariadb", ["SET GLOBAL read_only = ON"], ["SET GLOBAL read_only = OFF"],
     ["SET GLOBAL gtid_slave_pos = @@GLOBAL.gtid_binlog_pos"]),
])
def test_topology_statements_per_flavor(flavor: str, read_only_on: list[str],
                                        writable: list[str], demote: list[str]) -> None:
    dialect = DIALECTS[flavor]  # type: ignore[index]
    assert [s.sql for s in dialect.read_only_on] == read_only_on
    assert [s.sql for s in dialect.writable] == writable
    assert [s.sql for s in dialect.demote] == demote


@pytest.mark.parametrize(("flavor", "row", "read_only"), [
    ("mysql", {"read_only": 1, "super_read_only": 1}, True),
    # read_only alone lets CONNECTION_ADMIN accounts write: not read-only for MySQL.
    ("mysql", {"read_only": 1, "super_read_only": 0}, False),
    ("mysql", None, False),
    ("mariadb", {"read_only": 1}, True),
    ("mariadb", {"read_only": "0"}, False),
    ("mariadb", None, False),
])
def test_read_only_means_no_client_can_write(flavor: str, row: dict[str, Any] | None,
                                             read_only: bool) -> None:
    dialect = DIALECTS[flavor]  # type: ignore[index]
    assert dialect.is_read_only(row) is read_only
    assert set((row or {}).keys()) <= set(dialect.read_only_state.sql.replace(",", " ").split())


@pytest.mark.parametrize(("flavor", "enabled", "expected"), [
    ("mysql", True, ["SET GLOBAL rpl_semi_sync_source_wait_point = 'AFTER_SYNC'",
                     "SET GLOBAL rpl_semi_sync_source_timeout = 5000",
                     "SET GLOBAL rpl_semi_sync_source_wait_for_replica_count = 2",
                     "SET GLOBAL rpl_semi_sync_source_enabled = ON"]),
    # MariaDB waits for exactly one replica: no wait count to set.
    ("mariadb", True, ["SET GLOBAL rpl_semi_sync_master_wait_point = 'AFTER_SYNC'",
                       "SET GLOBAL rpl_semi_sync_master_timeout = 5000",
                       "SET GLOBAL rpl_semi_sync_master_enabled = ON"]),
    ("mysql", False, ["SET GLOBAL rpl_semi_sync_source_enabled = OFF"]),
    ("mariadb", False, ["SET GLOBAL rpl_semi_sync_master_enabled = OFF"]),
])
def test_semisync_source_statements(flavor: str, enabled: bool, expected: list[str]) -> None:
    statements = DIALECTS[flavor].semisync_source(enabled, 5, 2)  # type: ignore[index]
    assert [s.display() for s in statements] == expected


@pytest.mark.parametrize(("flavor", "variable"), [
    ("mysql", "rpl_semi_sync_replica_enabled"), ("mariadb", "rpl_semi_sync_slave_enabled")])
def test_semisync_replica_reconnects_its_io_thread(flavor: str, variable: str) -> None:
    dialect = DIALECTS[flavor]  # type: ignore[index]
    assert [s.sql for s in dialect.semisync_replica(True)] == [
        f"SET GLOBAL {variable} = ON", "STOP REPLICA IO_THREAD", "START REPLICA IO_THREAD"]
    assert dialect.semisync_replica(False)[0].sql == f"SET GLOBAL {variable} = OFF"
    assert variable in dialect.semisync_state.sql


@pytest.mark.parametrize(("row", "state"), [
    ({"source_enabled": "1", "replica_enabled": 0, "source_active": "ON", "timeout_ms": 5000,
      "wait_count": 2}, SemisyncState(True, False, True, 5000, 2)),
    # Enabled but fallen back to async; MariaDB has no wait count column (one replica).
    ({"source_enabled": 1, "source_active": "OFF", "timeout_ms": "10000"},
     SemisyncState(True, False, False, 10000, 1)),
    (None, SemisyncState(False, False, False, 0, 1)),
])
def test_semisync_state_is_parsed_the_same_for_both_flavors(
        row: dict[str, Any] | None, state: SemisyncState) -> None:
    for dialect in DIALECTS.values():
        assert dialect.parse_semisync(row) == state


@pytest.mark.parametrize(("result", "reached"), [
    (0, True), ("0", True), (-1, False), (1, False), (None, False)])
def test_a_wait_is_reached_only_when_the_server_answers_zero(result: object,
                                                             reached: bool) -> None:
    for dialect in DIALECTS.values():
        assert dialect.wait_reached(result) is reached


@pytest.mark.parametrize(("flavor", "have", "base", "missing"), [
    ("mariadb", "0-1-3,0-1-9", "0-1-5", "0-1-9"),    # the highest seq per domain and server
    ("mariadb", "", "", ""),
    ("mysql", f"{UUID_A}:1-3:2-8", f"{UUID_A}:1-4", f"{UUID_A}:5-8"),  # overlaps merged
    ("mysql", f"{UUID_A}:1-3:4-6", "", f"{UUID_A}:1-6"),                 # so are neighbours
    ("mysql", f"{UUID_B}:4,{UUID_A}:9", "", f"{UUID_A}:9,{UUID_B}:4"),  # sorted by UUID
    ("mysql", f"{UUID_A}:1-5,{UUID_A}:6-7", f"{UUID_A}:1-7", ""),       # one UUID twice
    ("mysql", "", "", ""),
])
def test_missing_gtids_normalizes_what_it_returns(flavor: str, have: str, base: str,
                                                  missing: str) -> None:
    assert missing_gtids(flavor, have, base) == missing  # type: ignore[arg-type]


def test_an_unreadable_base_set_is_an_error_too() -> None:
    with pytest.raises(GtidSetError, match="not a MariaDB GTID"):
        missing_gtids("mariadb", "0-1-5", "0-1")
    with pytest.raises(GtidSetError, match="empty interval"):
        missing_gtids("mysql", f"{UUID_A}:1", f"{UUID_A}:0")
