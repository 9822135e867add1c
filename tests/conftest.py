"""Session fixtures shared by unit and integration tests.

``control_plane`` is the one real Kubernetes control plane of a test session
(tests/support/controlplane.py): it takes tens of seconds to start on 2 cores, so every
test that needs an API server shares it and isolates itself by namespace and object
names instead.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.controlplane import ControlPlane, start_control_plane


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """etcd 3.5, kube-apiserver (RBAC on), controller-manager, scheduler and kwok on
    127.0.0.1; skips (fails under CI=true) when the binaries are not built."""
    plane = start_control_plane(tmp_path_factory.mktemp("control-plane"))
    try:
        yield plane
    finally:
        plane.stop()
