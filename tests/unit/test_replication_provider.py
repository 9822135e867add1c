"""ReplicationInit without servers: Check, Diff decisions, floats, per-flavor SQL, secrets.

The integration suite runs MariaDB for real; MySQL 8.4's statements exist only here, so
they are pinned exactly, as is every rule that decides what converge would do.
"""

from __future__ import annotations

import base64
import ssl
from dataclasses import dataclass
from typing import Any

import pulumi
import pytest
from pulumi.dynamic.dynamic import serialize_provider
from pulumi.runtime import rpc

import distlock
from components.config import Endpoint
from components.mysql import _replication as replication
from components.mysql._replication import (
    ReplicationInit,
    ReplicationInitArgs,
    _Observation,
    _ReplicationProvider,
)
from components.mysql._replication_sql import (
    DIALECTS,
    IDENTITY,
    Desired,
    GtidSetError,
    Identity,
    ReplicaStatus,
    Statement,
    identity_problems,
    missing_gtids,
    parse_identity,
    replica_drift,
    replica_refusals,
    replica_repair,
)

PASSWORD = "rotate-me-0123456789"


def props(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "flavor": "mariadb",
        "primary": {"host": "127.0.0.1", "port": 13306.0},
        "replicas": [{"host": "127.0.0.1", "port": 13307.0},
                     {"host": "127.0.0.1", "port": 13308.0}],
        "source_host": "orders-mysql-0.orders-mysql.db.svc.cluster.local",
        "source_port": 3306.0,
        "admin_user": "admin",
        "admin_password": "admin-secret",
        "replication_user": "repl",
        "replication_password": PASSWORD,
        "max_lag_seconds": 30.0,
        "timeout_seconds": 300.0,
        "lock_endpoints": [],
    }
    base.update(overrides)
    return base


def failures(**overrides: Any) -> dict[str, str]:
    result = _ReplicationProvider().check({}, props(**overrides))
    return {f.property: f.reason for f in result.failures}


# --- Check ---------------------------------------------------------------------------


def test_valid_inputs_pass_and_floats_come_back_as_ints() -> None:
    result = _ReplicationProvider().check({}, props())
    assert result.failures == []
    assert result.inputs["source_port"] == 3306
    assert isinstance(result.inputs["source_port"], int)
    assert result.inputs["replicas"][1] == {"host": "127.0.0.1", "port": 13308}
    assert result.inputs["max_lag_seconds"] == 30


@pytest.mark.parametrize(("overrides", "prop", "fragment"), [
    ({"flavor": "postgres"}, "flavor", "must be one of"),
    ({"primary": {"host": "127.0.0.1", "port": 70000}}, "primary.port", "between 1 and 65535"),
    ({"primary": {"host": "bad host", "port": 1}}, "primary.host", "DNS name"),
    ({"primary": {"host": "h", "port": 1, "tls": True}}, "primary", "unknown keys"),
    ({"primary": "127.0.0.1:3306"}, "primary", "object with host and port"),
    ({"replicas": [{"host": "127.0.0.1", "port": 13306}]}, "replicas[0]", "primary's endpoint"),
    ({"replicas": [{"host": "h", "port": 1}, {"host": "h", "port": 1}]}, "replicas[1]",
     "listed twice"),
    ({"replicas": "h:1"}, "replicas", "list of endpoints"),
    ({"source_port": 2.5}, "source_port", "whole number"),
    ({"source_port": True}, "source_port", "whole number"),
    ({"source_host": ""}, "source_host", "DNS name"),
    ({"max_lag_seconds": 0}, "max_lag_seconds", "between 1 and 86400"),
    ({"timeout_seconds": "60"}, "timeout_seconds", "whole number"),
    ({"admin_user": "ad min"}, "admin_user", "account name"),
    ({"replication_user": "admin"}, "replication_user", "must differ from admin_user"),
    ({"replication_password": ""}, "replication_password", "never empty"),
    ({"admin_password": None}, "admin_password", "is required"),
    ({"replication_password": "x" * 97}, "replication_password", "at most 96"),
    ({"flavor": "mysql", "replication_password": "x" * 33}, "replication_password", "at most 32"),
    ({"flavor": "mysql", "replication_user": "r" * 33}, "replication_user", "at most 32"),
    ({"lock_endpoints": ["etcd:2379"]}, "lock_endpoints[0]", "etcd client URL"),
    ({"replica_count": 2}, "replica_count", "not a ReplicationInit property"),
])
def test_bad_inputs_become_check_failures_naming_the_property(
        overrides: dict[str, Any], prop: str, fragment: str) -> None:
    found = failures(**overrides)
    assert prop in found, found
    assert fragment in found[prop]


