"""What the end-to-end tests look at in the API server, through the real kubectl.

The tests judge a deploy by its effect on the control plane, never by what the engine
says it did: these helpers read objects back (``kubectl get -f`` of the manifests the
mocks tests render, so "every object exists as the mocks tests say" is one comparison),
the StatefulSets' readiness and the pods behind them, and which objects of the project
are left in a namespace.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # PyYAML ships with kubernetes

from components._kube import PART_OF
from tests.support.controlplane import ControlPlane
from tests.support.procs import run, wait_until
from tests.support.tools import tool

# Every namespaced kind the program creates, for "nothing of the stack is left".
STACK_KINDS = ("statefulsets", "services", "configmaps", "secrets", "serviceaccounts",
               "roles", "rolebindings", "poddisruptionbudgets", "networkpolicies", "cronjobs",
               "pods")


@dataclass(frozen=True)
class Kubectl:
    plane: ControlPlane

    def __call__(self, *args: str, input_text: str | None = None,
                 check: bool = True) -> str:
        result = run([str(tool("kubectl")), f"--kubeconfig={self.plane.kubeconfig}", *args],
                     input_text=input_text, check=check, timeout=120)
        return result.stdout if result.returncode == 0 else result.stdout + result.stderr

    def json(self, *args: str, input_text: str | None = None) -> Any:
        return json.loads(self(*args, "-o", "json", input_text=input_text))

    def live(self, manifests: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """The live object of each manifest, in order; fails naming any that is missing."""
        listed = self.json("get", "-f", "-", input_text=yaml.safe_dump_all(list(manifests)))
        items: list[dict[str, Any]] = listed["items"] if listed.get("kind") == "List" else [
            listed]
        return items

    def project_objects(self, namespace: str) -> list[str]:
        """``kind/name`` of every object of this project left in ``namespace``."""
        output = self("get", ",".join(STACK_KINDS), "-n", namespace, "-o", "name",
                      "-l", f"app.kubernetes.io/part-of={PART_OF}")
        return sorted(line for line in output.splitlines() if line)

    def crd(self, name: str) -> dict[str, Any] | None:
        output = self("get", "customresourcedefinition", name, "-o", "json",
                      "--ignore-not-found")
        return json.loads(output) if output.strip() else None

    def pvcs(self, namespace: str) -> list[str]:
        output = self("get", "persistentvolumeclaims", "-n", namespace, "-o", "name")
        return sorted(line.split("/", 1)[1] for line in output.splitlines() if line)

    def wait_ready(self, namespace: str, statefulset: str, replicas: int) -> None:
        """Every pod of the StatefulSet exists and is Ready (kwok plays the kubelet)."""
        def ready() -> bool:
            live = self.json("get", "statefulset", statefulset, "-n", namespace)
            status = live.get("status") or {}
            if live["spec"]["replicas"] != replicas or status.get("readyReplicas") != replicas:
                return False
            return all(pod_ready(self.json("get", "pod", f"{statefulset}-{ordinal}",
                                           "-n", namespace)) for ordinal in range(replicas))

        wait_until(ready, timeout=60, what=f"{namespace}/{statefulset}: {replicas} Ready pods")


def pod_ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def condition(obj: dict[str, Any] | None, kind: str) -> str | None:
    for entry in ((obj or {}).get("status") or {}).get("conditions") or []:
        if entry["type"] == kind:
            status: str = entry["status"]
            return status
    return None


def prepare_cluster(plane: ControlPlane, *, nodes: int, volumes: int, storage_class: str,
                    prefix: str) -> None:
    """Nodes for kwok to run the pods on and static PersistentVolumes for their claims
    (the control plane is shared by the session: names carry ``prefix``)."""
    for index in range(nodes):
        plane.create_node(f"{prefix}-node-{index}")
    for index in range(volumes):
        plane.create_persistent_volume(f"{prefix}-pv-{index}", capacity="10Gi",
                                       storage_class=storage_class)


def write_admin_kubeconfig(plane: ControlPlane, path: Path, namespace: str) -> str:
    """The admin kubeconfig as text (what the stack's ``kubernetes:kubeconfig`` holds)."""
    return plane.write_kubeconfig(path, namespace=namespace).read_text()
