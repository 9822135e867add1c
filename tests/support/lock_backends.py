"""The backends the lock conformance suite (test_locks.py) runs against.

Each backend is a factory: a context manager that starts whatever the backend needs (a real
etcd cluster under ``base``; the session's real Kubernetes control plane, with a fault proxy
in front) and yields a :class:`BackendHarness` describing how to reach it. The suite is
parametrized over :data:`FACTORIES`, so registering a backend here is all it takes to hold
it to the same contract; tests that need what only etcd has (a leader to kill, ``etcdctl
lock``) run on etcd alone.

Adding a backend: write ``def my_backend(base, plane) -> Iterator[BackendHarness]`` as a
``contextlib.contextmanager`` and add ``"name": my_backend`` to :data:`FACTORIES`.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from distlock import BackendOptions, LockBackend, open_backend
from tests.support.controlplane import ControlPlane
from tests.support.etcd import EtcdCluster, EtcdMember
from tests.support.fault_proxy import FaultProxy


@dataclass
class BackendHarness:
    """How the suite reaches one running backend."""

    kind: str
    """The name ``open_backend`` and ``--backend`` know it by."""
    options: BackendOptions
    """How to reach it; the suite overrides ``ttl`` per test."""
    cli_options: list[str]
    """CLI arguments after ``--backend KIND`` that select this instance (no --ttl)."""
    cli_env: Mapping[str, str] = field(default_factory=dict)
    """Extra environment for CLI subprocesses (e.g. KUBECONFIG)."""
    kill_leader: Callable[[], None] | None = None
    """Fault: kill the service's leader (SIGKILL); None if the backend has none."""
    kill_endpoint: Callable[[str], None] | None = None
    """Fault: SIGKILL the member serving this client URL (the one clients try first)."""
    heal: Callable[[], None] | None = None
    """Undo faults (restart what was killed) so later tests find a whole service."""
    unreachable: Callable[[], AbstractContextManager[None]] | None = None
    """Fault: inside this context no client can reach the service (every member frozen);
    on exit it serves again. None if the backend cannot simulate that."""
    etcd_endpoints: tuple[str, ...] = ()
    """For ``etcdctl lock`` interop tests; empty when the backend is not etcd."""

    def open(self, ttl: float = 10.0) -> LockBackend:
        """A new client session (its own lease / holder identity)."""
        return open_backend(self.kind, replace(self.options, ttl=ttl))

    def cli(self, name: str, command: list[str], *, ttl: float = 10.0,
            timeout: float | None = None) -> list[str]:
        """argv of ``python -m distlock run`` holding ``name`` while ``command`` runs."""
        argv = [sys.executable, "-m", "distlock", "run", "--backend", self.kind,
                *self.cli_options, "--ttl", str(ttl)]
        if timeout is not None:
            argv += ["--timeout", str(timeout)]
        return [*argv, name, "--", *command]

    def env(self) -> dict[str, str]:
        """Environment for subprocesses: the repository importable, plus cli_env."""
        root = str(Path(__file__).resolve().parents[2])
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
        return {"PYTHONPATH": path, **self.cli_env}


@contextlib.contextmanager
def etcd_backend(base: Path) -> Iterator[BackendHarness]:
    """A real 3-member etcd cluster on loopback (tests/support/etcd.py)."""
    cluster = EtcdCluster(base / "etcd", size=3).start()
    killed: list[EtcdMember] = []

    def kill_leader() -> None:
        leader = cluster.leader()
        leader.kill()
        killed.append(leader)

    def kill_endpoint(url: str) -> None:
        member = next(m for m in cluster.members if m.client_url == url)
        member.kill()
        killed.append(member)

    def heal() -> None:
        while killed:
            killed.pop().start()
        cluster.wait_healthy()

    @contextlib.contextmanager
    def unreachable() -> Iterator[None]:
        # SIGSTOP, not kill: connections are accepted and then hang, the nastiest case
        # for a client (it must give up on its own clock, not on a refused connection).
        frozen = [m for m in cluster.members if m.running()]
        for member in frozen:
            member.freeze()
        try:
            yield
        finally:
            for member in frozen:
                member.thaw()
            cluster.wait_healthy()

    endpoints = tuple(cluster.endpoints)
    try:
        yield BackendHarness(
            kind="etcd",
            options=BackendOptions(endpoints=endpoints),
            cli_options=["--endpoints", ",".join(endpoints)],
            kill_leader=kill_leader,
            kill_endpoint=kill_endpoint,
            heal=heal,
            unreachable=unreachable,
            etcd_endpoints=endpoints,
        )
    finally:
        cluster.stop()


