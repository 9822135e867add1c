"""What the end-to-end tests look at in the API server, through the real kubectl.

The tests judge a deploy by its effect on the control plane, never by what the engine
says it did: these helpers read objects back (``kubectl get -f`` of the manifests the
mocks tests render, so "every object exists as the mocks tests say" is one comparison),
the StatefulSets' readiness and the pods behind them, and which objects of the project
are left in a namespace.

Run as a module it is the README walkthrough's cluster: the test control plane with
nodes and volumes for ``Pulumi.e2e.yaml``, kept up until Ctrl-C::

    venv/bin/python -m tests.support.e2e_kube /tmp/control-plane
"""

from __future__ import annotations

import argparse
import json
import secrets
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # PyYAML ships with kubernetes

from components._kube import PART_OF
from components.mysql import credentials
from tests.support.controlplane import ControlPlane, start_control_plane
from tests.support.procs import run, wait_until
from tests.support.tools import tool

# Pulumi.e2e.yaml's storage class (static volumes) and mysql.credentials.existingSecret.
STORAGE_CLASS = "e2e-local"
SECRET = "mysql-e2e-credentials"
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

    def wait_project_gone(self, namespace: str) -> None:
        """No object of the project is left in ``namespace`` (a destroyed StatefulSet's
        pods are deleted by the garbage collector, after the destroy returned)."""
        wait_until(lambda: self.project_objects(namespace) == [], timeout=60,
                   what=f"every object of the project in {namespace} to be deleted")

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
            # readyReplicas is not compared for equality: after a scale-down it counts the
            # removed members' pods until they are gone (seen with kwok: they linger).
            if live["spec"]["replicas"] != replicas or (status.get("readyReplicas") or 0) < (
                    replicas):
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


def make_user_secret(kubectl: Kubectl, namespace: str,
                     passwords: Mapping[str, str] | None = None) -> Mapping[str, str]:
    """The Secret a user manages (Vault, External Secrets...), made with kubectl, holding
    ``passwords`` by account (random ones by default); returns them."""
    if passwords is None:
        passwords = {account: secrets.token_urlsafe(18)
                     for account in credentials.PASSWORD_VARIABLES}
    kubectl("create", "secret", "generic", SECRET, "-n", namespace,
            *(f"--from-literal={credentials.secret_key(a)}={p}" for a, p in passwords.items()))
    return passwords


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.e2e_kube", description=(
        "Start the test control plane with nodes and volumes for Pulumi.e2e.yaml; "
        "stop it with Ctrl-C."))
    parser.add_argument("directory", type=Path, help="where its data, PKI and logs go")
    args = parser.parse_args(argv)
    plane = start_control_plane(args.directory)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        prepare_cluster(plane, nodes=3, volumes=10, storage_class=STORAGE_CLASS,
                        prefix="walkthrough")
        sys.stdout.write(f"control plane ready: export KUBECONFIG={plane.kubeconfig}\n")
        sys.stdout.flush()
        stop.wait()
    finally:
        plane.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
