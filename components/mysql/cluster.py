"""MySQLCluster: a replicated MySQL 8.4 or MariaDB StatefulSet with one primary.

Topology. One primary, every other ordinal a replica of it (GTID replication). Which
ordinal is the primary is the primary record's (``_record.py``): a ConfigMap
``<name>-primary-record`` that only ReplicationInit writes, under the per-cluster lock,
with the lock's fencing token as its epoch; ordinal 0 until the first record. Changing
``mysql.primary`` makes the next ``pulumi up`` a planned switchover (``_switchover.py``).
Nothing else moves the primary by itself: a primary that moves on its own is how split
brain and errant GTIDs happen, and the pod scripts never reset replication on a primary.
The exception is opt-in automatic failover (``mysql.failover``): a fenced arbiter and a
fencing agent per pod (``_arbiter.py``, ``arbiter/``). Every server starts read-only; only
ReplicationInit or the arbiter, holding the record's epoch, opens one.
What each pod does is fixed by the pod contract (``components/mysql/scripts/CONTRACT.md``):
this module gives the scripts exactly the names, environment, mounts and invocations
written there, and nothing else.

Objects, all children of the component (providers flow down from it):

- ``Secret`` ``<name>-credentials``: root, admin, replication, monitor and backup
  passwords from pulumi-random (32 alphanumerics: no quoting hazards in option files or
  SQL). The string data is an Output marked secret, so state holds only ciphertext.
  With ``credentials.existingSecret`` the user's Secret is read instead (a ``get``) and
  its keys checked; every other object of the cluster waits for that check.
  Containers never get a password in their environment: the Secret is mounted as a
  read-only volume and the environment carries only ``<NAME>_FILE`` paths (see
  ``credentials.py`` for why, and which container mounts which key). The images' own
  root password comes the same way, through their ``*_ROOT_PASSWORD_FILE`` variables.
- ``ConfigMap`` ``<name>-config``: every ``scripts/*.sh`` and every file of
  ``conf/<flavor>/``, globbed at run time so new scripts ship without touching this
  module. A hash of its contents is a pod-template annotation: a changed script or
  server config rolls the pods, which only read them at start.
- ``Service`` ``<name>-headless`` (headless, ``publishNotReadyAddresses``: a replica
  being cloned must resolve its peers before anything is ready), ``<name>-primary``
  (writes) and ``<name>-read`` (replicas only).
- ``StatefulSet`` ``<name>``, ``PodDisruptionBudget`` (one voluntary disruption at a
  time) and ``NetworkPolicy`` (MySQL port from pods of the namespace and of
  ``clientNamespaces``; backup port from peers only).
- ``ServiceAccount``/``Role``/``RoleBinding`` for role labels (below).
- Optional, each behind its stack key and built in its own module: the TLS Secret's volume
  and the ``tls-reload`` sidecar (``mysql.tls``, ``_tls.py``; the Secret is read with a
  ``get`` and checked like an existing credentials Secret, before anything else); the
  exporter's init container and sidecar, the ``<name>-metrics`` Service, its ServiceMonitor
  and the PrometheusRule
  (``metrics.*``, ``_metrics.py``). With both off the pod is what it was.

Role labels. Services select pods by label, and a StatefulSet's pod template, shared by
every ordinal, cannot carry a per-ordinal role; and the role moves with the record. The
record reaches the pods as an optional ConfigMap volume (``RECORD_DIR``: read by the
kubelet, so no pod needs API credentials to learn it). ``init-config.sh`` derives the
pod's role from it (``primary`` only for the ordinal the record names; ``replica`` for
the others, and for all while a switchover fences the record) and writes a merge patch
of the role and epoch labels to ``/tmp``; the last init container, ``label``, runs the
distroless ``registry.k8s.io/kubectl`` image (no shell) to apply it to its own pod::

    kubectl patch pod $(POD_NAME) --type=merge --patch-file=/tmp/role-labels.json

A switchover moves the labels of the running pods itself (ReplicationInit, fenced by its
epoch: replicas first, then the primary, so ``<name>-primary`` never selects two pods),
and every ``pulumi up`` puts back labels that differ from the record. RBAC: a Role
allowing ``get`` and ``patch`` on this StatefulSet's pod names only; the ServiceAccount
token is not automounted but projected into the ``label`` container alone, so the
database and backup containers hold no API credentials.

server-id. Replication breaks silently when two servers in one topology share a
server-id, and clusters are cloned or chained across stacks (a prod replica seeded
into a staging cluster). Each cluster takes a block of 1000 ids for its ordinals:
``base = 1000 * (1 + sha256("project/stack/namespace/name") mod 4_294_966)``, stable
across runs and machines, spread over the whole 32-bit space (two clusters collide
with probability 1 in 4.3 million). ``serverIdBase`` in config overrides it when a
topology needs hand-assigned blocks.

Probes. The ``mysql`` container has startup, liveness and readiness probes (``probe.sh``;
a replica is ready only while replicating within ``maxReplicaLagSeconds``). The ``backup``
sidecar has a startup and a liveness probe, ``probe.sh backup``: its listener's PID (from a
PID file) must be alive and hold the listening socket, checked in ``/proc``, because a TCP
probe would start a backup stream on every check. A replica's sidecar configures
replication before the listener starts, so the startup probe allows the server's start
budget plus the replication setup before liveness takes over. A container is not Ready
before its startup probe passes, so a pod turns Ready only once its listener serves, which
``OrderedReady`` relies on: the next ordinal clones from this one first. The sidecar has
no readiness probe of its own (tests/unit/test_policy.py says why).

ReplicationInit. When ``replicationInit.enabled`` and there is more than one pod, a
dynamic resource configures and verifies replication after the StatefulSet is ready
(``depends_on``), reaching the pods by pod DNS (in-cluster runner) or by the configured
port-forward endpoints, with the admin and replication passwords as secrets.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from components import _kube
from components._kube import mount
from components._validate import ConfigError
from components.config import Endpoint, MetricsConfig, MySQLConfig
from components.mysql import _arbiter, _backup, _metrics, _tls, credentials
from components.mysql._record import EPOCH_LABEL, ROLE_LABEL
from components.mysql._replication import (
    ReplicationInit,
    ReplicationInitArgs,
    cluster_lock_name,
    switchover_args,
)
from components.mysql.credentials import CREDENTIALS_DIR, PASSWORD_VARIABLES
from components.mysql.flavor import FLAVORS, FlavorSpec

CONFIG_DIR = "/mnt/config-map"
CONF_DIR = "/etc/mysql/conf.d"
DATA_DIR = "/var/lib/mysql"
RUN_DIR = "/run/mysql-cluster"
INITDB_DIR = "/docker-entrypoint-initdb.d"
MYSQL_PORT = 3306
BACKUP_PORT = 3307
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
# The primary record, mounted where the pod scripts read it (lib.sh, recorded_authority).
RECORD_DIR = "/etc/mysql-cluster/record"
# The role-label patch init-config.sh writes for the `label` init container (shared /tmp).
ROLE_LABELS_FILE = "/tmp/role-labels.json"  # noqa: S108 (the pod's own emptyDir)
CONFIG_HASH_ANNOTATION = "mysql-cluster.io/config-sha256"
_TMP = "/tmp"  # noqa: S108 (an emptyDir of the pod's own, not a shared host directory)

SCRIPTS_DIR = Path(__file__).parent / "scripts"
CONF_ROOT = Path(__file__).parent / "conf"
# What the contract says each pod runs; a missing one would only surface as a crash loop.
REQUIRED_SCRIPTS = ("init-config.sh", "clone.sh", "backup-server.sh", "probe.sh",
                    "bootstrap-users.sh")
REQUIRED_CONF = ("primary.cnf", "replica.cnf")

ADMIN_USER = "admin"
REPLICATION_USER = "repl"
MONITOR_USER = "monitor"
BACKUP_USER = "backup"
TOPOLOGY_USER = "topology"
EXPORTER_USER = "exporter"
# How long the server may take to accept connections after its container starts (crash
# recovery of a large instance takes minutes). The mysql container's startup probe allows
# this much, and backup-server.sh waits this long for the server before it gives up.
SERVER_START_SECONDS = 600
# What configuring replication may take once the server is up (a few statements, plus
# reaching the primary): the backup sidecar's startup probe allows the server's start
# plus this, so its liveness probe never runs while the listener is not up yet.
REPLICATION_SETUP_SECONDS = 120
T = TypeVar("T")
_SERVER_ID_BLOCK = 1000
_SERVER_ID_BLOCKS = 4_294_966  # base + 999 stays below 2**32


class MissingPodFilesError(RuntimeError):
    """The pod scripts or server configs the contract names are not in the package."""


@dataclass(frozen=True)
class MySQLClusterArgs:
    namespace: str
    config: MySQLConfig
    # etcd client URLs for ReplicationInit's per-cluster lock; empty: no lock.
    lock_endpoints: tuple[str, ...] = ()
    # What serves those URLs (the EtcdCluster): ReplicationInit waits until it is ready.
    lock_service: pulumi.Resource | None = None
    # The exporter sidecar, the metrics Services, ServiceMonitor and PrometheusRule.
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    # etcd's metrics Service: the ``job`` of the etcd alert rules.
    etcd_metrics_job: str = "etcd-metrics"


def server_id_base(project: str, stack: str, namespace: str, name: str) -> int:
    """The first server-id of a cluster's 1000-id block (see the module docstring)."""
    digest = _kube.stack_digest(project, stack, namespace, name)
    return _SERVER_ID_BLOCK * (1 + int.from_bytes(digest[:8], "big") % _SERVER_ID_BLOCKS)


