"""KubernetesRecordStore through the official client against a real kube-apiserver.

The compare-and-swap is the whole point of the record: a create loses to an existing
record, a replace loses to any write since the read, and a malformed record is an error
naming the ConfigMap, never a guess. The in-memory store must follow the same rules.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from components.mysql._record import (
    KubernetesRecordStore,
    MemoryRecordStore,
    PrimaryRecord,
    RecordConflict,
    RecordError,
    RecordStore,
)
from tests.support.controlplane import ControlPlane

pytestmark = pytest.mark.integration


@pytest.fixture
def name() -> str:
    return f"db-primary-{uuid.uuid4().hex[:8]}"  # the control plane outlives each test


@pytest.fixture
def kube(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
         control_plane: ControlPlane) -> ControlPlane:
    monkeypatch.setenv("KUBECONFIG", str(control_plane.write_kubeconfig(tmp_path / "kc")))
    return control_plane


def _store(kube: ControlPlane | None, name: str) -> RecordStore:
    if kube is None:
        return MemoryRecordStore()
    return KubernetesRecordStore("default", name)


@pytest.mark.parametrize("backend", ["memory", "kubernetes"])
def test_compare_and_swap(backend: str, name: str, request: pytest.FixtureRequest) -> None:
    kube = request.getfixturevalue("kube") if backend == "kubernetes" else None
    store, rival = _store(kube, name), _store(kube, name)
    if isinstance(store, MemoryRecordStore):
        rival = store
    assert store.read() is None
    first = store.write(0, 5, None)
    assert store.read() == first
    with pytest.raises(RecordConflict):
        rival.write(1, 6, None)  # a second creator loses
    second = rival.write(1, 6, first)
    with pytest.raises(RecordConflict):
        store.write(2, 7, first)  # written since `first` was read
    current = store.read()
    assert current == second
    assert (current.primary, current.epoch) == (1, 6)


def _core(kube: ControlPlane) -> Any:
    from kubernetes import client  # noqa: PLC0415

    return client.CoreV1Api(kube.admin_client())


def test_malformed_record_names_the_configmap(kube: ControlPlane, name: str) -> None:
    _core(kube).create_namespaced_config_map("default", {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default"}, "data": {"primary": "one"}})
    with pytest.raises(RecordError, match=f"ConfigMap default/{name}"):
        KubernetesRecordStore("default", name).read()


def test_record_is_plain_data_the_pods_can_read(kube: ControlPlane, name: str) -> None:
    KubernetesRecordStore("default", name).write(2, 11, None)
    stored = _core(kube).read_namespaced_config_map(name, "default")
    assert stored.data == {"primary": "2", "epoch": "11"}
    assert PrimaryRecord(2, 11, stored.metadata.resource_version) == (
        KubernetesRecordStore("default", name).read())


@pytest.mark.parametrize("backend", ["memory", "kubernetes"])
def test_fenced_record_names_no_primary_and_who_holds_the_data(
        backend: str, name: str, request: pytest.FixtureRequest) -> None:
    kube = request.getfixturevalue("kube") if backend == "kubernetes" else None
    store = _store(kube, name)
    first = store.write(1, 4, None)
    fenced = store.write(None, 5, first, previous=1)
    assert (fenced.primary, fenced.previous, fenced.fenced, fenced.authority) == (
        None, 1, True, 1)
    assert store.read() == fenced
    if kube is not None:
        stored = _core(kube).read_namespaced_config_map(name, "default")
        assert stored.data == {"primary": "none", "epoch": "5", "previous": "1"}
    with pytest.raises(RecordError, match="previous"):
        store.write(None, 6, fenced)  # refused before anything is written
    assert store.read() == fenced
    settled = store.write(2, 5, fenced)
    assert (settled.primary, settled.previous, settled.fenced) == (2, None, False)
