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

Why a "no primary" state (``primary: none`` with ``previous``): a switchover writes it
first, before the old primary is made read-only, so for the whole hand-over the record
names no writable server. A pod that restarts then, a failover arbiter, or the next
``pulumi up`` finds the record fenced and knows which ordinal holds every acknowledged
commit (``previous``: it stopped accepting writes, and the candidate only copies it);
none of them can mistake a half-done switchover for a settled primary.

The interface is small (:class:`RecordStore`: read, write-if-unchanged) so the engine is
tested against :class:`MemoryRecordStore`, and :class:`KubernetesRecordStore` (a
ConfigMap, written with the official client) against an API server.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from typing import Any, Protocol

# Pod labels: the Services select on the role; the epoch says which record set it.
ROLE_LABEL = "mysql-cluster.io/role"
EPOCH_LABEL = "mysql-cluster.io/epoch"

# ConfigMap data keys; the pods mount the ConfigMap and read them as files (lib.sh).
PRIMARY_KEY = "primary"
EPOCH_KEY = "epoch"
PREVIOUS_KEY = "previous"
# PRIMARY_KEY's value while a switchover holds the record: nobody may write.
NO_PRIMARY = "none"


class RecordError(RuntimeError):
    """The record could not be read or written; the message says which and why."""


class RecordConflict(RecordError):
    """A conditional write lost: someone else changed the record since it was read."""


class StaleEpoch(RecordError):
    """An actor's epoch is older than (or otherwise not) the record's: it must stop."""

    def __init__(self, mine: int, record: PrimaryRecord | None, before: str) -> None:
        held = (f"the record's epoch {record.epoch} ({record.describe()})" if record
                else "in no record (it was deleted)")
        super().__init__(f"epoch {mine} is not {held}: another run took over the cluster; "
                         f"stopped before {before}")
        self.mine = mine
        self.record = record


class StaleLockToken(RecordError):
    """A lock grant whose token cannot number an epoch newer than the record's."""


def lock_epoch(backend: str, token: int, recorded: int) -> int:
    """The epoch a topology change under the lock grant ``token`` writes over a record at
    epoch ``recorded`` (0: none yet); the same for `pulumi up` and the failover arbiter.

    etcd: the token itself. Tokens are revisions of the one store every holder locks in,
    so one not newer than the record means something else wrote it: refused. The
    Kubernetes backend: ``recorded + token``. A Lock's token is its own counter from 1,
    while the record may have been numbered otherwise (record + 1 by an unlocked up,
    etcd revisions before a move off etcd): requiring the token itself to be newer
    stopped every change until the counter caught up, never after a move from etcd. The
    sum is newer than the record and grows with each grant, because tokens grow and a
    later grant reads a record at least as new."""
    if backend != "etcd":
        return recorded + token
    if token <= recorded:
        raise StaleLockToken(f"lock token {token} is not newer than the record's epoch "
                             f"{recorded}")
    return token


@dataclass(frozen=True)
class PrimaryRecord:
    # None: fenced, no server may accept writes (a switchover is moving the primary).
    primary: int | None
    epoch: int
    # The store's version of this record (resourceVersion); "" for a record not yet stored.
    version: str = ""
    # While fenced: the ordinal that was primary, which holds every acknowledged commit.
    previous: int | None = None

    @property
    def fenced(self) -> bool:
        return self.primary is None

    @property
    def authority(self) -> int:
        """The ordinal holding every acknowledged commit: the primary, or while fenced the
        one the switchover is moving away from (it is read-only and the others copy it)."""
        if self.primary is not None:
            return self.primary
        if self.previous is None:  # parse_data and the stores never build one
            raise RecordError(f"a fenced record at epoch {self.epoch} names no previous "
                              "primary")
        return self.previous

    def describe(self) -> str:
        if self.primary is None:
            return f"no primary, fenced from ordinal {self.previous}"
        return f"primary ordinal {self.primary}"

    def data(self) -> dict[str, str]:
        """The ConfigMap data: plain strings the pod scripts read as files."""
        if self.primary is None:
            return {PRIMARY_KEY: NO_PRIMARY, EPOCH_KEY: str(self.epoch),
                    PREVIOUS_KEY: str(self.previous)}
        return {PRIMARY_KEY: str(self.primary), EPOCH_KEY: str(self.epoch)}


class RecordStore(Protocol):
    def read(self) -> PrimaryRecord | None:
        """The current record, or None when none was ever written."""

    def write(self, primary: int | None, epoch: int, expected: PrimaryRecord | None, *,
              previous: int | None = None) -> PrimaryRecord:
        """Store (primary, epoch) if the record is still ``expected`` (None: absent).

        ``primary`` None fences the record: no primary, ``previous`` holds the data.
        Raises :class:`RecordConflict` when it changed since.
        """

    def describe(self) -> str:
        """Where the record lives, for error messages."""


def fence(store: RecordStore, epoch: int, before: str) -> PrimaryRecord:
    """The record, if it still carries ``epoch``; otherwise :class:`StaleEpoch`."""
    record = store.read()
    if record is None or record.epoch != epoch:
        raise StaleEpoch(epoch, record, before)
    return record