def pod_files(flavor: str, *, tls: bool = False) -> dict[str, str]:
    """ConfigMap data: every script and every server config of ``flavor`` (and ``tls``: the
    TLS fragments init-config.sh copies), by file name."""
    confs = [flavor, *(["tls"] if tls else [])]
    files = sorted(SCRIPTS_DIR.glob("*.sh")) + sorted(
        p for conf in confs for p in (CONF_ROOT / conf).glob("*") if p.is_file())
    data: dict[str, str] = {}
    for path in files:
        if path.name in data:
            raise MissingPodFilesError(
                f"{path.name} exists twice in {SCRIPTS_DIR} and {CONF_ROOT}/{{{','.join(confs)}}}; "
                "ConfigMap keys must be unique")
        data[path.name] = path.read_text(encoding="utf-8")
    missing = [n for n in (*REQUIRED_SCRIPTS, *REQUIRED_CONF) if n not in data]
    if missing:
        raise MissingPodFilesError(
            f"pod files missing for flavor {flavor!r}: {', '.join(missing)} "
            f"(expected in {SCRIPTS_DIR} and {CONF_ROOT / flavor}; see CONTRACT.md)")
    return data


@dataclass(frozen=True)
class _Names:
    """Every Kubernetes name the cluster uses, derived once from the cluster name."""

    cluster: str
    # mysql.credentials.existingSecret: the user's Secret replaces the generated one.
    existing_secret: str | None = None

    @property
    def statefulset(self) -> str:
        return self.cluster

    @property
    def headless(self) -> str:
        return f"{self.cluster}-headless"

    @property
    def primary(self) -> str:
        return f"{self.cluster}-primary"

    @property
    def read(self) -> str:
        return f"{self.cluster}-read"

    @property
    def secret(self) -> str:
        return self.existing_secret or f"{self.cluster}-credentials"

    @property
    def config_map(self) -> str:
        return f"{self.cluster}-config"

    @property
    def metrics(self) -> str:
        return f"{self.cluster}-metrics"

    @property
    def labeler(self) -> str:
        return f"{self.cluster}-pod-labeler"

    @property
    def record(self) -> str:
        """The primary record's ConfigMap, written by ReplicationInit only (never Pulumi)."""
        return f"{self.cluster}-primary-record"

    @property
    def peer_host_template(self) -> str:
        return f"{self.statefulset}-{{ordinal}}.{self.headless}"

    def pod(self, ordinal: int) -> str:
        return f"{self.cluster}-{ordinal}"

    def pod_host(self, ordinal: int, namespace: str | None = None) -> str:
        host = f"{self.pod(ordinal)}.{self.headless}"
        return f"{host}.{namespace}.svc" if namespace else host


