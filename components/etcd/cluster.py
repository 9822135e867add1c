"""EtcdCluster: an etcd StatefulSet whose membership changes safely.

The image problem. The official etcd 3.5 images (``gcr.io/etcd-development/etcd``,
``quay.io/coreos/etcd``) are distroless since 3.5.7: no shell. Everything about a member
that is the same for every pod or derives from its pod name is therefore plain etcd
flags with Kubernetes ``$(VAR)`` expansion, which needs no shell: ``--name=$(POD_NAME)``,
``--initial-advertise-peer-urls=http://$(POD_NAME).<peer-service>.<ns>.svc:2380``...
What cannot be a flag is the *decision* how a member with an empty data dir joins:
bootstrap with the initial members (``new``), join a running cluster (``existing``,
with a member list that must match etcd's exactly), or, when a member that had started
before lost its data dir, remove its old ID and re-add it (etcd refuses to restart an ID
without its data: "has already been bootstrapped", or a raft panic). That decision is a
real, shellcheck-clean script (``scripts/etcd-member.sh``) run by a statically linked
busybox that two init containers copy out of a pinned ``busybox`` image into an
``emptyDir`` and link its applets beside (no shell needed for either step: busybox runs
applets by name). The etcd container keeps the official image, mounts that volume
read-only and keeps a read-only root. The script ends by ``exec``-ing etcd with the pod's
exact flags, so etcd is the container's process (a learner excepted: its shell stays
as parent until it has promoted it, forwarding SIGTERM).

Why the membership is not only ``replicas``: see :mod:`components.etcd._membership`. The
StatefulSet depends on the EtcdMembership resource, so a scale-down removes members
before their pods go, and a scale-up records the desired members in etcd and adds the
first new one (as a learner) before its pod exists; the further new pods add themselves,
one learner at a time, because etcd admits a single learner and a learner only catches
up once its pod runs. So 3 -> 5 is one ``pulumi up``. The bootstrap member list is
recorded by that resource (or, without membership, by ``EtcdBootstrap``) at creation and
never changes, so scaling changes nothing in the pod template but ``replicas``: no
rolling restart of healthy members, and no pod added later is an initial member, which
is what keeps it from bootstrapping a second cluster when member 0 does not answer.

Objects, all children of the component:

- ``ConfigMap`` ``<name>-scripts``: ``scripts/*.sh``; their hash is a pod-template
  annotation, so a changed script rolls the pods (which only read it at start).
- ``Service`` ``<name>-peer``: headless, ``publishNotReadyAddresses`` (members must find
  each other before any is ready); ``<name>-client``: ClusterIP over ready members.
- ``StatefulSet`` ``<name>``: ``Parallel`` pod management (every initial member must be
  up before any becomes ready: ``OrderedReady`` would deadlock the bootstrap); PVC
  retention ``whenScaled: Delete`` because a removed member's data dir is useless (the
  cluster holds the data) and harmful (its old ID was removed: a later scale-up at that
  ordinal would crash-loop on it), ``whenDeleted: Retain`` so destroying the stack keeps
  the data. Service links are disabled: Kubernetes would inject ``ETCD_*`` variables
  for Services named ``etcd...``, and etcd reads ``ETCD_*`` as its own flags.
- ``NetworkPolicy``: the peer port only from members; client and metrics ports from the
  namespace and ``clientNamespaces``.
- ``PodDisruptionBudget``: ``maxUnavailable = replicas - quorum``, so a drain never
  costs quorum (0 for a single member: any disruption is an outage).
- Snapshots: a ``PersistentVolumeClaim`` and a ``CronJob`` running
  ``scripts/etcd-snapshot.sh`` (``etcdctl snapshot save``, keep the newest N); with
  ``etcd.snapshot.store`` the Job then uploads that file to the object store, and with
  ``etcd.restore.snapshot`` every member's pod restores one before its first start
  (:mod:`components.etcd._snapshots`).
- ``EtcdMembership`` (dynamic) unless ``membership.enabled`` is false; then
  ``EtcdBootstrap`` (dynamic, :mod:`components.etcd._bootstrap`) only records the
  bootstrap member list at creation and keeps it, so a pod added later is never an
  initial member and never bootstraps a second cluster. Scaling is then manual:
  ``etcdctl member add --learner`` before raising ``replicas`` by one, or
  ``etcdctl put`` the desired peer URLs (comma-separated) under
  :data:`~components.etcd._membership.DESIRED_MEMBERS_KEY` and let the new pods add
  themselves (then write the smaller list *before* removing members on the way down,
  or the removed pods add themselves back). A pod that is neither a member nor desired
  waits, logging why.

The cluster token (``--initial-cluster-token``) is a hash of project, stack, namespace
and name: unique per stack, stable across runs, nothing kept in state.

TLS (optional): peer and client certificates come from cert-manager Secrets
(``tls.crt``, ``tls.key``, ``ca.crt``) with client-certificate auth on both. The client
certificate is also what the start-up script and the snapshot job present, so it needs
both the server-auth and client-auth usages. Health probes use the plain-HTTP metrics
listener (as kubeadm does): a kubelet cannot present a client certificate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components import _kube
from components._kube import mount
from components._validate import quantity_value
from components.config import EtcdConfig, MetricsConfig
from components.etcd import _snapshots
from components.etcd._bootstrap import EtcdBootstrap, EtcdBootstrapArgs
from components.etcd._membership import DESIRED_MEMBERS_KEY, EtcdMembership, EtcdMembershipArgs

SCRIPTS_DIR = Path(__file__).resolve().parent / "scripts"
MEMBER_SCRIPT = "etcd-member.sh"
SNAPSHOT_SCRIPT = "etcd-snapshot.sh"

CLIENT_PORT = 2379
PEER_PORT = 2380
METRICS_PORT = 2381
DATA_MOUNT = "/var/lib/etcd"
DATA_DIR = f"{DATA_MOUNT}/data"
SCRIPTS_MOUNT = "/scripts"
SHELL_MOUNT = "/shell"
BUSYBOX = f"{SHELL_MOUNT}/busybox"
SNAPSHOT_MOUNT = "/snapshots"
PEER_TLS_DIR = "/etc/etcd/tls/peer"
CLIENT_TLS_DIR = "/etc/etcd/tls/client"
SCRIPTS_HASH_ANNOTATION = "mysql-cluster.io/scripts-hash"
# The distroless images' "nonroot" user; any non-root id works, fsGroup owns the volumes.
ETCD_USER = 65532
# A member waiting to be added, or a learner catching up, is not dead: the start-up probe
# gives it this long before the kubelet restarts the container.
STARTUP_SECONDS = 300
# How long a learner whose pod never started may hold etcd's single learner slot before
# a pod waiting for the slot removes it: below STARTUP_SECONDS, or the waiting pod would
# be restarted (and start counting again) before it ever could.
STALE_LEARNER_SECONDS = 120
# etcd's backend quota must leave room on the volume for the WAL and raft snapshots.
_QUOTA_SHARE = 0.5
_QUOTA_MAX = 8 * 2**30


@dataclass(frozen=True)
class EtcdClusterArgs:
    namespace: str
    config: EtcdConfig
    # metrics.enabled: a Service naming the plain metrics port (and its ServiceMonitor).
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    # The image with `python -m mysqlbackup` for the store's upload and the restore's fetch
    # (the backup agent image; etcd.snapshot.store.image overrides it). Needed only with
    # etcd.snapshot.store.enabled or etcd.restore.snapshot.
    agent_image: str = ""


@dataclass(frozen=True)
class _Names:
    """Every Kubernetes name and URL the cluster uses, derived once."""

    cluster: str
    namespace: str
    tls: bool

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def peer_service(self) -> str:
        return f"{self.cluster}-peer"

    @property
    def client_service(self) -> str:
        return f"{self.cluster}-client"

    @property
    def scripts(self) -> str:
        return f"{self.cluster}-scripts"

    @property
    def snapshots(self) -> str:
        return f"{self.cluster}-snapshots"

    def pod(self, ordinal: int) -> str:
        return f"{self.cluster}-{ordinal}"

    def host(self, pod: str) -> str:
        return f"{pod}.{self.peer_service}.{self.namespace}.svc"

    def peer_url(self, pod: str) -> str:
        return f"{self.scheme}://{self.host(pod)}:{PEER_PORT}"

    def client_url(self, pod: str) -> str:
        return f"{self.scheme}://{self.host(pod)}:{CLIENT_PORT}"

    @property
    def service_url(self) -> str:
        return f"{self.scheme}://{self.client_service}.{self.namespace}.svc:{CLIENT_PORT}"


def cluster_token(project: str, stack: str, namespace: str, name: str) -> str:
    """``--initial-cluster-token``: unique per stack and stable across runs and machines.

    etcd mixes the token into every member and cluster ID, so two clusters whose members
    can reach each other (a staging and a prod stack on one network) never mistake the
    other's members for their own. A hash rather than a random resource: nothing to keep
    in state, and the same stack always computes the same token.
    """
    digest = _kube.stack_digest(project, stack, namespace, name).hex()
    return f"{name}-{digest[:16]}"


def quorum(members: int) -> int:
    return members // 2 + 1


def script_files() -> dict[str, str]:
    return {name: (SCRIPTS_DIR / name).read_text(encoding="utf-8")
            for name in (MEMBER_SCRIPT, SNAPSHOT_SCRIPT)}


def discovery_endpoints(names: _Names, bootstrap: str) -> str:
    """Client URLs of the initial members, by pod DNS (resolvable before they are ready).

    Scale-down removes the highest ordinals first, so member 0 of the bootstrap is always
    still a member: a joining pod always reaches the running cluster through this list.
    """
    pods = [entry.split("=", 1)[0] for entry in bootstrap.split(",") if entry]
    return ",".join(names.client_url(pod) for pod in pods)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def backend_quota_bytes(storage: str) -> int:
    return min(_QUOTA_MAX, int(quantity_value(storage) * _QUOTA_SHARE))


def etcd_flags(config: EtcdConfig, names: _Names, token: str) -> list[str]:
    """The etcd flags every member gets; ``$(VAR)`` is expanded by Kubernetes."""
    me = "$(POD_NAME)"
    flags = [
        f"--name={me}",
        f"--data-dir={DATA_DIR}",
        f"--listen-peer-urls={names.scheme}://0.0.0.0:{PEER_PORT}",
        f"--listen-client-urls={names.scheme}://0.0.0.0:{CLIENT_PORT}",
        f"--listen-metrics-urls=http://0.0.0.0:{METRICS_PORT}",
        f"--advertise-client-urls={names.client_url(me)}",
        f"--initial-advertise-peer-urls={names.peer_url(me)}",
        f"--initial-cluster-token={token}",
        # Lock and lease traffic creates revisions fast; keep one hour of history.
        "--auto-compaction-mode=periodic",
        "--auto-compaction-retention=1h",
        f"--quota-backend-bytes={backend_quota_bytes(config.storage)}",
        # Refuse to serve from a member whose data differs from its peers'.
        "--experimental-initial-corrupt-check=true",
    ]
    if _version(config.version) >= (3, 5, 5):
        # Periodic cross-member hash check; the flag exists from 3.5.5 (3.5.3 would exit).
        flags.append("--experimental-compact-hash-check-enabled=true")
    if config.tls.enabled:
        flags += [
            f"--cert-file={CLIENT_TLS_DIR}/tls.crt",
            f"--key-file={CLIENT_TLS_DIR}/tls.key",
            f"--trusted-ca-file={CLIENT_TLS_DIR}/ca.crt",
            "--client-cert-auth=true",
            f"--peer-cert-file={PEER_TLS_DIR}/tls.crt",
            f"--peer-key-file={PEER_TLS_DIR}/tls.key",
            f"--peer-trusted-ca-file={PEER_TLS_DIR}/ca.crt",
            "--peer-client-cert-auth=true",
        ]
    return flags


def _etcdctl_tls_env(config: EtcdConfig) -> list[k8s.core.v1.EnvVarArgsDict]:
    if not config.tls.enabled:
        return []
    return [_kube.value_env("ETCDCTL_CACERT", f"{CLIENT_TLS_DIR}/ca.crt"),
            _kube.value_env("ETCDCTL_CERT", f"{CLIENT_TLS_DIR}/tls.crt"),
            _kube.value_env("ETCDCTL_KEY", f"{CLIENT_TLS_DIR}/tls.key")]


def member_env(config: EtcdConfig, names: _Names,
               bootstrap: pulumi.Input[str]) -> list[k8s.core.v1.EnvVarArgsDict]:
    """The start-up script's environment (its header documents each variable)."""
    bootstrap_output = pulumi.Output.from_input(bootstrap)
    return [
        _kube.field_env("POD_NAME", "metadata.name"),
        _kube.value_env("MEMBER_NAME", "$(POD_NAME)"),
        _kube.value_env("MEMBER_PEER_URL", names.peer_url("$(POD_NAME)")),
        _kube.value_env("MEMBER_DATA_DIR", DATA_DIR),
        {"name": "MEMBER_BOOTSTRAP_CLUSTER", "value": bootstrap_output},
        {"name": "MEMBER_CLUSTER_ENDPOINTS",
         "value": bootstrap_output.apply(lambda b: discovery_endpoints(names, b))},
        _kube.value_env("MEMBER_DESIRED_KEY", DESIRED_MEMBERS_KEY),
        _kube.value_env("MEMBER_STALE_LEARNER_SECONDS", STALE_LEARNER_SECONDS),
        _kube.value_env("MEMBER_BUSYBOX", BUSYBOX),
        *_etcdctl_tls_env(config),
    ]