def test_every_problem_is_reported_at_once() -> None:
    found = failures(flavor="nope", source_port=0, replication_password="")
    assert {"flavor", "source_port", "replication_password"} <= set(found)


def test_password_values_never_appear_in_check_failures() -> None:
    long_password = "p" * 200
    found = failures(replication_password=long_password, admin_password=7)
    assert long_password not in repr(found)
    assert "200 characters" in found["replication_password"]


def test_unknown_values_in_preview_are_not_failures() -> None:
    result = _ReplicationProvider().check({}, props(replication_password=rpc.UNKNOWN))
    assert result.failures == []
    assert result.inputs["replication_password"] == rpc.UNKNOWN


# --- Diff ----------------------------------------------------------------------------


@dataclass
class FakeCluster:
    """Stands in for the live look at the cluster: the problems it reports, who asked."""

    problems: tuple[str, ...] = ()
    calls: int = 0


@pytest.fixture
def observed(monkeypatch: pytest.MonkeyPatch) -> FakeCluster:
    fake = FakeCluster()

    def observe(_spec: Any, *, with_position: bool) -> _Observation:
        fake.calls += 1
        return _Observation("0-1-5", (), fake.problems)

    monkeypatch.setattr(replication, "_observe", observe)
    return fake


def olds_from_state(**overrides: Any) -> dict[str, Any]:
    """State as the engine hands it back: every number a float, outputs beside inputs."""
    state = props(**overrides)
    state.update({"replica_status": [{"ordinal": 1.0, "lag_seconds": 0.0}],
                  "primary_gtid_position": "0-1-5", "in_sync": True, "__provider": "x"})
    return state


def test_diff_is_empty_for_the_same_inputs_with_floats_and_healthy_servers(
        observed: FakeCluster) -> None:
    news = _ReplicationProvider().check({}, props()).inputs
    result = _ReplicationProvider().diff("id", olds_from_state(), news)
    assert result.changes is False
    assert result.replaces == []
    assert observed.calls == 1, "unchanged inputs: the live state decides"


def test_diff_reports_live_drift_with_unchanged_inputs(observed: FakeCluster) -> None:
    observed.problems = ("replica 1 (127.0.0.1:13307): IO thread is No",)
    result = _ReplicationProvider().diff("id", olds_from_state(), props())
    assert result.changes is True
    assert not result.replaces, "nothing is ever replaced: every change is an in-place update"


@pytest.mark.parametrize("change", [
    {"replication_password": "new-password"},
    {"replicas": [{"host": "127.0.0.1", "port": 13307.0}]},
    {"source_host": "other-0.other.db.svc"},
    {"timeout_seconds": 60.0},
])
def test_changed_inputs_diff_without_touching_servers(monkeypatch: pytest.MonkeyPatch,
                                                      change: dict[str, Any]) -> None:
    def no_servers(*_: object, **__: object) -> _Observation:
        raise AssertionError("an input change needs no server round trip")

    monkeypatch.setattr(replication, "_observe", no_servers)
    result = _ReplicationProvider().diff("id", olds_from_state(), props(**change))
    assert result.changes is True
    assert not result.replaces