@dataclass(frozen=True)
class _Plan:
    """Everything the object builders need, computed once from the arguments."""

    namespace: str
    config: MySQLConfig
    flavor: FlavorSpec
    names: _Names
    labels: _kube.AppLabels
    server_id_base: int
    files: dict[str, str]
    metrics: MetricsConfig


def _secret(value: pulumi.Output[T]) -> pulumi.Output[T]:
    # Output.secret's signature defeats mypy's inference (Input[U] is a union).
    return pulumi.Output.secret(value)


def _generated_credentials(name: str, plan: _Plan, child: pulumi.ResourceOptions,
                           ) -> tuple[dict[str, pulumi.Output[str]], pulumi.Output[Any]]:
    """Passwords from pulumi-random, in a Secret of the stack's own."""
    passwords = {
        key: random.RandomPassword(
            f"{name}-{key}-password", length=32, special=False, min_lower=1, min_upper=1,
            min_numeric=1, opts=child).result
        for key in PASSWORD_VARIABLES
    }
    secret = k8s.core.v1.Secret(
        f"{name}-credentials",
        metadata=_kube.metadata(plan.names.secret, plan.namespace, plan.labels),
        type="Opaque",
        string_data=_secret(pulumi.Output.all(**passwords).apply(
            lambda values: {credentials.secret_key(key): values[key]
                            for key in PASSWORD_VARIABLES})),
        opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(
            additional_secret_outputs=["data", "stringData"])),
    )
    # Resolves once the Secret exists: what consumers of secret_name wait for.
    return passwords, secret.id.apply(lambda _: secret)


def _get(values: Mapping[str, str], key: str) -> str:
    return values[key]


def _read_secret(resource_name: str, namespace: str, secret_name: str,
                 check: Callable[[Mapping[str, str] | None], T],
                 child: pulumi.ResourceOptions,
                 ) -> tuple[k8s.core.v1.Secret, pulumi.Output[T]]:
    """A Secret the user manages, read through the provider (a ``get``: the engine reads it,
    never owns or deletes it), and ``check`` of its ``data`` (base64, as the API serves it),
    which raises a ConfigError naming every problem. The result is secret: the data is."""
    existing = k8s.core.v1.Secret.get(
        resource_name, f"{namespace}/{secret_name}",
        opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(
            additional_secret_outputs=["data", "stringData"])))
    checked: pulumi.Output[T] = _secret(existing.data.apply(check))
    return existing, checked


def _existing_credentials(name: str, plan: _Plan, child: pulumi.ResourceOptions,
                          ) -> tuple[dict[str, pulumi.Output[str]], pulumi.Output[Any]]:
    """The passwords of the user's Secret (:func:`_read_secret`). What is returned for the
    Secret resolves only once every key has been checked: the StatefulSet and ReplicationInit
    depend on it, so a Secret lacking a key stops the deploy with every problem named before
    the pods or replication are touched."""
    secret_name = plan.names.secret

    def check(data: Mapping[str, str] | None) -> dict[str, str]:
        try:
            return credentials.passwords_from_secret_data(data)
        except credentials.SecretKeyProblems as problems:
            raise ConfigError([
                f"mysql-cluster:mysql.credentials.existingSecret: Secret "
                f"{plan.namespace}/{secret_name}: {problem}" for problem in problems.problems
            ]) from None

    existing, checked = _read_secret(f"{name}-existing-credentials", plan.namespace,
                                     secret_name, check, child)
    passwords = {key: _secret(checked.apply(functools.partial(_get, key=key)))
                 for key in PASSWORD_VARIABLES}
    return passwords, checked.apply(lambda _: existing)


def _checked_tls_secret(name: str, plan: _Plan, child: pulumi.ResourceOptions,
                        ) -> pulumi.Output[Any]:
    """mysql.tls.secret, read (:func:`_read_secret`) and checked as the pods would use it
    (``_tls.secret_data_problems``: every missing or empty key, a certificate that is not
    PEM, expired, not the key's or not the CA's). Resolves to the Secret only once it passed:
    every object of the cluster depends on it, so a Secret the pods could not serve TLS with
    stops the deploy before any pod exists."""
    assert plan.config.tls.secret is not None  # config refuses TLS without a Secret
    secret_name = plan.config.tls.secret

    def check(data: Mapping[str, str] | None) -> bool:
        problems = _tls.secret_data_problems(f"{plan.namespace}/{secret_name}", data)
        if problems:
            raise ConfigError([f"mysql-cluster:mysql.tls.secret: {problem}"
                               for problem in problems])
        return True

    existing, checked = _read_secret(f"{name}-tls-secret", plan.namespace, secret_name,
                                     check, child)
    return checked.apply(lambda _: existing)