def _shell_init_containers(image: str) -> list[k8s.core.v1.ContainerArgsDict]:
    """Copy a static busybox into the ``shell`` volume, then link its applets next to it.

    Two steps because ``--install`` links to the path of the running binary: run from the
    copy, the links point at ``/shell/busybox``, which is where the etcd container sees
    it (mounted read-only there). Applets run by name, so neither step needs a shell.
    """
    steps = (("shell", ["/bin/busybox", "cp", "/bin/busybox", BUSYBOX]),
             ("shell-applets", [BUSYBOX, "--install", "-s", SHELL_MOUNT]))
    return [{
        "name": name,
        "image": image,
        "command": command,
        "volume_mounts": [mount("shell", SHELL_MOUNT)],
        "security_context": _kube.container_security_context(),
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"},
                      "limits": {"memory": "32Mi"}},
    } for name, command in steps]


def _tls_volumes(config: EtcdConfig, *, peer: bool) -> list[k8s.core.v1.VolumeArgsDict]:
    if not config.tls.enabled:
        return []
    secrets = [("client-tls", config.tls.client_secret)]
    if peer:
        secrets.append(("peer-tls", config.tls.peer_secret))
    return [{"name": name, "secret": {"secret_name": secret, "default_mode": 0o440}}
            for name, secret in secrets if secret]


