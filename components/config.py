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

from components._validate import (
    DNS_LABEL,
    DNS_SUBDOMAIN,
    ConfigError,
    Errors,
    Reader,
    is_cron,
    is_label_key,
    is_label_value,
    matches,
    quantity_value,
)
from components.mysql.flavor import FLAVORS, Flavor

PROJECT = "mysql-cluster"
TOP_LEVEL_KEYS = ("namespace", "mysql", "etcd", "locks")
# The object-valued top-level keys.
SECTIONS = ("mysql", "etcd", "locks")

Spread = Literal["required", "preferred", "none"]
SPREADS: tuple[Spread, ...] = ("required", "preferred", "none")
Access = Literal["in-cluster", "port-forward"]
ACCESSES: tuple[Access, ...] = ("in-cluster", "port-forward")
Retention = Literal["Retain", "Delete"]
RETENTIONS: tuple[Retention, ...] = ("Retain", "Delete")

# host:port where host is a DNS name or an IPv4 address.
_ENDPOINT = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?:[0-9]{1,5}")
_ENDPOINT_TEXT = "must be a list of host:port strings, such as 127.0.0.1:13306"
# Every pattern is used with fullmatch on ASCII text (components._validate.matches).
# An image reference pinned to an exact tag or digest: "repo[:port]/path:tag" or "...@sha256:...".
# "latest" and tagless references are refused: a pod restarted next month must run the same bits.
_PINNED_IMAGE = re.compile(
    r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?(:[0-9]+)?(/[a-z0-9]([-a-z0-9._]*[a-z0-9])?)*"
    r"(:(?!latest\Z)[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|@sha256:[a-f0-9]{64})"
)
_PINNED_TEXT = ("must be an image pinned to an exact tag or digest, such as mariadb:11.4.8 "
                "or registry.example.com/mysql@sha256:<64 hex> ('latest' is not pinned)")
# Names derived from the cluster name must stay valid: pod "<name>-<ordinal>" and the
# StatefulSet's controller-revision-hash label "<name>-<10 chars>" are limited to 63.
_CLUSTER_NAME = re.compile(r"[a-z]([-a-z0-9]{0,38}[a-z0-9])?")
KUBECTL_DEFAULT_IMAGE = "registry.k8s.io/kubectl:v1.32.4"
# Server options the cluster itself manages, by what relies on them. extraServerConfig may
# not reach any of them in any spelling the server accepts (see server_option_names).
# Canonical names: lowercase, "_" for "-"; a name ending in "_" is a family (every option
# starting with it). Both servers' names are listed: a stack can switch flavors.
MANAGED_SERVER_OPTIONS: dict[str, tuple[str, ...]] = {
    "replication": (
        "server_id", "server_uid", "server_uuid", "read_only", "super_read_only", "log_bin",
        "log_bin_index", "log_bin_basename", "log_basename", "log_slave_updates",
        "log_replica_updates", "binlog_format", "binlog_do_db", "binlog_ignore_db",
        "binlog_expire_logs_seconds", "expire_logs_days", "gtid_", "enforce_gtid_consistency",
        "relay_log", "relay_log_", "replicate_", "slave_", "replica_", "master_", "source_",
        "skip_slave_start", "skip_replica_start", "rpl_", "wsrep",
    ),
    "durability": (
        "sync_", "innodb", "innodb_flush_log_at_trx_commit", "innodb_doublewrite",
        "innodb_flush_method", "innodb_force_recovery", "innodb_read_only",
        "default_storage_engine", "enforce_storage_engine",
    ),
    "the pod's paths and network": (
        "port", "extra_port", "admin_port", "admin_address", "bind_address", "skip_networking",
        "socket", "mysqlx", "datadir", "basedir", "tmpdir", "pid_file", "log_error", "user",
        "chroot", "innodb_data_home_dir", "innodb_log_group_home_dir", "innodb_undo_directory",
        "lc_messages_dir", "character_sets_dir",
    ),
    "security": (
        "skip_grant_tables", "init_", "plugin_", "secure_file_priv", "local_infile", "ssl",
        "ssl_", "tls_version", "require_secure_transport", "old_passwords", "secure_auth",
        "default_authentication_plugin", "authentication_policy",
    ),
    # Only valid first on a command line, or they stop the server instead of starting it.
    "start-up": (
        "defaults_file", "defaults_extra_file", "defaults_group_suffix", "no_defaults",
        "print_defaults", "help", "verbose", "version", "bootstrap",
    ),
}
# my_getopt (both servers) strips these, in any number and order, when a name is unknown:
# skip-/disable- switch a boolean off (enable- on), loose- ignores unknown options,
# maximum- sets a session limit, autoset- asks for automatic sizing.
_OPTION_MODIFIERS = ("loose", "skip", "disable", "enable", "maximum", "autoset")