class MySQLCluster(pulumi.ComponentResource):
    """A primary and ``replicas - 1`` replicas; see the module docstring for the design."""

    secret_name: pulumi.Output[str]
    primary_host: pulumi.Output[str]
    read_host: pulumi.Output[str]
    port: pulumi.Output[int]
    server_id_base: pulumi.Output[int]
    admin_password: pulumi.Output[str]
    root_password: pulumi.Output[str]

    def __init__(self, name: str, args: MySQLClusterArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mysql-cluster:index:MySQLCluster", name, None, opts)
        config = args.config
        names = _Names(config.name, config.existing_secret)
        namespace = args.namespace
        labels = _kube.AppLabels(name=config.flavor, instance=config.name, component="database",
                                 version=config.version)
        plan = _Plan(
            namespace=namespace, config=config, flavor=FLAVORS[config.flavor], names=names,
            labels=labels,
            server_id_base=config.server_id_base or server_id_base(
                pulumi.get_project(), pulumi.get_stack(), namespace, config.name),
            files=pod_files(config.flavor, tls=config.tls.enabled),
            metrics=args.metrics,
        )
        child = pulumi.ResourceOptions(parent=self)

        # Not one object of the cluster before the Secrets it reads have been checked.
        checked: list[pulumi.Output[Any]] = []
        if config.tls.enabled:
            checked.append(_checked_tls_secret(name, plan, child))
        if config.existing_secret:
            passwords, secret = _existing_credentials(name, plan, child)
            checked.append(secret)
        if checked:
            child = pulumi.ResourceOptions(parent=self, depends_on=checked)
        if not config.existing_secret:
            passwords, secret = _generated_credentials(name, plan, child)
        config_map = k8s.core.v1.ConfigMap(
            f"{name}-config",
            metadata=_kube.metadata(names.config_map, namespace, labels),
            data=plan.files,
            opts=child,
        )
        self._services(name, plan, child)
        self._labeler_rbac(name, plan, child)

        statefulset = k8s.apps.v1.StatefulSet(
            f"{name}-statefulset",
            metadata=_kube.metadata(names.statefulset, namespace, labels),
            spec=_statefulset_spec(plan),
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[*checked, secret, config_map],
                # The await covers cloning every replica in turn; large data takes a while.
                custom_timeouts=pulumi.CustomTimeouts(create="30m", update="30m")),
        )
        _kube.pod_disruption_budget(
            f"{name}-pdb", name=names.statefulset, namespace=namespace, labels=labels,
            max_unavailable=1, opts=child)
        k8s.networking.v1.NetworkPolicy(
            f"{name}-network-policy",
            metadata=_kube.metadata(names.statefulset, namespace, labels),
            spec=_network_policy_spec(labels, config.client_namespaces, args.metrics,
                                      _backup.metrics_ports(config,
                                                            metrics=args.metrics.enabled)),
            opts=child,
        )

        if config.replication_init.enabled and config.replicas > 1:
            self._replication_init(name, plan, args, passwords, statefulset)
        if config.failover.enabled:
            _arbiter.Arbiter(f"{name}-arbiter", _arbiter_plan(plan, args),
                             image=config.failover.image or "", labels=_arbiter_labels(plan),
                             agent_service_account=names.labeler,
                             opts=pulumi.ResourceOptions(parent=self,
                                                         depends_on=[*checked, secret]))
        if args.metrics.enabled:
            self._monitoring(name, plan, args, child)
        _backup.add_schedule(name, _backup.SchedulePlan(
            config=config, namespace=namespace,
            peer_hosts=tuple(names.pod_host(i) for i in range(config.replicas)),
            lock_endpoints=args.lock_endpoints,
            lock_name=cluster_lock_name(names.pod_host(0), MYSQL_PORT),
            pod_selector=labels.selector(), uid=plan.flavor.uid,
            config_map=names.config_map, config_dir=CONFIG_DIR, secret=names.secret), child)

        # The name is fixed; deriving it from the Secret makes consumers wait for it (and,
        # for an existing Secret, for its keys to have been checked).
        # A name, not a secret: the existing Secret's check is secret, its name is not.
        self.secret_name = pulumi.Output.unsecret(secret.apply(lambda _: names.secret))
        self.primary_host = pulumi.Output.from_input(f"{names.primary}.{namespace}.svc")
        self.read_host = pulumi.Output.from_input(f"{names.read}.{namespace}.svc")
        self.port = pulumi.Output.from_input(MYSQL_PORT)
        self.server_id_base = pulumi.Output.from_input(plan.server_id_base)
        self.admin_password = _secret(passwords["admin"])
        self.root_password = _secret(passwords["root"])
        self.register_outputs({
            "secret_name": self.secret_name,
            "primary_host": self.primary_host,
            "read_host": self.read_host,
            "port": self.port,
            "server_id_base": self.server_id_base,
            "admin_password": self.admin_password,
            "root_password": self.root_password,
        })

    def _services(self, name: str, plan: _Plan, child: pulumi.ResourceOptions) -> None:
        names, namespace, labels = plan.names, plan.namespace, plan.labels
        mysql_port: k8s.core.v1.ServicePortArgsDict = {
            "name": "mysql", "port": MYSQL_PORT, "target_port": "mysql", "protocol": "TCP"}
        k8s.core.v1.Service(
            f"{name}-headless",
            metadata=_kube.metadata(names.headless, namespace, labels),
            spec={
                "cluster_ip": "None",
                "publish_not_ready_addresses": True,
                "selector": labels.selector(),
                "ports": [mysql_port, {"name": "backup", "port": BACKUP_PORT,
                                       "target_port": "backup", "protocol": "TCP"}],
            },
            opts=child,
        )
        for role, service_name in (("primary", names.primary), ("replica", names.read)):
            k8s.core.v1.Service(
                f"{name}-{'read' if role == 'replica' else role}",
                metadata=_kube.metadata(service_name, namespace, labels),
                spec={
                    "type": "ClusterIP",
                    "selector": {**labels.selector(), ROLE_LABEL: role},
                    "ports": [mysql_port],
                },
                opts=child,
            )

    def _monitoring(self, name: str, plan: _Plan, args: MySQLClusterArgs,
                    child: pulumi.ResourceOptions) -> None:
        metrics, names = args.metrics, plan.names
        _kube.metrics_service(f"{name}-metrics", name=names.metrics, namespace=plan.namespace,
                              labels=plan.labels, port=_metrics.EXPORTER_PORT,
                              service_monitor=metrics.service_monitor, opts=child,
                              extra_ports=_backup.metrics_ports(plan.config,
                                                                metrics=metrics.enabled))
        if metrics.prometheus_rule:
            settings = _metrics.AlertSettings(
                mysql_job=names.metrics, etcd_job=args.etcd_metrics_job,
                max_replica_lag_seconds=plan.config.max_replica_lag_seconds,
                backup_margin_seconds=metrics.backup_margin_seconds,
                binlog_archive_max_lag_seconds=metrics.binlog_archive_max_lag_seconds,
                etcd_quota_ratio=metrics.etcd_quota_percent / 100,
                lock_held_max_seconds=metrics.lock_held_max_seconds)
            _metrics.prometheus_rule(f"{name}-alerts", name=names.cluster,
                                     namespace=plan.namespace, labels=plan.labels,
                                     settings=settings, opts=child)

    def _labeler_rbac(self, name: str, plan: _Plan, child: pulumi.ResourceOptions) -> None:
        names, namespace, labels = plan.names, plan.namespace, plan.labels
        account = k8s.core.v1.ServiceAccount(
            f"{name}-pod-labeler",
            metadata=_kube.metadata(names.labeler, namespace, labels),
            automount_service_account_token=False,
            opts=child,
        )
        role = k8s.rbac.v1.Role(
            f"{name}-pod-labeler",
            metadata=_kube.metadata(names.labeler, namespace, labels),
            rules=[{
                "api_groups": [""],
                "resources": ["pods"],
                # patch: the `label` step; get: what kubectl may read before it patches.
                "verbs": ["get", "patch"],
                "resource_names": [names.pod(i) for i in range(plan.config.replicas)],
            }],
            opts=child,
        )
        k8s.rbac.v1.RoleBinding(
            f"{name}-pod-labeler",
            metadata=_kube.metadata(names.labeler, namespace, labels),
            role_ref={"api_group": "rbac.authorization.k8s.io", "kind": "Role",
                      "name": names.labeler},
            subjects=[{"kind": "ServiceAccount", "name": names.labeler,
                       "namespace": namespace}],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[account, role]),
        )

    def _replication_init(self, name: str, plan: _Plan, args: MySQLClusterArgs,
                          passwords: dict[str, pulumi.Output[str]],
                          statefulset: k8s.apps.v1.StatefulSet) -> None:
        config = plan.config
        init = config.replication_init
        names = plan.names
        if init.access == "port-forward":
            endpoints = init.endpoints
        else:
            endpoints = tuple(Endpoint(names.pod_host(i, plan.namespace), MYSQL_PORT)
                              for i in range(config.replicas))
        # How replicas reach each ordinal (pod DNS, the same from a laptop or a runner).
        sources = tuple(Endpoint(names.pod_host(i), MYSQL_PORT) for i in range(config.replicas))
        # The record and the role labels are in the cluster the StatefulSet is in.
        kubeconfig, context = _kube.stack_cluster()
        ReplicationInit(
            f"{name}-replication-init",
            ReplicationInitArgs(
                flavor=plan.flavor.name,
                primary=endpoints[0],
                replicas=endpoints[1:],
                source_host=sources[0].host,
                source_port=MYSQL_PORT,
                admin_user=ADMIN_USER,
                admin_password=_secret(passwords["admin"]),
                replication_user=REPLICATION_USER,
                replication_password=_secret(passwords["replication"]),
                max_lag_seconds=config.max_replica_lag_seconds,
                timeout_seconds=init.timeout_seconds,
                lock_endpoints=args.lock_endpoints,
                # The arbiter's Kubernetes lock backend (no etcd endpoints): `pulumi up`
                # takes the same Lock, so the two never change the topology at once.
                kubernetes_lock=config.failover.enabled and not args.lock_endpoints,
                **switchover_args(config, sources=sources, record_namespace=plan.namespace,
                                  record_name=names.record,
                                  pods=tuple(names.pod(i) for i in range(config.replicas)),
                                  topology_user=TOPOLOGY_USER,
                                  topology_password=_secret(passwords["topology"])),
                **_tls.replication_init_tls(plan.config),
                **_metrics.replication_init_exporter(
                    plan.metrics.enabled, user=EXPORTER_USER,
                    password=_secret(passwords["exporter"])),
                kubeconfig=kubeconfig,
                context=context,
            ),
            # Depending on a component waits for every one of its children.
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[statefulset, *([args.lock_service] if args.lock_service else [])]),
        )


