"""The primary record: which ordinal is the primary, and the epoch that put it there.

Why one record in the Kubernetes API and not state or the servers: a restarted pod must
find out whether it is the primary before its server starts, and only the API server is
reachable from the pod's init containers and from every runner of ``pulumi up``. The
servers cannot hold it (a write there is a GTID that every replica must carry), and
Pulumi state is invisible to the pods.

Why compare-and-swap on ``resourceVersion``: the record is the fence. Every topology
write (promote, repoint, label, record) is preceded by :meth:`RecordStore.fence`, which
refuses an actor whose epoch is not the record's; and the record itself only moves
forward through a conditional write, so two runners that read the same record cannot
both write theirs. The epoch is the per-cluster lock's fencing token, which strictly
increases with every grant: an older holder (paused past its lease) finds a newer epoch
in the record and stops.

The interface is small (:class:`RecordStore`: read, write-if-unchanged) so the engine is
tested against :class:`MemoryRecordStore`, and :class:`KubernetesRecordStore` (a
ConfigMap, written with the official client) against an API server.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Protocol

# ConfigMap data keys; pods read them (the label init containers through env vars).
PRIMARY_KEY = "primary"
EPOCH_KEY = "epoch"


class RecordError(RuntimeError):
    """The record could not be read or written; the message says which and why."""


class RecordConflict(RecordError):
    """A conditional write lost: someone else changed the record since it was read."""


class StaleEpoch(RecordError):
    """An actor's epoch is older than (or otherwise not) the record's: it must stop."""

    def __init__(self, mine: int, record: PrimaryRecord, before: str) -> None:
        super().__init__(
            f"epoch {mine} is not the record's epoch {record.epoch} (primary ordinal "
            f"{record.primary}): another run took over the cluster; stopped before {before}")
        self.mine = mine
        self.record = record


@dataclass(frozen=True)
class PrimaryRecord:
    primary: int
    epoch: int
    # The store's version of this record (resourceVersion); "" for a record not yet stored.
    version: str = ""


class RecordStore(Protocol):
    def read(self) -> PrimaryRecord | None:
        """The current record, or None when none was ever written."""

    def write(self, primary: int, epoch: int, expected: PrimaryRecord | None) -> PrimaryRecord:
        """Store (primary, epoch) if the record is still ``expected`` (None: absent).

        Raises :class:`RecordConflict` when it changed since.
        """

    def describe(self) -> str:
        """Where the record lives, for error messages."""


def fence(store: RecordStore, epoch: int, before: str) -> PrimaryRecord:
    """The record, if it still carries ``epoch``; otherwise :class:`StaleEpoch`."""
    record = store.read()
    if record is None or record.epoch != epoch:
        raise StaleEpoch(epoch, record or PrimaryRecord(-1, 0), before)
    return record


class MemoryRecordStore:
    """A record in this process, with the same compare-and-swap rules (unit tests)."""

    def __init__(self, record: PrimaryRecord | None = None) -> None:
        self._lock = threading.Lock()
        self._record = record
        self._counter = int(record.version or 0) if record else 0
        self.writes: list[PrimaryRecord] = []

    def read(self) -> PrimaryRecord | None:
        with self._lock:
            return self._record

    def write(self, primary: int, epoch: int, expected: PrimaryRecord | None) -> PrimaryRecord:
        with self._lock:
            current_version = self._record.version if self._record else None
            expected_version = expected.version if expected else None
            if current_version != expected_version:
                raise RecordConflict(f"{self.describe()} changed since it was read")
            self._counter += 1
            self._record = PrimaryRecord(primary, epoch, str(self._counter))
            self.writes.append(self._record)
            return self._record

    def describe(self) -> str:
        return "the in-memory primary record"


def parse_data(data: dict[str, str] | None, version: str, where: str) -> PrimaryRecord:
    data = data or {}
    try:
        primary, epoch = int(data[PRIMARY_KEY]), int(data[EPOCH_KEY])
    except (KeyError, ValueError):
        raise RecordError(f"{where}: data must hold whole numbers {PRIMARY_KEY!r} and "
                          f"{EPOCH_KEY!r}; got {data!r}. Fix or delete it by hand") from None
    if primary < 0 or epoch < 0:
        raise RecordError(f"{where}: negative {PRIMARY_KEY}/{EPOCH_KEY} in {data!r}")
    return PrimaryRecord(primary, epoch, version)


class KubernetesRecordStore:
    """A ConfigMap ``namespace/name``; every write is conditioned on its resourceVersion.

    A create is conditional too: a second creator gets 409 AlreadyExists. The client is
    built per store (the provider process imports the Kubernetes client; the program
    never does).
    """

    def __init__(self, namespace: str, name: str, *, kubeconfig: str | None = None,
                 context: str | None = None, labels: dict[str, str] | None = None) -> None:
        self.namespace = namespace
        self.name = name
        self.labels = dict(labels or {})
        self._kubeconfig = kubeconfig
        self._context = context

    def describe(self) -> str:
        return f"ConfigMap {self.namespace}/{self.name}"

    def _api(self) -> Any:
        from kubernetes import client  # noqa: PLC0415 (provider process only)

        from distlock.kube import api_client  # noqa: PLC0415

        return client.CoreV1Api(api_client(self._kubeconfig, context=self._context))

    def read(self) -> PrimaryRecord | None:
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        try:
            found = self._api().read_namespaced_config_map(self.name, self.namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise RecordError(f"{self.describe()}: read failed: {error.status} "
                              f"{error.reason}") from None
        return parse_data(found.data, str(found.metadata.resource_version), self.describe())

    def write(self, primary: int, epoch: int, expected: PrimaryRecord | None) -> PrimaryRecord:
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        body: dict[str, Any] = {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": self.name, "namespace": self.namespace,
                         "labels": self.labels},
            "data": {PRIMARY_KEY: str(primary), EPOCH_KEY: str(epoch)},
        }
        api = self._api()
        try:
            if expected is None:
                written = api.create_namespaced_config_map(self.namespace, body)
            else:
                body["metadata"]["resourceVersion"] = expected.version
                written = api.replace_namespaced_config_map(self.name, self.namespace, body)
        except ApiException as error:
            if error.status == 409:
                raise RecordConflict(f"{self.describe()} changed since it was read (epoch "
                                     f"{epoch} not written)") from None
            raise RecordError(f"{self.describe()}: write failed: {error.status} "
                              f"{error.reason}") from None
        return PrimaryRecord(primary, epoch, str(written.metadata.resource_version))
