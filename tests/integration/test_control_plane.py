"""The control-plane fixture does what the tests built on it rely on.

kwok must play the kubelet (a StatefulSet's pods on fake Nodes become Running and
Ready), claims must bind to the PersistentVolumes tests create, RBAC must be enforced,
and every binary must report the version it was pinned to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from distlock.kube import api_client
from tests.support.controlplane import NODE_LEASE_SECONDS, ControlPlane, api_json
from tests.support.procs import run, wait_until
from tests.support.tools import tool

pytestmark = pytest.mark.integration

NAMESPACE = "control-plane-check"


def test_binaries_report_their_pinned_versions(control_plane: ControlPlane) -> None:
    versions = dict(line.split("=", 1) for line in
                    (Path(__file__).parents[2] / "tools/kube/versions.env").read_text().splitlines()
                    if line and not line.startswith("#"))
    assert api_json(control_plane, "/version")["gitVersion"] == versions["KUBERNETES_VERSION"]
    kubectl = run([str(tool("kubectl")), "version", "--client", "-o", "json"]).stdout
    assert versions["KUBERNETES_VERSION"] in kubectl
    assert versions["ETCD_VERSION"].lstrip("v") in run([str(tool("etcd")), "--version"]).stdout
    assert versions["KWOK_VERSION"].lstrip("v") in run([str(tool("kwok")), "--version"]).stdout


def test_a_statefulset_becomes_ready_on_kwok_nodes_with_bound_claims(
        control_plane: ControlPlane) -> None:
    control_plane.create_namespace(NAMESPACE)
    control_plane.create_node("cp-check-node-0")
    for i in range(2):
        control_plane.create_persistent_volume(f"cp-check-pv-{i}", capacity="1Gi")
    api = control_plane.admin_client()
    labels = {"app": "cp-check"}
    apps: Any = k8s.AppsV1Api(api)
    apps.create_namespaced_stateful_set(NAMESPACE, {
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "cp-check"},
        "spec": {
            "replicas": 2, "serviceName": "cp-check", "selector": {"matchLabels": labels},
            # Pinned to this test's node: the session's control plane has other tests' Nodes.
            "template": {"metadata": {"labels": labels}, "spec": {
                "nodeSelector": {"kubernetes.io/hostname": "cp-check-node-0"},
                "containers": [{
                    "name": "main", "image": "registry.invalid/never-pulled:1",
                    "readinessProbe": {"exec": {"command": ["true"]}}}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                "accessModes": ["ReadWriteOnce"], "storageClassName": "",
                "resources": {"requests": {"storage": "1Gi"}}}}],
        },
    })
    core: Any = k8s.CoreV1Api(api)
    wait_until(lambda: (apps.read_namespaced_stateful_set(
        "cp-check", NAMESPACE).status.ready_replicas or 0) == 2, timeout=120,
        what="the StatefulSet's two pods to be Ready through kwok")
    claims = core.list_namespaced_persistent_volume_claim(NAMESPACE).items
    assert sorted(c.status.phase for c in claims) == ["Bound", "Bound"]
    pods = core.list_namespaced_pod(NAMESPACE, label_selector="app=cp-check").items
    assert {p.spec.node_name for p in pods} == {"cp-check-node-0"}, "misplaced"
    assert {p.status.phase for p in pods} == {"Running"}


def test_kwok_renews_its_nodes_leases(control_plane: ControlPlane) -> None:
    """A kubelet's heartbeat is its node Lease; without renewals the node lifecycle
    controller marks the Node unknown after its grace period and every pod on it NotReady
    for good (kwok's pod-ready stage only readies Pending pods): StatefulSets stop
    scaling. So kwok must hold and keep renewing a Lease for each Node it plays."""
    name = "cp-check-lease-node"
    control_plane.create_node(name)  # waits for kwok to hold the Lease
    first = control_plane.node_lease(name)
    assert first is not None
    assert first.spec.holder_identity, "nobody holds it"  # kwok's own id, not the Node's
    assert first.spec.lease_duration_seconds == NODE_LEASE_SECONDS
    wait_until(lambda: control_plane.node_lease(name).spec.renew_time > first.spec.renew_time,
               timeout=120, what=f"kwok to renew {name}'s Lease")


def test_rbac_is_enforced(control_plane: ControlPlane) -> None:
    control_plane.create_namespace(NAMESPACE)
    token = control_plane.service_account_token(NAMESPACE, "nobody")
    config = k8s.Configuration()
    config.host = control_plane.server_url
    config.ssl_ca_cert = str(control_plane.pki.ca_cert)
    config.api_key = {"authorization": f"Bearer {token}"}
    core: Any = k8s.CoreV1Api(k8s.ApiClient(config))
    with pytest.raises(k8s.ApiException) as refused:
        core.list_namespaced_secret(NAMESPACE)
    assert refused.value.status == 403
    config.api_key = {"authorization": "Bearer not-a-token"}
    core = k8s.CoreV1Api(k8s.ApiClient(config))
    with pytest.raises(k8s.ApiException) as unknown:
        core.list_namespaced_secret(NAMESPACE)
    assert unknown.value.status == 401


def test_the_proxy_forwards_and_can_hang(control_plane: ControlPlane, tmp_path: Path) -> None:
    with control_plane.proxy() as proxy:
        path = control_plane.write_kubeconfig(tmp_path / "via-proxy", server=proxy.url)
        core: Any = k8s.CoreV1Api(api_client(str(path)))
        assert core.read_namespace("default").metadata.name == "default"
        assert ("GET", "/api/v1/namespaces/default") in proxy.requests
        with proxy.unreachable(hang=True), pytest.raises(Exception, match="timed out"):
            core.read_namespace("default", _request_timeout=1)
        assert core.read_namespace("default").metadata.name == "default"
