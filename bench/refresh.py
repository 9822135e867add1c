"""Provider refresh: ReplicationInit's Read and Diff per replica, for a no-op `pulumi up`.

A converged cluster should cost a `pulumi up` or `pulumi refresh` next to nothing, yet
ReplicationInit's Diff and Read deliberately look at the live servers (a stopped or
repointed replica is drift even when the inputs did not change). So each of them opens
connections and reads replica status; this measures what that costs per replica.

Everything goes through the real provider server (``python -m pulumi.dynamic``, driven
by ``tests/support/provider_server.py`` exactly as the engine drives it) against a real
MariaDB primary and ``replicas`` real replicas that the provider itself configured
(Create). A no-op `pulumi up` is Check then Diff (answering "no changes"); a refresh is
Read. Per replica = the call's time / replicas, so the primary's share is charged to
the replicas too (the honest reading for a 3-pod cluster).

Floors measured in the same run, to tell provider cost from unavoidable cost:

* the trivial echo provider's Diff and Read through the same server: gRPC, property
  (de)serialization and unpickling the provider, with no work at all;
* a fresh pymysql connection per replica plus ``SHOW REPLICA STATUS``: what any Read
  that connects per call must pay.
"""

from __future__ import annotations

import shutil
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql

from bench._procs import need, workdir
from bench._report import Report, Table, Target, ratio
from tests.support.accounts import create_accounts
from tests.support.mariadb import MariaDBServer, random_password
from tests.support.procs import LOCALHOST
from tests.support.provider_server import ProviderServer, ResourceDriver

_SERVER_CONFIG = "log-bin=mysql-bin\nlog-slave-updates\n"
# Account names from CONTRACT.md; the component passes both passwords as secrets.
_ADMIN_USER = "admin"
_REPLICATION_USER = "repl"
_SECRET_INPUTS = frozenset({"admin_password", "replication_password"})
_TYPE_NAME = "pulumi-python:dynamic/mysql:ReplicationInit"


@dataclass(frozen=True)
class RefreshOptions:
    replicas: int = 2
    """Replicas behind the primary (prod runs 3 pods: 2 replicas)."""
    rounds: int = 20
    """Timed calls of each kind (median reported)."""
    workdir: Path | None = None

    def __post_init__(self) -> None:
        if self.replicas < 1 or self.rounds < 1:
            raise ValueError(f"need at least 1 replica and 1 round, got replicas="
                             f"{self.replicas}, rounds={self.rounds}")


class _NotLanded(Exception):
    """ReplicationInit is not in the tree (or does not import)."""


def run(options: RefreshOptions) -> Report:
    need("mariadbd", "mariadb-install-db", "mariadb")
    base = workdir("bench-refresh-", options.workdir)
    try:
        with ProviderServer(log_path=base / "provider.log") as server:
            server.configure()
            floor = _echo_floor(server, options.rounds)
            skipped = ""
            project: dict[str, float] = {}
            connect_floor: float | None = None
            connect_plain: float | None = None
            try:
                with _cluster(base, options.replicas) as (replicas, inputs):
                    connect_floor = _connect_floor(replicas, inputs["admin_password"],
                                                   options.rounds, tls_context=True)
                    connect_plain = _connect_floor(replicas, inputs["admin_password"],
                                                   options.rounds, tls_context=False)
                    project = _project(server, inputs, options.rounds)
            except _NotLanded as reason:
                skipped = str(reason)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return _report(options, floor, (connect_floor, connect_plain), project, skipped)


