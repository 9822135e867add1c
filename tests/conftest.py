"""Fixtures shared by every test directory.

``mariadb_version`` is how a real-server test runs on both MariaDB versions: the fixtures that
start servers take it and pass it on (``MariaDBServer(version=...)``, ``PodCluster(version=...)``),
so each test body runs unchanged on 10.11 (Debian) and 11.4 (Maven Central; see
tests/support/mariadb.py). Module scope, so that a module-scoped server template is built once
per version and the tests of one version run together.

``control_plane`` is the one real Kubernetes control plane of a test session
(tests/support/controlplane.py): it takes tens of seconds to start on 2 cores, so every
test that needs an API server shares it and isolates itself by namespace and object
names instead.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.controlplane import ControlPlane, start_control_plane
from tests.support.etcd import EtcdCluster
from tests.support.mariadb import VERSIONS


@pytest.fixture(scope="module", params=VERSIONS, ids=[f"mariadb-{v}" for v in VERSIONS])
def mariadb_version(request: pytest.FixtureRequest) -> str:
    version: str = request.param
    return version


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """etcd 3.5, kube-apiserver (RBAC on), controller-manager, scheduler and kwok on
    127.0.0.1; skips (fails under CI=true) when the binaries are not built."""
    plane = start_control_plane(tmp_path_factory.mktemp("control-plane"))
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real etcd member per test module that asks for it; its client URL."""
    cluster = EtcdCluster(tmp_path_factory.mktemp("etcd"), size=1).start()
    try:
        yield cluster.endpoints[0]
    finally:
        cluster.stop()
