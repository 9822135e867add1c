"""EtcdCluster under Pulumi mocks: every resource and the properties that make it safe.

:func:`render` builds the component under mocks and returns every registered resource
with its inputs in Kubernetes spelling; the integration tests take the StatefulSet's
exact command line and environment from it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import kubernetes_validate
import pytest

from components import config as stack_config
from components.etcd import _membership as membership
from components.etcd._membership import (
    DESIRED_MEMBERS_KEY,
    EtcdMembershipProvider,
    MembershipError,
    _Gateway,
    _Member,
    _remove,
)
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
    disabled = render(membership={"enabled": False})
    assert not disabled.of_type(DYNAMIC)
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


# --- EtcdMembershipProvider decisions that need no etcd ---------------------------------

def _members(count: int) -> list[dict[str, str]]:
    return [{"name": f"etcd-{i}", "peer_url": f"http://etcd-{i}.p:2380"} for i in range(count)]


def test_check_admits_any_step_up_or_down_in_one_update() -> None:
    provider = EtcdMembershipProvider()
    news = {"members": _members(5), "endpoints": ["http://c:2379"], "timeout_seconds": 30.0}
    for old, new in ((3, 5), (5, 7), (1, 3), (5, 3), (7, 1), (3, 4)):
        result = provider.check({"members": _members(old)}, {**news, "members": _members(new)})
        assert not result.failures, (old, new, result.failures)
    # Floats from the engine become whole seconds.
    assert provider.check({"members": _members(3)}, news).inputs["timeout_seconds"] == 30


def test_check_refuses_moving_a_member_and_bad_input() -> None:
    provider = EtcdMembershipProvider()
    moved = [{**m, "peer_url": m["peer_url"].replace(".p:", ".q:")} for m in _members(3)]
    result = provider.check({"members": _members(3)},
                            {"members": moved, "endpoints": ["http://c:2379"]})
    assert "cannot move" in result.failures[0].reason
    bad = provider.check({}, {"members": [{"name": "x"}], "endpoints": ["ftp://c"],
                              "timeout_seconds": -1})
    assert {f.property for f in bad.failures} == {"members", "endpoints", "timeout_seconds"}


class _FakeGateway(_Gateway):
    """etcd's member API as the provider sees it, recording every change in order."""

    def __init__(self, members: list[_Member], *, refuse_remove: str | None = None,
                 slot_race: bool = False) -> None:
        super().__init__(["http://unused:2379"], timeout=1, tls={})
        self.listed = members
        self.calls: list[tuple[str, str]] = []
        self.refuse_remove = refuse_remove
        self.slot_race = slot_race
        self.kv: dict[str, str] = {}

    def members(self) -> list[_Member]:
        return list(self.listed)

    def remove(self, member_id: str) -> None:
        if self.refuse_remove == member_id:
            raise MembershipError("etcd refused /v3/cluster/member/remove: etcdserver: "
                                  "unhealthy cluster")
        self.calls.append(("remove", member_id))
        self.listed = [m for m in self.listed if m.id != member_id]

    def add_learner(self, peer_url: str) -> None:
        if self.slot_race:
            raise MembershipError("etcd refused /v3/cluster/member/add: etcdserver: too many "
                                  "learner members in cluster")
        if any(m.is_learner for m in self.listed):
            raise AssertionError("etcd admits one learner at a time")
        self.calls.append(("add", peer_url))
        self.listed.append(_Member(f"new-{peer_url}", "", (peer_url,), True))

    def promote(self, member_id: str) -> None:
        raise MembershipError("etcdserver: can only promote a learner member which is in sync")

    def put(self, key: str, value: str) -> None:
        self.calls.append(("put", value))
        self.kv[key] = value

    def get(self, key: str) -> str | None:
        return self.kv.get(key)


def _member(i: int, *, started: bool = True, learner: bool = False) -> _Member:
    return _Member(str(100 + i), f"etcd-{i}" if started else "", (f"http://etcd-{i}.p:2380",),
                   learner)


def _url(i: int) -> str:
    return f"http://etcd-{i}.p:2380"


Update = Callable[[_FakeGateway, int, int], None]


@pytest.fixture
def update(monkeypatch: pytest.MonkeyPatch) -> Update:
    """The provider's update() from ``old`` to ``new`` members, against a fake etcd."""
    def run(gateway: _FakeGateway, old: int, new: int) -> None:
        monkeypatch.setattr(membership, "_Gateway", lambda *_a, **_k: gateway)
        olds = {"members": _members(old), "endpoints": ["http://c:2379"],
                "timeout_seconds": 1, "bootstrap_cluster": "etcd-0=http://etcd-0.p:2380"}
        EtcdMembershipProvider().update("id", olds, {**olds, "members": _members(new)})

    return run


