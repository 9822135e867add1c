"""The Kubernetes backend's faults of the CLI's kind, against a real API server.

Each test gets an API server of its own on an etcd prefix of its own (an empty cluster, no
Lock CRD), beside the session's control plane, so "no CRD installed" does not depend on
which other test installed the shared one.

A refusal (no Lock CRD, RBAC) is :class:`BackendRefused` and exits 78, never 69 or a
traceback; an acquire's requests end by its timeout. Time is never measured: the bound
shows in the timeout each request was given.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from components.locks.crd import apply_crd, lock_crd_manifest
from distlock import _cli
from distlock._errors import BackendRefused
from distlock._kube import _LockObjects
from distlock.kube import KubeLockBackend, api_client
from tests.support.controlplane import ControlPlane

pytestmark = pytest.mark.integration

NAMESPACE = "locks"
_SERVERS = itertools.count()


@pytest.fixture
def kubeconfig(control_plane: ControlPlane, tmp_path: Path) -> Iterator[str]:
    """A kubeconfig for a fresh, empty API server with the namespace and no Lock CRD."""
    number = next(_SERVERS)
    with control_plane.extra_api_server(f"kube-apiserver-distlock-{number}",
                                        etcd_prefix=f"/distlock-{number}") as server:
        path = control_plane.write_kubeconfig(tmp_path / "kubeconfig", namespace=NAMESPACE,
                                              server=server.url)
        core: Any = k8s.CoreV1Api(api_client(str(path)))
        core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=NAMESPACE)))
        yield str(path)


@pytest.mark.parametrize("subcommand", ["run", "status"])
def test_no_lock_crd_is_a_refusal_exit_78(kubeconfig: str, subcommand: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Before: ``run`` died with a traceback, ``status`` said "unreachable" (69)."""
    marker = tmp_path / "ran"
    argv = [subcommand, "--backend", "kubernetes", "--kubeconfig", kubeconfig, "lk"]
    if subcommand == "run":
        argv += ["--", "touch", str(marker)]
    code = _cli.main(argv)
    err = capsys.readouterr().err
    assert code == _cli.EXIT_REFUSED, err
    assert "is the Lock CRD installed" in err
    assert not marker.exists()


def test_an_acquires_requests_end_by_its_timeout(kubeconfig: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A waiter's reads, writes and watches may not outlast its timeout: an API server
    that accepts connections and never answers must not hold it for a request timeout."""
    apply_crd(api_client(kubeconfig), lock_crd_manifest(), owner="tests/distlock-kube")
    holder = KubeLockBackend(api_client(kubeconfig), NAMESPACE, ttl=10)
    waiter = KubeLockBackend(api_client(kubeconfig), NAMESPACE, ttl=10)
    assert waiter.timing.request_timeout > 1.0, "the default must exceed the timeout below"
    budgets: list[tuple[str, float | None]] = []
    real_call, real_watch = _LockObjects._call, _LockObjects.open_watch

    def recording_call(self: _LockObjects, kind: str, *args: Any,
                       timeout: float | None = None, **kwargs: Any) -> Any:
        budgets.append((kind, timeout))
        return real_call(self, kind, *args, timeout=timeout, **kwargs)

    def recording_watch(self: _LockObjects, obj_name: str, since: str, *,
                        connect_timeout: float | None = None) -> Any:
        budgets.append(("watch", connect_timeout))
        return real_watch(self, obj_name, since, connect_timeout=connect_timeout)

    try:
        grant = holder.acquire("bounded", timeout=5)
        assert grant is not None
        monkeypatch.setattr(_LockObjects, "_call", recording_call)
        monkeypatch.setattr(_LockObjects, "open_watch", recording_watch)
        assert waiter.acquire("bounded", timeout=1) is None
        monkeypatch.undo()
        assert {method for method, _ in budgets} >= {"LIST", "watch"}
        unbounded = [(m, t) for m, t in budgets if t is None or t > 1.0]
        assert not unbounded, f"requests given more than the acquire's 1 s: {unbounded}"
        holder.release(grant)
    finally:
        waiter.close()
        holder.close()


def test_refusals_are_backend_refused(kubeconfig: str) -> None:
    with KubeLockBackend(api_client(kubeconfig), NAMESPACE, ttl=10) as session, \
            pytest.raises(BackendRefused, match="is the Lock CRD installed"):
        session.inspect("lk")
