"""Automatic failover with real servers: three MariaDB servers, etcd 3.5, a kube-apiserver.

Everything runs as it would in the cluster, as separate processes: the two arbiters
(``python -m arbiter run``, leader elected through distlock on etcd), one fencing agent
per server (``python -m arbiter agent``), the primary record and the arbiter's status in
ConfigMaps of the real API server, and a writer thread (the switchover tests' writer) that
commits as an application account to whichever primary the record names and logs every
acknowledged commit with the epoch it saw. Semi-sync (AFTER_SYNC) is on, and every
server runs the pods' ``replica.cnf`` (``init-rpl-role=SLAVE``), as an old primary does
when its pod starts after the record moved: a killed primary that restarts discards a
commit no replica acknowledged (MariaDB's semi-sync crash recovery) instead of coming
back errant.

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
import signal
import statistics
import sys
import time
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from components.config import FailoverConfig
from components.mysql import _arbiter
from components.mysql._record import ROLE_LABEL, KubernetesRecordStore
from distlock.crd import GROUP, PLURAL, VERSION
from tests.support.controlplane import ControlPlane
from tests.support.etcd import EtcdCluster
from tests.support.lock_backends import install_lock_crd
from tests.support.mariadb import DEBIAN, MariaDBServer
from tests.support.procs import LOCALHOST, ManagedProcess, wait_until
from tests.support.switchover import (
    NAMESPACE,
    REPL,
    TOPOLOGY,
    Cluster,
    Template,
    Writer,
    check_acknowledged,
    make_template,
)

pytestmark = pytest.mark.integration

_CAMEL = {"api_groups": "apiGroups", "resource_names": "resourceNames"}
REPO = Path(__file__).resolve().parents[2]
TTL, CHECKS, PERIOD = 3.0, 3, 0.5
# A failover takes checks x period to detect, ttl + period to fence, then the promotion.
FAILOVER_TIMEOUT = 60.0
RECORD_AHEAD_OF_THE_LOCK = 100_000
# Semi-sync as ReplicationInit sets it (durability: semisync); the rest of the servers'
# config is the pods' own replica.cnf, init-rpl-role=SLAVE included (MDEV-33465): every
# restart here is of an old primary after the record moved off it, which in a cluster is
# a new pod, and init-config.sh gives it replica.cnf; a server restarting after a crash
# then drops from its binlog what no replica acknowledged.
SEMISYNC_CNF = ("rpl_semi_sync_slave_enabled=ON\nrpl_semi_sync_master_timeout=10000\n"
                "rpl_semi_sync_master_wait_point=AFTER_SYNC\n")
SHIPPED_CONF = REPO / "components" / "mysql" / "conf" / "mariadb"
SHIPPED_CNF = SHIPPED_CONF / "replica.cnf"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    return make_template(tmp_path_factory.mktemp("template"), DEBIAN)


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
    agent_config_path: Path | None = None
    agents: list[ManagedProcess] = field(default_factory=list)
    arbiters: list[ManagedProcess] = field(default_factory=list)
    lock_backend: str = "etcd"

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
            "lock": {"backend": self.lock_backend,
                     "endpoints": self.etcd.endpoints if self.lock_backend == "etcd" else [],
                     "namespace": NAMESPACE, "name": f"mysql-cluster/{name}/replication",
                     "leader_name": f"mysql-cluster/{name}/arbiter"},
            "failover": {"ttl_seconds": TTL, "checks": CHECKS, "period_seconds": PERIOD,
                         "max_lag_seconds": 30, "apply_timeout_seconds": 20, **failover},
            "durability": "semisync", "semisync_timeout_seconds": 10,
            "kubeconfig": str(self.cluster.plane.kubeconfig),
        }
        self.config_path = self.base / "arbiter.json"
        self.config_path.write_text(json.dumps(config))

    def use_kubernetes_locks(self) -> None:
        """distlock's Kubernetes backend instead of etcd, for the leader election and the
        per-cluster lock: Lock objects in the API server that holds the record, the CRD
        installed as the stack installs it (``lock.backend: kubernetes``)."""
        install_lock_crd(self.cluster.plane, "tests/failover")
        self.lock_backend = "kubernetes"
        self.write_config()
        # A record far ahead of the new Lock's counter (from 1): what `pulumi up` leaves
        # when it held no lock (it numbers its switchovers record + 1), or a stack that
        # moved from etcd, whose tokens are revisions.
        store = KubernetesRecordStore(NAMESPACE, self.cluster.record_name,
                                      kubeconfig=str(self.cluster.plane.kubeconfig))
        store.write(0, RECORD_AHEAD_OF_THE_LOCK, store.read())

    def lock_tokens(self) -> dict[str, int]:
        """Each Lock object's fencing token by lock name (spec.lockName)."""
        from kubernetes import client  # noqa: PLC0415

        custom: Any = client.CustomObjectsApi(self.cluster.plane.admin_client())
        found = custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)
        return {item["spec"]["lockName"]: int((item.get("status") or {}).get(
            "fencingToken", 0)) for item in found["items"]}

    def _process(self, name: str, *args: str, config: Path | None = None) -> ManagedProcess:
        return ManagedProcess(name, [sys.executable, "-m", "arbiter", *args,
                                     "--config", str(config or self.config_path)],
                              log_dir=self.base, cwd=REPO,
                              env={"PYTHONPATH": str(REPO)}).start()

    def start_agents(self) -> None:
        self.agents = [self._process(f"agent-{o}", "agent", "--ordinal", str(o),
                                     config=self.agent_config_path)
                       for o in range(len(self.servers))]

    def start_arbiters(self, count: int = 2) -> None:
        self.arbiters += [self._process(f"arbiter-{len(self.arbiters) + i}", "run")
                          for i in range(count)]

    def restrict_rbac(self) -> None:
        """Arbiters and agents as ServiceAccounts holding only the component's Roles, and
        pods for the role labels: what they write in a cluster, with no more rights."""
        from kubernetes import client  # noqa: PLC0415

        plane, name = self.cluster.plane, self.cluster.record_name
        api = plane.admin_client()
        rbac: Any = client.RbacAuthorizationV1Api(api)
        self.cluster.create_pods()
        plan = _arbiter.ArbiterPlan(
            cluster=name, namespace=NAMESPACE, flavor="mariadb", pods=tuple(self.cluster.pods),
            hosts=(), port=3306, secret="", record=name, topology_user=TOPOLOGY,
            replication_user=REPL, lock_name="",
            # Empty: the Kubernetes backend, whose rules (the Lock objects) are added.
            lock_endpoints=tuple(self.etcd.endpoints) if self.lock_backend == "etcd" else (),
            failover=FailoverConfig(), role_label=ROLE_LABEL)
        kubeconfigs = {}
        for who, rules in (("arbiter", _arbiter.arbiter_rules(plan)),
                           ("agent", _arbiter.agent_rules(plan))):
            role = f"{name}-{who}"
            rbac.create_namespaced_role(NAMESPACE, {"metadata": {"name": role}, "rules": [
                {_CAMEL.get(k, k): v for k, v in rule.items()} for rule in rules]})
            rbac.create_namespaced_role_binding(NAMESPACE, {
                "metadata": {"name": role},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                            "name": role},
                "subjects": [{"kind": "ServiceAccount", "name": role,
                              "namespace": NAMESPACE}]})
            token = plane.service_account_token(NAMESPACE, role)
            kubeconfigs[who] = plane.write_kubeconfig(self.base / f"{who}.kubeconfig",
                                                      token=token)
        config = json.loads(self.config_path.read_text())
        agent = {**config, "kubeconfig": str(kubeconfigs["agent"])}
        self.agent_config_path = self.base / "agent.json"
        self.agent_config_path.write_text(json.dumps(agent))
        config.update(kubeconfig=str(kubeconfigs["arbiter"]), pods=self.cluster.pods)
        self.config_path.write_text(json.dumps(config))

    def restart_as_recorded_primary(self, ordinal: int) -> None:
        """SIGKILL, then start again as a pod does while the record still names it:
        init-config.sh gives it primary.cnf (init-rpl-role=MASTER) instead of
        replica.cnf."""
        server = self.servers[ordinal]
        server.kill()
        conf = server.base / "conf.d"
        (conf / "replica.cnf").unlink()
        shutil.copy(SHIPPED_CONF / "primary.cnf", conf / "primary.cnf")
        server.start()

    def roles(self) -> list[str | None]:
        return [role for role, _epoch in self.cluster.roles()]

    def leader(self) -> ManagedProcess:
        def find() -> ManagedProcess | None:
            for arbiter in self.arbiters:
                if arbiter.running() and "leader (token" in arbiter.log_tail(400):
                    return arbiter
            return None

        return wait_until(find, timeout=30, what="an arbiter to lead")

    def record(self) -> tuple[int, int]:
        """(primary, epoch): a failover never fences the record, and no switchover runs."""
        found = self.cluster.record()
        assert found is not None
        primary, epoch = found
        assert primary is not None, f"the record is fenced at epoch {epoch}"
        return primary, epoch

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

    def wait_status(self, state: str, reason: str, *, timeout: float) -> dict[str, str]:
        """The arbiter's status once it is ``state`` with ``reason`` in its reason."""
        def reached() -> dict[str, str] | None:
            status = self.status()
            return status if status.get("state") == state \
                and reason in status.get("reason", "") else None

        try:
            return wait_until(reached, timeout=timeout, what=f"the arbiter's status {state}")
        except TimeoutError:
            raise AssertionError(f"status {self.status()}, not {state!r} with {reason!r}\n"
                                 f"{self.logs()}") from None

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
            (base / "conf.d").mkdir(parents=True)
            shutil.copy(SHIPPED_CNF, base / "conf.d" / "replica.cnf")
            server = MariaDBServer(base, name=f"m{ordinal}", server_id=1 + ordinal,
                                   data_dir=base / "data", include_dir=base / "conf.d",
                                   extra_config=SEMISYNC_CNF)
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
    check_acknowledged(writer, survivors)
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


