"""Automatic failover with real servers: three MariaDB servers, etcd 3.5, a kube-apiserver.

Everything runs as it would in the cluster, as separate processes: the two arbiters
(``python -m arbiter run``, leader elected through distlock on etcd), one fencing agent
per server (``python -m arbiter agent``), the primary record and the arbiter's status in
ConfigMaps of the real API server, and a writer thread (the switchover tests' writer) that
commits as an application account to whichever primary the record names and logs every
acknowledged commit with the epoch it saw. Semi-sync (AFTER_SYNC) is on, and every
server starts with ``rpl_semi_sync_slave_enabled`` so a killed primary that restarts
discards a commit no replica acknowledged (MariaDB's semi-sync crash recovery) instead
of coming back errant.

The history checker is the safety property: every acknowledged commit is on every
surviving server, and the epochs of the acknowledged commits never go backwards (a
commit acknowledged by an old primary after the new one took writes would be one that
goes back), with one server per epoch.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from components.mysql._record import KubernetesRecordStore
from components.mysql._switchover import TOPOLOGY_PRIVILEGES
from tests.integration.test_switchover import NAMESPACE, Cluster, Template, Writer
from tests.support.accounts import create_accounts
from tests.support.controlplane import ControlPlane
from tests.support.etcd import EtcdCluster
from tests.support.mariadb import MariaDBServer, random_password
from tests.support.procs import LOCALHOST, ManagedProcess, wait_until

pytestmark = pytest.mark.integration

ADMIN, TOPOLOGY, APP, REPL = "admin", "topology", "app", "repl"
REPO = Path(__file__).resolve().parents[2]
TTL, CHECKS, PERIOD = 3.0, 3, 0.5
# A failover takes checks x period to detect, ttl + period to fence, then the promotion.
FAILOVER_TIMEOUT = 60.0
SEMISYNC_CNF = ("rpl_semi_sync_slave_enabled=ON\nrpl_semi_sync_master_timeout=10000\n"
                "rpl_semi_sync_master_wait_point=AFTER_SYNC\n")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    base = tmp_path_factory.mktemp("template")
    passwords = {name: random_password() for name in (ADMIN, TOPOLOGY, APP, REPL)}
    server = MariaDBServer(base, name="template").initialize()
    try:
        create_accounts(server, users={ADMIN, REPL}, passwords={
            "ADMIN": passwords[ADMIN], "REPLICATION": passwords[REPL],
            "MONITOR": random_password(), "BACKUP": random_password()})
        with server.cursor() as cursor:
            cursor.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (TOPOLOGY, passwords[TOPOLOGY]))
            cursor.execute(f"GRANT {TOPOLOGY_PRIVILEGES['mariadb']} ON *.* TO %s@'%%'",
                           (TOPOLOGY,))
            cursor.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (APP, passwords[APP]))
            cursor.execute("CREATE DATABASE app")
            cursor.execute("CREATE TABLE app.log (seq BIGINT PRIMARY KEY, epoch BIGINT, "
                           "server INT) ENGINE=InnoDB")
            cursor.execute("GRANT SELECT, INSERT ON app.* TO %s@'%%'", (APP,))
    finally:
        server.stop()
    return Template(server.data_dir, server.root_password, passwords)


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(tmp_path_factory.mktemp("etcd"), size=1).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@dataclass
class Failover:
    """The servers, their agents and the arbiters of one test."""

    cluster: Cluster
    base: Path
    etcd: EtcdCluster
    config_path: Path = field(init=False)
    agents: list[ManagedProcess] = field(default_factory=list)
    arbiters: list[ManagedProcess] = field(default_factory=list)

    @property
    def servers(self) -> list[MariaDBServer]:
        return self.cluster.servers

    def write_config(self, **failover: float) -> None:
        passwords = self.cluster.template.passwords
        for name in (TOPOLOGY, REPL):
            (self.base / f"{name}.password").write_text(passwords[name])
        name = self.cluster.record_name
        config = {
            "flavor": "mariadb",
            "servers": [{"host": LOCALHOST, "port": s.port} for s in self.servers],
            "topology_user": TOPOLOGY, "topology_password_file": "topology.password",
            "replication_user": REPL, "replication_password_file": "repl.password",
            "record": {"namespace": NAMESPACE, "name": name},
            "lock": {"backend": "etcd", "endpoints": self.etcd.endpoints,
                     "name": f"mysql-cluster/{name}/replication",
                     "leader_name": f"mysql-cluster/{name}/arbiter"},
            "failover": {"ttl_seconds": TTL, "checks": CHECKS, "period_seconds": PERIOD,
                         "max_lag_seconds": 30, "apply_timeout_seconds": 20, **failover},
            "durability": "semisync", "semisync_timeout_seconds": 10,
            "kubeconfig": str(self.cluster.plane.kubeconfig),
        }
        self.config_path = self.base / "arbiter.json"
        self.config_path.write_text(json.dumps(config))

    def _process(self, name: str, *args: str) -> ManagedProcess:
        return ManagedProcess(name, [sys.executable, "-m", "arbiter", *args,
                                     "--config", str(self.config_path)],
                              log_dir=self.base, cwd=REPO,
                              env={"PYTHONPATH": str(REPO)}).start()

    def start_agents(self) -> None:
        self.agents = [self._process(f"agent-{o}", "agent", "--ordinal", str(o))
                       for o in range(len(self.servers))]

    def start_arbiters(self, count: int = 2) -> None:
        self.arbiters += [self._process(f"arbiter-{len(self.arbiters) + i}", "run")
                          for i in range(count)]

    def leader(self) -> ManagedProcess:
        def find() -> ManagedProcess | None:
            for arbiter in self.arbiters:
                if arbiter.running() and "leader (token" in arbiter.log_tail(400):
                    return arbiter
            return None

        return wait_until(find, timeout=30, what="an arbiter to lead")

    def record(self) -> tuple[int, int]:
        found = self.cluster.record()
        assert found is not None
        return found

    def status(self) -> dict[str, str]:
        from kubernetes import client  # noqa: PLC0415

        core: Any = client.CoreV1Api(self.cluster.plane.admin_client())
        try:
            found = core.read_namespaced_config_map(f"{self.cluster.record_name}-failover",
                                                    NAMESPACE)
        except client.ApiException as error:
            if error.status == 404:
                return {}
            raise
        return dict(found.data or {})

    def events(self) -> list[tuple[str, str]]:
        from kubernetes import client  # noqa: PLC0415

        core: Any = client.CoreV1Api(self.cluster.plane.admin_client())
        found = core.list_namespaced_event(
            NAMESPACE, field_selector=f"involvedObject.name={self.cluster.record_name}")
        return [(e.reason, e.message) for e in found.items]

    def read_only(self, ordinal: int) -> bool:
        return self.cluster.read_only(ordinal)

    def replicates_from(self, ordinal: int, primary: int) -> bool:
        rows = self.servers[ordinal].query("SHOW REPLICA STATUS")
        return bool(rows) and int(rows[0]["Master_Port"]) == self.servers[primary].port \
            and rows[0]["Slave_IO_Running"] == "Yes" and rows[0]["Slave_SQL_Running"] == "Yes"

    def wait_failover(self, old: tuple[int, int]) -> tuple[int, int]:
        """The record moved off ``old`` and the server it names is writable."""
        def moved() -> tuple[int, int] | None:
            now = self.record()
            if now[1] > old[1] and now[0] != old[0] and not self.read_only(now[0]):
                return now
            return None

        return wait_until(moved, timeout=FAILOVER_TIMEOUT, what=f"a failover away from {old}",
                          interval=0.02)

    def stop(self) -> None:
        for process in [*self.arbiters, *self.agents]:
            process.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log_tail(30)}" for p in [*self.arbiters, *self.agents])


@pytest.fixture
def failover(tmp_path: Path, template: Template, control_plane: ControlPlane,
             etcd: EtcdCluster) -> Iterator[Failover]:
    servers: list[MariaDBServer] = []
    setup: Failover | None = None
    try:
        for ordinal in range(3):
            base = tmp_path / f"m{ordinal}"
            shutil.copytree(template.data_dir, base / "data")
            server = MariaDBServer(base, name=f"m{ordinal}", server_id=1 + ordinal,
                                   data_dir=base / "data",
                                   extra_config="log-bin=mysql-bin\nlog-slave-updates\n"
                                                f"gtid-strict-mode=ON\nread-only=ON\n"
                                                f"{SEMISYNC_CNF}")
            server.root_password = template.root_password
            servers.append(server.start())
        cluster = Cluster(servers, template, control_plane,
                          record_name=f"orders-{uuid.uuid4().hex[:8]}")
        setup = Failover(cluster, tmp_path, etcd)
        _replicate(servers, template.passwords[REPL], primary=0)
        KubernetesRecordStore(NAMESPACE, cluster.record_name,
                              kubeconfig=str(control_plane.kubeconfig)).write(0, 1, None)
        setup.write_config()
        yield setup
    finally:
        if setup is not None:
            setup.stop()
        for server in servers:
            server.stop()


def _replicate(servers: list[MariaDBServer], password: str, *, primary: int) -> None:
    """What `pulumi up` leaves: replicas on GTIDs, semi-sync, the primary writable."""
    for ordinal, server in enumerate(servers):
        if ordinal == primary:
            continue
        server.query("CHANGE MASTER TO MASTER_HOST=%s, MASTER_PORT=%s, MASTER_USER=%s, "
                     "MASTER_PASSWORD=%s, MASTER_USE_GTID=slave_pos",
                     (LOCALHOST, servers[primary].port, REPL, password))
        server.query("START REPLICA")
    servers[primary].query("SET GLOBAL rpl_semi_sync_master_enabled = ON")
    servers[primary].query("SET GLOBAL read_only = OFF")
    for ordinal, server in enumerate(servers):
        if ordinal != primary:
            wait_until(lambda s=server: s.query("SHOW REPLICA STATUS")[0]  # type: ignore[misc]
                       ["Slave_IO_Running"] == "Yes", timeout=30,
                       what=f"{server.name} to replicate")
    wait_until(lambda: servers[primary].query(
        "SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_clients'")[0]["Value"] != "0",
        timeout=30, what="a semi-sync replica")


def check_history(writer: Writer, survivors: list[MariaDBServer]) -> None:
    """No acknowledged commit lost; one server per epoch; epochs never go backwards."""
    acked = {c.seq for c in writer.commits}
    for server in survivors:
        wait_until(lambda s=server: {r["seq"] for r in s.query(  # type: ignore[misc]
            "SELECT seq FROM app.log")} >= acked, timeout=30,
            what=f"every acknowledged commit on {server.name}")
    by_epoch: dict[int, set[int]] = {}
    for commit in writer.commits:
        by_epoch.setdefault(commit.epoch, set()).add(commit.server)
    assert all(len(s) == 1 for s in by_epoch.values()), by_epoch
    epochs = [c.epoch for c in writer.commits]
    backwards = [(a, b) for a, b in itertools.pairwise(epochs) if b < a]
    assert not backwards, f"commits acknowledged under an older epoch after a newer one: " \
                          f"{backwards[:5]}"


def checksums_equal(servers: list[MariaDBServer]) -> None:
    wait_until(lambda: len({s.query("CHECKSUM TABLE app.log")[0]["Checksum"]
                            for s in servers}) == 1,
               timeout=30, what="every survivor checksum-identical")


def _rounds() -> int:
    return int(os.environ.get("FAILOVER_ROUNDS", "20"))


def test_sigkill_of_the_primary_fails_over_without_losing_an_acknowledged_commit(
        failover: Failover) -> None:
    """SIGKILL the primary under the writer, ``FAILOVER_ROUNDS`` times (20), seeded."""
    seed = int(os.environ.get("FAILOVER_SEED", "20"))
    rng = random.Random(seed)  # noqa: S311 - a reproducible schedule, not a secret
    failover.start_agents()
    failover.start_arbiters()
    failover.leader()
    results: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60 * _rounds()  # bounded: a stuck round fails the test
    with Writer(failover.cluster) as writer:
        for round_ in range(_rounds()):
            assert time.monotonic() < deadline, f"out of time after {round_} rounds"
            before = failover.record()
            # Kill at a random point of the writer's stream, not right after a check.
            target = len(writer.commits) + rng.randint(5, 60)
            wait_until(lambda t=target: len(writer.commits) >= t,  # type: ignore[misc]
                       timeout=30, what="the writer to commit")
            old = failover.servers[before[0]]
            killed_at = time.monotonic()
            old.kill()
            try:
                after = failover.wait_failover(before)
            except TimeoutError:
                raise AssertionError(f"round {round_}: no failover\n{failover.logs()}") from None
            first = wait_until(lambda a=after, k=killed_at: next(  # type: ignore[misc]
                (c for c in writer.commits if c.server == a[0] and c.acked_at > k), None),
                timeout=30, what="a commit on the new primary")
            results.append({"round": round_, "from": before[0], "to": after[0],
                            "epoch": after[1], "seconds": round(first.acked_at - killed_at, 3)})
            old.start()
            wait_until(lambda o=before[0], p=after[0]:  # type: ignore[misc]
                       failover.replicates_from(o, p), timeout=FAILOVER_TIMEOUT,
                       what=f"round {round_}: the old primary {old.name} to rejoin "
                            f"(status {failover.status()})")
            assert failover.read_only(before[0])
    check_history(writer, failover.servers)
    checksums_equal(failover.servers)
    times = [r["seconds"] for r in results]
    summary = {"seed": seed, "rounds": results, "median_seconds": statistics.median(times),
               "max_seconds": max(times), "ttl_seconds": TTL, "checks": CHECKS,
               "period_seconds": PERIOD, "commits": len(writer.commits),
               "refused": writer.errors}
    print(f"\nfailover SIGKILL -> first commit on the new primary over {len(times)} rounds: "
          f"median {summary['median_seconds']:.3f} s, max {summary['max_seconds']:.3f} s "
          f"(ttl {TTL:g} s, {CHECKS} checks every {PERIOD:g} s); {len(writer.commits)} "
          f"commits, {writer.errors} refused")
    out = os.environ.get("FAILOVER_RESULTS")
    if out:
        Path(out).write_text(json.dumps(summary, indent=2))
