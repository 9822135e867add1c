"""What the pod scripts would run on a MySQL 8.4 pod: exact SQL, commands and parsing.

No MySQL server or XtraBackup can be had here, so the flavor's statements and commands are
pinned where they are decided: the functions in lib.sh (and probe.sh) are sourced by a real
bash with MYSQL_FLAVOR=mysql and fixed inputs, and their output is compared with what MySQL
8.4 and Percona XtraBackup 8.4 accept. The same functions run for real against MariaDB in
tests/integration/test_pod_scripts.py; a few MariaDB cases here pin the parsing the old design
got wrong.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from components.mysql.flavor import FLAVORS
from tests.support.pod_scripts import SCRIPTS, argv, bash, output

UUID_A = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
UUID_B = "8a94f357-aab4-11df-86ab-c80aa9429562"
UUID_C = "b5e7c1d2-0f3a-11ef-9c1b-0242ac120002"
PASSWORD = "p'w\\d#\"x"  # quote, backslash, hash, double quote: all must survive


# --- recorded positions ------------------------------------------------------------------------

def test_xtrabackup_binlog_info_gtid_set_spanning_lines(tmp_path: Path) -> None:
    # XtraBackup 8.4 prints gtid_executed as MySQL does: ",\n" between source UUIDs.
    (tmp_path / "xtrabackup_binlog_info").write_text(
        f"mysql-bin.000003\t1234\t{UUID_A}:1-5,\n{UUID_B}:1-3:7-9,\n{UUID_C}:tag_1:1-4\n")
    assert output(f"backup_gtid '{tmp_path}' 2>/dev/null") == \
        f"{UUID_A}:1-5,{UUID_B}:1-3:7-9,{UUID_C}:tag_1:1-4\n"


def test_replica_info_is_parsed_and_preferred_over_the_donor_binlog(tmp_path: Path) -> None:
    (tmp_path / "xtrabackup_binlog_info").write_text(
        f"mysql-bin.000009\t77\t{UUID_A}:1-20,\n{UUID_B}:1-2\n")  # the donor's own, with errant B
    (tmp_path / "xtrabackup_slave_info").write_text(
        f"SET GLOBAL gtid_purged='{UUID_A}:1-20';\n"
        "CHANGE REPLICATION SOURCE TO SOURCE_AUTO_POSITION=1;\n")
    result = bash(f"backup_gtid '{tmp_path}'")
    assert result.stdout == f"{UUID_A}:1-20\n"
    assert "replica info xtrabackup_slave_info" in result.stderr


def test_position_based_replica_info_falls_back_to_the_binlog_gtid(tmp_path: Path) -> None:
    (tmp_path / "xtrabackup_binlog_info").write_text(f"mysql-bin.000002\t155\t{UUID_A}:1-9\n")
    (tmp_path / "xtrabackup_slave_info").write_text(
        "CHANGE REPLICATION SOURCE TO SOURCE_LOG_FILE='mysql-bin.000001', SOURCE_LOG_POS=4;\n")
    assert output(f"backup_gtid '{tmp_path}' 2>/dev/null") == f"{UUID_A}:1-9\n"


@pytest.mark.parametrize("content", [
    f"mysql-bin.000001\t4\t{UUID_A}:1-3'; DROP DATABASE app; --\n",
    "mysql-bin.000001\tnot-a-number\t\n",
    "\n",
])
def test_anything_but_a_recorded_position_stops_before_sql(tmp_path: Path, content: str) -> None:
    (tmp_path / "xtrabackup_binlog_info").write_text(content)
    result = bash(f"backup_gtid '{tmp_path}'")
    assert result.returncode != 0
    assert "xtrabackup_binlog_info" in result.stderr
    assert result.stdout == ""


def test_missing_binlog_info_is_an_error_naming_it(tmp_path: Path) -> None:
    result = bash(f"backup_gtid '{tmp_path}'")
    assert result.returncode != 0
    assert "no binlog info" in result.stderr


@pytest.mark.parametrize(("name", "content", "gtid"), [
    # The three tab-separated fields the old design's regex split wrongly.
    ("xtrabackup_binlog_info", "mysql-bin.000001\t191544\t0-100-8\n", "0-100-8"),
    ("mariadb_backup_binlog_info", "mysql-bin.000002\t42\t0-7000-9,1-7001-3\n",
     "0-7000-9,1-7001-3"),
    ("xtrabackup_binlog_info", "mysql-bin.000001\t329\t\n", ""),
])
def test_mariadb_binlog_info(tmp_path: Path, name: str, content: str, gtid: str) -> None:
    (tmp_path / name).write_text(content)
    assert output(f"backup_gtid '{tmp_path}' 2>/dev/null", flavor="mariadb") == f"{gtid}\n"


def test_mariadb_replica_info_two_statements_are_parsed_not_pasted(tmp_path: Path) -> None:
    (tmp_path / "xtrabackup_binlog_info").write_text("mysql-bin.000001\t900\t0-7001-2\n")
    (tmp_path / "xtrabackup_slave_info").write_text(
        "SET GLOBAL gtid_slave_pos = '0-7000-28';\nCHANGE MASTER TO master_use_gtid = slave_pos;\n")
    assert output(f"backup_gtid '{tmp_path}' 2>/dev/null", flavor="mariadb") == "0-7000-28\n"


# --- replication SQL ---------------------------------------------------------------------------

def test_mysql_replication_sql_with_gtids_to_purge() -> None:
    sql = output(f"replication_configure_sql '{UUID_A}:1-5' orders-mysql-0.orders-mysql 3306 "
                 "repl \"$PW\"", env={"PW": PASSWORD})
    assert sql.splitlines() == [
        "STOP REPLICA;",
        f"SET GLOBAL gtid_purged = '+{UUID_A}:1-5';",
        "CHANGE REPLICATION SOURCE TO SOURCE_HOST = 'orders-mysql-0.orders-mysql', "
        "SOURCE_PORT = 3306, SOURCE_USER = 'repl', SOURCE_PASSWORD = 'p\\'w\\\\d#\"x', "
        "SOURCE_AUTO_POSITION = 1, GET_SOURCE_PUBLIC_KEY = 1, SOURCE_CONNECT_RETRY = 10;",
    ]
    assert output("replication_start_sql") == "START REPLICA;\n"


def test_mysql_replication_sql_when_the_restore_already_has_every_gtid() -> None:
    sql = output("replication_configure_sql '' db-0.db 3306 repl secret-pw")
    assert "gtid_purged" not in sql
    assert sql.splitlines()[0] == "STOP REPLICA;"
    assert "SOURCE_AUTO_POSITION = 1, GET_SOURCE_PUBLIC_KEY = 1" in sql


def test_mysql_missing_gtids_query() -> None:
    assert output(f"missing_gtids_sql '{UUID_A}:1-5,{UUID_B}:1-2'") == (
        f"SELECT GTID_SUBTRACT('{UUID_A}:1-5,{UUID_B}:1-2', @@GLOBAL.gtid_executed);\n")


def test_mariadb_replication_sql() -> None:
    sql = output("replication_configure_sql 0-7000-28 db-0.db 3306 repl secret-pw",
                 flavor="mariadb")
    assert sql.splitlines() == [
        "STOP REPLICA;",
        "SET GLOBAL gtid_slave_pos = '0-7000-28';",
        "CHANGE MASTER TO MASTER_HOST = 'db-0.db', MASTER_PORT = 3306, MASTER_USER = 'repl', "
        "MASTER_PASSWORD = 'secret-pw', MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 10;",
    ]


def test_replication_sql_refuses_a_gtid_that_is_not_one() -> None:
    result = bash("replication_configure_sql \"x'; DROP TABLE t; --\" db-0.db 3306 repl pw")
    assert result.returncode != 0
    assert "refusing to put" in result.stderr
    assert "DROP" not in result.stdout


ACCOUNT_ENV = {
    "ADMIN_USER": "admin", "ADMIN_PASSWORD": "a-pw", "REPLICATION_USER": "repl",
    "REPLICATION_PASSWORD": "r-pw", "MONITOR_USER": "monitor", "MONITOR_PASSWORD": "m-pw",
    "BACKUP_USER": "backup", "BACKUP_PASSWORD": PASSWORD,
    "TOPOLOGY_USER": "topology", "TOPOLOGY_PASSWORD": "t-pw",
}


def test_mysql_accounts_have_explicit_privileges() -> None:
    backup_pw = "'p\\'w\\\\d#\"x'"
    admin_privileges = (
        "SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, RELOAD, PROCESS, REFERENCES, INDEX, "
        "ALTER, SHOW DATABASES, CREATE TEMPORARY TABLES, LOCK TABLES, EXECUTE, CREATE VIEW, "
        "SHOW VIEW, CREATE ROUTINE, ALTER ROUTINE, CREATE USER, EVENT, TRIGGER, "
        "REPLICATION CLIENT, REPLICATION SLAVE, REPLICATION_SLAVE_ADMIN")
    expected = [
        "CREATE USER IF NOT EXISTS 'admin'@'%' IDENTIFIED BY 'a-pw';",
        "ALTER USER 'admin'@'%' IDENTIFIED BY 'a-pw';",
        f"GRANT {admin_privileges} ON *.* TO 'admin'@'%' WITH GRANT OPTION;",
        "CREATE USER IF NOT EXISTS 'repl'@'%' IDENTIFIED BY 'r-pw';",
        "ALTER USER 'repl'@'%' IDENTIFIED BY 'r-pw';",
        "GRANT REPLICATION SLAVE ON *.* TO 'repl'@'%';",
        "CREATE USER IF NOT EXISTS 'topology'@'%' IDENTIFIED BY 't-pw';",
        "ALTER USER 'topology'@'%' IDENTIFIED BY 't-pw';",
        # MySQL 8.4: super_read_only and the semisync variables (SYSTEM_VARIABLES_ADMIN),
        # KILL (CONNECTION_ADMIN), the replication statements; no data privilege.
        "GRANT SYSTEM_VARIABLES_ADMIN, CONNECTION_ADMIN, REPLICATION_SLAVE_ADMIN, "
        "REPLICATION CLIENT, RELOAD, PROCESS ON *.* TO 'topology'@'%';",
    ]
    for host in ("localhost", "127.0.0.1"):
        expected += [
            f"CREATE USER IF NOT EXISTS 'monitor'@'{host}' IDENTIFIED BY 'm-pw';",
            f"ALTER USER 'monitor'@'{host}' IDENTIFIED BY 'm-pw';",
            f"GRANT REPLICATION CLIENT ON *.* TO 'monitor'@'{host}';",
            f"CREATE USER IF NOT EXISTS 'backup'@'{host}' IDENTIFIED BY {backup_pw};",
            f"ALTER USER 'backup'@'{host}' IDENTIFIED BY {backup_pw};",
            "GRANT BACKUP_ADMIN, PROCESS, RELOAD, LOCK TABLES, REPLICATION CLIENT ON *.* TO "
            f"'backup'@'{host}';",
            f"GRANT SELECT ON performance_schema.log_status TO 'backup'@'{host}';",
            f"GRANT SELECT ON performance_schema.keyring_component_status TO 'backup'@'{host}';",
            f"GRANT SELECT ON performance_schema.replication_group_members TO 'backup'@'{host}';",
        ]
    assert output("bootstrap_users_sql", env=ACCOUNT_ENV).splitlines() == expected


@pytest.mark.parametrize("flavor", ["mysql", "mariadb"])
def test_admin_never_gets_what_bypasses_read_only(flavor: str) -> None:
    sql = output("bootstrap_users_sql", flavor=flavor, env=ACCOUNT_ENV)
    admin_grant = next(line for line in sql.splitlines() if "TO 'admin'" in line
                       and line.startswith("GRANT"))
    for forbidden in ("ALL", "SUPER", "READ ONLY ADMIN", "CONNECTION_ADMIN",
                      "SYSTEM_VARIABLES_ADMIN"):
        assert forbidden not in admin_grant.replace("ALTER", "").replace("CALL", "")


@pytest.mark.parametrize("flavor", ["mysql", "mariadb"])
def test_the_topology_account_reads_and_writes_no_data(flavor: str) -> None:
    sql = output("bootstrap_users_sql", flavor=flavor, env=ACCOUNT_ENV)
    [grant] = [line for line in sql.splitlines() if line.startswith("GRANT")
               and "TO 'topology'" in line]
    privileges = {p.strip() for p in grant.removeprefix("GRANT ").split(" ON ")[0].split(",")}
    assert not privileges & {"SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "ALTER",
                             "ALL", "ALL PRIVILEGES", "SUPER", "CREATE USER"}, privileges
    assert "WITH GRANT OPTION" not in grant


def test_accounts_refuse_an_empty_password() -> None:
    result = bash("bootstrap_users_sql", env={**ACCOUNT_ENV, "MONITOR_PASSWORD": ""})
    assert result.returncode != 0
    assert "MONITOR_PASSWORD" in result.stderr
    assert result.stdout == ""


# --- commands ----------------------------------------------------------------------------------

def test_mysql_backup_commands() -> None:
    env = {"DATA_DIR": "/var/lib/mysql"}
    assert argv("backup_stream_command", "/run/mc/backup-client.cnf", "/run/mc/stream.1", "yes",
                env=env) == [
        "xtrabackup", "--defaults-file=/run/mc/backup-client.cnf", "--backup",
        "--stream=xbstream", "--datadir=/var/lib/mysql", "--target-dir=/run/mc/stream.1",
        "--tmpdir=/run/mc/stream.1", "--slave-info",
    ]
    assert "--slave-info" not in argv("backup_stream_command", "/o.cnf", "/t", "no", env=env)
    assert argv("extract_command", "/var/lib/mysql") == ["xbstream", "-x", "-C", "/var/lib/mysql"]
    assert argv("prepare_command", "/var/lib/mysql") == [
        "xtrabackup", "--prepare", "--target-dir=/var/lib/mysql"]
    assert output("prepared_backup_type") == "full-prepared\n"
    assert output("sql_client_tool; admin_tool; server_socket") == (
        "mysql\nmysqladmin\n/var/run/mysqld/mysqld.sock\n")


def _fake_tools(directory: Path, *names: str) -> dict[str, str]:
    directory.mkdir()
    for name in names:
        tool = directory / name
        tool.write_text("#!/bin/sh\nexit 0\n")
        tool.chmod(stat.S_IRWXU)
    return {"PATH": str(directory)}


def test_transport_prefers_ncat(tmp_path: Path) -> None:
    env = _fake_tools(tmp_path / "bin", "ncat", "socat")
    assert argv("receive_command", "db-1.db", "3307", env=env) == [
        "ncat", "--recv-only", "db-1.db", "3307"]
    assert argv("serve_command", "3307", 'exec bash "$CONFIG_DIR/backup-server.sh" stream',
                env=env) == [
        "ncat", "--listen", "--keep-open", "--send-only", "--max-conns=1", "--sh-exec",
        'exec bash "$CONFIG_DIR/backup-server.sh" stream', "3307"]


def test_transport_falls_back_to_socat(tmp_path: Path) -> None:
    env = _fake_tools(tmp_path / "bin", "socat")
    assert argv("receive_command", "db-1.db", "3307", env=env) == [
        "socat", "-u", "TCP:db-1.db:3307", "STDOUT"]
    assert argv("serve_command", "3307", "exec bash x.sh stream", env=env) == [
        "socat", "-U", "TCP-LISTEN:3307,reuseaddr,fork,max-children=1",
        "SYSTEM:exec bash x.sh stream"]


def test_no_transport_is_a_clear_error(tmp_path: Path) -> None:
    result = bash("transport_tool", env=_fake_tools(tmp_path / "bin"))
    assert result.returncode != 0
    assert "neither ncat nor socat" in result.stderr


# --- probes, identity, option files ------------------------------------------------------------

MYSQL_REPLICA_STATUS = """*************************** 1. row ***************************
             Replica_IO_State: Waiting for source to send event
                  Source_Host: orders-mysql-0.orders-mysql
           Replica_IO_Running: {io}
          Replica_SQL_Running: Yes
        Seconds_Behind_Source: {lag}