def _arbiter_plan(plan: _Plan, args: MySQLClusterArgs) -> _arbiter.ArbiterPlan:
    config, names = plan.config, plan.names
    return _arbiter.ArbiterPlan(
        cluster=names.cluster, namespace=plan.namespace, flavor=config.flavor,
        pods=tuple(names.pod(i) for i in range(config.replicas)),
        hosts=tuple(names.pod_host(i) for i in range(config.replicas)), port=MYSQL_PORT,
        secret=names.secret, record=names.record,
        topology_user=TOPOLOGY_USER, replication_user=REPLICATION_USER,
        lock_endpoints=args.lock_endpoints,
        lock_name=cluster_lock_name(names.pod_host(0), MYSQL_PORT),
        failover=config.failover, role_label=ROLE_LABEL, durability=config.durability,
        semisync_timeout_seconds=config.semisync_timeout_seconds)


def _arbiter_labels(plan: _Plan) -> _kube.AppLabels:
    return _kube.AppLabels(name="mysql-arbiter", instance=plan.config.name,
                           component="failover-arbiter", version=plan.config.version)


def _environment(plan: _Plan) -> list[k8s.core.v1.EnvVarArgsDict]:
    """The contract's environment, identical in every container."""
    config, names = plan.config, plan.names
    env = [
        _kube.field_env("POD_NAME", "metadata.name"),
        _kube.field_env("POD_NAMESPACE", "metadata.namespace"),
        _kube.value_env("MYSQL_FLAVOR", config.flavor),
        # The flavor's tools and socket (flavor.py), so no script decides them itself.
        *(_kube.value_env(name, value)
          for name, value in plan.flavor.pod_environment().items()),
        _kube.value_env("SERVER_ID_BASE", plan.server_id_base),
        _kube.value_env("PEER_HOST_TEMPLATE", names.peer_host_template),
        _kube.value_env("MYSQL_PORT", MYSQL_PORT),
        _kube.value_env("BACKUP_PORT", BACKUP_PORT),
        _kube.value_env("PORT_STRIDE", 0),
        _kube.value_env("DATA_DIR", DATA_DIR),
        _kube.value_env("CONF_DIR", CONF_DIR),
        _kube.value_env("CONFIG_DIR", CONFIG_DIR),
        _kube.value_env("RUN_DIR", RUN_DIR),
        _kube.value_env("MAX_REPLICA_LAG_SECONDS", config.max_replica_lag_seconds),
        _kube.value_env("SERVER_WAIT_SECONDS", SERVER_START_SECONDS),
        _kube.value_env("ADMIN_USER", ADMIN_USER),
        _kube.value_env("REPLICATION_USER", REPLICATION_USER),
        _kube.value_env("MONITOR_USER", MONITOR_USER),
        _kube.value_env("BACKUP_USER", BACKUP_USER),
        _kube.value_env("TOPOLOGY_USER", TOPOLOGY_USER),
        _kube.value_env("EXPORTER_USER", EXPORTER_USER),
        _kube.value_env("RECORD_DIR", RECORD_DIR),
        _kube.value_env("ROLE_LABEL", ROLE_LABEL),
        _kube.value_env("EPOCH_LABEL", EPOCH_LABEL),
        _kube.value_env("ROLE_LABELS_FILE", ROLE_LABELS_FILE),
    ]
    if config.tls.enabled:
        env += _tls.tls_environment(config.tls.require_secure_transport == "on")
    # Paths, never passwords: only containers that mount the credentials can read them.
    env += [_kube.value_env(name, path)
            for name, path in credentials.file_variables(CREDENTIALS_DIR).items()]
    return env


