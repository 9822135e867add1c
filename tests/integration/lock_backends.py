"""The backends the lock conformance suite (test_locks.py) runs against.

Each backend is a factory: a context manager that starts whatever the backend needs
(real processes, an in-process fake server) under ``base`` and yields a
:class:`BackendHarness` describing how to reach it. The suite is parametrized over
:data:`FACTORIES`, so registering a backend here is all it takes to hold it to the
same contract; tests that need a capability a backend lacks (killing an etcd leader,
``etcdctl lock``) check the harness and skip with the reason.

Adding a backend: write ``def my_backend(base: Path) -> Iterator[BackendHarness]`` as a
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

from distlock import BackendOptions, LockBackend, open_backend
from tests.support.etcd import EtcdCluster, EtcdMember


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


@contextlib.contextmanager
def kube_backend(base: Path) -> Iterator[BackendHarness]:
    """The Kubernetes backend against the in-process fake API server (tests/support/fake_kube.py).

    The Lock CRD is installed the way the Pulumi program installs it (apply, then wait
    for Established); clients, including CLI subprocesses, reach the fake over HTTP
    through a kubeconfig whose context names the namespace.
    """
    from components.locks.crd import apply_crd, lock_crd_manifest  # noqa: PLC0415
    from distlock.kube import api_client  # noqa: PLC0415
    from tests.support.fake_kube import FakeKubeServer  # noqa: PLC0415

    namespace = "locks-test"
    with FakeKubeServer() as fake:
        fake.create_namespace(namespace)
        base.mkdir(parents=True, exist_ok=True)
        kubeconfig = str(fake.write_kubeconfig(base / "kubeconfig", namespace=namespace))
        apply_crd(api_client(kubeconfig), lock_crd_manifest(), owner="tests/conformance")
        yield BackendHarness(
            kind="kubernetes",
            options=BackendOptions(kubeconfig=kubeconfig, namespace=namespace),
            cli_options=[],
            cli_env={"KUBECONFIG": kubeconfig},
            unreachable=fake.unreachable,  # hangs every request, like a frozen server
        )


@contextlib.contextmanager
def real_kube_backend(base: Path) -> Iterator[BackendHarness]:
    """The Kubernetes backend against the real cluster $KUBECONFIG points at, if any.

    Not a server binary we could install, so it is skipped (even under CI) without
    KUBECONFIG. The CRD is applied (and left installed); locks go to the current
    context's namespace, which CLI subprocesses pick up from the same kubeconfig.
    """
    import pytest  # noqa: PLC0415

    kubeconfig = os.environ.get("KUBECONFIG")
    if not kubeconfig:
        pytest.skip("KUBECONFIG is not set: no real cluster to run the Kubernetes backend on")
    from components.locks.crd import apply_crd, lock_crd_manifest  # noqa: PLC0415
    from distlock.kube import api_client, default_namespace  # noqa: PLC0415

    namespace = default_namespace(kubeconfig)
    apply_crd(api_client(kubeconfig), lock_crd_manifest(), owner="tests/conformance")
    yield BackendHarness(
        kind="kubernetes",
        options=BackendOptions(kubeconfig=kubeconfig, namespace=namespace),
        cli_options=[],
        cli_env={"KUBECONFIG": kubeconfig},
    )


FACTORIES: dict[str, Callable[[Path], AbstractContextManager[BackendHarness]]] = {
    "etcd": etcd_backend,
    "kubernetes": kube_backend,
    "kubernetes-real": real_kube_backend,
}