def test_unknown_news_in_preview_diff_as_a_change(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replication, "_observe", None)
    result = _ReplicationProvider().diff("id", olds_from_state(),
                                         props(replication_password=rpc.UNKNOWN))
    assert result.changes is True


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


# --- the resource and its provider as Pulumi sees them -----------------------------------


def test_provider_pickles_by_reference_with_nothing_captured() -> None:
    pickled = base64.b64decode(serialize_provider(_ReplicationProvider()))
    assert b"components.mysql._replication" in pickled
    assert b"pymysql" not in pickled
    assert len(pickled) < 200, "the provider must be pickled by reference, not by value"


class _Mocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.resources: list[pulumi.runtime.MockResourceArgs] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.resources.append(args)
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], Any]:
        return {}, None


@pulumi.runtime.test  # type: ignore[untyped-decorator]
def test_resource_sends_passwords_as_secrets_and_marks_secret_outputs() -> Any:
    mocks = _Mocks()
    pulumi.runtime.set_mocks(mocks, project="mysql-cluster", stack="test", preview=False)
    seen_opts: list[pulumi.ResourceOptions] = []

    def capture(args: pulumi.ResourceTransformationArgs) -> None:
        seen_opts.append(args.opts)

    resource = ReplicationInit("orders-replication", ReplicationInitArgs(
        flavor="mariadb", primary=Endpoint("orders-mysql-0.orders-mysql", 3306),
        replicas=(Endpoint("orders-mysql-1.orders-mysql", 3306),),
        source_host="orders-mysql-0.orders-mysql", source_port=3306,
        admin_user="admin", admin_password=pulumi.Output.secret("admin-pw"),
        replication_user="repl", replication_password="plain-but-made-secret",
        max_lag_seconds=30, timeout_seconds=300),
        pulumi.ResourceOptions(transformations=[capture]))
    assert seen_opts[0].additional_secret_outputs is not None
    assert {"admin_password", "replication_password"} <= set(
        seen_opts[0].additional_secret_outputs)

    def verify(secret: list[bool]) -> None:
        assert secret == [True, True]
        (registered,) = [r for r in mocks.resources if r.name == "orders-replication"]
        assert registered.typ == "pulumi-python:dynamic/mysql:ReplicationInit"
        for key in ("admin_password", "replication_password"):
            assert rpc.is_rpc_secret(registered.inputs[key]), key
        assert registered.inputs["replicas"] == [
            {"host": "orders-mysql-1.orders-mysql", "port": 3306}]
        assert registered.inputs["lock_endpoints"] == []

    outputs: Any = resource
    return pulumi.Output.all(
        pulumi.Output.from_input(outputs.admin_password.is_secret()),
        pulumi.Output.from_input(outputs.replication_password.is_secret()),
    ).apply(verify)


def test_connections_share_one_preferred_tls_context() -> None:
    """TLS when offered (as pymysql's default), without rebuilding a CA store per connect."""
    connection: Any = replication._Connection(host="127.0.0.1", port=1, defer_connect=True)
    context = connection.ctx
    assert context is replication._preferred_tls()
    assert context.verify_mode == ssl.CERT_NONE
    assert connection.ssl is True
    assert connection._ssl_required is False, "a server without TLS must still be reachable"


class _LostLock:
    def check(self) -> None:
        raise distlock.LockLost("lock 'mysql-cluster/x/replication' was lost: lease expired")


def test_a_lost_lock_stops_the_next_change_with_a_clear_message() -> None:
    guard = replication._Guard(_LostLock())  # type: ignore[arg-type]
    with pytest.raises(replication.ReplicationError) as stopped:
        guard.check("changing replica 2 (127.0.0.1:13308)")
    message = str(stopped.value)
    assert "lease expired" in message
    assert "stopped before changing replica 2 (127.0.0.1:13308)" in message
    replication._Guard().check("anything")  # no lock configured: never in the way