def _tls_mounts(config: EtcdConfig, *, peer: bool) -> list[k8s.core.v1.VolumeMountArgsDict]:
    if not config.tls.enabled:
        return []
    mounts = [mount("client-tls", CLIENT_TLS_DIR, read_only=True)]
    if peer:
        mounts.append(mount("peer-tls", PEER_TLS_DIR, read_only=True))
    return mounts


def _probe(path: str, *, period: int, failures: int) -> k8s.core.v1.ProbeArgsDict:
    return {"http_get": {"path": path, "port": "metrics"}, "period_seconds": period,
            "timeout_seconds": 5, "failure_threshold": failures}


def readiness_command() -> list[str]:
    """The exec readiness probe: /health and "not a learner" (``etcd-member.sh readiness``)."""
    return [BUSYBOX, "sh", f"{SCRIPTS_MOUNT}/{MEMBER_SCRIPT}", "readiness", "127.0.0.1",
            str(METRICS_PORT)]


def _readiness_probe() -> k8s.core.v1.ProbeArgsDict:
    return {"exec_": {"command": readiness_command()}, "period_seconds": 5,
            "timeout_seconds": 10, "failure_threshold": 3}


def _scripts_volume(names: _Names) -> k8s.core.v1.VolumeArgsDict:
    return {"name": "scripts", "config_map": {"name": names.scripts, "default_mode": 0o555}}