"""


@pytest.mark.parametrize(("io", "lag", "ready", "reason"), [
    ("Yes", "3", True, ""),
    ("Yes", "31", False, "lag 31s exceeds 30s"),
    ("Yes", "NULL", False, "lag is unknown ('NULL')"),
    ("Connecting", "0", False, "IO thread is 'Connecting'"),
])
def test_mysql_replica_readiness(io: str, lag: str, ready: bool, reason: str) -> None:
    status = MYSQL_REPLICA_STATUS.format(io=io, lag=lag)
    result = bash('replica_status_ready 30 <<<"$STATUS"', source="probe.sh",
                  env={"STATUS": status})
    assert (result.returncode == 0) is ready
    assert result.stdout.strip() == reason


def test_readiness_without_replication_configured() -> None:
    result = bash('replica_status_ready 30 <<<""', source="probe.sh")
    assert result.returncode != 0
    assert result.stdout.strip() == "replication is not configured"


def test_mariadb_readiness_reads_slave_columns() -> None:
    status = ("Slave_IO_Running: Yes\nSlave_SQL_Running: No\nSeconds_Behind_Master: NULL\n")
    result = bash('replica_status_ready 30 <<<"$STATUS"', source="probe.sh", flavor="mariadb",
                  env={"STATUS": status})
    assert result.returncode != 0
    assert result.stdout.strip() == "SQL thread is 'No'"


PURGED_1236 = ("Got fatal error 1236 from master when reading data from binary log: 'Could "
               "not find GTID state requested by slave in any binlog files. Probably the slave "
               "state is too old and required binlog files have been purged.'")


@pytest.mark.parametrize(("status", "reason"), [
    (f"Slave_IO_Running: No\nSlave_SQL_Running: Yes\nLast_IO_Errno: 1236\n"
     f"Last_IO_Error: {PURGED_1236}\nLast_SQL_Errno: 0\nLast_SQL_Error: \n",
     f"IO thread is 'No'; last IO error 1236: {PURGED_1236}"),
    ("Slave_IO_Running: Yes\nSlave_SQL_Running: No\nLast_IO_Errno: 0\nLast_IO_Error: \n"
     "Last_SQL_Errno: 1062\nLast_SQL_Error: Duplicate entry '7' for key 'PRIMARY'\n",
     "SQL thread is 'No'; last SQL error 1062: Duplicate entry '7' for key 'PRIMARY'"),
    ("Slave_IO_Running: Connecting\nSlave_SQL_Running: Yes\nLast_IO_Errno: 1045\n"
     "Last_IO_Error: error connecting to master 'repl@db-0:3306' - retry-time: 10\n"
     "Last_SQL_Errno: 0\n",
     "IO thread is 'Connecting'; last IO error 1045: error connecting to master "
     "'repl@db-0:3306' - retry-time: 10"),
], ids=["purged-binlogs", "sql-error", "io-retrying"])
def test_readiness_names_the_last_replication_error(status: str, reason: str) -> None:
    result = bash('replica_status_ready 30 <<<"$STATUS"', source="probe.sh", flavor="mariadb",
                  env={"STATUS": status})
    assert result.returncode != 0
    assert result.stdout.strip() == reason


@pytest.mark.parametrize(("pod_name", "ordinal"), [
    ("orders-mysql-0", "0"), ("orders-mysql-12", "12"), ("a-b-c-3", "3"), ("db-07", "7")])
def test_ordinal_from_pod_name(pod_name: str, ordinal: str) -> None:
    assert output("pod_ordinal", env={"POD_NAME": pod_name}) == f"{ordinal}\n"


@pytest.mark.parametrize("pod_name", ["orders-mysql", "mysql-", "-3", "Orders-1", ""])
def test_unreadable_ordinal_fails_loudly(pod_name: str) -> None:
    result = bash("pod_ordinal", env={"POD_NAME": pod_name})
    assert result.returncode != 0
    assert "POD_NAME" in result.stderr


def test_peer_addresses() -> None:
    env = {"PEER_HOST_TEMPLATE": "orders-mysql-{ordinal}.orders-mysql-headless",
           "PORT_STRIDE": "0"}
    assert output("peer_host 2; peer_port 3306 2", env=env) == (
        "orders-mysql-2.orders-mysql-headless\n3306\n")
    assert output("peer_port 20000 3", env={"PORT_STRIDE": "2"}) == "20006\n"


def test_client_option_file_is_private_and_quoted(tmp_path: Path) -> None:
    path = tmp_path / "run" / "client.cnf"
    output(f"write_client_options '{path}' backup \"$PW\" host 127.0.0.1 3306",
           env={"PW": PASSWORD})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    account = 'user="backup"\npassword="p\'w\\\\d#\\"x"\nhost="127.0.0.1"\nport=3306\n'
    # XtraBackup reads [xtrabackup], not [client]; protocol=TCP is a client-only option.
    assert path.read_text() == f"[client]\n{account}protocol=TCP\n[xtrabackup]\n{account}"
    result = bash(f"write_client_options '{path}.2' backup $'a\\nb' socket /s.sock")
    assert result.returncode != 0
    assert "newline" in result.stderr
    assert not Path(f"{path}.2").exists()


def _secret_files(directory: Path, passwords: dict[str, str]) -> dict[str, str]:
    """``<NAME>_FILE`` for each ``NAME: password``, files written 0440 as a secret volume's."""
    directory.mkdir(parents=True, exist_ok=True)
    env = {}
    for name, password in passwords.items():
        path = directory / name.lower().replace("_", "-")
        path.write_text(password)
        path.chmod(0o440)
        env[f"{name}_FILE"] = str(path)
    return env


