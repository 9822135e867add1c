"""EtcdCluster under Pulumi mocks: every resource and the properties that make it safe.

:func:`render` builds the component under mocks and returns every registered resource
with its inputs in Kubernetes spelling; the integration tests take the StatefulSet's
exact command line and environment from it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import kubernetes_validate
import pytest

from components import config as stack_config
from components.etcd._membership import DESIRED_MEMBERS_KEY
from components.etcd.cluster import (
    BUSYBOX,
    SCRIPTS_DIR,
    STALE_LEARNER_SECONDS,
    backend_quota_bytes,
    cluster_token,
)
from tests.support.etcd_stack import DYNAMIC, etcd_config, render
from tests.support.procs import require_binary


def test_statefulset_runs_parallel_members_on_pvcs_from_the_pinned_image() -> None:
    rendered = render(replicas=3)
    sts = rendered.statefulset
    spec = sts["spec"]
    assert sts["metadata"]["name"] == "etcd"
    assert spec["replicas"] == 3
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["serviceName"] == "etcd-peer"
    assert spec["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain",
                                                             "whenScaled": "Delete"}
    claim = spec["volumeClaimTemplates"][0]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    pod = spec["template"]["spec"]
    assert pod["enableServiceLinks"] is False
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = rendered.etcd_container
    assert container["image"] == "gcr.io/etcd-development/etcd:v3.5.17"
    assert container["command"] == [BUSYBOX, "sh", "/scripts/etcd-member.sh"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts == {"data": "/var/lib/etcd", "scripts": "/scripts", "shell": "/shell"}
    copy, applets = pod["initContainers"]
    assert copy["image"] == applets["image"] == "busybox:1.36.1-uclibc"
    assert copy["command"] == ["/bin/busybox", "cp", "/bin/busybox", BUSYBOX]
    # Run from the copy, so the applet links point where the etcd container finds them.
    assert applets["command"] == [BUSYBOX, "--install", "-s", "/shell"]
    assert {m["name"]: m.get("readOnly") for m in container["volumeMounts"]}["shell"] is True


def test_statefulset_changes_only_after_membership() -> None:
    result = render().result
    (membership,) = result.of_type(DYNAMIC)
    statefulset = result.one("StatefulSet")
    assert membership.urn in statefulset.dependencies
    assert result.index(membership) < result.index(statefulset)


def test_member_name_and_urls_derive_from_the_pod_name_and_headless_dns() -> None:
    rendered = render(replicas=3)
    args = rendered.etcd_container["args"]
    host = "$(POD_NAME).etcd-peer.db.svc"
    assert "--name=$(POD_NAME)" in args
    assert f"--initial-advertise-peer-urls=http://{host}:2380" in args
    assert f"--advertise-client-urls=http://{host}:2379" in args
    assert "--listen-peer-urls=http://0.0.0.0:2380" in args
    assert "--listen-client-urls=http://0.0.0.0:2379" in args
    assert "--data-dir=/var/lib/etcd/data" in args
    assert f"--initial-cluster-token={cluster_token('mysql-cluster', 'dev', 'db', 'etcd')}" in args
    # The start-up script decides new/existing; the template never hard-codes it.
    assert not any(a.startswith("--initial-cluster-state") for a in args)
    assert f"--quota-backend-bytes={backend_quota_bytes('2Gi')}" in args
    env = rendered.env()
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["MEMBER_NAME"] == "$(POD_NAME)"
    assert env["MEMBER_PEER_URL"] == f"http://{host}:2380"
    # The pods read the desired members from the key the provider writes.
    assert env["MEMBER_DESIRED_KEY"] == DESIRED_MEMBERS_KEY


@pytest.mark.parametrize(("version", "has_flag"), [("3.5.3", False), ("3.5.4", False),
                                                  ("3.5.5", True), ("3.5.17", True),
                                                  ("3.6.4", True)])
def test_flags_exist_in_the_configured_release(version: str, has_flag: bool) -> None:
    args = render(version=version).etcd_container["args"]
    assert ("--experimental-compact-hash-check-enabled=true" in args) is has_flag
    assert render(version=version).etcd_container["image"].endswith(f":v{version}")


def test_initial_cluster_is_computed_from_replicas_and_recorded_by_membership() -> None:
    env = render(replicas=5).env()
    expected = ",".join(f"etcd-{i}=http://etcd-{i}.etcd-peer.db.svc:2380" for i in range(5))
    assert env["MEMBER_BOOTSTRAP_CLUSTER"] == expected
    assert env["MEMBER_CLUSTER_ENDPOINTS"] == ",".join(
        f"http://etcd-{i}.etcd-peer.db.svc:2379" for i in range(5))


def test_cluster_token_is_unique_per_stack_and_stable() -> None:
    token = cluster_token("mysql-cluster", "dev", "db", "etcd")
    assert token == cluster_token("mysql-cluster", "dev", "db", "etcd")
    assert token.startswith("etcd-")
    others = {cluster_token("mysql-cluster", "prod", "db", "etcd"),
              cluster_token("mysql-cluster", "dev", "db2", "etcd"),
              cluster_token("other", "dev", "db", "etcd")}
    assert token not in others
    assert len(others) == 3


def test_services_peer_headless_publishes_not_ready_and_client_selects_members() -> None:
    rendered = render()
    services = {s["metadata"]["name"]: s["spec"]
                for s in rendered.of_type("kubernetes:core/v1:Service")}
    peer, client = services["etcd-peer"], services["etcd-client"]
    assert peer["clusterIP"] == "None"
    assert peer["publishNotReadyAddresses"] is True
    assert {p["port"] for p in peer["ports"]} == {2379, 2380}
    assert client["type"] == "ClusterIP"
    assert [p["port"] for p in client["ports"]] == [2379]
    selector = rendered.statefulset["spec"]["selector"]["matchLabels"]
    assert peer["selector"] == selector == client["selector"]


@pytest.mark.parametrize(("replicas", "max_unavailable"), [(1, 0), (3, 1), (5, 2), (7, 3)])
def test_pdb_never_allows_losing_quorum(replicas: int, max_unavailable: int) -> None:
    pdb = render(replicas=replicas).one("kubernetes:policy/v1:PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == max_unavailable
    # The remaining members always form a quorum of the full cluster.
    assert replicas - max_unavailable >= replicas // 2 + 1


def test_probes_use_the_plain_http_metrics_listener() -> None:
    container = render().etcd_container
    assert "--listen-metrics-urls=http://0.0.0.0:2381" in container["args"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/health?serializable=true",
                                                     "port": "metrics"}
    assert container["readinessProbe"]["exec"]["command"] == [
        "/shell/busybox", "sh", "/scripts/etcd-member.sh", "readiness", "127.0.0.1", "2381"]
    startup = container["startupProbe"]["failureThreshold"] * \
        container["startupProbe"]["periodSeconds"]
    assert startup >= 300
    # A pod waiting for a never-started learner must outlast the wait before it removes
    # it, or the kubelet would restart it (and its count) first.
    env = render().env()
    assert int(env["MEMBER_STALE_LEARNER_SECONDS"]) == STALE_LEARNER_SECONDS
    assert startup > STALE_LEARNER_SECONDS


def test_required_spread_means_hard_anti_affinity() -> None:
    pod = render(spread="required").statefulset["spec"]["template"]["spec"]
    term = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term[0]["topologyKey"] == "kubernetes.io/hostname"
    preferred = render(spread="preferred").statefulset["spec"]["template"]["spec"]
    assert "affinity" not in preferred
    assert preferred["topologySpreadConstraints"]


def test_tls_uses_cert_manager_secrets_for_peers_and_clients() -> None:
    rendered = render(tls={"enabled": True, "peerSecret": "etcd-peer-tls",
                           "clientSecret": "etcd-client-tls"})
    container = rendered.etcd_container
    args = container["args"]
    assert "--client-cert-auth=true" in args
    assert "--peer-client-cert-auth=true" in args
    assert "--peer-trusted-ca-file=/etc/etcd/tls/peer/ca.crt" in args
    assert "--listen-client-urls=https://0.0.0.0:2379" in args
    env = rendered.env()
    assert env["MEMBER_PEER_URL"].startswith("https://")
    assert env["ETCDCTL_CERT"] == "/etc/etcd/tls/client/tls.crt"
    volumes = {v["name"]: v for v in rendered.statefulset["spec"]["template"]["spec"]["volumes"]}
    assert volumes["peer-tls"]["secret"]["secretName"] == "etcd-peer-tls"
    assert volumes["client-tls"]["secret"]["secretName"] == "etcd-client-tls"
    membership = rendered.one(DYNAMIC)
    assert membership["endpoints"] == ["https://etcd-client.db.svc:2379"]


def test_snapshot_cronjob_saves_to_a_volume_with_retention() -> None:
    rendered = render(snapshot={"schedule": "*/30 * * * *", "retain": 5, "storage": "3Gi"})
    cron = rendered.one("kubernetes:batch/v1:CronJob")
    assert cron["spec"]["schedule"] == "*/30 * * * *"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == [BUSYBOX, "sh", "/scripts/etcd-snapshot.sh"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["SNAPSHOT_RETAIN"] == "5"
    assert env["SNAPSHOT_ENDPOINT"] == "http://etcd-client.db.svc:2379"
    claim = rendered.one("kubernetes:core/v1:PersistentVolumeClaim")
    assert claim["spec"]["resources"]["requests"]["storage"] == "3Gi"
    assert {v["name"]: v.get("persistentVolumeClaim") for v in pod["volumes"]}["snapshots"] == {
        "claimName": "etcd-snapshots"}
    assert not render(snapshot={"enabled": False}).of_type("kubernetes:batch/v1:CronJob")


def test_scripts_ship_in_a_config_map_and_roll_the_pods_when_changed() -> None:
    rendered = render()
    config_map = rendered.one("kubernetes:core/v1:ConfigMap")
    assert set(config_map["data"]) == {"etcd-member.sh", "etcd-snapshot.sh"}
    assert config_map["data"]["etcd-member.sh"] == (SCRIPTS_DIR / "etcd-member.sh").read_text()
    annotations = rendered.statefulset["spec"]["template"]["metadata"]["annotations"]
    assert annotations["mysql-cluster.io/scripts-hash"]


def test_membership_resource_gets_every_ordinal_and_the_client_service() -> None:
    membership = render(replicas=3).one(DYNAMIC)
    assert membership["members"] == [
        {"name": f"etcd-{i}", "peer_url": f"http://etcd-{i}.etcd-peer.db.svc:2380"}
        for i in range(3)]
    assert membership["endpoints"] == ["http://etcd-client.db.svc:2379"]
    forwarded = render(membership={"access": "port-forward",
                                   "endpoints": ["127.0.0.1:12379"]}).one(DYNAMIC)
    assert forwarded["endpoints"] == ["http://127.0.0.1:12379"]
    # Without membership only the bootstrap recorder (tests/unit/test_etcd_bootstrap.py).
    disabled = render(membership={"enabled": False})
    (recorder,) = disabled.of_type(DYNAMIC)
    assert "endpoints" not in recorder
    assert len(recorder["members"]) == 3
    assert disabled.env()["MEMBER_BOOTSTRAP_CLUSTER"].count("=http://") == 3


def test_every_manifest_is_valid_kubernetes() -> None:
    rendered = render(tls={"enabled": True, "peerSecret": "p", "clientSecret": "c"},
                      spread="required")
    kinds = []
    for typ, _, inputs in rendered.resources:
        if typ.startswith("kubernetes:"):
            kubernetes_validate.validate(inputs, "1.30", strict=True)
            kinds.append(inputs["kind"])
    assert sorted(kinds) == ["ConfigMap", "CronJob", "NetworkPolicy", "PersistentVolumeClaim",
                             "PodDisruptionBudget", "Service", "Service", "StatefulSet"]


def test_network_policy_keeps_raft_between_members() -> None:
    rendered = render(clientNamespaces=["mysql-cluster-gitops"])
    policy = rendered.one("kubernetes:networking.k8s.io/v1:NetworkPolicy")["spec"]
    selector = rendered.statefulset["spec"]["selector"]["matchLabels"]
    assert policy["podSelector"]["matchLabels"] == selector
    rules = {tuple(sorted(p["port"] for p in rule["ports"])): rule["from"]
             for rule in policy["ingress"]}
    assert rules[(2380,)] == [{"podSelector": {"matchLabels": selector}}]
    assert rules[(2379, 2381)] == [
        {"podSelector": {}},
        {"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "mysql-cluster-gitops"}}}]


def test_config_rejects_bad_etcd_settings_with_clear_messages() -> None:
    with pytest.raises(stack_config.ConfigError) as error:
        etcd_config(replicas=11, images={"etcd": "gcr.io/etcd-development/etcd:latest"},
                    membership={"keyFile": "/k"}, name="Bad_Name")
    text = str(error.value)
    assert "mysql-cluster:etcd.replicas: got 11; must be one of 1, 3, 5, 7" in text
    assert "mysql-cluster:etcd.images.etcd" in text
    assert "needs membership.certFile" in text
    assert "mysql-cluster:etcd.name" in text


def test_scripts_are_shellcheck_clean() -> None:
    require_binary("shellcheck")
    scripts = sorted(str(p) for p in Path(SCRIPTS_DIR).glob("*.sh"))
    result = subprocess.run(["shellcheck", *scripts], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout
