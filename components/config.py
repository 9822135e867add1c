"""Stack configuration, parsed once into frozen dataclasses.

Every value a component uses comes from here, already checked. The program calls
:func:`load` before it registers a single resource, so a typo in ``Pulumi.prod.yaml``
stops ``pulumi up`` with a message naming the key, the value and what is allowed,
instead of half-creating a cluster (the ``ops`` ConfigBase approach).

:func:`parse` is the pure core: it takes the raw ``{"mysql-cluster:key": value}`` map
that the Pulumi engine hands the program and returns a :class:`StackConfig`, which makes
each class of bad input testable without the Pulumi runtime.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import pulumi
from pulumi.runtime import config as runtime_config

from components._validate import DNS_LABEL, DNS_SUBDOMAIN, ConfigError, Errors, Reader
from components.mysql.flavor import FLAVORS, Flavor

PROJECT = "mysql-cluster"
TOP_LEVEL_KEYS = ("namespace", "mysql", "etcd", "locks")

Spread = Literal["required", "preferred", "none"]
SPREADS: tuple[Spread, ...] = ("required", "preferred", "none")
Access = Literal["in-cluster", "port-forward"]
ACCESSES: tuple[Access, ...] = ("in-cluster", "port-forward")
Retention = Literal["Retain", "Delete"]
RETENTIONS: tuple[Retention, ...] = ("Retain", "Delete")

# host:port where host is a DNS name or an IPv4 address.
_ENDPOINT = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?:\d{1,5}$")
_ENDPOINT_TEXT = "must be a list of host:port strings, such as 127.0.0.1:13306"
# An image reference pinned to an exact tag or digest: "repo[:port]/path:tag" or "...@sha256:...".
# "latest" and tagless references are refused: a pod restarted next month must run the same bits.
_PINNED_IMAGE = re.compile(
    r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?(:\d+)?(/[a-z0-9]([-a-z0-9._]*[a-z0-9])?)*"
    r"(:(?!latest$)[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|@sha256:[a-f0-9]{64})$"
)
_PINNED_TEXT = ("must be an image pinned to an exact tag or digest, such as mariadb:11.4.8 "
                "or registry.example.com/mysql@sha256:<64 hex> ('latest' is not pinned)")
# Names derived from the cluster name must stay valid: pod "<name>-<ordinal>" and the
# StatefulSet's controller-revision-hash label "<name>-<10 chars>" are limited to 63.
_CLUSTER_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$")
KUBECTL_DEFAULT_IMAGE = "registry.k8s.io/kubectl:v1.32.4"
# Server options the cluster itself manages: replication, durability and networking break
# if a stack overrides them, so extraServerConfig may not (compared with "-" as "_").
_MANAGED_SERVER_OPTIONS = frozenset({
    "server_id", "read_only", "super_read_only", "log_bin", "log_bin_index", "gtid_mode",
    "enforce_gtid_consistency", "gtid_strict_mode", "log_slave_updates", "log_replica_updates",
    "relay_log", "relay_log_index", "relay_log_recovery", "binlog_format", "sync_binlog",
    "innodb_flush_log_at_trx_commit", "port", "datadir", "socket", "bind_address",
    "skip_networking", "binlog_expire_logs_seconds", "expire_logs_days", "skip_log_bin",
    "disable_log_bin",
})
_SERVER_OPTION = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")

# Five-field cron, or a @-macro; Kubernetes CronJob accepts both.
_CRON = re.compile(r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|(\S+\s+){4}\S+)$")


@dataclass(frozen=True)
class Resources:
    """Container requests and limits; memory limits guard the node, CPU limits are optional."""

    requests_cpu: str
    requests_memory: str
    limits_cpu: str | None
    limits_memory: str | None

    def to_kubernetes(self) -> dict[str, dict[str, str]]:
        limits = {k: v for k, v in (("cpu", self.limits_cpu), ("memory", self.limits_memory)) if v}
        spec: dict[str, dict[str, str]] = {
            "requests": {"cpu": self.requests_cpu, "memory": self.requests_memory}
        }
        if limits:
            spec["limits"] = limits
        return spec


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        host, _, port = text.rpartition(":")
        return cls(host, int(port))

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ReplicationInitConfig:
    """How the ReplicationInit provider reaches the pods from where ``pulumi up`` runs.

    ``in-cluster``: the runner is a pod (GitOps); endpoints default to pod DNS names.
    ``port-forward``: a laptop with ``kubectl port-forward``; endpoints are required,
    primary first, then one per replica in ordinal order.
    """

    enabled: bool
    access: Access
    endpoints: tuple[Endpoint, ...]
    timeout_seconds: int


@dataclass(frozen=True)
class MySQLConfig:
    # The StatefulSet's name; pods are <name>-0 (the primary), <name>-1...
    name: str
    flavor: Flavor
    version: str
    replicas: int
    storage: str
    storage_class: str | None
    resources: Resources
    server_image: str
    backup_image: str
    # Labels each pod with its role; distroless, no shell (see components/mysql/cluster.py).
    kubectl_image: str
    max_replica_lag_seconds: int
    spread: Spread
    server_id_base: int | None
    pvc_retention_when_deleted: Retention
    pvc_retention_when_scaled: Retention
    binlog_expire_seconds: int
    extra_server_config: tuple[tuple[str, str], ...]
    node_selector: tuple[tuple[str, str], ...]
    # Namespaces (besides the cluster's own) whose pods may connect to the MySQL port.
    client_namespaces: tuple[str, ...]
    replication_init: ReplicationInitConfig


@dataclass(frozen=True)
class EtcdTLSConfig:
    """Certificates come from Secrets (cert-manager issues them); we never generate keys."""

    enabled: bool
    peer_secret: str | None
    client_secret: str | None


@dataclass(frozen=True)
class EtcdSnapshotConfig:
    enabled: bool
    schedule: str
    retain: int
    storage: str


@dataclass(frozen=True)
class EtcdMembershipConfig:
    """How the EtcdMembership provider reaches the cluster's client API."""

    enabled: bool
    access: Access
    endpoints: tuple[Endpoint, ...]
    # How long one membership change may wait for etcd (a restarted cluster refuses
    # "member add" for its first 5 seconds).
    timeout_seconds: int
    # Client TLS files on the machine that runs `pulumi up` (client TLS only).
    ca_file: str | None
    cert_file: str | None
    key_file: str | None