def _add_restore(spec: dict[str, Any], config: EtcdConfig, container: dict[str, Any],
                 token: str, agent_image: str) -> None:
    """With etcd.restore.snapshot: the restore's init steps after the busybox copy, and the
    store's keys as a volume (components/etcd/_snapshots.py)."""
    if config.restore.snapshot is None:
        return
    etcd_step = {key: container[key] for key in ("image", "command", "env", "security_context")}
    etcd_step["volume_mounts"] = [m for m in container["volume_mounts"]
                                  if m["name"] != "peer-tls"]
    spec["init_containers"] += _snapshots.restore_init_containers(
        config, image=_snapshots.store_image(config, agent_image), etcd_step=etcd_step,
        member_script=MEMBER_SCRIPT, scripts_mount=SCRIPTS_MOUNT, data_mount=DATA_MOUNT,
        token=token)
    spec["volumes"].append(_snapshots.credentials_volume(config))


def _pod_spec(config: EtcdConfig, names: _Names, labels: _kube.AppLabels, token: str,
              bootstrap: pulumi.Input[str], *, agent_image: str = ""
              ) -> k8s.core.v1.PodSpecArgsDict:
    container: k8s.core.v1.ContainerArgsDict = {
        "name": "etcd",
        "image": config.image,
        "command": [BUSYBOX, "sh", f"{SCRIPTS_MOUNT}/{MEMBER_SCRIPT}"],
        "args": etcd_flags(config, names, token),
        "env": member_env(config, names, bootstrap),
        "ports": [
            {"name": "client", "container_port": CLIENT_PORT, "protocol": "TCP"},
            {"name": "peer", "container_port": PEER_PORT, "protocol": "TCP"},
            {"name": "metrics", "container_port": METRICS_PORT, "protocol": "TCP"},
        ],
        # Liveness checks only this member; readiness needs a quorum read, so a member cut
        # off from the leader leaves the client Service, and a voting member, so the
        # StatefulSet await (and `pulumi up`) never ends while a new member is a learner.
        "startup_probe": _probe("/health?serializable=true", period=5,
                                failures=STARTUP_SECONDS // 5),
        "liveness_probe": _probe("/health?serializable=true", period=10, failures=6),
        "readiness_probe": _readiness_probe(),
        "resources": _kube.requirements(config.resources),
        "security_context": _kube.container_security_context(),
        "volume_mounts": [
            mount("data", DATA_MOUNT),
            mount("scripts", SCRIPTS_MOUNT, read_only=True),
            mount("shell", SHELL_MOUNT, read_only=True),
            *_tls_mounts(config, peer=True),
        ],
    }
    spec: dict[str, Any] = {
        "automount_service_account_token": False,
        "enable_service_links": False,
        "termination_grace_period_seconds": 30,
        "security_context": _kube.pod_security_context(user=ETCD_USER, group=ETCD_USER),
        "init_containers": _shell_init_containers(config.shell_image),
        "containers": [container],
        "volumes": [
            _scripts_volume(names),
            _kube.empty_dir("shell", size_limit="16Mi"),
            *_tls_volumes(config, peer=True),
        ],
    }
    _add_restore(spec, config, dict(container), token, agent_image)
    _kube.place(spec, config.spread, labels.selector())
    return spec


def statefulset_spec(config: EtcdConfig, names: _Names, labels: _kube.AppLabels, token: str,
                     bootstrap: pulumi.Input[str], *, agent_image: str = ""
                     ) -> k8s.apps.v1.StatefulSetSpecArgsDict:
    return {
        "service_name": names.peer_service,
        "replicas": config.replicas,
        "pod_management_policy": "Parallel",
        "update_strategy": {"type": "RollingUpdate"},
        "selector": {"match_labels": labels.selector()},
        "persistent_volume_claim_retention_policy": {"when_deleted": "Retain",
                                                      "when_scaled": "Delete"},
        "template": {
            "metadata": {
                "labels": labels.all(),
                "annotations": {SCRIPTS_HASH_ANNOTATION: _kube.files_hash(script_files())[:16]},
            },
            "spec": _pod_spec(config, names, labels, token, bootstrap,
                              agent_image=agent_image),
        },
        "volume_claim_templates": [
            _kube.data_claim_template(labels, config.storage, config.storage_class)],
    }


def _snapshot_job_spec(config: EtcdConfig, names: _Names,
                       agent_image: str = "") -> k8s.batch.v1.JobSpecArgsDict:
    """The save (etcd-snapshot.sh); with the store on, the save is an init container and the
    Job's container uploads the file it saved (components/etcd/_snapshots.py)."""
    store = config.snapshot.store.enabled
    container: k8s.core.v1.ContainerArgsDict = {
        "name": _snapshots.SAVE_CONTAINER,
        "image": config.image,
        "command": [BUSYBOX, "sh", f"{SCRIPTS_MOUNT}/{SNAPSHOT_SCRIPT}"],
        "env": [
            _kube.value_env("SNAPSHOT_ENDPOINT", names.service_url),
            _kube.value_env("SNAPSHOT_DIR", SNAPSHOT_MOUNT),
            _kube.value_env("SNAPSHOT_RETAIN", config.snapshot.retain),
            _kube.value_env("SNAPSHOT_BUSYBOX", BUSYBOX),
            *([_kube.value_env("SNAPSHOT_SAVED_RECORD", _snapshots.SAVED_RECORD)]
              if store else []),
            *_etcdctl_tls_env(config),
        ],
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"},
                      "limits": {"memory": "256Mi"}},
        "security_context": _kube.container_security_context(),
        "volume_mounts": [
            mount("snapshots", SNAPSHOT_MOUNT),
            mount("scripts", SCRIPTS_MOUNT, read_only=True),
            mount("shell", SHELL_MOUNT, read_only=True),
            *([_snapshots.handoff_mount()] if store else []),
            *_tls_mounts(config, peer=False),
        ],
    }
    init_containers = _shell_init_containers(config.shell_image)
    containers = [container]
    volumes: list[k8s.core.v1.VolumeArgsDict] = [
        {"name": "snapshots", "persistent_volume_claim": {"claim_name": names.snapshots}},
        _scripts_volume(names),
        _kube.empty_dir("shell", size_limit="16Mi"),
        *_tls_volumes(config, peer=False),
    ]
    if store:
        init_containers.append(container)
        containers = [_snapshots.upload_container(
            config, image=_snapshots.store_image(config, agent_image),
            namespace=names.namespace, script=SNAPSHOT_SCRIPT, scripts_mount=SCRIPTS_MOUNT,
            snapshots_mount=SNAPSHOT_MOUNT)]
        volumes += [_snapshots.handoff_volume(), _snapshots.credentials_volume(config)]
    return {
        "backoff_limit": 2,
        "active_deadline_seconds": 900,
        "template": {
            "metadata": {"labels": {"app.kubernetes.io/component": "etcd-snapshot"}},
            "spec": {
                "restart_policy": "OnFailure",
                "automount_service_account_token": False,
                "enable_service_links": False,
                "security_context": _kube.pod_security_context(user=ETCD_USER,
                                                                group=ETCD_USER),
                "init_containers": init_containers,
                "containers": containers,
                "volumes": volumes,
            },
        },
    }