@dataclass
class Rounds:
    """What :func:`sigkill_rounds` saw: each round's failover and the writer's history."""

    writer: Writer
    results: list[dict[str, Any]]

    def summary(self, seed: int) -> dict[str, Any]:
        times = [r["seconds"] for r in self.results]
        return {"seed": seed, "rounds": self.results, "median_seconds": statistics.median(times),
                "max_seconds": max(times), "ttl_seconds": TTL, "checks": CHECKS,
                "period_seconds": PERIOD, "commits": len(self.writer.commits),
                "refused": self.writer.errors}


def sigkill_rounds(failover: Failover, rounds: int, seed: int) -> Rounds:
    """SIGKILL the primary under the writer ``rounds`` times (seeded), each time until the
    new primary took a commit and the old one, started again, rejoined; then the safety
    checks: no acknowledged commit lost, one server per epoch, survivors identical."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible schedule, not a secret
    failover.start_agents()
    failover.start_arbiters()
    failover.leader()
    results: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60 * rounds  # bounded: a stuck round fails the test
    with Writer(failover.cluster) as writer:
        for round_ in range(rounds):
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
            try:
                first = wait_until(lambda a=after, k=killed_at: next(  # type: ignore[misc]
                    (c for c in writer.commits if c.server == a[0] and c.acked_at > k), None),
                    timeout=FAILOVER_TIMEOUT, what="a commit on the new primary")
            except TimeoutError:
                stack = "".join(traceback.format_stack(
                    sys._current_frames()[writer.thread.ident or 0]))
                raise AssertionError(f"round {round_}: no commit on the new primary {after}; "
                                     f"writer: {writer.errors} refused, record errors "
                                     f"{writer.record_errors[-2:]}, at\n{stack}") from None
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
    return Rounds(writer, results)


def test_sigkill_of_the_primary_fails_over_without_losing_an_acknowledged_commit(
        failover: Failover) -> None:
    """SIGKILL the primary under the writer, ``FAILOVER_ROUNDS`` times (20), seeded."""
    seed = int(os.environ.get("FAILOVER_SEED", "20"))
    done = sigkill_rounds(failover, _rounds(), seed)
    summary = done.summary(seed)
    print(f"\nfailover SIGKILL -> first commit on the new primary over {_rounds()} rounds: "
          f"median {summary['median_seconds']:.3f} s, max {summary['max_seconds']:.3f} s "
          f"(ttl {TTL:g} s, {CHECKS} checks every {PERIOD:g} s); {summary['commits']} "
          f"commits, {summary['refused']} refused")
    out = os.environ.get("FAILOVER_RESULTS")
    if out:
        Path(out).write_text(json.dumps(summary, indent=2))


def test_sigkill_failover_with_the_arbiters_electing_through_kubernetes_locks(
        failover: Failover) -> None:
    """``lock.backend: kubernetes``: the leader election and the per-cluster lock are Lock
    objects in the API server that holds the record, reached with only the component's
    RBAC (its Lock rules included), no etcd. The same SIGKILL rounds, the same safety;
    every failover's epoch came from a grant of the per-cluster Lock."""
    failover.use_kubernetes_locks()
    failover.restrict_rbac()
    rounds = int(os.environ.get("FAILOVER_KUBE_ROUNDS", "3"))
    done = sigkill_rounds(failover, rounds, seed=17)
    tokens = failover.lock_tokens()
    name = failover.cluster.record_name
    assert set(tokens) == {f"mysql-cluster/{name}/replication",
                           f"mysql-cluster/{name}/arbiter"}, tokens
    # One grant per failover at least (a leader may also take it for a rejoin).
    assert tokens[f"mysql-cluster/{name}/replication"] >= rounds, tokens
    epochs = [r["epoch"] for r in done.results]
    assert epochs == sorted(set(epochs)), epochs
    assert epochs[0] > RECORD_AHEAD_OF_THE_LOCK, epochs