# --- secrets as files ----------------------------------------------------------------------------

def test_read_secret_sets_an_unexported_variable_and_prints_nothing(tmp_path: Path) -> None:
    env = _secret_files(tmp_path, {"BACKUP_PASSWORD": PASSWORD + "\n"})  # newline dropped
    result = bash('read_secret BACKUP_PASSWORD\n'
                  '[[ $BACKUP_PASSWORD == "$EXPECTED" ]] && echo same\n'
                  'env | grep -c "^BACKUP_PASSWORD=" || true', env={**env, "EXPECTED": PASSWORD})
    assert result.returncode == 0, result.stderr
    assert result.stdout == "same\n0\n", "the value must be read exactly and never exported"
    assert PASSWORD not in result.stderr


@pytest.mark.parametrize(("env", "message"), [
    ({}, "BACKUP_PASSWORD_FILE is unset or empty"),
    ({"BACKUP_PASSWORD_FILE": "{dir}/nowhere"}, "BACKUP_PASSWORD_FILE: no file at {dir}/nowhere"),
    ({"BACKUP_PASSWORD_FILE": "{dir}/empty"}, "BACKUP_PASSWORD_FILE: {dir}/empty is empty"),
    ({"BACKUP_PASSWORD_FILE": "{dir}"}, "BACKUP_PASSWORD_FILE: no file at {dir}"),
    ({"BACKUP_PASSWORD_FILE": "{dir}/good", "BACKUP_PASSWORD": "in-env"},
     "BACKUP_PASSWORD is set in the environment"),
], ids=["unset", "missing", "empty", "directory", "also-in-env"])
def test_read_secret_fails_loudly(tmp_path: Path, env: dict[str, str], message: str) -> None:
    (tmp_path / "empty").write_text("\n\n")
    (tmp_path / "good").write_text("good-secret")
    result = bash("read_secret BACKUP_PASSWORD; echo unreachable",
                  env={k: v.format(dir=tmp_path) for k, v in env.items()})
    assert result.returncode != 0
    assert message.format(dir=tmp_path) in result.stderr
    assert result.stdout == ""
    assert "good-secret" not in result.stderr