def _credentials_volume(container: str, secret_name: str) -> k8s.core.v1.VolumeArgsDict:
    """The cluster Secret as files, holding only the keys ``container`` reads."""
    return {
        "name": f"credentials-{container}",
        "secret": {
            "secret_name": secret_name,
            "default_mode": credentials.FILE_MODE,
            # A missing key keeps the pod from starting instead of yielding no file.
            "optional": False,
            "items": [{"key": credentials.secret_key(account),
                       "path": credentials.secret_key(account)}
                      for account in credentials.CONTAINER_PASSWORDS[container]],
        },
    }


def _containers_with_credentials(config: MySQLConfig, metrics: MetricsConfig) -> list[str]:
    """The containers that mount credentials in this pod: optional ones only when on."""
    enabled = {"metrics": metrics.enabled, "tls": config.tls.enabled}
    return [container for container in credentials.CONTAINER_PASSWORDS
            if enabled.get(credentials.OPTIONAL_CONTAINERS.get(container, ""), True)]


def _volumes(names: _Names, containers: list[str]) -> list[k8s.core.v1.VolumeArgsDict]:
    token: k8s.core.v1.VolumeArgsDict = {
        # What automounting would give every container, given to the label steps only.
        "name": "kube-api-access",
        "projected": {"default_mode": 0o444, "sources": [
            {"service_account_token": {"path": "token", "expiration_seconds": 3600}},
            {"config_map": {"name": "kube-root-ca.crt",
                            "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downward_api": {"items": [{"path": "namespace",
                                         "field_ref": {"field_path": "metadata.namespace"}}]}},
        ]},
    }
    return [
        {"name": "config-map", "config_map": {"name": names.config_map, "default_mode": 0o444}},
        # Optional: absent until the first `pulumi up` with ReplicationInit writes it.
        {"name": "record", "config_map": {"name": names.record, "default_mode": 0o444,
                                          "optional": True}},
        *(_credentials_volume(container, names.secret) for container in containers),
        {"name": "initdb", "config_map": {
            "name": names.config_map, "default_mode": 0o444,
            "items": [{"key": "bootstrap-users.sh", "path": "bootstrap-users.sh"}]}},
        _kube.empty_dir("conf", size_limit="16Mi"),
        # Client option files hold passwords: memory, never the node's disk.
        _kube.empty_dir("run", memory=True, size_limit="16Mi"),
        _kube.empty_dir("socket", memory=True, size_limit="16Mi"),
        # mysqld's tmpdir (large sorts) and the backup tools' scratch space.
        _kube.empty_dir("tmp"),
        token,
    ]


def _probe(kind: str, *, period: int, failures: int) -> k8s.core.v1.ProbeArgsDict:
    # exec, never tcpSocket: a connection to the backup port starts a full backup stream.
    return {
        "exec_": {"command": ["bash", f"{CONFIG_DIR}/probe.sh", kind]},
        "period_seconds": period,
        "timeout_seconds": 5,
        "failure_threshold": failures,
    }


def _label_container(image: str) -> k8s.core.v1.ContainerArgsDict:
    """Applies the role labels init-config.sh derived from the record to this pod."""
    return {
        "name": "label",
        "image": image,
        "args": [
            "patch", "pod", "$(POD_NAME)", "--namespace=$(POD_NAMESPACE)", "--type=merge",
            f"--patch-file={ROLE_LABELS_FILE}",
        ],
        # kubectl caches API discovery under $HOME; the root filesystem is read-only.
        "env": [_kube.field_env("POD_NAME", "metadata.name"),
                _kube.field_env("POD_NAMESPACE", "metadata.namespace"),
                _kube.value_env("HOME", _TMP)],
        "volume_mounts": [
            mount("tmp", _TMP),
            mount("kube-api-access", "/var/run/secrets/kubernetes.io/serviceaccount",
                   read_only=True),
        ],
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"},
                      "limits": {"memory": "128Mi"}},
        "security_context": _kube.container_security_context(),
    }