def _kube_harness(plane: ControlPlane, proxy: FaultProxy, base: Path, namespace: str,
                  token: str | None = None) -> BackendHarness:
    """Clients (CLI subprocesses too) reach the API server through ``proxy``, with a
    kubeconfig whose context names ``namespace``; ``unreachable`` hangs the proxy."""
    kubeconfig = str(plane.write_kubeconfig(base / "kubeconfig", namespace=namespace,
                                            token=token, server=proxy.url))
    return BackendHarness(
        kind="kubernetes",
        options=BackendOptions(kubeconfig=kubeconfig, namespace=namespace),
        cli_options=[],
        cli_env={"KUBECONFIG": kubeconfig},
        unreachable=proxy.unreachable,  # hangs every request and watch, like a frozen server
    )


def install_lock_crd(plane: ControlPlane, owner: str) -> None:
    """The Lock CRD, installed the way the Pulumi program installs it (apply, then wait
    for the real apiextensions controller to set Established)."""
    from components.locks.crd import apply_crd, lock_crd_manifest  # noqa: PLC0415

    apply_crd(plane.admin_client(), lock_crd_manifest(), owner=owner)


def bind_lock_user(plane: ControlPlane, namespace: str, account: str) -> str:
    """The project's lock-user ClusterRole (components/locks/rbac.py's rules), bound
    by a RoleBinding in ``namespace`` to ServiceAccount ``namespace/account``; returns
    a token of that account."""
    from kubernetes import client as k8s  # noqa: PLC0415

    from components.locks.rbac import lock_user_rules, user_role_name  # noqa: PLC0415

    rbac: Any = k8s.RbacAuthorizationV1Api(plane.admin_client())
    role = user_role_name(namespace)
    rules = [{"apiGroups": r["api_groups"], "resources": r["resources"], "verbs": r["verbs"]}
             for r in lock_user_rules()]
    with contextlib.suppress(k8s.ApiException):  # shared by modules of one session
        rbac.create_cluster_role({"apiVersion": "rbac.authorization.k8s.io/v1",
                                  "kind": "ClusterRole", "metadata": {"name": role},
                                  "rules": rules})
    with contextlib.suppress(k8s.ApiException):
        rbac.create_namespaced_role_binding(namespace, {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": f"{account}-lock-user"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}]})
    return plane.service_account_token(namespace, account)


@contextlib.contextmanager
def kube_backend(base: Path, plane: Callable[[], ControlPlane]) -> Iterator[BackendHarness]:
    """The Kubernetes backend against the session's real API server (admin credentials)."""
    running = plane()
    namespace = "locks-test"
    running.create_namespace(namespace)
    install_lock_crd(running, "tests/conformance")
    with running.proxy() as proxy:
        yield _kube_harness(running, proxy, base, namespace)


@contextlib.contextmanager
def kube_rbac_backend(base: Path, plane: Callable[[], ControlPlane]) -> Iterator[BackendHarness]:
    """The same, as a ServiceAccount that holds only the project's lock-user role."""
    running = plane()
    namespace = "locks-rbac"
    running.create_namespace(namespace)
    install_lock_crd(running, "tests/conformance")
    token = bind_lock_user(running, namespace, "lock-client")
    with running.proxy() as proxy:
        yield _kube_harness(running, proxy, base, namespace, token=token)


@contextlib.contextmanager
def etcd_factory(base: Path, plane: Callable[[], ControlPlane]) -> Iterator[BackendHarness]:
    del plane  # etcd runs its own 3-member cluster
    with etcd_backend(base) as running:
        yield running


Factory = Callable[[Path, Callable[[], ControlPlane]], AbstractContextManager[BackendHarness]]

FACTORIES: dict[str, Factory] = {
    "etcd": etcd_factory,
    "kubernetes": kube_backend,
    "kubernetes-rbac": kube_rbac_backend,
}
"""Each factory gets a directory and a way to get the session's control plane
(tests/conftest.py's ``control_plane``), asked for only by the backends that need it."""
