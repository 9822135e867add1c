"""The switchover engine statement by statement, for both flavors, without a server.

MySQL 8.4 exists only here: every statement it would receive is pinned. The servers are
a fake that records what each ordinal was sent and answers the few reads the engine
makes; the record is the in-memory store with the same compare-and-swap rules.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from components.mysql._record import (
    MemoryRecordStore,
    PrimaryRecord,
    RecordConflict,
    StaleEpoch,
    fence,
)
from components.mysql._replication_sql import DIALECTS, Statement
from components.mysql._switchover import Plan, Source, SwitchoverError, switchover
from components.mysql.flavor import Flavor

POSITIONS: dict[Flavor, str] = {"mariadb": "0-1-42",
                                "mysql": "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-42"}


@dataclass
class FakeSession:
    ordinal: int
    log: list[tuple[int, str]]
    flavor: Flavor
    caught_up: bool

    def run(self, statement: Statement) -> list[dict[str, Any]]:
        self.log.append((self.ordinal, statement.display()))
        sql = statement.sql
        position = POSITIONS[self.flavor]
        if "PROCESSLIST" in sql:
            return []
        if "WAIT" in sql:
            return [{"result": 0 if self.caught_up else -1}]
        if "gtid_binlog_pos AS position" in sql or "BINARY LOG STATUS" in sql:
            return [{"position": position, "Executed_Gtid_Set": position}]
        if "gtid_binlog_state" in sql or "gtid_executed" in sql:
            return [{"gtid_binlog_state": position, "gtid_position": position}]
        return []

    def one(self, statement: Statement) -> dict[str, Any] | None:
        rows = self.run(statement)
        return rows[0] if rows else None


@dataclass
class FakeServers:
    flavor: Flavor
    caught_up: bool = True
    log: list[tuple[int, str]] = field(default_factory=list)

    @contextlib.contextmanager
    def session(self, ordinal: int, *, read_timeout: int = 60) -> Iterator[FakeSession]:
        del read_timeout
        yield FakeSession(ordinal, self.log, self.flavor, self.caught_up)

    def label(self, ordinal: int) -> str:
        return f"server {ordinal}"

    def changes(self) -> list[tuple[int, str]]:
        """Everything sent except reads."""
        return [(o, sql) for o, sql in self.log if not sql.startswith("SELECT")
                and not sql.startswith("SHOW")]


def _plan(epoch: int = 7, timeout: float = 1) -> Plan:
    return Plan(old=0, new=1, ordinals=(0, 1, 2), epoch=epoch, grace_seconds=0,
                timeout_seconds=timeout, topology_user="topology",
                source=Source("db-1.db-headless", 3306, "repl", "s3cret"))


MYSQL_CHANGE = ("CHANGE REPLICATION SOURCE TO SOURCE_HOST='db-1.db-headless', "
                "SOURCE_PORT=3306, SOURCE_USER='repl', SOURCE_PASSWORD='***', "
                "SOURCE_AUTO_POSITION=1, GET_SOURCE_PUBLIC_KEY=1")


@pytest.mark.parametrize("flavor", ["mysql", "mariadb"])
def test_statements_in_order(flavor: Flavor) -> None:
    dialect = DIALECTS[flavor]
    servers = FakeServers(flavor)
    store = MemoryRecordStore(PrimaryRecord(0, 3, "1"))
    outcome = switchover(servers, dialect, _plan(), store, record=store.read())
    change = dialect.change_source("db-1.db-headless", 3306, "repl", "s3cret").display()
    if flavor == "mysql":
        assert change == MYSQL_CHANGE
        assert servers.changes() == [
            (0, "SET GLOBAL super_read_only = ON"),
            (1, "STOP REPLICA"),
            (1, "RESET REPLICA ALL"),
            (1, "SET GLOBAL super_read_only = OFF"),
            (1, "SET GLOBAL read_only = OFF"),
            (0, "STOP REPLICA"), (0, change), (0, "START REPLICA"),
            (2, "STOP REPLICA"), (2, change), (2, "START REPLICA"),
        ]
        assert (1, "SELECT WAIT_FOR_EXECUTED_GTID_SET('"
                   f"{POSITIONS['mysql']}', 1) AS result") in servers.log
    else:
        stop, start = dialect.stop.sql, dialect.start.sql
        assert servers.changes() == [
            (0, "SET GLOBAL read_only = ON"),
            (1, stop),
            (1, "RESET REPLICA ALL"),
            (1, "SET GLOBAL read_only = OFF"),
            (0, stop), (0, "SET GLOBAL gtid_slave_pos = @@GLOBAL.gtid_binlog_pos"),
            (0, change), (0, start),
            (2, stop), (2, change), (2, start),
        ]
        assert (1, f"SELECT MASTER_GTID_WAIT('{POSITIONS['mariadb']}', 1) AS result") in (
            servers.log)
    assert "s3cret" not in repr(servers.log)
    # The epoch was claimed and the record fenced (no primary, the old one holding the
    # data) before any server changed; it names the candidate only once it has caught up.
    assert [(r.primary, r.epoch, r.previous) for r in store.writes] == [
        (None, 7, 0), (1, 7, None)]
    assert outcome.record == PrimaryRecord(1, 7, "3")
    assert outcome.position == POSITIONS[flavor]


@pytest.mark.parametrize("flavor", ["mysql", "mariadb"])
def test_timeout_rolls_back_the_old_primary_only(flavor: Flavor) -> None:
    dialect = DIALECTS[flavor]
    servers = FakeServers(flavor, caught_up=False)
    store = MemoryRecordStore(PrimaryRecord(0, 3, "1"))
    with pytest.raises(SwitchoverError, match=r"rolled back.*switchoverTimeoutSeconds=1"):
        switchover(servers, dialect, _plan(), store, record=store.read())
    read_only_on = [s.sql for s in dialect.read_only_on]
    writable = [s.sql for s in dialect.writable]
    assert servers.changes() == [(0, s) for s in read_only_on + writable]
    # Fenced, then given back to the old primary before it was writable again.
    assert [(r.primary, r.previous) for r in store.writes] == [(None, 0), (0, None)]
    assert store.read() == PrimaryRecord(0, 7, "3")  # the primary never moved


def test_an_older_epoch_changes_nothing() -> None:
    servers = FakeServers("mysql")
    store = MemoryRecordStore(PrimaryRecord(0, 3, "1"))
    stale = store.read()
    store.write(0, 9, stale)  # a newer run claimed the cluster meanwhile
    with pytest.raises(RecordConflict):
        switchover(servers, DIALECTS["mysql"], _plan(epoch=7), store, record=stale)
    assert servers.log == []


def test_a_run_overtaken_mid_way_stops_before_its_next_write() -> None:
    servers = FakeServers("mariadb")
    store = MemoryRecordStore(PrimaryRecord(0, 3, "1"))

    class Overtaken(FakeServers):
        @contextlib.contextmanager
        def session(self, ordinal: int, *, read_timeout: int = 60) -> Iterator[FakeSession]:
            if ordinal == 1 and any(o == 1 for o, _ in self.log):
                current = store.read()
                assert current is not None
                if current.epoch == 7:
                    store.write(0, 8, current)  # another run took over after the wait
            with super().session(ordinal, read_timeout=read_timeout) as session:
                yield session

    servers = Overtaken("mariadb")
    with pytest.raises(SwitchoverError) as failure:
        switchover(servers, DIALECTS["mariadb"], _plan(), store, record=store.read())
    assert "epoch 7 is not the record's epoch 8" in str(failure.value)
    # Never promoted: the candidate's replication was not reset nor made writable.
    assert not any(o == 1 and ("RESET" in sql or "read_only = OFF" in sql)
                   for o, sql in servers.changes())
    with pytest.raises(StaleEpoch):
        fence(store, 7, "anything")


@pytest.mark.parametrize("caught_up", [True, False])
def test_no_server_is_writable_while_the_record_names_another(caught_up: bool) -> None:
    """Whenever a server is told to accept writes, the record already names it; while a
    server is told to stop them, and until the candidate caught up, it names nobody."""
    dialect = DIALECTS["mariadb"]
    store = MemoryRecordStore(PrimaryRecord(0, 3, "1"))
    seen: list[tuple[int, str, PrimaryRecord | None]] = []

    class Watching(FakeServers):
        @contextlib.contextmanager
        def session(self, ordinal: int, *, read_timeout: int = 60) -> Iterator[FakeSession]:
            with super().session(ordinal, read_timeout=read_timeout) as session:
                real_run = session.run

                def run(statement: Statement) -> list[dict[str, Any]]:
                    seen.append((ordinal, statement.sql, store.read()))
                    return real_run(statement)

                session.run = run  # type: ignore[method-assign]
                yield session

    servers = Watching("mariadb", caught_up=caught_up)
    with contextlib.suppress(SwitchoverError):
        switchover(servers, dialect, _plan(), store, record=store.read())
    writable = {s.sql for s in dialect.writable}
    opened = [(o, r) for o, sql, r in seen if sql in writable]
    assert opened, seen
    assert all(r is not None and r.primary == o for o, r in opened), opened
    for ordinal, sql, record in seen:
        if "WAIT" in sql or sql in {s.sql for s in dialect.read_only_on}:
            assert record is not None, (ordinal, sql)
            assert (record.fenced, record.previous) == (True, 0), (ordinal, sql, record)


def _cnf(flavor: str, role: str) -> dict[str, list[str]]:
    from components.mysql.cluster import CONF_ROOT  # noqa: PLC0415

    options: dict[str, list[str]] = {}
    for line in (CONF_ROOT / flavor / f"{role}.cnf").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = (part.strip() for part in line.split("=", 1))
            options.setdefault(key, []).append(value)
    return options


@pytest.mark.parametrize("flavor", ["mysql", "mariadb"])
@pytest.mark.parametrize("role", ["primary", "replica"])
def test_every_server_starts_read_only_and_can_be_demoted(flavor: str, role: str) -> None:
    options = _cnf(flavor, role)
    assert options["read_only"] == ["ON"]
    if flavor == "mysql":
        assert options["super_read_only"] == ["ON"]
    # A primary becomes a replica by a switchover, without a restart.
    assert options["relay_log"] == ["relay-bin"]
    assert options["relay_log_recovery"] == ["ON"]


@pytest.mark.parametrize("role", ["primary", "replica"])
def test_mysql_loads_the_semisync_plugins_the_dialect_sets(role: str) -> None:
    """MySQL 8.4 has no built-in semi-sync: the variables the dialect sets exist only with
    the rpl_semi_sync_source / rpl_semi_sync_replica plugins loaded, both on every server."""
    dialect = DIALECTS["mysql"]
    assert _cnf("mysql", role)["plugin_load_add"] == ["semisync_source.so",
                                                     "semisync_replica.so"]
    sql = " ".join(s.sql for s in (*dialect.semisync_source(True, 5, 2),
                                   *dialect.semisync_replica(True)))
    assert "rpl_semi_sync_source_enabled = ON" in sql
    assert "rpl_semi_sync_source_wait_for_replica_count = %s" in sql
    assert "rpl_semi_sync_replica_enabled = ON" in sql
    assert "rpl_semi_sync_master" not in sql
    assert "rpl_semi_sync_slave" not in sql
    assert "plugin_load_add" not in _cnf("mariadb", role)  # built into MariaDB