_BACKUP_RESOURCES: k8s.core.v1.ResourceRequirementsArgsDict = {
    "requests": {"cpu": "100m", "memory": "256Mi"},
    "limits": {"memory": "1Gi"},
}


def _server_options(config: MySQLConfig) -> list[str]:
    """Settings from stack config, as server options: they override the conf.d files,
    need no change to the pod scripts, and reach the image's first-start bootstrap too."""
    options = [f"--binlog-expire-logs-seconds={config.binlog_expire_seconds}"]
    options += [f"--{key}={value}" for key, value in config.extra_server_config]
    return options


def _script(file: str) -> list[str]:
    # The contract: scripts run through bash, so the ConfigMap needs no exec bit.
    return ["bash", f"{CONFIG_DIR}/{file}"]


@dataclass(frozen=True)
class _Optional:
    """What mysql.tls and metrics.enabled add to the pod (empty when both are off)."""

    volumes: list[Any] = field(default_factory=list)
    server_mounts: list[Any] = field(default_factory=list)
    # The clone and backup containers' (the TLS Secret: the clone stream is TLS too).
    stream_mounts: list[Any] = field(default_factory=list)
    init_containers: list[Any] = field(default_factory=list)
    sidecars: list[Any] = field(default_factory=list)


def _optional_parts(plan: _Plan, env: list[Any], mounts: dict[str, Any]) -> _Optional:
    """The TLS watcher and Secret volume (_tls.py), the exporter and its option file
    (_metrics.py); ``mounts``: the pod's shared mounts by volume name."""
    config, parts = plan.config, _Optional()
    shared = [mounts["config-map"], mounts["run"], mounts["socket"], mounts["tmp"]]
    if config.tls.enabled:
        assert config.tls.secret is not None  # config refuses TLS without a Secret
        volume, server_mount, reload = _tls.pod_parts(
            secret=config.tls.secret, server_image=config.server_image, config_dir=CONFIG_DIR,
            env=env, mounts=[*shared, mount("credentials-tls-reload", CREDENTIALS_DIR,
                                            read_only=True)])
        parts.volumes.append(volume)
        parts.server_mounts.append(server_mount)
        parts.stream_mounts.append(server_mount)
        parts.sidecars.append(reload)
    if plan.metrics.enabled:
        init, exporter = _metrics.exporter_containers(
            server_image=config.server_image, exporter_image=plan.metrics.exporter_image,
            config_dir=CONFIG_DIR, socket_dir=plan.flavor.socket_dir, env=env,
            config_map_mount=mounts["config-map"], tmp_mount=mounts["tmp"],
            credentials_mount=mount("credentials-exporter-config", CREDENTIALS_DIR,
                                    read_only=True))
        parts.volumes.append(_metrics.exporter_volume())
        parts.init_containers.append(init)
        parts.sidecars.append(exporter)
    return parts


