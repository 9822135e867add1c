"""extraServerConfig cannot reach a managed server option in any spelling (issue 16, item 5).

The server, not our reading of its source, decides what a spelling reaches: a real
mariadbd prints the value of every option after parsing its command line (``--help
--verbose``), so comparing that table with and without one extra option shows which
option the spelling set. The command line is the one the StatefulSet gives the server:
the role's cnf settings, then the stack's options as rendered by the component.
A started server with the issue's spellings shows they take effect over the cnf.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

from components.config import ConfigError, StackConfig, managed_server_option, parse
from components.mysql.cluster import _server_options
from tests.support import mocks
from tests.support.mariadb import MariaDBServer
from tests.support.mocks import load_stack_file
from tests.support.procs import require_binary, run

CONF = mocks.REPO_ROOT / "components" / "mysql" / "conf"
# The spellings issue 16 found reaching the server, with their values.
ISSUE_SPELLINGS = [("loose-read-only", "OFF"), ("loose-server-id", "1"),
                   ("loose-skip-log-bin", "1"), ("loose-sync-binlog", "0"),
                   ("read-onl", "0"), ("slave_skip_errors", "all"),
                   ("skip-grant-tables", "1")]
# Tuning a stack may need: these must still pass.
ALLOWED = [("max_connections", "500"), ("max-connections", "500"),
           ("loose-max-connections", "500"), ("innodb_buffer_pool_size", "256M"),
           ("innodb-log-file-size", "96M"), ("binlog_cache_size", "65536"),
           ("log_bin_trust_function_creators", "1"), ("character_set_server", "utf8mb4"),
           ("sql_mode", "STRICT_ALL_TABLES"), ("thread_cache_size", "16"),
           ("long_query_time", "2"), ("slow_query_log", "1"), ("wait_timeout", "600"),
           ("innodb_flush_neighbors", "0"), ("performance_schema", "ON"),
           ("tmp_table_size", "64M"), ("skip-name-resolve", "1")]


def _dev() -> StackConfig:
    return parse(mocks.config_map(load_stack_file("dev")), stack="dev")


def _refusal(option: str, value: str) -> str | None:
    config = load_stack_file("dev")
    config["mysql-cluster:mysql"]["extraServerConfig"] = {option: value}
    try:
        parse(mocks.config_map(config), stack="dev")
    except ConfigError as error:
        return str(error)
    return None


@pytest.mark.parametrize(("option", "value"), ISSUE_SPELLINGS)
def test_the_spellings_from_the_issue_are_refused(option: str, value: str) -> None:
    message = _refusal(option, value)
    assert message is not None
    assert f"extraServerConfig.{option}: got {value!r}; is managed by the cluster" in message


@pytest.mark.parametrize(("option", "value"), ALLOWED)
def test_ordinary_tuning_passes(option: str, value: str) -> None:
    assert _refusal(option, value) is None


def _cnf_settings(path: Path) -> list[tuple[str, str]]:
    pairs = []
    for line in path.read_text().splitlines():
        key, equals, value = line.partition("=")
        if equals and not line.lstrip().startswith("#"):
            pairs.append((key.strip(), value.strip()))
    return pairs


def test_every_option_the_cnf_files_set_is_managed() -> None:
    """The cnf files are what the cluster relies on; the script sets server_id; the
    component sets the binary log retention."""
    names = {key for path in CONF.glob("*/*.cnf") for key, _ in _cnf_settings(path)}
    names |= {"server_id", "binlog_expire_logs_seconds"}
    assert {n for n in names if managed_server_option(n) is None} == set()


# ---------------------------------------------------------------- the server's own view

def _help(args: list[str]) -> tuple[dict[str, str], str]:
    """mariadbd's option table after parsing ``args`` (no config files), and its errors."""
    result = run(["mariadbd", "--no-defaults", "--help", "--verbose", *args], check=False)
    table = result.stdout.split("\n-------", 1)[-1].split("\n", 1)[-1]
    values = {}
    for line in table.splitlines():
        name, _, value = line.partition(" ")
        if name:
            values[name.replace("-", "_")] = value.strip()
    errors = "\n".join(line for line in result.stderr.splitlines() if "[ERROR]" in line)
    return values, errors


def _option_names(help_text: str) -> list[str]:
    return sorted({m.replace("-", "_") for m in re.findall(r"^  (?:-., )?--([\w-]+)", help_text,
                                                           re.MULTILINE)})


def _shortest_unique_prefix(name: str, names: list[str]) -> str:
    for length in range(1, len(name)):
        prefix = name[:length]
        if [n for n in names if n.startswith(prefix)] == [name]:
            return prefix
    return name