@pytest.mark.parametrize(("old", "new"), [(3, 5), (5, 7), (1, 3)])
def test_scale_up_records_the_desired_members_then_adds_the_first_new_one(
        update: Update, old: int, new: int) -> None:
    gateway = _FakeGateway([_member(i) for i in range(old)])
    update(gateway, old, new)
    desired = ",".join(_url(i) for i in range(new))
    # The desired list first (the further pods add themselves from it), then one learner:
    # the lowest new ordinal, before its pod exists.
    assert gateway.calls == [("put", desired), ("add", _url(old))]
    assert gateway.kv[DESIRED_MEMBERS_KEY] == desired


def test_scale_up_leaves_a_taken_learner_slot_to_the_pods(update: Update) -> None:
    # A learner still catching up (a previous scale-up) holds the slot: nothing is added;
    # etcd-5 and etcd-6 add themselves once it is free. etcd-4's pod already runs, so the
    # update waits for its promotion and, when that does not come within the timeout,
    # fails naming it: an up never ends with a member it already had still a learner.
    busy = _FakeGateway([*(_member(i) for i in range(4)), _member(4, learner=True)])
    with pytest.raises(MembershipError, match=r"did not converge .* etcd-4 .* is a learner"):
        update(busy, 5, 7)
    assert busy.calls == [("put", ",".join(_url(i) for i in range(7)))]
    # A joining pod takes the slot between the provider's list and its add: not an error.
    raced = _FakeGateway([_member(i) for i in range(3)], slot_race=True)
    update(raced, 3, 5)
    assert [c[0] for c in raced.calls] == ["put"]
    # Re-running an interrupted update adds nobody twice.
    again = _FakeGateway([*(_member(i) for i in range(3)),
                          _member(3, started=False, learner=True)])
    update(again, 3, 5)
    assert [c[0] for c in again.calls] == ["put"]


def test_learners_nobody_wants_are_removed_so_they_cannot_hold_the_slot(update: Update) -> None:
    # etcd-5: a learner left by an interrupted run or by a pod that raced a scale-down.
    gateway = _FakeGateway([*(_member(i) for i in range(3)),
                            _member(5, started=False, learner=True)])
    update(gateway, 3, 5)
    assert gateway.calls == [("put", ",".join(_url(i) for i in range(5))), ("remove", "105"),
                             ("add", _url(3))]


def test_scale_down_records_the_smaller_list_before_removing_highest_first(update: Update) -> None:
    gateway = _FakeGateway([_member(i) for i in range(5)])
    update(gateway, 5, 3)
    assert gateway.calls == [("put", ",".join(_url(i) for i in range(3))),
                             ("remove", "104"), ("remove", "103")]


def test_a_refused_scale_down_keeps_the_members_left_desired(update: Update) -> None:
    # etcd refuses to remove etcd-3 after etcd-4 went: etcd-3 stays a voting member and
    # must stay desired, or its pod would not re-add itself after losing its data dir.
    gateway = _FakeGateway([_member(i) for i in range(5)], refuse_remove="103")
    with pytest.raises(MembershipError, match="refusing to remove etcd-3"):
        update(gateway, 5, 3)
    assert gateway.calls == [("put", ",".join(_url(i) for i in range(3))), ("remove", "104"),
                             ("put", ",".join(_url(i) for i in range(4)))]


def test_remove_refuses_when_the_rest_could_not_form_a_quorum() -> None:
    # Five voters of which two never started: removing a started one leaves 4 voters
    # (quorum 3) with only 2 started.
    gateway = _FakeGateway([_member(0), _member(1), _member(2), _member(3, started=False),
                            _member(4, started=False)])
    with pytest.raises(MembershipError, match="need 3 for quorum, but only 2"):
        _remove(gateway, {"name": "etcd-2", "peer_url": "http://etcd-2.p:2380"}, 0.0)
    assert gateway.calls == []
    healthy = _FakeGateway([_member(i) for i in range(5)])
    _remove(healthy, {"name": "etcd-4", "peer_url": "http://etcd-4.p:2380"}, 0.0)
    assert healthy.calls == [("remove", "104")]
    # Idempotent: a member already gone is not an error.
    _remove(healthy, {"name": "etcd-4", "peer_url": "http://etcd-4.p:2380"}, 0.0)
    assert healthy.calls == [("remove", "104")]