def _pod_spec(plan: _Plan) -> k8s.core.v1.PodSpecArgsDict:
    config, flavor, names = plan.config, plan.flavor, plan.names
    env = _environment(plan)
    secure = _kube.container_security_context()
    config_map = mount("config-map", CONFIG_DIR, read_only=True)
    data = mount("data", DATA_DIR, sub_path="mysql")
    run = mount("run", RUN_DIR)
    tmp = mount("tmp", _TMP)
    socket = mount("socket", flavor.socket_dir)
    server_env = [
        *env,
        # The image entrypoint reads the file itself (file_env in both official images).
        _kube.value_env(flavor.root_password_file_env,
                        f"{CREDENTIALS_DIR}/{credentials.secret_key('root')}"),
        # root is break-glass, reachable only from inside the pod.
        _kube.value_env(flavor.root_host_env, "localhost"),
    ]
    record = mount("record", RECORD_DIR, read_only=True)
    extra = _optional_parts(plan, env, {"config-map": config_map, "run": run,
                                        "socket": socket, "tmp": tmp})
    volumes = [*_volumes(names, _containers_with_credentials(config, plan.metrics)),
               *extra.volumes]
    spec: dict[str, Any] = {
        "service_account_name": names.labeler,
        "automount_service_account_token": False,
        "enable_service_links": False,
        # A clean InnoDB shutdown flushes the buffer pool; killing it means crash recovery.
        "termination_grace_period_seconds": 120,
        "security_context": _kube.pod_security_context(user=flavor.uid, group=flavor.gid),
        "init_containers": [
            {
                "name": "init-config",
                "image": config.server_image,
                "command": _script("init-config.sh"),
                "env": env,
                "volume_mounts": [mount("conf", CONF_DIR), config_map, tmp, record],
                "resources": {"requests": {"cpu": "10m", "memory": "32Mi"},
                              "limits": {"memory": "128Mi"}},
                "security_context": secure,
            },
            {
                "name": "clone",
                "image": config.backup_image,
                "command": _script("clone.sh"),
                "env": env,
                "volume_mounts": [data, mount("conf", CONF_DIR), config_map, run, tmp, record,
                                  *extra.stream_mounts],
                "resources": _BACKUP_RESOURCES,
                "security_context": secure,
            },
            *extra.init_containers,
            # Last: the pod joins a Service only once its server config is in place.
            _label_container(config.kubectl_image),
        ],
        "containers": [
            {
                "name": "mysql",
                "image": config.server_image,
                # Options only: the image entrypoint prepends the server binary.
                "args": _server_options(config),
                "env": server_env,
                "ports": [{"name": "mysql", "container_port": MYSQL_PORT, "protocol": "TCP"}],
                "volume_mounts": [
                    data, mount("conf", CONF_DIR, read_only=True), config_map, run, tmp, socket,
                    mount("initdb", INITDB_DIR, read_only=True),
                    mount("credentials-mysql", CREDENTIALS_DIR, read_only=True),
                    *extra.server_mounts,
                ],
                "resources": _kube.requirements(config.resources),
                "startup_probe": _probe("startup", period=5,
                                        failures=SERVER_START_SECONDS // 5),
                "liveness_probe": _probe("liveness", period=10, failures=6),
                "readiness_probe": _probe("readiness", period=5, failures=2),
                "security_context": secure,
            },
            {
                "name": "backup",
                "image": config.backup_image,
                "command": _script("backup-server.sh"),
                "env": env,
                "ports": [{"name": "backup", "container_port": BACKUP_PORT, "protocol": "TCP"}],
                "volume_mounts": [data, mount("conf", CONF_DIR, read_only=True), config_map,
                                  run, tmp, socket, record,
                                  mount("credentials-backup", CREDENTIALS_DIR, read_only=True),
                                  *extra.stream_mounts],
                "resources": _BACKUP_RESOURCES,
                # A replica's sidecar first waits for its server and configures replication;
                # the listener the probe checks starts only then. The startup probe covers
                # that phase, so liveness never kills a sidecar that is still setting up.
                "startup_probe": _probe(
                    "backup", period=10,
                    failures=(SERVER_START_SECONDS + REPLICATION_SETUP_SECONDS) // 10),
                # A sidecar whose listener is gone, or whose PID no longer holds the port,
                # is restarted: clones are served again without touching the database.
                "liveness_probe": _probe("backup", period=10, failures=3),
                "security_context": secure,
            },
            *extra.sidecars,
        ],
        "volumes": volumes,
    }
    if config.failover.enabled:
        _arbiter.add_agent(spec, cluster=names.cluster, secret=names.secret,
                           image=config.failover.image or "", api_volume="kube-api-access")
    # With TLS the Secret too: the agent's replica check is probe.sh readiness, which checks
    # the certificate first; without it every replica would refuse and the primary back up.
    _backup.add_sidecars(spec, config, env, _script, [
        mount("data", DATA_DIR, sub_path="mysql", read_only=True), config_map, run, tmp, socket,
        record, mount("credentials-backup", CREDENTIALS_DIR, read_only=True),
        *extra.stream_mounts], metrics=plan.metrics.enabled)
    _backup.add_restore(spec, config, env, _script("restore-init.sh"), [
        data, mount("conf", CONF_DIR, read_only=True), config_map, run, tmp, record,
        mount("credentials-backup", CREDENTIALS_DIR, read_only=True)])
    _kube.place(spec, config.spread, plan.labels.selector(), config.node_selector)
    return spec


def _statefulset_spec(plan: _Plan) -> k8s.apps.v1.StatefulSetSpecArgsDict:
    config, names, labels = plan.config, plan.names, plan.labels
    return {
        "service_name": names.headless,
        "replicas": config.replicas,
        # Replicas clone from a ready peer: start them one at a time, in order.
        "pod_management_policy": "OrderedReady",
        "update_strategy": {"type": "RollingUpdate"},
        "selector": {"match_labels": labels.selector()},
        "persistent_volume_claim_retention_policy": {
            "when_deleted": config.pvc_retention_when_deleted,
            "when_scaled": config.pvc_retention_when_scaled,
        },
        "template": {
            "metadata": {
                "labels": labels.all(),
                "annotations": {CONFIG_HASH_ANNOTATION: _kube.files_hash(plan.files)},
            },
            "spec": _pod_spec(plan),
        },
        "volume_claim_templates": [
            _kube.data_claim_template(labels, config.storage, config.storage_class)],
    }


def _network_policy_spec(
    labels: _kube.AppLabels, client_namespaces: tuple[str, ...],
    metrics: MetricsConfig = MetricsConfig(),  # noqa: B008 (frozen, never mutated)
    backup_metrics_ports: list[tuple[str, int]] | None = None,
) -> k8s.networking.v1.NetworkPolicySpecArgsDict:
    clients = _kube.namespace_clients(client_namespaces)
    ingress: list[Any] = [
        {"ports": [{"port": MYSQL_PORT, "protocol": "TCP"}], "from_": clients},
        {"ports": [{"port": BACKUP_PORT, "protocol": "TCP"}],
         "from_": [{"pod_selector": {"match_labels": labels.selector()}}]},
    ]
    if metrics.enabled:
        # The archiver's backup gauges: scraped by the same Prometheus as the exporter.
        scraped = [_metrics.EXPORTER_PORT, *(port for _, port in backup_metrics_ports or ())]
        ingress.append({"ports": [{"port": port, "protocol": "TCP"} for port in scraped],
                        "from_": _kube.namespace_clients(metrics.scrape_namespaces)})
    return {
        "pod_selector": {"match_labels": labels.selector()},
        "policy_types": ["Ingress"],
        "ingress": ingress,
    }