def server_option_names(spelling: str) -> list[str]:
    """Every name the server tries for ``spelling``, in order.

    As my_getopt does: case and "-"/"_" do not matter, the full spelling is tried first
    (``skip-grant-tables`` is an option itself), then the rest after each modifier. Any
    one of these may also be a unique prefix of an option (MariaDB accepts those).
    """
    name = spelling.lower().replace("-", "_")
    names = [name]
    while modifier := next((m for m in _OPTION_MODIFIERS if name.startswith(f"{m}_")), None):
        name = name[len(modifier) + 1:]
        names.append(name)
    return names


def managed_server_option(spelling: str) -> tuple[str, str] | None:
    """(what relies on it, the option) if ``spelling`` could reach a managed option."""
    for name in server_option_names(spelling):
        for reason, options in MANAGED_SERVER_OPTIONS.items():
            for option in options:
                # A name reaches an option it equals or abbreviates, and every member of
                # a family it starts with.
                if option.startswith(name) or (option.endswith("_") and name.startswith(option)):
                    return reason, option.rstrip("_")
    return None


_SERVER_OPTION = re.compile(r"[a-z][a-z0-9_-]{0,63}")


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


BINLOG_EXPIRE_MAX_SECONDS = 99 * 86400
ETCD_DEFAULT_VERSION = "3.5.17"
ETCD_SIZES = (1, 3, 5, 7)
# The uclibc variant is statically linked, so the copied binary runs in a distroless image.
ETCD_SHELL_DEFAULT_IMAGE = "busybox:1.36.1-uclibc"
_ETCD_VERSION = re.compile(r"3\.(5\.([3-9]|[1-9][0-9])|6\.[0-9]+)")
# "namespace/serviceaccount": a namespace label, then a ServiceAccount name (a subdomain).
_USER = re.compile(r"(?=[^/]{1,63}/[^/]{1,253}\Z)[a-z0-9]([-a-z0-9]*[a-z0-9])?/"
                   r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def _resources(reader: Reader, defaults: Resources) -> Resources:
    requests = reader.child("requests")
    limits = reader.child("limits")
    resources = Resources(
        requests_cpu=requests.quantity("cpu", defaults.requests_cpu),
        requests_memory=requests.quantity("memory", defaults.requests_memory),
        limits_cpu=limits.quantity("cpu", defaults.limits_cpu),
        limits_memory=limits.quantity("memory", defaults.limits_memory),
    )
    # The API server refuses a pod whose request exceeds its limit: catch it here, where
    # the message can name the keys.
    for resource, request, limit in (("cpu", resources.requests_cpu, resources.limits_cpu),
                                     ("memory", resources.requests_memory,
                                      resources.limits_memory)):
        if limit is not None and quantity_value(request) > quantity_value(limit):
            reader.errors.add(requests.key(resource), request,
                              f"must not exceed {limits.key(resource)} ({limit})")
    requests.finish()
    limits.finish()
    reader.finish()
    return resources


_CRON_TEXT = ("must be a cron schedule a CronJob accepts, such as '0 */6 * * *' (minute 0-59, "
              "hour 0-23, day 1-31, month 1-12, weekday 0-7) or @hourly, @daily, @weekly, "
              "@monthly, @yearly")


def _schedule(reader: Reader, name: str, default: str) -> str:
    text = reader.string(name, default, allowed_text=_CRON_TEXT)
    if text is None or not is_cron(text):
        reader.errors.add(reader.key(name), text, _CRON_TEXT)
        return default
    return text


def _endpoints(reader: Reader, name: str) -> tuple[Endpoint, ...]:
    texts = reader.string_list(name, pattern=_ENDPOINT, allowed_text=_ENDPOINT_TEXT)
    endpoints = tuple(Endpoint.parse(t) for t in texts)
    for endpoint in endpoints:
        if not 1 <= endpoint.port <= 65535:
            reader.errors.add(reader.key(name), str(endpoint), "ports must be between 1 and 65535")
    return endpoints


def _server_options(reader: Reader, name: str) -> tuple[tuple[str, str], ...]:
    options = reader.string_map(name)
    good = []
    for key, value in options:
        managed = managed_server_option(key)
        if not matches(_SERVER_OPTION, key):
            reader.errors.add(f"{reader.key(name)}.{key}", value,
                              "option names are lowercase server variables such as "
                              "max_connections (quote numbers: \"500\")")
        elif managed:
            reason, option = managed
            reader.errors.add(f"{reader.key(name)}.{key}", value,
                              f"is managed by the cluster ({reason}: it reaches {option!r}) "
                              "and cannot be overridden in any spelling")
        elif not value.strip() or not value.isprintable():
            reader.errors.add(f"{reader.key(name)}.{key}", value,
                              "must be a non-empty single-line value")
        else:
            good.append((key, value))
    return tuple(good)


def _mysql(reader: Reader) -> MySQLConfig:
    flavor_name: Flavor = reader.choice("flavor", "mariadb", tuple(FLAVORS))
    flavor = FLAVORS[flavor_name]
    version = reader.string("version", flavor.default_version, pattern=flavor.version_pattern,
                            allowed_text=f"{flavor_name} supports {flavor.versions_text}")
    replicas = reader.integer("replicas", 2, minimum=1, maximum=9)
    images = reader.child("images")
    server_image = images.string("server", flavor.server_image(version), pattern=_PINNED_IMAGE,
                                 allowed_text=_PINNED_TEXT)
    backup_image = images.string("backup", flavor.backup_image(version), pattern=_PINNED_IMAGE,
                                 allowed_text=_PINNED_TEXT)
    kubectl_image = images.string("kubectl", KUBECTL_DEFAULT_IMAGE, pattern=_PINNED_IMAGE,
                                  allowed_text=_PINNED_TEXT)
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
                           "characters starting with a letter, such as orders-db"),
        flavor=flavor_name,
        version=version,
        replicas=replicas,
        storage=reader.quantity("storage", "10Gi"),
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
                                               maximum=4_294_966_000, multiple_of=1000),
        pvc_retention_when_deleted=when_deleted,
        pvc_retention_when_scaled=when_scaled,
        # MariaDB's maximum (99 days); a larger value would be cut to it without a word.
        binlog_expire_seconds=reader.integer("binlogExpireSeconds", 7 * 86400, minimum=3600,
                                             maximum=BINLOG_EXPIRE_MAX_SECONDS),
        extra_server_config=_server_options(reader, "extraServerConfig"),
        node_selector=reader.string_map(
            "nodeSelector", key_ok=is_label_key, value_ok=is_label_value,
            allowed_text="node selectors are label keys ([prefix/]name, name at most 63 "
            "characters) with label values (at most 63 characters of A-Z a-z 0-9 - _ .)"),
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
        schedule=_schedule(snapshot, "schedule", "0 */6 * * *"),
        retain=snapshot.integer("retain", 8, minimum=1, maximum=1000),
        storage=snapshot.quantity("storage", "5Gi"),
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
                          pattern=_PINNED_IMAGE, allowed_text=_PINNED_TEXT)
    shell_image = images.string("shell", ETCD_SHELL_DEFAULT_IMAGE, pattern=_PINNED_IMAGE,
                                allowed_text=_PINNED_TEXT)
    images.finish()
    config = EtcdConfig(
        name=reader.string("name", "etcd", pattern=_CLUSTER_NAME,
                           allowed_text="must be a lowercase RFC 1123 label of at most 40 "
                           "characters starting with a letter, such as locks-etcd"),
        replicas=replicas,
        version=version,
        image=image,
        shell_image=shell_image,
        storage=reader.quantity("storage", "2Gi"),
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


def _decode(key: str, value: object) -> object:
    """The engine hands object-valued config (the sections) to the program as JSON text;
    scalars such as the namespace arrive as plain text and stay text ("123" is a name)."""
    if key in SECTIONS and isinstance(value, str):
        try:
            return json.loads(value)
        except (ValueError, RecursionError):  # not JSON: reported as "must be an object"
            return value
    return value


def parse(raw: Mapping[str, Any], *, stack: str, project: str = PROJECT) -> StackConfig:
    """Parse the engine's ``{"<project>:<key>": value}`` config map; raise ConfigError."""
    errors = Errors()
    prefix = f"{project}:"
    ours = {k[len(prefix):]: _decode(k[len(prefix):], v) for k, v in raw.items()
            if k.startswith(prefix)}
    # Top-level keys print as Pulumi spells them: "mysql-cluster:mysql".
    top = Reader(errors, project, ours, separator=":")
    if ours.get("namespace") is None:
        top.known.append("namespace")
        errors.add(f"{project}:namespace", None,
                   "is required: set it with `pulumi config set namespace <name>` "
                   "(the default namespace is never used)")
    namespace = top.string("namespace", "", pattern=DNS_LABEL,
                           allowed_text="must be a namespace name (lowercase RFC 1123 label)")
    mysql = _mysql(top.child("mysql"))
    etcd = _etcd(top.child("etcd"))
    locks = _locks(top.child("locks"))
    if mysql.name == etcd.name:
        errors.add(f"{project}:etcd.name", etcd.name,
                   "must differ from mysql.name: both are StatefulSets in one namespace")
    top.finish()
    errors.raise_if_any()
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