@dataclass(frozen=True)
class EtcdConfig:
    # The StatefulSet's name; pods are <name>-0, <name>-1...
    name: str
    # 1, 3, 5 or 7: an even size tolerates no more failures than the odd size below it,
    # and past 7 (etcd's recommended maximum) every write waits on a larger majority.
    # Scaling between sizes still changes one member at a time, in one `pulumi up`
    # (see components/etcd/membership.py).
    replicas: int
    version: str
    image: str
    # A pinned busybox: the etcd image is distroless, its start-up script needs a shell.
    shell_image: str
    storage: str
    storage_class: str | None
    resources: Resources
    spread: Spread
    tls: EtcdTLSConfig
    snapshot: EtcdSnapshotConfig
    membership: EtcdMembershipConfig
    # Namespaces (besides the cluster's own) whose pods may reach the client port.
    client_namespaces: tuple[str, ...]


@dataclass(frozen=True)
class LocksConfig:
    enabled: bool
    # Deleting the CRD deletes every Lock object; only with force may a held lock go.
    force_delete: bool
    # ServiceAccounts ("namespace/name") bound to the lock-user ClusterRole.
    users: tuple[str, ...]
    # How long `pulumi up` waits for the CRD's Established condition before failing.
    establish_timeout_seconds: int = 60


@dataclass(frozen=True)
class StackConfig:
    project: str
    stack: str
    namespace: str
    mysql: MySQLConfig
    etcd: EtcdConfig
    locks: LocksConfig