def test_read_secret_names_an_unreadable_file(tmp_path: Path) -> None:
    # Root reads any file, so as root (CI) the script runs as the images' uid 999, as in a
    # pod: a world-traversable directory holding a file only its owner could read.
    secrets = Path(tempfile.mkdtemp(prefix="secrets-"))
    try:
        secrets.chmod(0o755)
        env = _secret_files(secrets, {"ROOT_PASSWORD": "r-pw"})
        Path(env["ROOT_PASSWORD_FILE"]).chmod(0)
        as_pod_user = (["setpriv", "--reuid=999", "--regid=999", "--clear-groups"]
                       if os.geteuid() == 0 else [])
        result = bash("read_secret ROOT_PASSWORD", env=env, prefix=as_pod_user)
    finally:
        shutil.rmtree(secrets)
    assert result.returncode != 0
    assert "is not readable by uid" in result.stderr


def test_read_secret_follows_the_kubelets_symlinks(tmp_path: Path) -> None:
    """A secret volume's key is a symlink to ..data/<key>, ..data one to a timestamped dir."""
    payload = tmp_path / "..2026_01_01"
    payload.mkdir()
    (payload / "root-password").write_text("r-pw")
    (tmp_path / "..data").symlink_to(payload.name)
    (tmp_path / "root-password").symlink_to("..data/root-password")
    assert output('read_secret ROOT_PASSWORD; printf "%s" "${#ROOT_PASSWORD}"',
                  env={"ROOT_PASSWORD_FILE": str(tmp_path / "root-password")}) == "4"


