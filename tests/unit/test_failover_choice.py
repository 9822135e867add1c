"""The failover's choice and configuration rules, without servers.

Each rule of :mod:`arbiter._choice` is pinned on GTID sets shaped as the servers report
them (MariaDB positions per domain and server, MySQL UUID interval sets); the real
servers' answers are exercised by tests/integration/test_failover.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arbiter._choice import LagSample, Observed, choose, effective_lag, errant_gtids
from arbiter._config import ConfigError, load
from components.mysql._replication_sql import ReplicaStatus

UUID = "3e11fa47-71ca-11e1-9e33-c80aa9429562"


def _status(*, lag: int | None = 0, sql: bool = True, sql_errno: int = 0,
            position: str = "") -> ReplicaStatus:
    return ReplicaStatus(configured=True, source_host="m0", source_port=3306,
                         source_user="repl", gtid_positioning=True, io_state="Connecting",
                         sql_running=sql, lag_seconds=lag, gtid_position=position,
                         last_io_errno=2003, last_io_error="cannot connect",
                         last_sql_errno=sql_errno, last_sql_error="boom" if sql_errno else "",
                         read_only=True, super_read_only=None, server_id=0)


def replica(ordinal: int, executed: str, retrieved: str = "", *, position: str | None = None,
            **status: object) -> Observed:
    """A replica; ``position`` (MariaDB gtid_slave_pos) defaults to its last GTID."""
    if position is None:
        position = executed.rsplit(",", maxsplit=1)[-1] if executed else ""
    return Observed(ordinal, status=_status(position=position, **status),  # type: ignore[arg-type]
                    executed=executed, retrieved=retrieved)


DEAD = Observed(0, error="connection refused", recorded_primary=True)


def test_the_replica_that_retrieved_more_wins_even_if_it_applied_less() -> None:
    # 1 applied 0-1-90 but retrieved up to 100 (an acknowledged commit in its relay log).
    choice = choose("mariadb", [DEAD, replica(1, "0-1-90", "0-1-100"), replica(2, "0-1-95")],
                    max_lag=30)
    assert choice.candidate is not None
    assert choice.candidate.ordinal == 1
    assert "lacks server 1's 0-1-100" in choice.refused[2]
    assert "unreachable" in choice.refused[0]


def test_a_lagging_replica_is_never_promoted_and_the_reason_names_the_lag() -> None:
    choice = choose("mariadb", [DEAD, replica(1, "0-1-100", lag=120),
                                replica(2, "0-1-100", lag=90)], max_lag=30)
    assert choice.candidate is None
    assert "lag 120s is beyond maxLagSeconds=30" in choice.reason()
    assert "lag 90s" in choice.reason()


def test_a_less_advanced_replica_is_not_chosen_over_a_lagging_one_that_has_more() -> None:
    choice = choose("mariadb", [DEAD, replica(1, "0-1-100", lag=120), replica(2, "0-1-80")],
                    max_lag=30)
    assert choice.candidate is None
    assert "lacks server 1's 0-1-100" in choice.refused[2]


def test_errant_replica_is_refused_and_named_but_does_not_block_the_others() -> None:
    errant = replica(2, "0-1-100,0-3-101", position="0-1-100")
    choice = choose("mariadb", [DEAD, replica(1, "0-1-100"), errant], max_lag=30)
    assert choice.candidate is not None
    assert choice.candidate.ordinal == 1
    assert choice.errant == {2: "0-3-101"}


def test_a_former_primarys_own_history_is_not_errant_on_a_lone_survivor() -> None:
    # 1 was primary (server id 2) before a switchover back to 0: its own GTIDs are old.
    lone = replica(1, "0-2-50,0-1-100", position="0-1-100")
    assert errant_gtids("mariadb", lone, []) == ""
    choice = choose("mariadb", [DEAD, lone], max_lag=30)
    assert choice.candidate is not None


def test_stopped_applier_is_refused() -> None:
    choice = choose("mariadb", [DEAD, replica(1, "0-1-100", sql=False, sql_errno=1062)],
                    max_lag=30)
    assert choice.candidate is None
    assert "SQL thread stopped on error 1062" in choice.reason()


def test_a_restarted_recorded_primary_that_has_everything_is_preferred() -> None:
    back = Observed(0, executed="0-1-100", recorded_primary=True)
    choice = choose("mariadb", [back, replica(1, "0-1-100"), replica(2, "0-1-100")],
                    max_lag=30)
    assert choice.candidate is back


def test_mysql_sets_are_compared_exactly() -> None:
    choice = choose("mysql", [DEAD, replica(1, f"{UUID}:1-90", f"{UUID}:1-100"),
                              replica(2, f"{UUID}:1-95")], max_lag=30)
    assert choice.candidate is not None
    assert choice.candidate.ordinal == 1
    other = "4e11fa47-71ca-11e1-9e33-c80aa9429562"
    errant = replica(2, f"{UUID}:1-100,{other}:1")
    assert errant_gtids("mysql", errant, [replica(1, f"{UUID}:1-100")]) == f"{other}:1"


def test_kept_out_servers_are_never_chosen() -> None:
    choice = choose("mariadb", [DEAD, replica(1, "0-1-100")], max_lag=30,
                    excluded={1: "errant GTIDs 0-2-7"})
    assert choice.candidate is None
    assert "kept out: errant GTIDs 0-2-7" in choice.refused[1]


def _config(tmp_path: Path, **overrides: object) -> Path:
    (tmp_path / "topology").write_text("t-secret\n")
    (tmp_path / "replication").write_text("r-secret\n")
    data: dict[str, object] = {
        "flavor": "mariadb", "servers": [{"host": "m0", "port": 3306}],
        "topology_user": "topology", "topology_password_file": "topology",
        "replication_user": "repl", "replication_password_file": "replication",
        "record": {"namespace": "db", "name": "mysql-primary"},
        "lock": {"backend": "etcd", "endpoints": ["http://etcd:2379"], "name": "l",
                 "leader_name": "l-arbiter"},
        "failover": {"ttl_seconds": 5, "checks": 3, "period_seconds": 1}}
    data.update(overrides)
    path = tmp_path / "arbiter.json"
    path.write_text(json.dumps(data))
    return path


def test_config_reads_passwords_from_files(tmp_path: Path) -> None:
    config = load(_config(tmp_path))
    assert config.topology_password == "t-secret"
    assert config.sources == config.servers
    assert config.failover.checks == 3


def test_config_lists_every_problem_at_once(tmp_path: Path) -> None:
    path = _config(tmp_path, flavor="postgres", failover={"checks": 0, "ttl_seconds": "5"},
                   lock={"backend": "zookeeper"}, topology_password_file="missing")
    with pytest.raises(ConfigError) as error:
        load(path)
    text = str(error.value)
    for expected in ("flavor: got 'postgres'", "failover.checks: got 0",
                     "failover.ttl_seconds: got '5'", "lock.backend: got 'zookeeper'",
                     "topology_password_file: cannot read", "lock.name: required"):
        assert expected in text, text


def test_config_refuses_an_empty_password_file(tmp_path: Path) -> None:
    path = _config(tmp_path)
    (tmp_path / "topology").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        load(path)


def test_lag_from_a_backlog_ends_once_the_backlog_is_applied() -> None:
    # NULL lag (the source is gone): judged by the sample taken while it was healthy.
    gone = replica(1, "0-1-100", "0-1-100", lag=None)
    assert effective_lag("mariadb", gone, LagSample(90, backlog=True)) == 0
    behind = replica(1, "0-1-80", "0-1-100", lag=None)
    assert effective_lag("mariadb", behind, LagSample(90, backlog=True)) == 90
    # A lag without a backlog: it was not receiving; applying its relay log changes nothing.
    assert effective_lag("mariadb", gone, LagSample(90, backlog=False)) == 90
    assert effective_lag("mariadb", gone, None) is None
    assert effective_lag("mariadb", replica(1, "0-1-100", lag=7), LagSample(90, True)) == 7