def network_policy_spec(labels: _kube.AppLabels, client_namespaces: tuple[str, ...],
                        scrape_namespaces: tuple[str, ...] = ()
                        ) -> k8s.networking.v1.NetworkPolicySpecArgsDict:
    """Raft (2380) only between members: anything else that reaches it could disrupt the
    cluster. Clients (2379) and health/metrics (2381): the namespace's pods (the snapshot
    job, lock users) and the configured client namespaces (a GitOps runner that drives
    EtcdMembership, lock users elsewhere)."""
    clients = _kube.namespace_clients(client_namespaces)
    return {
        "pod_selector": {"match_labels": labels.selector()},
        "policy_types": ["Ingress"],
        "ingress": [
            {"ports": [{"port": CLIENT_PORT, "protocol": "TCP"},
                       {"port": METRICS_PORT, "protocol": "TCP"}],
             "from_": clients},
            {"ports": [{"port": PEER_PORT, "protocol": "TCP"}],
             "from_": [{"pod_selector": {"match_labels": labels.selector()}}]},
            # Prometheus, where metrics.scrapeNamespaces says it runs.
            *([{"ports": [{"port": METRICS_PORT, "protocol": "TCP"}],
                "from_": [{"namespace_selector": {"match_labels": {
                    "kubernetes.io/metadata.name": ns}}} for ns in scrape_namespaces]}]
              if scrape_namespaces else []),
        ],
    }