ETCD_DEFAULT_VERSION = "3.5.17"
ETCD_SIZES = (1, 3, 5, 7)
# The uclibc variant is statically linked, so the copied binary runs in a distroless image.
ETCD_SHELL_DEFAULT_IMAGE = "busybox:1.36.1-uclibc"
_ETCD_VERSION = re.compile(r"^3\.(5\.([3-9]|[1-9]\d)|6\.\d+)$")
_USER = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def _resources(reader: Reader, defaults: Resources) -> Resources:
    requests = reader.child("requests")
    limits = reader.child("limits")
    resources = Resources(
        requests_cpu=requests.quantity("cpu", defaults.requests_cpu) or defaults.requests_cpu,
        requests_memory=requests.quantity("memory", defaults.requests_memory)
        or defaults.requests_memory,
        limits_cpu=limits.quantity("cpu", defaults.limits_cpu),
        limits_memory=limits.quantity("memory", defaults.limits_memory),
    )
    requests.finish()
    limits.finish()
    reader.finish()
    return resources


def _endpoints(reader: Reader, name: str) -> tuple[Endpoint, ...]:
    texts = reader.string_list(name, pattern=_ENDPOINT, allowed_text=_ENDPOINT_TEXT)
    endpoints = tuple(Endpoint.parse(t) for t in texts)
    for endpoint in endpoints:
        if not 1 <= endpoint.port <= 65535:
            reader.errors.add(reader.key(name), str(endpoint), "ports must be between 1 and 65535")
    return endpoints


def _server_options(reader: Reader, name: str) -> tuple[tuple[str, str], ...]:
    options = reader.string_map(name)
    for key, value in options:
        if not _SERVER_OPTION.match(key):
            reader.errors.add(f"{reader.key(name)}.{key}", value,
                              "option names are lowercase server variables such as "
                              "max_connections (quote numbers: \"500\")")
        elif key.replace("-", "_") in _MANAGED_SERVER_OPTIONS:
            reader.errors.add(f"{reader.key(name)}.{key}", value,
                              "is managed by the cluster (replication, durability or "
                              "networking) and cannot be overridden")
        elif not value.strip() or "\n" in value:
            reader.errors.add(f"{reader.key(name)}.{key}", value,
                              "must be a non-empty single-line value")
    return options


def _mysql(reader: Reader) -> MySQLConfig:
    flavor_name: Flavor = reader.choice("flavor", "mariadb", tuple(FLAVORS))
    flavor = FLAVORS[flavor_name]
    version = reader.string("version", flavor.default_version, pattern=flavor.version_pattern,
                            allowed_text=f"{flavor_name} supports {flavor.versions_text}")
    version = version or flavor.default_version
    replicas = reader.integer("replicas", 2, minimum=1, maximum=9)
    images = reader.child("images")
    server_image = images.string("server", flavor.server_image(version), pattern=_PINNED_IMAGE,
                                 allowed_text=_PINNED_TEXT) or ""
    backup_image = images.string("backup", flavor.backup_image(version), pattern=_PINNED_IMAGE,
                                 allowed_text=_PINNED_TEXT) or ""
    kubectl_image = images.string("kubectl", KUBECTL_DEFAULT_IMAGE, pattern=_PINNED_IMAGE,
                                  allowed_text=_PINNED_TEXT) or KUBECTL_DEFAULT_IMAGE
    images.finish()
    pvc = reader.child("pvcRetention")
    when_deleted = pvc.choice("whenDeleted", "Retain", RETENTIONS)
    when_scaled = pvc.choice("whenScaled", "Retain", RETENTIONS)
    pvc.finish()
    init = reader.child("replicationInit")
    access = init.choice("access", "in-cluster", ACCESSES)
    init_config = ReplicationInitConfig(
        enabled=init.boolean("enabled", True),
        access=access,
        endpoints=_endpoints(init, "endpoints"),
        timeout_seconds=init.integer("timeoutSeconds", 300, minimum=10, maximum=3600),
    )
    if init_config.enabled and access == "port-forward" and len(init_config.endpoints) != replicas:
        reader.errors.add(init.key("endpoints"), [str(e) for e in init_config.endpoints],
                          f"port-forward access needs exactly {replicas} endpoints "
                          "(the primary first, then each replica by ordinal)")
    init.finish()
    config = MySQLConfig(
        name=reader.string("name", "mysql", pattern=_CLUSTER_NAME,
                           allowed_text="must be a lowercase RFC 1123 label of at most 40 "
                           "characters starting with a letter, such as orders-db") or "mysql",
        flavor=flavor_name,
        version=version,
        replicas=replicas,
        storage=reader.quantity("storage", "10Gi") or "10Gi",
        storage_class=reader.string("storageClass", None, pattern=DNS_SUBDOMAIN,
                                    allowed_text="must be a StorageClass name (RFC 1123)"),
        resources=_resources(reader.child("resources"),
                             Resources("500m", "1Gi", None, "2Gi")),
        server_image=server_image,
        backup_image=backup_image,
        kubectl_image=kubectl_image,
        max_replica_lag_seconds=reader.integer("maxReplicaLagSeconds", 30, minimum=1,
                                               maximum=86400),
        spread=reader.choice("spread", "preferred", SPREADS),
        # server_id is 32-bit; each cluster takes a block of 1000 ids for its ordinals.
        server_id_base=reader.optional_integer("serverIdBase", minimum=1000,
                                               maximum=4_294_966_000),
        pvc_retention_when_deleted=when_deleted,
        pvc_retention_when_scaled=when_scaled,
        binlog_expire_seconds=reader.integer("binlogExpireSeconds", 7 * 86400, minimum=3600),
        extra_server_config=_server_options(reader, "extraServerConfig"),
        node_selector=reader.string_map("nodeSelector"),
        client_namespaces=reader.string_list(
            "clientNamespaces", pattern=DNS_LABEL,
            allowed_text="must be a list of namespace names (lowercase RFC 1123 labels)"),
        replication_init=init_config,
    )
    reader.finish()
    return config


