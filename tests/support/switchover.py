"""The switchover's real-server harness, shared by its tests and its benchmark.

Three (or ``size``) real MariaDB servers started read-only from one template data dir,
with bootstrap-users.sh's own accounts; the primary record in a ConfigMap of a real
kube-apiserver and Pod objects whose role labels the provider moves; a writer thread
that commits one row at a time as an application account to whichever server the record
names, logging each acknowledged commit with the epoch and server it saw; and the checker
over that log (no acknowledged commit lost, one server per epoch, no interleaving).
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql

from components.mysql._record import EPOCH_LABEL, ROLE_LABEL
from components.mysql._replication import _ReplicationProvider
from tests.support.accounts import create_accounts
from tests.support.controlplane import ControlPlane
from tests.support.mariadb import MariaDBServer, random_password
from tests.support.procs import LOCALHOST, wait_until
from tests.support.provider_server import ProviderServer, ResourceDriver

ADMIN, TOPOLOGY, APP, REPL = "admin", "topology", "app", "repl"
SECRET_INPUTS = frozenset({"admin_password", "replication_password", "topology_password"})
TYPE_NAME = "pulumi-python:dynamic/mysql:ReplicationInit"
NAMESPACE = "default"


@dataclass(frozen=True)
class Template:
    data_dir: Path
    root_password: str
    passwords: dict[str, str]
    version: str


def make_template(base: Path, mariadb_version: str) -> Template:
    """One stopped server's data dir with the accounts and the writer's table: each
    cluster's servers start from copies of it. The replication account is there too, as
    bootstrap-users.sh makes it: the failover tests set replication up with it themselves
    (ReplicationInit, in the switchover tests, converges it on the same password)."""
    passwords = {name: random_password() for name in (ADMIN, TOPOLOGY, APP, REPL)}
    server = MariaDBServer(base, name="template", version=mariadb_version).initialize()
    try:
        # The accounts exactly as bootstrap-users.sh makes them in the pods.
        create_accounts(server, users={ADMIN, TOPOLOGY, REPL}, passwords={
            "ADMIN": passwords[ADMIN], "REPLICATION": passwords[REPL],
            "MONITOR": random_password(), "BACKUP": random_password(),
            "TOPOLOGY": passwords[TOPOLOGY]})
        with server.cursor() as cursor:
            cursor.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (APP, passwords[APP]))
            cursor.execute("CREATE DATABASE app")
            cursor.execute("CREATE TABLE app.log (seq BIGINT PRIMARY KEY, epoch BIGINT, "
                           "server INT) ENGINE=InnoDB")
            cursor.execute("GRANT SELECT, INSERT ON app.* TO %s@'%%'", (APP,))
    finally:
        server.stop()
    return Template(server.data_dir, server.root_password, passwords, mariadb_version)


@dataclass
class Cluster:
    servers: list[MariaDBServer]
    template: Template
    plane: ControlPlane
    # One control plane serves the whole session: each test has its own record and pods.
    record_name: str = field(default_factory=lambda: f"orders-primary-{uuid.uuid4().hex[:8]}")
    pod_prefix: str = field(default_factory=lambda: f"orders-{uuid.uuid4().hex[:8]}")

    def _core(self) -> Any:
        from kubernetes import client  # noqa: PLC0415

        return client.CoreV1Api(self.plane.admin_client())

    def record(self) -> tuple[int | None, int] | None:
        """(primary, epoch) as the record holds it; primary None while fenced."""
        from kubernetes import client  # noqa: PLC0415

        try:
            found = self._core().read_namespaced_config_map(self.record_name, NAMESPACE)
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise
        primary = found.data["primary"]
        return (None if primary == "none" else int(primary)), int(found.data["epoch"])

    @property
    def pods(self) -> list[str]:
        return [f"{self.pod_prefix}-{o}" for o in range(len(self.servers))]

    def create_pods(self) -> None:
        """Pod objects for the labels (kwok pretends to run them, nothing runs here)."""
        for pod in self.pods:
            self._core().create_namespaced_pod(NAMESPACE, {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod, "labels": {"app": self.pod_prefix}},
                "spec": {"containers": [{"name": "mysql", "image": "mariadb:11.4.8"}]}})

    def roles(self) -> list[tuple[str | None, str | None]]:
        """Each pod's (role, epoch) labels."""
        found = []
        for pod in self.pods:
            labels = self._core().read_namespaced_pod(pod, NAMESPACE).metadata.labels or {}
            found.append((labels.get(ROLE_LABEL), labels.get(EPOCH_LABEL)))
        return found

    def delete_pods(self) -> None:
        for pod in self.pods:
            with contextlib.suppress(Exception):
                self._core().delete_namespaced_pod(pod, NAMESPACE, grace_period_seconds=0)

    def inputs(self, primary: int, **overrides: Any) -> dict[str, Any]:
        endpoints = [{"host": LOCALHOST, "port": s.port} for s in self.servers]
        inputs: dict[str, Any] = {
            "flavor": "mariadb", "primary": endpoints[0], "replicas": endpoints[1:],
            "source_host": LOCALHOST, "source_port": self.servers[0].port,
            "sources": endpoints, "primary_ordinal": primary,
            "admin_user": ADMIN, "admin_password": self.template.passwords[ADMIN],
            "replication_user": REPL, "replication_password": self.template.passwords[REPL],
            "topology_user": TOPOLOGY, "topology_password": self.template.passwords[TOPOLOGY],
            "record_namespace": NAMESPACE, "record_name": self.record_name,
            "max_lag_seconds": 30, "timeout_seconds": 60, "lock_endpoints": [],
            "switchover_grace_seconds": 1, "switchover_timeout_seconds": 20,
            "pods": self.pods,
        }
        inputs.update(overrides)
        return inputs

    def read_only(self, ordinal: int) -> bool:
        return bool(self.servers[ordinal].query("SELECT @@GLOBAL.read_only AS r")[0]["r"])

    def checksums(self) -> list[object]:
        return [s.query("CHECKSUM TABLE app.log")[0]["Checksum"] for s in self.servers]