def membership_endpoints(config: EtcdConfig, names: _Names) -> list[str]:
    if config.membership.access == "port-forward":
        return [f"{names.scheme}://{e}" for e in config.membership.endpoints]
    return [names.service_url]


def members(names: _Names, replicas: int) -> list[dict[str, str]]:
    return [{"name": names.pod(i), "peer_url": names.peer_url(names.pod(i))}
            for i in range(replicas)]


class EtcdCluster(pulumi.ComponentResource):
    """``replicas`` etcd members; see the module docstring for the design."""

    client_url: pulumi.Output[str]
    member_client_urls: pulumi.Output[list[str]]
    cluster_token: pulumi.Output[str]
    # Client URLs as reached from where `pulumi up` runs, for providers that hold a lock
    # here (ReplicationInit). Empty with TLS: those providers take no client certificate.
    lock_endpoints: tuple[str, ...]
    # The job name Prometheus gives etcd's metrics Service (the etcd alert rules select on it).
    metrics_job: str

    def __init__(self, name: str, args: EtcdClusterArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mysql-cluster:index:EtcdCluster", name, None, opts)
        config = args.config
        namespace = args.namespace
        names = _Names(config.name, namespace, config.tls.enabled)
        labels = _kube.AppLabels(name="etcd", instance=config.name, component="lock-store",
                                 version=config.version)
        child = pulumi.ResourceOptions(parent=self)
        files = script_files()

        token = cluster_token(pulumi.get_project(), pulumi.get_stack(), namespace, config.name)

        scripts = k8s.core.v1.ConfigMap(
            f"{name}-scripts", metadata=_kube.metadata(names.scripts, namespace, labels),
            data=files, opts=child)
        self._services(name, names, labels, child)
        # The alert rules' etcd ``job`` (the Service's name is what Prometheus calls it).
        self.metrics_job = f"{config.name}-metrics"
        if args.metrics.enabled:
            _kube.metrics_service(f"{name}-metrics", name=self.metrics_job,
                                  namespace=namespace, labels=labels, port=METRICS_PORT,
                                  service_monitor=args.metrics.service_monitor, opts=child)

        depends: list[pulumi.Resource] = [scripts]
        # Both branches record the first deployment's list and keep it: rebuilt from
        # ``replicas``, a scale-up would restart every member and let the new pods
        # bootstrap a second cluster while member 0 restarts (components/etcd/_bootstrap.py).
        bootstrap: pulumi.Output[str]
        if config.membership.enabled:
            membership = EtcdMembership(
                f"{name}-membership",
                EtcdMembershipArgs(
                    members=members(names, config.replicas),
                    endpoints=membership_endpoints(config, names),
                    timeout_seconds=config.membership.timeout_seconds,
                    tls_ca_file=config.membership.ca_file,
                    tls_cert_file=config.membership.cert_file,
                    tls_key_file=config.membership.key_file),
                opts=child)
            bootstrap = membership.bootstrap_cluster
            depends.append(membership)
        else:
            recorder = EtcdBootstrap(f"{name}-bootstrap",
                                     EtcdBootstrapArgs(members=members(names, config.replicas)),
                                     opts=child)
            bootstrap = recorder.bootstrap_cluster
            depends.append(recorder)

        k8s.apps.v1.StatefulSet(
            f"{name}-statefulset",
            metadata=_kube.metadata(config.name, namespace, labels),
            spec=statefulset_spec(config, names, labels, token, bootstrap,
                                  agent_image=args.agent_image),
            opts=pulumi.ResourceOptions(parent=self, depends_on=depends))
        _kube.pod_disruption_budget(
            f"{name}-pdb", name=config.name, namespace=namespace, labels=labels,
            max_unavailable=config.replicas - quorum(config.replicas), opts=child)
        k8s.networking.v1.NetworkPolicy(
            f"{name}-network-policy",
            metadata=_kube.metadata(config.name, namespace, labels),
            spec=network_policy_spec(labels, config.client_namespaces,
                                     args.metrics.scrape_namespaces if args.metrics.enabled
                                     else ()),
            opts=child)
        if config.snapshot.enabled:
            self._snapshots(name, config, names, labels, scripts,
                            agent_image=args.agent_image)

        self.lock_endpoints = (() if config.tls.enabled
                               else tuple(membership_endpoints(config, names)))
        self.client_url = pulumi.Output.from_input(names.service_url)
        self.member_client_urls = pulumi.Output.from_input(
            [names.client_url(names.pod(i)) for i in range(config.replicas)])
        self.cluster_token = pulumi.Output.from_input(token)
        self.register_outputs({
            "client_url": self.client_url,
            "member_client_urls": self.member_client_urls,
            "cluster_token": self.cluster_token,
        })

    def _services(self, name: str, names: _Names, labels: _kube.AppLabels,
                  child: pulumi.ResourceOptions) -> None:
        client_port: k8s.core.v1.ServicePortArgsDict = {
            "name": "client", "port": CLIENT_PORT, "target_port": "client", "protocol": "TCP"}
        k8s.core.v1.Service(
            f"{name}-peer",
            metadata=_kube.metadata(names.peer_service, names.namespace, labels),
            spec={
                "cluster_ip": "None",
                "publish_not_ready_addresses": True,
                "selector": labels.selector(),
                "ports": [client_port, {"name": "peer", "port": PEER_PORT,
                                        "target_port": "peer", "protocol": "TCP"}],
            },
            opts=child)
        k8s.core.v1.Service(
            f"{name}-client",
            metadata=_kube.metadata(names.client_service, names.namespace, labels),
            spec={"type": "ClusterIP", "selector": labels.selector(), "ports": [client_port]},
            opts=child)

    def _snapshots(self, name: str, config: EtcdConfig, names: _Names,
                   labels: _kube.AppLabels, scripts: k8s.core.v1.ConfigMap, *,
                   agent_image: str) -> None:
        claim: dict[str, Any] = {
            "access_modes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": config.snapshot.storage}},
        }
        if config.storage_class:
            claim["storage_class_name"] = config.storage_class
        volume = k8s.core.v1.PersistentVolumeClaim(
            f"{name}-snapshots",
            # WaitForFirstConsumer classes bind only when the first job runs: do not wait.
            metadata=_kube.metadata(names.snapshots, names.namespace, labels,
                                    annotations={"pulumi.com/skipAwait": "true"}),
            spec=claim,
            # Snapshots are the way back from a lost cluster: never delete them with it.
            opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True))
        k8s.batch.v1.CronJob(
            f"{name}-snapshot",
            metadata=_kube.metadata(f"{config.name}-snapshot", names.namespace, labels),
            spec={
                "schedule": config.snapshot.schedule,
                "concurrency_policy": "Forbid",
                "starting_deadline_seconds": 600,
                "successful_jobs_history_limit": 3,
                "failed_jobs_history_limit": 3,
                "job_template": {"spec": _snapshot_job_spec(config, names, agent_image)},
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[volume, scripts]))


__all__ = ["EtcdCluster", "EtcdClusterArgs"]