def _excluded(failover: Failover) -> dict[str, str]:
    found: dict[str, str] = json.loads(failover.status().get("excluded") or "{}")
    return found


def test_a_frozen_primary_is_fenced_and_acknowledges_nothing_under_its_old_epoch(
        failover: Failover) -> None:
    """SIGSTOP the primary's pod (server and agent) past the TTL, then SIGCONT."""
    failover.start_agents()
    failover.start_arbiters()
    failover.leader()
    with Writer(failover.cluster) as writer:
        before = failover.record()
        old, agent = failover.servers[before[0]], failover.agents[before[0]]
        frozen_at = len(writer.commits)
        old.process.signal(signal.SIGSTOP)
        agent.signal(signal.SIGSTOP)
        try:
            after = failover.wait_failover(before)
            writer.wait_commits_on(after[0], after=frozen_at)
        finally:
            old.process.signal(signal.SIGCONT)
            agent.signal(signal.SIGCONT)
        # Back, it has demoted itself (its agent could not confirm for longer than the
        # TTL) or been fenced by the arbiter; either way it takes no write.
        wait_until(lambda: failover.read_only(before[0]), timeout=30,
                   what="the old primary to be read-only")
        wait_until(lambda: failover.replicates_from(before[0], after[0])
                   or str(before[0]) in _excluded(failover), timeout=FAILOVER_TIMEOUT,
                   what=f"the old primary to rejoin or be kept out ({failover.status()})")
        count = len(writer.commits)
        writer.wait_commits_on(after[0], after=count)
    assert failover.read_only(before[0])
    assert all(c.server == after[0] for c in writer.commits if c.epoch == after[1])
    rejoined = str(before[0]) not in _excluded(failover)
    survivors = [s for o, s in enumerate(failover.servers) if rejoined or o != before[0]]
    check_history(writer, survivors)
    if rejoined:
        checksums_equal(failover.servers)
    else:
        # What it holds beyond the new primary was never acknowledged to the writer.
        extra = {r["seq"] for r in old.query("SELECT seq FROM app.log")} - {
            r["seq"] for r in failover.servers[after[0]].query("SELECT seq FROM app.log")}
        assert not extra & {c.seq for c in writer.commits}