def test_bootstrap_sourced_by_an_entrypoint_fails_it_without_leaking_strict_mode(
        tmp_path: Path) -> None:
    # What both images' entrypoints do with a non-executable /docker-entrypoint-initdb.d/*.sh.
    entrypoint = (
        'set -eo pipefail\nSOCKET=/nonexistent/mysqld.sock\n'
        'if . "$CONFIG_DIR/bootstrap-users.sh"; then echo "sourced: ok"; '
        'else echo "sourced: failed"; fi\n'
        'echo "options: $-"\n')
    result = subprocess.run(["bash", "-c", entrypoint], capture_output=True, text=True,
                            check=False, timeout=30,
                            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                                 **FLAVORS["mariadb"].pod_environment(),
                                 "CONFIG_DIR": str(SCRIPTS), "MYSQL_FLAVOR": "mariadb",
                                 "RUN_DIR": str(tmp_path / "run"),
                                 "DATA_DIR": str(tmp_path / "data"),
                                 **{k: v for k, v in ACCOUNT_ENV.items()
                                    if not k.endswith("_PASSWORD")},
                                 **_secret_files(tmp_path / "secrets", {
                                     "ROOT_PASSWORD": "r-pw", **{
                                         k: v for k, v in ACCOUNT_ENV.items()
                                         if k.endswith("_PASSWORD")}})})
    assert "sourced: failed" in result.stdout, result.stderr
    # It read every secret file and got as far as the server: what failed is the connection.
    assert "Can't connect to local server through socket" in result.stderr, result.stderr
    assert "u" not in result.stdout.split("options: ")[1], "set -u leaked into the entrypoint"
    assert not list((tmp_path / "run").glob("*")), "the root option file was left behind"


