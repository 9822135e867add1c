"""What the arbiter writes in the Kubernetes API besides the record and the role labels.

Its RBAC allows no more (the component's Role): the status ConfigMap (``<record>-failover``)
holds the leader's latest decision so that "why was there no failover?" has one place
to look, and an Event per change of state shows in ``kubectl get events``. (The role
labels move through the engine's :class:`~components.mysql._record.KubernetesPodLabels`,
as a switchover moves them.)

The Kubernetes client is imported inside the calls (the agent never needs it for more
than the record, and unit tests of the decision logic need no client at all).
"""

from __future__ import annotations

import datetime
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from arbiter._config import Config
from components.mysql._record import KubernetesRecordStore

_log = logging.getLogger("arbiter")
COMPONENT = "mysql-arbiter"


@dataclass
class Status:
    state: str                      # watching | failing | promoting | promoted | blocked
    reason: str
    primary: int
    epoch: int
    excluded: dict[int, str] = field(default_factory=dict)  # ordinal -> why it is kept out

    def data(self) -> dict[str, str]:
        return {"state": self.state, "reason": self.reason, "primary": str(self.primary),
                "epoch": str(self.epoch),
                "excluded": json.dumps({str(k): v for k, v in sorted(self.excluded.items())}),
                "updated": _now()}


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class RecordStore(KubernetesRecordStore):
    """The record, through one API client for the process's life.

    The engine's store builds a client per call (right for a provider process that runs
    a handful of calls); the agent reads every period, and a TLS handshake plus a
    kubeconfig parse per read took longer than a period on a loaded node, which is a
    missed confirmation.
    """

    def __init__(self, namespace: str, name: str, *, kubeconfig: str | None = None) -> None:
        super().__init__(namespace, name, kubeconfig=kubeconfig)
        self._client: Any = None

    def _api(self) -> Any:
        if self._client is None:
            self._client = super()._api()
        return self._client


class Kube:
    def __init__(self, config: Config) -> None:
        self.config = config
        self._core: Any = None

    def core(self) -> Any:
        if self._core is None:
            from kubernetes import client  # noqa: PLC0415 (see the module docstring)

            from distlock.kube import api_client  # noqa: PLC0415

            self._core = client.CoreV1Api(api_client(self.config.kubeconfig))
        return self._core

    def report(self, status: Status, *, event: bool, warning: bool = False) -> None:
        """Store ``status``; with ``event``, also record it as an Event on the record."""
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        cfg = self.config
        name = cfg.status_name or f"{cfg.record_name}-failover"
        body = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": cfg.record_namespace},
                "data": status.data()}
        try:
            try:
                self.core().replace_namespaced_config_map(name, cfg.record_namespace, body)
            except ApiException as error:
                if error.status != 404:
                    raise
                self.core().create_namespaced_config_map(cfg.record_namespace, body)
            if event:
                self._event(status, warning)
        except ApiException as error:
            # Reporting must never stop a failover; the log still has it.
            _log.warning("could not report status %s: %s %s", status.state, error.status,
                         error.reason)
        (_log.warning if warning else _log.info)("%s: %s", status.state, status.reason)

    def _event(self, status: Status, warning: bool) -> None:
        cfg = self.config
        now = datetime.datetime.now(datetime.UTC)
        self.core().create_namespaced_event(cfg.record_namespace, {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{cfg.record_name}-failover-",
                         "namespace": cfg.record_namespace},
            "involvedObject": {"apiVersion": "v1", "kind": "ConfigMap",
                               "name": cfg.record_name, "namespace": cfg.record_namespace},
            "reason": f"Failover{status.state.capitalize()}",
            "message": status.reason[:1000],
            "type": "Warning" if warning else "Normal",
            "source": {"component": COMPONENT},
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        })