def test_a_primary_restarted_before_the_failover_keeps_its_commits_and_the_arbiter_decides(
        failover: Failover) -> None:
    """SIGKILLed and started again at once as the record's primary (primary.cnf:
    init-rpl-role=MASTER, so it keeps every commit its binlog holds). It comes back
    read-only, which fails the checks; the arbiter promotes whichever server holds the
    most, the old primary itself when it kept a commit no replica received (seen here
    in time) or a replica (the old primary was still down), and then keeps the old
    primary out only if it holds what no one acknowledged. No acknowledged commit is
    lost either way."""
    failover.start_agents()
    failover.start_arbiters()
    failover.leader()
    with Writer(failover.cluster) as writer:
        before = failover.record()
        killed_at = len(writer.commits)
        failover.restart_as_recorded_primary(before[0])

        def opened() -> tuple[int, int] | None:
            now = failover.record()
            return now if now[1] > before[1] and not failover.read_only(now[0]) else None

        after = wait_until(opened, timeout=FAILOVER_TIMEOUT,
                           what=f"a primary opened under a new epoch\n{failover.logs()}")
        writer.wait_commits_on(after[0], after=killed_at)
        others = [o for o in range(3) if o != after[0]]
        wait_until(lambda: all(failover.replicates_from(o, after[0])
                               or str(o) in _excluded(failover) for o in others),
                   timeout=FAILOVER_TIMEOUT,
                   what=f"every other server to follow {after[0]} or be kept out "
                        f"({failover.status()})")
    assert [failover.read_only(o) for o in range(3)].count(False) == 1
    kept_out = [o for o in others if str(o) in _excluded(failover)]
    assert kept_out in ([], [before[0]]), _excluded(failover)
    survivors = [s for o, s in enumerate(failover.servers) if o not in kept_out]
    check_history(writer, survivors)
    checksums_equal(survivors)
    if kept_out:
        # What it holds beyond the new primary was never acknowledged to the writer.
        extra = {r["seq"] for r in failover.servers[before[0]].query(
            "SELECT seq FROM app.log")} - {r["seq"] for r in failover.servers[
                after[0]].query("SELECT seq FROM app.log")}
        assert extra
        assert not extra & {c.seq for c in writer.commits}