def _etcd(reader: Reader) -> EtcdConfig:
    replicas = reader.integer("replicas", 3, choices=ETCD_SIZES)
    version = reader.string("version", ETCD_DEFAULT_VERSION, pattern=_ETCD_VERSION,
                            allowed_text="must be an etcd release 3.5.3 or later, such as "
                            f"{ETCD_DEFAULT_VERSION} (3.5.0-3.5.2 can corrupt data)")
    version = version or ETCD_DEFAULT_VERSION
    tls = reader.child("tls")
    tls_enabled = tls.boolean("enabled", False)
    tls_config = EtcdTLSConfig(
        enabled=tls_enabled,
        peer_secret=tls.string("peerSecret", None, pattern=DNS_SUBDOMAIN,
                               allowed_text="must be a Secret name"),
        client_secret=tls.string("clientSecret", None, pattern=DNS_SUBDOMAIN,
                                 allowed_text="must be a Secret name"),
    )
    if tls_enabled and not (tls_config.peer_secret and tls_config.client_secret):
        reader.errors.add(tls.path, "enabled without secrets",
                          "tls.enabled needs both peerSecret and clientSecret (cert-manager "
                          "Certificate secrets with tls.crt, tls.key and ca.crt)")
    tls.finish()
    snapshot = reader.child("snapshot")
    snapshot_config = EtcdSnapshotConfig(
        enabled=snapshot.boolean("enabled", True),
        schedule=snapshot.string("schedule", "0 */6 * * *", pattern=_CRON,
                                 allowed_text="must be a cron schedule such as '0 */6 * * *'")
        or "0 */6 * * *",
        retain=snapshot.integer("retain", 8, minimum=1, maximum=1000),
        storage=snapshot.quantity("storage", "5Gi") or "5Gi",
    )
    snapshot.finish()
    membership = reader.child("membership")
    membership_config = EtcdMembershipConfig(
        enabled=membership.boolean("enabled", True),
        access=membership.choice("access", "in-cluster", ACCESSES),
        endpoints=_endpoints(membership, "endpoints"),
        timeout_seconds=membership.integer("timeoutSeconds", 120, minimum=10, maximum=3600),
        ca_file=membership.string("caFile", None),
        cert_file=membership.string("certFile", None),
        key_file=membership.string("keyFile", None),
    )
    if membership_config.key_file and not membership_config.cert_file:
        reader.errors.add(membership.key("keyFile"), membership_config.key_file,
                          "needs membership.certFile as well")
    if (membership_config.enabled and membership_config.access == "port-forward"
            and not membership_config.endpoints):
        reader.errors.add(membership.key("endpoints"), [],
                          "port-forward access needs at least one client endpoint")
    membership.finish()
    images = reader.child("images")
    image = images.string("etcd", f"gcr.io/etcd-development/etcd:v{version}",
                          pattern=_PINNED_IMAGE, allowed_text=_PINNED_TEXT) or ""
    shell_image = images.string("shell", ETCD_SHELL_DEFAULT_IMAGE, pattern=_PINNED_IMAGE,
                                allowed_text=_PINNED_TEXT) or ETCD_SHELL_DEFAULT_IMAGE
    images.finish()
    config = EtcdConfig(
        name=reader.string("name", "etcd", pattern=_CLUSTER_NAME,
                           allowed_text="must be a lowercase RFC 1123 label of at most 40 "
                           "characters starting with a letter, such as locks-etcd") or "etcd",
        replicas=replicas,
        version=version,
        image=image,
        shell_image=shell_image,
        storage=reader.quantity("storage", "2Gi") or "2Gi",
        storage_class=reader.string("storageClass", None, pattern=DNS_SUBDOMAIN,
                                    allowed_text="must be a StorageClass name (RFC 1123)"),
        resources=_resources(reader.child("resources"), Resources("100m", "256Mi", None, "512Mi")),
        spread=reader.choice("spread", "preferred", SPREADS),
        tls=tls_config,
        snapshot=snapshot_config,
        membership=membership_config,
        client_namespaces=reader.string_list(
            "clientNamespaces", pattern=DNS_LABEL,
            allowed_text="must be a list of namespace names (lowercase RFC 1123 labels)"),
    )
    reader.finish()
    return config