def _median_ms(call: Callable[[], object], rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


def _echo_floor(server: ProviderServer, rounds: int) -> dict[str, float]:
    from tests.support.echo_provider import EchoProvider  # noqa: PLC0415 - test helper

    driver = ResourceDriver(server, EchoProvider(), name="bench-echo")
    inputs = {"count": 1}
    driver.up(inputs)
    assert driver.state is not None
    state = driver.state
    checked = driver.check(inputs).inputs
    return {
        "check": _median_ms(lambda: driver.check(inputs), rounds),
        "diff": _median_ms(lambda: server.diff(driver.urn, state.id, state.outputs, checked),
                           rounds),
        "read": _median_ms(lambda: server.read(driver.urn, state.id, state.outputs,
                                               state.inputs), rounds),
    }


@contextmanager
def _cluster(base: Path, count: int) -> Iterator[tuple[list[MariaDBServer], dict[str, Any]]]:
    """A primary and replicas as a finished clone leaves them; yields the provider inputs.

    Same accounts everywhere (created without binary logging, as if cloned), empty
    binary logs on the replicas and the primary's position as their gtid_slave_pos.
    """
    admin_password = random_password()
    primary = MariaDBServer(base / "m0", name="m0", server_id=1, extra_config=_SERVER_CONFIG)
    replicas = [MariaDBServer(base / f"m{i}", name=f"m{i}", server_id=1 + i,
                              extra_config=_SERVER_CONFIG) for i in range(1, count + 1)]
    with ExitStack() as stack:
        for server in (primary, *replicas):
            server.initialize()
            stack.callback(server.stop)
            # The admin account exactly as the pods' bootstrap-users.sh creates it.
            create_accounts(server, users={_ADMIN_USER}, passwords={
                "ADMIN": admin_password, "REPLICATION": random_password(),
                "MONITOR": random_password(), "BACKUP": random_password(),
                "TOPOLOGY": random_password()})
        position = primary.query("SELECT @@GLOBAL.gtid_binlog_pos AS p")[0]["p"]
        for replica in replicas:
            # read_only set at run time, not in the config: mariadb-install-db's bootstrap
            # server would read it too and then fails now and then to write system tables.
            replica.query("SET GLOBAL read_only = ON")
            replica.query("RESET MASTER")
            replica.query("SET GLOBAL gtid_slave_pos=%s", (position,))
        yield replicas, {
            "flavor": "mariadb",
            "primary": {"host": LOCALHOST, "port": primary.port},
            "replicas": [{"host": LOCALHOST, "port": r.port} for r in replicas],
            "source_host": LOCALHOST,
            "source_port": primary.port,
            "admin_user": _ADMIN_USER,
            "admin_password": admin_password,
            "replication_user": _REPLICATION_USER,
            "replication_password": random_password(),
            "max_lag_seconds": 30,
            "timeout_seconds": 60,
            "lock_endpoints": [],
        }


def _connect_floor(replicas: list[MariaDBServer], admin_password: str, rounds: int, *,
                   tls_context: bool) -> float:
    """Per replica: a fresh connection and SHOW REPLICA STATUS.

    pymysql 1.2 defaults to TLS "preferred" and builds a new default SSLContext (loading
    the system CA bundle) for every connection, even to a server without TLS; with
    ``tls_context=False`` (``ssl_disabled``) that cost is left out, which shows how much
    of a connect it is.
    """
    def look() -> None:
        for replica in replicas:
            connection = pymysql.connect(host=LOCALHOST, port=replica.port, user=_ADMIN_USER,
                                         password=admin_password, connect_timeout=5,
                                         ssl_disabled=not tls_context)
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SHOW REPLICA STATUS")
                    cursor.fetchall()
            finally:
                connection.close()

    return _median_ms(look, rounds) / len(replicas)


def _project(server: ProviderServer, inputs: dict[str, Any], rounds: int) -> dict[str, float]:
    try:
        from components.mysql._replication import _ReplicationProvider  # noqa: PLC0415
    except ImportError as error:
        raise _NotLanded(f"ReplicationInit not importable ({error})") from None

    driver = ResourceDriver(server, _ReplicationProvider(), type_name=_TYPE_NAME,
                            name="bench-replication", secret_inputs=_SECRET_INPUTS,
                            additional_secret_outputs=_SECRET_INPUTS)
    created = driver.up(inputs)
    if created.operation != "create" or created.outputs.get("in_sync") is not True:
        raise RuntimeError(f"ReplicationInit create did not converge: {created.outputs}")
    if driver.up(inputs).operation != "same":
        raise RuntimeError("a second `pulumi up` was not a no-op: nothing to measure")
    assert driver.state is not None
    state = driver.state
    checked = driver.check(inputs).inputs

    def diff() -> None:
        if server.diff(driver.urn, state.id, state.outputs, checked).changes is not False:
            raise RuntimeError("Diff of a converged cluster reported changes")

    return {
        "check": _median_ms(lambda: driver.check(inputs), rounds),
        "diff": _median_ms(diff, rounds),
        "read": _median_ms(lambda: server.read(driver.urn, state.id, state.outputs,
                                               state.inputs), rounds),
        "up": _median_ms(lambda: driver.up(inputs), rounds),
    }


def _report(options: RefreshOptions, floor: dict[str, float],
            connects: tuple[float | None, float | None], project: dict[str, float],
            skipped: str) -> Report:
    n = options.replicas

    def per_replica(key: str) -> float | None:
        return project[key] / n if key in project else None

    rows = (
        ("no-op up: Check", project.get("check"), per_replica("check"), floor["check"],
         ratio(per_replica("check"), floor["check"]), skipped),
        ("no-op up: Diff (no changes)", project.get("diff"), per_replica("diff"), floor["diff"],
         ratio(per_replica("diff"), floor["diff"]), skipped),
        ("no-op up: Check + Diff", project.get("up"), per_replica("up"),
         floor["check"] + floor["diff"], ratio(per_replica("up"), floor["check"] + floor["diff"]),
         skipped),
        ("refresh: Read", project.get("read"), per_replica("read"), floor["read"],
         ratio(per_replica("read"), floor["read"]), skipped),
        ("floor: connect + SHOW REPLICA STATUS", None, connects[0], None, None,
         "pymysql defaults: a new SSLContext per connect"),
        ("same, ssl_disabled=True", None, connects[1], None, None,
         "without building that SSLContext"),
    )
    table = Table(f"ReplicationInit through the provider server, {n} replica(s), median of "
                  f"{options.rounds}", ("call", "ms per call", "ms per replica",
                                        "echo provider ms", "per replica vs echo", "note"),
                  rows)
    report = Report("refresh", {"replicas": n, "rounds": options.rounds,
                                "servers": "real mariadbd on 127.0.0.1"}, [table])
    report.targets = [
        Target("Diff per replica (no-op up)", per_replica("diff"), 50.0, False, " ms", skipped),
        Target("Read per replica (refresh)", per_replica("read"), 50.0, False, " ms", skipped),
    ]
    return report


__all__ = ["RefreshOptions", "run"]