@contextlib.contextmanager
def start_cluster(tmp_path: Path, template: Template, control_plane: ControlPlane,
                  *, size: int = 3) -> Iterator[Cluster]:
    """``size`` servers from the template, all read-only, and their Pod objects."""
    servers: list[MariaDBServer] = []
    try:
        for ordinal in range(size):
            base = tmp_path / f"m{ordinal}"
            shutil.copytree(template.data_dir, base / "data")
            # Every server starts read-only, as the pods' server configs must: only the
            # holder of the record's epoch makes one writable.
            read_only = "read-only=ON\n"
            server = MariaDBServer(base, name=f"m{ordinal}", server_id=1 + ordinal,
                                   data_dir=base / "data", version=template.version,
                                   extra_config="log-bin=mysql-bin\nlog-slave-updates\n"
                                                f"gtid-strict-mode=ON\n{read_only}")
            server.root_password = template.root_password
            servers.append(server.start())
        made = Cluster(servers, template, control_plane)
        made.create_pods()
        yield made
        made.delete_pods()
    finally:
        for server in servers:
            server.stop()


def new_driver(server: ProviderServer, name: str = "orders-replication") -> ResourceDriver:
    return ResourceDriver(server, _ReplicationProvider(), type_name=TYPE_NAME, name=name,
                          secret_inputs=SECRET_INPUTS, additional_secret_outputs=SECRET_INPUTS)


@dataclass
class Commit:
    seq: int
    epoch: int
    server: int
    acked_at: float


