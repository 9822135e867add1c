"""lib.sh is the one place the shell side branches on the flavor.

The scripts get the flavor's tools and socket as environment (flavor.py, CONTRACT.md); the
SQL dialect is left, and lib.sh's flavor-fact functions answer for it, so a third flavor or
a renamed status field is one edit in one file. Each fact is pinned per flavor here (the
MariaDB answers also run for real in tests/integration/test_pod_scripts.py and
test_mariadb_versions.py; MySQL 8.4's only here), and every other script is read to show it
does not test MYSQL_FLAVOR itself.
"""

from __future__ import annotations

import re

import pytest

from components.mysql._replication_sql import DIALECTS
from tests.support.pod_scripts import SCRIPTS, bash, output

# A test of the flavor's value: [[ $MYSQL_FLAVOR == ... ]], case "$MYSQL_FLAVOR" in, test ...
_BRANCH = re.compile(r"""(\[\[?|\btest|\bcase)\s+["']?\$\{?MYSQL_FLAVOR\b""")


def test_no_script_but_lib_sh_branches_on_the_flavor() -> None:
    scripts = sorted(SCRIPTS.glob("*.sh"))
    assert len(scripts) > 1
    branching = {script.name: [line.strip() for line in script.read_text().splitlines()
                               if _BRANCH.search(line)]
                 for script in scripts if script.name != "lib.sh"}
    assert {name: lines for name, lines in branching.items() if lines} == {}
    # The pattern does find the branches (lib.sh has them): the scan is not vacuous.
    assert _BRANCH.search((SCRIPTS / "lib.sh").read_text())


@pytest.mark.parametrize("flavor", ["mysql", "mariadb"])
def test_replica_status_keys_are_the_columns_the_provider_reads(flavor: str) -> None:
    columns = DIALECTS[flavor].columns  # type: ignore[index]
    assert output("replica_status_keys", flavor=flavor).split() == [
        columns.io_running, columns.sql_running, columns.seconds_behind]


@pytest.mark.parametrize(("flavor", "sql"), [
    ("mysql", "ALTER INSTANCE RELOAD TLS;\n"),
    ("mariadb", "FLUSH SSL;\n"),
])
def test_tls_reload_sql(flavor: str, sql: str) -> None:
    assert output("tls_reload_sql", flavor=flavor) == sql


@pytest.mark.parametrize(("flavor", "kept"), [("mysql", False), ("mariadb", True)])
def test_only_mariadb_keeps_a_replica_position_that_setting_again_would_rewind(
        flavor: str, kept: bool) -> None:
    result = bash("replica_position_is_kept", flavor=flavor)
    assert (result.returncode == 0) is kept
    assert result.stderr == ""


@pytest.mark.parametrize(("flavor", "refused"), [("mysql", True), ("mariadb", False)])
def test_a_feature_for_mariadb_only_stops_other_flavors_naming_it(flavor: str,
                                                                  refused: bool) -> None:
    result = bash("require_mariadb 'restores support'; echo ran", flavor=flavor)
    assert (result.returncode != 0) is refused
    if refused:
        assert "FATAL: restores support MariaDB only so far" in result.stderr
        assert result.stdout == ""
    else:
        assert result.stdout == "ran\n"


@pytest.mark.parametrize("function", ["replica_status_keys", "tls_reload_sql",
                                      "replica_position_is_kept", "require_mariadb x"])
@pytest.mark.parametrize(("flavor", "message"), [
    ("", "required environment variable(s) empty or unset: MYSQL_FLAVOR"),
    ("postgres", "MYSQL_FLAVOR must be 'mysql' or 'mariadb', got 'postgres'"),
])
def test_a_flavor_fact_without_a_known_flavor_fails_naming_it(function: str, flavor: str,
                                                              message: str) -> None:
    result = bash(function, flavor=flavor)
    assert result.returncode != 0
    assert message in result.stderr
    assert result.stdout == ""