# --- the backup sidecar's probe ------------------------------------------------------------------

# Holds a listening socket, prints its port, and after a line on stdin reports whether anybody
# connected in the meantime (a non-blocking accept), so the test can prove the probe never did.
_LISTENER = """
import socket, sys
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(8)
print(server.getsockname()[1], flush=True)
sys.stdin.readline()
server.setblocking(False)
try:
    server.accept()
    print("connected", flush=True)
except BlockingIOError:
    print("nobody connected", flush=True)
"""


def test_backup_probe_checks_the_listener_in_proc_without_connecting(tmp_path: Path) -> None:
    listener = subprocess.Popen([sys.executable, "-c", _LISTENER], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
    try:
        assert listener.stdout is not None
        assert listener.stdin is not None
        port = listener.stdout.readline().strip()
        run_dir = tmp_path / "run"
        run_dir.mkdir()
        # No *_PASSWORD_FILE at all: the backup container's probe reads no secret.
        env = {"POD_NAME": "db-0", "RUN_DIR": str(run_dir), "BACKUP_PORT": port}

        def probe() -> subprocess.CompletedProcess[str]:
            return bash('main backup', source="probe.sh", flavor="mariadb", env=env)

        assert "no listener yet" in probe().stderr
        (run_dir / "backup-listener.pid").write_text(f"{listener.pid}\n")
        serving = probe()
        assert serving.returncode == 0, serving.stderr
        (run_dir / "backup-listener.pid").write_text(f"{os.getpid()}\n")
        assert f"port {port} listens, but not in process {os.getpid()}" in probe().stderr
        (run_dir / "backup-listener.pid").write_text("not-a-pid\n")
        assert "holds no PID" in probe().stderr
        listener.stdin.write("report\n")
        listener.stdin.flush()
        assert listener.stdout.readline().strip() == "nobody connected"
    finally:
        listener.kill()
        listener.wait()
    (run_dir / "backup-listener.pid").write_text(f"{listener.pid}\n")
    assert f"listener process {listener.pid} is gone" in probe().stderr


def test_probe_names_its_modes() -> None:
    result = bash('main nonsense', source="probe.sh")
    assert result.returncode != 0
    assert "usage: probe.sh startup|liveness|readiness|backup" in result.stderr


@pytest.mark.parametrize(("function", "variable"), [
    ("server_socket", "MYSQL_SOCKET"), ("sql_client_tool", "MYSQL_CLIENT"),
    ("admin_tool", "MYSQL_ADMIN_TOOL"), ("backup_tool", "BACKUP_TOOL"),
    ("stream_tool", "BACKUP_STREAM_TOOL"), ("prepared_backup_type", "BACKUP_PREPARED_TYPE"),
])
def test_tools_and_socket_come_from_the_environment(function: str, variable: str) -> None:
    """Handed by the component (flavor.py); a pod without one fails naming it."""
    assert output(function, env={variable: "/from/the/pod/spec"}) == "/from/the/pod/spec\n"
    missing = bash(function, env={variable: ""})
    assert missing.returncode != 0
    assert variable in missing.stderr

