"""Opening a read-only recorded primary is refused while a replica holds GTIDs it lacks
(components.mysql._switchover.primary_behind), executed or only in the relay log, on the
containment test the arbiter's choice uses too (_replication_sql.not_contained)."""

from __future__ import annotations

from components.mysql._replication_sql import DIALECTS, held_gtids, not_contained
from components.mysql._switchover import per_domain, primary_behind

UUID_A = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
UUID_B = "4e11fa47-71ca-11e1-9e33-c80aa9429562"


def test_a_replica_that_only_retrieved_a_commit_the_primary_lost_is_named() -> None:
    held = {"replica 1": held_gtids("0-7001-36", "0-7001-37"),
            "replica 2": held_gtids("0-7001-36", "")}
    [line] = primary_behind("mariadb", "primary m0", "0-7001-36", held)
    assert line.startswith("replica 1 holds GTIDs the read-only primary m0 lacks "
                           "(domain 0: 0-7001-37)")
    assert "do not re-clone" in line


def test_every_domain_is_named_apart() -> None:
    [line] = primary_behind("mariadb", "primary m0", "0-7001-10,1-7001-4",
                            {"replica 2": "0-7001-11,1-7001-5,2-7003-1"})
    assert "(domain 0: 0-7001-11; domain 1: 1-7001-5; domain 2: 2-7003-1)" in line


def test_nothing_is_refused_when_the_primary_holds_everything() -> None:
    assert primary_behind("mariadb", "primary m0", "0-7001-40,0-7002-3",
                          {"replica 1": "0-7001-40", "replica 2": "0-7002-3,0-7001-39"}) == []
    assert primary_behind("mysql", "primary m0", f"{UUID_A}:1-100",
                          {"replica 1": f"{UUID_A}:1-99", "replica 2": ""}) == []


def test_mysql_sets_are_subtracted_exactly() -> None:
    assert not_contained("mysql", f"{UUID_A}:1-100",
                         {1: f"{UUID_A}:1-101", 2: f"{UUID_A}:5-7,{UUID_B}:1"}) == {
        1: f"{UUID_A}:101", 2: f"{UUID_B}:1"}
    assert per_domain("mysql", f"{UUID_A}:101,{UUID_B}:1") == f"{UUID_A}:101, {UUID_B}:1"


def test_the_status_carries_the_relay_logs_gtids_for_both_flavors() -> None:
    mariadb = DIALECTS["mariadb"].parse_status(
        {"Master_Host": "m0", "Gtid_IO_Pos": "0-7001-37"}, {"gtid_position": "0-7001-36"})
    assert mariadb.retrieved == "0-7001-37"
    mysql = DIALECTS["mysql"].parse_status(
        {"Source_Host": "m0", "Retrieved_Gtid_Set": f"{UUID_A}:1-\n37"}, {})
    assert mysql.retrieved == f"{UUID_A}:1-37"