def _locks(reader: Reader) -> LocksConfig:
    config = LocksConfig(
        enabled=reader.boolean("enabled", False),
        force_delete=reader.boolean("forceDelete", False),
        users=reader.string_list("users", pattern=_USER,
                                 allowed_text="must be a list of 'namespace/serviceaccount'"),
        establish_timeout_seconds=reader.integer("establishTimeoutSeconds", 60, minimum=5,
                                                 maximum=3600),
    )
    reader.finish()
    return config


def _decode(value: object) -> object:
    """The engine hands object-valued config to the program as JSON text."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def parse(raw: Mapping[str, Any], *, stack: str, project: str = PROJECT) -> StackConfig:
    """Parse the engine's ``{"<project>:<key>": value}`` config map; raise ConfigError."""
    errors = Errors()
    prefix = f"{project}:"
    ours = {k[len(prefix):]: _decode(v) for k, v in raw.items() if k.startswith(prefix)}
    # Top-level keys print as Pulumi spells them: "mysql-cluster:mysql".
    top = Reader(errors, project, ours, separator=":")
    namespace = top.string("namespace", None, pattern=DNS_LABEL,
                           allowed_text="must be a namespace name (lowercase RFC 1123 label)")
    if namespace is None and "namespace" not in ours:
        errors.add(f"{project}:namespace", None,
                   "is required: set it with `pulumi config set namespace <name>` "
                   "(the default namespace is never used)")
    mysql = _mysql(top.child("mysql"))
    etcd = _etcd(top.child("etcd"))
    locks = _locks(top.child("locks"))
    top.finish()
    errors.raise_if_any()
    assert namespace is not None
    return StackConfig(project=project, stack=stack, namespace=namespace, mysql=mysql,
                       etcd=etcd, locks=locks)


def load() -> StackConfig:
    """Read the running program's config through the Pulumi runtime."""
    raw = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    return parse(raw, stack=pulumi.get_stack(), project=pulumi.get_project())


__all__ = [
    "ConfigError",
    "EtcdConfig",
    "LocksConfig",
    "MySQLConfig",
    "StackConfig",
    "load",
    "parse",
]