def test_killing_the_leader_mid_failover_the_other_arbiter_finishes_it(
        failover: Failover) -> None:
    failover.start_agents()
    failover.start_arbiters()
    leader = failover.leader()
    with Writer(failover.cluster) as writer:
        before = failover.record()
        killed_at = len(writer.commits)
        failover.servers[before[0]].kill()

        def midway() -> tuple[int, int] | None:
            # The record moved, the candidate is not writable yet: the fencing wait.
            now = failover.record()
            return now if now[1] > before[1] and failover.read_only(now[0]) else None

        mid = wait_until(midway, timeout=FAILOVER_TIMEOUT, what="the failover to start",
                         interval=0.01)
        leader.kill()
        assert failover.read_only(mid[0]), "the leader finished before it was killed"
        survivor = next(a for a in failover.arbiters if a is not leader)

        def finished() -> tuple[int, int] | None:
            now = failover.record()
            return now if now[1] > mid[1] and not failover.read_only(now[0]) else None

        after = wait_until(finished, timeout=FAILOVER_TIMEOUT,
                           what=f"the other arbiter to finish\n{failover.logs()}")
        assert "leader (token" in survivor.log_tail(400)
        writer.wait_commits_on(after[0], after=killed_at)
    live = [o for o in range(3) if o != before[0]]
    assert [failover.read_only(o) for o in live].count(False) == 1
    check_history(writer, [failover.servers[o] for o in live])
    checksums_equal([failover.servers[o] for o in live])