# A value each managed option does not have under the replica cnf.
_OTHER_VALUE = {"read_only": "0", "log_slave_updates": "0", "gtid_strict_mode": "0",
                "relay_log_recovery": "0", "sync_binlog": "0",
                "innodb_flush_log_at_trx_commit": "2", "server_id": "7",
                "log_bin": "other-bin", "log_bin_index": "other.index",
                "relay_log": "other-relay", "relay_log_index": "other-relay.index",
                "binlog_format": "STATEMENT", "binlog_expire_logs_seconds": "3600"}
_BOOLEANS = ("read_only", "log_slave_updates", "gtid_strict_mode", "relay_log_recovery")


def _spellings(option: str, names: list[str]) -> list[tuple[str, str, str]]:
    """(spelling, value, what must precede it) for one option: every way of writing it.
    my_getopt applies only the last modifier it strips: skip-loose-X=0 sets X to 0."""
    value = _OTHER_VALUE[option]
    dashed = option.replace("_", "-")
    prefix = _shortest_unique_prefix(option, names)
    found = [(option, value, ""), (dashed, value, ""), (option.upper(), value, ""),
             (f"loose-{dashed}", value, ""), (f"loose_loose_{option}", value, ""),
             (prefix, value, ""), (f"loose-{prefix}", value, ""),
             (f"maximum-loose-{dashed}", value, "")]
    if option in _BOOLEANS or option == "log_bin":
        found += [(f"skip-{dashed}", "", ""), (f"disable_{option}", "", ""),
                  (f"loose-skip-{dashed}", "1", ""), (f"skip-loose-{prefix}", "0", ""),
                  (f"enable-{dashed}", "", f"--{option}=0")]
    return [(s, v, p) for s, v, p in found if not (option == "log_bin" and p)]


@pytest.mark.integration
def test_every_spelling_that_reaches_a_managed_option_is_refused(tmp_path: Path) -> None:
    require_binary("mariadbd")
    help_text = run(["mariadbd", "--no-defaults", "--help", "--verbose"]).stdout
    names = _option_names(help_text)
    cluster = [f"--{key}={value}" for key, value in _cnf_settings(CONF / "mariadb/replica.cnf")]
    cluster.append("--server-id=1001")
    baselines: dict[str, dict[str, str]] = {}
    reached_by: dict[str, set[str]] = {}
    for option in _OTHER_VALUE:
        for spelling, value, before in _spellings(option, names):
            args = [*cluster, *([before] if before else [])]
            if args[-1] not in baselines:
                baselines[args[-1]] = _help(args)[0]
            given = f"--{spelling}={value}" if value else f"--{spelling}"
            after, errors = _help([*args, given])
            changed = {k for k, v in after.items() if baselines[args[-1]].get(k) != v}
            changed.discard("version")  # log_bin appends "-log" to it
            # binlog_expire_logs_seconds and expire_logs_days move together.
            if spelling.startswith("maximum"):
                # Sets the session maximum, which the table does not show: the server must
                # still accept it, so the spelling is real.
                assert not errors, (given, errors)
                changed = {option}
            assert option in changed, (given, changed, errors)
            assert all(managed_server_option(name) for name in changed), (given, changed)
            assert managed_server_option(spelling) is not None, given
            reached_by.setdefault(option, set()).add(spelling)
    assert set(reached_by) == set(_OTHER_VALUE)


_VARIABLES = ("SELECT @@read_only AS ro, @@server_id AS id, @@log_bin AS bin, "
              "@@sync_binlog AS sync, @@slave_skip_errors AS skip")


@pytest.mark.integration
def test_the_issue_spellings_take_effect_on_a_started_server(tmp_path: Path) -> None:
    """What main let through, as the component renders it, over the replica cnf: the server
    runs writable, as server 1, without a binary log, skipping every replication error,
    without grant checks. Each of these stack settings is now refused."""
    require_binary("mariadbd", "mariadb-install-db")
    replica = (CONF / "mariadb/replica.cnf").read_text()
    server = MariaDBServer(tmp_path / "db", server_id=1001).initialize()
    try:
        server.stop()
        # The role cnf after initialization, as the image's first start is done by then.
        server.defaults_file.write_text(server.defaults_file.read_text() + replica)
        server.start()
        assert server.query(_VARIABLES) == [{"ro": 1, "id": 1001, "bin": 1, "sync": 1,
                                             "skip": "OFF"}]
        server.stop()
        # Past the validation the dataclass now runs itself, as main had none.
        bypass = copy.copy(_dev().mysql)
        object.__setattr__(bypass, "extra_server_config", tuple(ISSUE_SPELLINGS))
        server.process.argv += _server_options(bypass)
        server.start(password="any password works without grant tables")
        (variables,) = server.query(_VARIABLES, password="wrong")
    finally:
        server.stop()
    skip = variables.pop("skip")
    assert variables == {"ro": 0, "id": 1, "bin": 0, "sync": 0}
    assert skip.startswith("0,1,2,3")
    for option, value in ISSUE_SPELLINGS:
        assert _refusal(option, value) is not None, option