@dataclass
class Writer:
    """Commits one row at a time to the primary the record names; logs each ack."""

    cluster: Cluster
    commits: list[Commit] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    errors: int = 0
    first_seq: int = 0  # a second writer on the same table starts past the first's rows
    record_errors: list[str] = field(default_factory=list)

    def run(self) -> None:
        seq = self.first_seq
        connection: Any = None
        seen: tuple[int, int] | None = None
        while not self.stop.is_set():
            try:
                if connection is None:
                    seen = self._record()
                    if seen is None:
                        continue
                    connection = pymysql.connect(
                        host=LOCALHOST, port=self.cluster.servers[seen[0]].port, user=APP,
                        password=self.cluster.template.passwords[APP], autocommit=True,
                        connect_timeout=5, read_timeout=10)
                assert seen is not None
                with connection.cursor() as cursor:
                    cursor.execute("INSERT INTO app.log VALUES (%s, %s, %s)",
                                   (seq + 1, seen[1], seen[0]))
                seq += 1
                self.commits.append(Commit(seq, seen[1], seen[0], time.monotonic()))
            except pymysql.err.IntegrityError:
                # An earlier attempt committed without an acknowledgement (its primary was
                # killed after the replicas received it): not acknowledged, so not logged.
                seq += 1
                self.errors += 1
            except pymysql.MySQLError:
                self.errors += 1
                if connection is not None:
                    connection.close()
                connection = None
                # Not in place of a condition: the record is re-read on the next turn.
                time.sleep(0.005)
        if connection is not None:
            connection.close()

    def _record(self) -> tuple[int, int] | None:
        """The record as the writer's client sees it; None (retry) if unreachable or
        fenced (no primary to write to)."""
        try:
            primary, epoch = self.cluster.record() or (0, 0)
        except Exception as error:  # noqa: BLE001 - any client failure: ask again
            self.record_errors.append(repr(error))
            time.sleep(0.005)
            return None
        if primary is None:
            time.sleep(0.005)  # not in place of a condition: the record is read again
            return None
        return primary, epoch

    def __enter__(self) -> Writer:
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        try:
            wait_until(lambda: len(self.commits) > 20, timeout=30, what="the writer to commit")
        except TimeoutError:
            self.stop.set()
            raise AssertionError(f"the writer did not commit: {self.errors} refused, "
                                 f"record errors {self.record_errors[-2:]}") from None
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)

    def wait_commits_on(self, ordinal: int, *, after: int, count: int = 20) -> None:
        """``count`` commits on ``ordinal`` among those after the first ``after``."""
        wait_until(lambda: sum(c.server == ordinal for c in self.commits[after:]) > count,
                   timeout=30, what=f"the writer to commit on server {ordinal}")


def check_acknowledged(writer: Writer, servers: list[MariaDBServer]) -> None:
    """Every acknowledged commit is on each of ``servers``, and each epoch's commits went
    to one server: the safety property the switchover and the failover share."""
    acked = {c.seq for c in writer.commits}
    for server in servers:
        wait_until(lambda s=server: {r["seq"] for r in s.query(  # type: ignore[misc]
            "SELECT seq FROM app.log")} >= acked, timeout=30,
            what=f"every acknowledged commit on {server.name}")
    by_epoch: dict[int, set[int]] = {}
    for commit in writer.commits:
        by_epoch.setdefault(commit.epoch, set()).add(commit.server)
    assert all(len(s) == 1 for s in by_epoch.values()), by_epoch


def check_history(writer: Writer, cluster: Cluster) -> list[float]:
    """No acknowledged commit lost; each epoch's commits went to one server, and no two
    servers accepted commits at overlapping times. Returns each switchover's gap."""
    check_acknowledged(writer, cluster.servers)
    gaps = []
    for before, after in zip(writer.commits, writer.commits[1:], strict=False):
        if before.server != after.server:
            gaps.append(after.acked_at - before.acked_at)
    # Commits are sequential, so a server change is one hand-over: none interleave.
    changes = [c.server for i, c in enumerate(writer.commits)
               if i == 0 or writer.commits[i - 1].server != c.server]
    assert len(changes) == len(set(changes)) or changes[0] == changes[-1], changes
    return gaps


def median_interval(writer: Writer) -> float:
    acks = [c.acked_at for c in writer.commits]
    return statistics.median(b - a for a, b in itertools.pairwise(acks))