def test_a_blip_shorter_than_the_checks_does_not_fail_over(failover: Failover) -> None:
    checks = 5
    failover.write_config(checks=checks)
    failover.start_agents()
    failover.start_arbiters()
    failover.leader()
    with Writer(failover.cluster) as writer:
        before = failover.record()
        server = failover.servers[before[0]]
        server.process.signal(signal.SIGSTOP)
        # Frozen until the leader has counted a failed check, well short of `checks`.
        try:
            wait_until(lambda: any("check 1/" in a.log_tail(50) for a in failover.arbiters),
                       timeout=30, what="a failed check")
        finally:
            server.process.signal(signal.SIGCONT)
        status = failover.wait_status("watching", "healthy again", timeout=30)
        count = len(writer.commits)
        writer.wait_commits_on(before[0], after=count)
    assert f"fewer than checks={checks}: no failover" in status["reason"]
    assert failover.record() == before
    assert not failover.read_only(before[0])
    check_history(writer, failover.servers)


def test_every_replica_beyond_max_lag_no_promotion_and_the_reason_is_reported(
        failover: Failover) -> None:
    failover.write_config(max_lag_seconds=1)
    failover.start_agents()
    failover.start_arbiters()
    failover.leader()
    blockers = [failover.servers[o].connect() for o in (1, 2)]
    try:
        with Writer(failover.cluster) as writer:
            # Their appliers wait behind these locks while their relay logs grow.
            for blocker in blockers:
                blocker.cursor().execute("FLUSH TABLES WITH READ LOCK")

            def lagging(ordinal: int) -> bool:
                rows = failover.servers[ordinal].query("SHOW REPLICA STATUS")
                return int(rows[0]["Seconds_Behind_Master"] or 0) > 3

            wait_until(lambda: lagging(1) and lagging(2), timeout=60,
                       what="both replicas beyond maxLagSeconds")
            before = failover.record()
            failover.servers[0].kill()
            status = failover.wait_status("blocked", "", timeout=FAILOVER_TIMEOUT)
        assert "beyond maxLagSeconds=1" in status["reason"], status
        assert failover.record() == before
        assert failover.read_only(1)
        assert failover.read_only(2)
        assert any(reason == "FailoverBlocked" and "maxLagSeconds" in message
                   for reason, message in failover.events())
    finally:
        for blocker in blockers:
            blocker.close()
    # Once a replica has applied its relay log it qualifies, and the arbiter promotes it.
    after = failover.wait_failover(before)
    check_history(writer, [s for o, s in enumerate(failover.servers) if o != 0])
    assert after[0] in (1, 2)


def test_an_old_primary_returning_with_an_errant_write_is_kept_out_and_reported(
        failover: Failover) -> None:
    """Run with only the component's RBAC: everything the arbiter writes, it may write."""
    failover.restrict_rbac()
    failover.start_agents()
    failover.start_arbiters()
    failover.leader()
    primary = failover.servers[0]
    for replica in failover.servers[1:]:
        replica.query("STOP REPLICA IO_THREAD")
    # An async commit no replica received: errant once another server is promoted.
    primary.query("SET GLOBAL rpl_semi_sync_master_enabled = OFF")
    primary.query("INSERT INTO app.log VALUES (999999, 0, 0)")
    errant = primary.query("SELECT @@GLOBAL.gtid_binlog_pos AS p")[0]["p"]
    before = failover.record()
    # A clean shutdown (a node drained, a pod deleted): the commit is durable. After a
    # SIGKILL the crash recovery of a server started with init-rpl-role=SLAVE may drop
    # a tail the engine had not marked committed yet, errant or not.
    primary.stop()
    after = failover.wait_failover(before)
    wait_until(lambda: failover.roles().count("primary") == 1, timeout=30,
               what="the role labels to move")
    assert failover.roles()[after[0]] == "primary"
    assert failover.roles().count("replica") == 2
    primary.start()
    wait_until(lambda: "0" in _excluded(failover), timeout=FAILOVER_TIMEOUT,
               what=f"the old primary to be kept out ({failover.status()})")
    reason = _excluded(failover)["0"]
    assert errant in reason, reason
    assert failover.read_only(0)
    assert not failover.replicates_from(0, after[0])
    assert any(reason == "FailoverExcluded" and errant in message
               for reason, message in failover.events())
    # Nothing was wiped: the write is still there for a person to inspect.
    assert primary.query("SELECT seq FROM app.log WHERE seq = 999999")
