"""KubernetesRecordStore through the official client against the fake API server.

The compare-and-swap is the whole point of the record: a create loses to an existing
record, a replace loses to any write since the read, and a malformed record is an error
naming the ConfigMap, never a guess. (The real kube-apiserver fixture, when merged, runs
the same checks against a real server.)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from components.mysql._record import (
    KubernetesRecordStore,
    MemoryRecordStore,
    PrimaryRecord,
    RecordConflict,
    RecordError,
    RecordStore,
)
from tests.support.fake_kube import CONFIGMAP_KEY, FakeKubeServer


@pytest.fixture
def kube(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKubeServer]:
    with FakeKubeServer() as fake:
        monkeypatch.setenv("KUBECONFIG", str(fake.write_kubeconfig(tmp_path / "kubeconfig")))
        yield fake


def _stores(kube: FakeKubeServer | None) -> RecordStore:
    if kube is None:
        return MemoryRecordStore()
    return KubernetesRecordStore("default", "db-primary")


@pytest.mark.parametrize("backend", ["memory", "kubernetes"])
def test_compare_and_swap(backend: str, request: pytest.FixtureRequest) -> None:
    kube = request.getfixturevalue("kube") if backend == "kubernetes" else None
    store, rival = _stores(kube), _stores(kube)
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


def test_malformed_record_names_the_configmap(kube: FakeKubeServer) -> None:
    kube.put_object(*CONFIGMAP_KEY, "default", {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "db-primary", "namespace": "default"},
        "data": {"primary": "one"}})
    with pytest.raises(RecordError, match="ConfigMap default/db-primary"):
        KubernetesRecordStore("default", "db-primary").read()


def test_record_is_plain_data_the_pods_can_read(kube: FakeKubeServer) -> None:
    KubernetesRecordStore("default", "db-primary").write(2, 11, None)
    stored = kube.get_object(*CONFIGMAP_KEY, "default", "db-primary")
    assert stored is not None
    assert stored["data"] == {"primary": "2", "epoch": "11"}
    assert PrimaryRecord(2, 11, stored["metadata"]["resourceVersion"]) == (
        KubernetesRecordStore("default", "db-primary").read())