def _checked(primary: int | None, epoch: int, previous: int | None) -> PrimaryRecord:
    """The record to store, refused before any write if it could not be read back."""
    if primary is None and previous is None:
        raise RecordError("a fenced record (no primary) must name the previous primary")
    if epoch < 0 or (primary is not None and primary < 0) or (
            previous is not None and previous < 0):
        raise RecordError(f"negative ordinal or epoch: primary {primary}, epoch {epoch}, "
                          f"previous {previous}")
    return PrimaryRecord(primary, epoch, previous=previous if primary is None else None)


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

    def write(self, primary: int | None, epoch: int, expected: PrimaryRecord | None, *,
              previous: int | None = None) -> PrimaryRecord:
        wanted = _checked(primary, epoch, previous)
        with self._lock:
            current_version = self._record.version if self._record else None
            expected_version = expected.version if expected else None
            if current_version != expected_version:
                raise RecordConflict(f"{self.describe()} changed since it was read")
            self._counter += 1
            self._record = dataclasses.replace(wanted, version=str(self._counter))
            self.writes.append(self._record)
            return self._record

    def describe(self) -> str:
        return "the in-memory primary record"


def parse_data(data: dict[str, str] | None, version: str, where: str) -> PrimaryRecord:
    data = data or {}
    try:
        epoch = int(data[EPOCH_KEY])
        if data[PRIMARY_KEY] == NO_PRIMARY:
            primary, previous = None, int(data[PREVIOUS_KEY])
        else:
            primary, previous = int(data[PRIMARY_KEY]), None
    except (KeyError, ValueError):
        raise RecordError(f"{where}: data must hold whole numbers {PRIMARY_KEY!r} (or "
                          f"{NO_PRIMARY!r} with {PREVIOUS_KEY!r}) and {EPOCH_KEY!r}; got "
                          f"{data!r}. Fix or delete it by hand") from None
    if epoch < 0 or min(primary or 0, previous or 0) < 0:
        raise RecordError(f"{where}: negative ordinal or epoch in {data!r}")
    return PrimaryRecord(primary, epoch, version, previous)


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

    def write(self, primary: int | None, epoch: int, expected: PrimaryRecord | None, *,
              previous: int | None = None) -> PrimaryRecord:
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        wanted = _checked(primary, epoch, previous)
        body: dict[str, Any] = {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": self.name, "namespace": self.namespace,
                         "labels": self.labels},
            "data": wanted.data(),
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
        return dataclasses.replace(wanted, version=str(written.metadata.resource_version))


class KubernetesPodLabels:
    """The role labels of the cluster's pods (``pods[ordinal]``), which the Services select.

    Moved by the holder of the record's epoch, right after the record: every other pod
    becomes ``replica`` first, then the primary ``primary``, so ``<name>-primary`` never
    selects two pods. A pod that does not exist is skipped: it labels itself from the
    record when it starts (init-config.sh).
    """

    def __init__(self, namespace: str, pods: tuple[str, ...], *, kubeconfig: str | None = None,
                 context: str | None = None) -> None:
        self.namespace = namespace
        self.pods = pods
        self._kubeconfig = kubeconfig
        self._context = context

    def _api(self) -> Any:
        from kubernetes import client  # noqa: PLC0415 (provider process only)

        from distlock.kube import api_client  # noqa: PLC0415

        return client.CoreV1Api(api_client(self._kubeconfig, context=self._context))

    def read(self) -> dict[int, dict[str, str]]:
        """Each existing pod's role and epoch labels, by ordinal."""
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        api, found = self._api(), {}
        for ordinal, pod in enumerate(self.pods):
            try:
                labels = api.read_namespaced_pod(pod, self.namespace).metadata.labels or {}
            except ApiException as error:
                if error.status == 404:
                    continue
                raise RecordError(f"pod {self.namespace}/{pod}: read failed: {error.status} "
                                  f"{error.reason}") from None
            found[ordinal] = {k: labels[k] for k in (ROLE_LABEL, EPOCH_LABEL) if k in labels}
        return found

    @staticmethod
    def wanted(primary: int | None, epoch: int, ordinal: int) -> dict[str, str]:
        role = "primary" if ordinal == primary else "replica"
        return {ROLE_LABEL: role, EPOCH_LABEL: str(epoch)}

    def move(self, primary: int | None, epoch: int) -> None:
        """Label every pod for (primary, epoch); ``primary`` None: every pod a replica."""
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        api = self._api()
        order = [o for o in range(len(self.pods)) if o != primary]
        if primary is not None and primary < len(self.pods):
            order.append(primary)
        for ordinal in order:
            pod = self.pods[ordinal]
            patch = {"metadata": {"labels": self.wanted(primary, epoch, ordinal)}}
            try:
                api.patch_namespaced_pod(pod, self.namespace, patch)
            except ApiException as error:
                if error.status == 404:
                    continue
                raise RecordError(f"pod {self.namespace}/{pod}: labelling failed: "
                                  f"{error.status} {error.reason}") from None
