"""Stack configuration, parsed once into frozen dataclasses.

Every value a component uses comes from here, already checked. The program calls
:func:`load` before it registers a single resource, so a typo in ``Pulumi.prod.yaml``
stops ``pulumi up`` with a message naming the key, the value and what is allowed,
instead of half-creating a cluster (the ``ops`` ConfigBase approach).

:func:`parse` is the pure core: it takes the raw ``{"mysql-cluster:key": value}`` map
that the Pulumi engine hands the program and returns a :class:`StackConfig`, which makes
each class of bad input testable without the Pulumi runtime.

Each key is declared once, on the dataclass field it fills (``_key``: the Pulumi
spelling, its kind with bounds or allowed values, the default or how it is derived, a
one-line description). Everything else works from those declarations: ``__post_init__``
checks every field and the rules across fields, so a program that builds the dataclasses
in Python gets the same validation as a stack file; the reader (:func:`_read`) walks the
declarations, runs the same checks on what the YAML holds and re-keys each problem with
the Pulumi path (the messages name the key the user typed); :func:`markdown_table` is the
README's table. Defaults are never checked (they are right by construction) and a bad
value is replaced by its default so that one run reports every problem at once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import pulumi
from pulumi.runtime import config as runtime_config

from components._validate import (
    DNS_LABEL,
    DNS_SUBDOMAIN,
    Checked,
    ConfigError,
    Errors,
    InvalidConfig,
    Problem,
    Reader,
    check_boolean,
    check_choice,
    check_integer,
    check_quantity,
    check_text,
    check_text_list,
    check_text_map,
    is_cron,
    is_label_key,
    is_label_value,
    matches,
    quantity_value,
)
from components.mysql.flavor import FLAVORS, Flavor

if TYPE_CHECKING:
    # Annotation only: _kube imports pulumi_kubernetes, which this module must not.
    from components._kube import Spread

T = TypeVar("T")
PROJECT = "mysql-cluster"
TOP_LEVEL_KEYS = ("namespace", "mysql", "etcd", "locks", "metrics")
# The object-valued top-level keys.
SECTIONS = ("mysql", "etcd", "locks", "metrics")

SPREADS: tuple[Spread, ...] = ("required", "preferred", "none")
Access = Literal["in-cluster", "port-forward"]
ACCESSES: tuple[Access, ...] = ("in-cluster", "port-forward")
Durability = Literal["async", "semisync"]
DURABILITIES: tuple[Durability, ...] = ("async", "semisync")
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
# The release Debian packages (prometheus-mysqld-exporter 0.14), which the tests scrape a real
# server with; its flags and metric names are what components/mysql/_metrics.py relies on.
EXPORTER_DEFAULT_IMAGE = "quay.io/prometheus/mysqld-exporter:v0.14.0"
Switch = Literal["off", "on"]
SWITCHES: tuple[Switch, ...] = ("off", "on")
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
_ABSOLUTE_PATH = re.compile(r"/[^'\\\x00]{0,4095}")


BINLOG_EXPIRE_MAX_SECONDS = 99 * 86400
ETCD_DEFAULT_VERSION = "3.5.17"
ETCD_SIZES = (1, 3, 5, 7)
# The uclibc variant is statically linked, so the copied binary runs in a distroless image.
ETCD_SHELL_DEFAULT_IMAGE = "busybox:1.36.1-uclibc"
_ETCD_VERSION = re.compile(r"3\.(5\.([3-9]|[1-9][0-9])|6\.[0-9]+)")
# "namespace/serviceaccount": a namespace label, then a ServiceAccount name (a subdomain).
_USER = re.compile(r"(?=[^/]{1,63}/[^/]{1,253}\Z)[a-z0-9]([-a-z0-9]*[a-z0-9])?/"
                   r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_CRON_TEXT = ("must be a cron schedule a CronJob accepts, such as '0 */6 * * *' (minute 0-59, "
              "hour 0-23, day 1-31, month 1-12, weekday 0-7) or @hourly, @daily, @weekly, "
              "@monthly, @yearly")
_NAMESPACES_TEXT = "must be a list of namespace names (lowercase RFC 1123 labels)"


# ---------------------------------------------------------------- how a key is declared

# A check: (the value given, the field's default, the values of the fields before it).
Check = Callable[[Any, Any, Mapping[str, Any]], Checked]
_KEY = "mysql-cluster.key"


@dataclass(frozen=True)
class Kind:
    """What a key holds and how it is checked; ``allowed`` sums the bounds up for the table."""

    name: str
    check: Check
    allowed: str = ""


@dataclass(frozen=True)
class Key:
    """One stack config key, declared on the dataclass field it fills."""

    # The Pulumi spelling inside its object; a dot nests it ("images.server").
    name: str
    kind: Kind
    doc: str
    # A default computed from the fields before it (an empty text field means "derive").
    derive: Callable[[Mapping[str, Any]], Any] | None = None
    derived: str = ""
    # Set: the key is required, and this says so when it is missing.
    required: str = ""
    # A nested config dataclass, read from the object under ``name``.
    nested: type | None = None


def _text(pattern: re.Pattern[str] | None = None, allowed_text: str = "",
          allowed: str = "") -> Kind:
    extra = {"allowed_text": allowed_text} if allowed_text else {}
    return Kind("text", lambda v, d, _: check_text(v, d, pattern=pattern, **extra), allowed)


def _choice(choices: tuple[str, ...]) -> Kind:
    return Kind("choice", lambda v, d, _: check_choice(v, d, choices),
                " / ".join(f"`{c}`" for c in choices))


def _integer(*, minimum: int | None = None, maximum: int | None = None,
             choices: tuple[int, ...] | None = None, multiple_of: int | None = None) -> Kind:
    if choices:
        allowed = ", ".join(map(str, choices))
    else:
        allowed = f"{minimum}-{maximum}" if minimum is not None else ""
    if multiple_of:
        allowed += f", a multiple of {multiple_of}"
    return Kind("integer", lambda v, d, _: check_integer(
        v, d, minimum=minimum, maximum=maximum, choices=choices, multiple_of=multiple_of),
        allowed)


_BOOLEAN = Kind("boolean", lambda v, d, _: check_boolean(v, d))
_QUANTITY_KIND = Kind("quantity", lambda v, d, _: check_quantity(v, d), "a quantity")
_PINNED = _text(_PINNED_IMAGE, _PINNED_TEXT,
                "exact tag or digest; `latest` and untagged images are refused")
_NAMESPACES = Kind("text list", lambda v, d, _: check_text_list(
    v, pattern=DNS_LABEL, allowed_text=_NAMESPACES_TEXT))
_STORAGE_CLASS = _text(DNS_SUBDOMAIN, "must be a StorageClass name (RFC 1123)")
_SECRET_NAME = _text(DNS_SUBDOMAIN, "must be a Secret name")
_OBJECT = Kind("object", lambda v, d, _: (v, []))


def _cluster_name(example: str) -> Kind:
    return _text(_CLUSTER_NAME, "must be a lowercase RFC 1123 label of at most 40 characters "
                 f"starting with a letter, such as {example}", "≤ 40 characters")


def _key(name: str, kind: Kind, doc: str, *, default: Any = MISSING, derive: Callable[
        [Mapping[str, Any]], Any] | None = None, derived: str = "", required: str = "",
        nested: type | None = None) -> Any:
    """A dataclass field carrying its key. A derived key's field defaults to ""."""
    if derive is not None:
        default = ""
    return field(default=default, metadata={_KEY: Key(name, kind, doc, derive, derived,
                                                       required, nested)})


def _check_endpoints(value: Any, default: Any, _: Mapping[str, Any]) -> Checked:
    if isinstance(value, list | tuple) and all(isinstance(e, Endpoint) for e in value):
        endpoints = tuple(value)
    else:
        texts, problems = check_text_list(value, pattern=_ENDPOINT, allowed_text=_ENDPOINT_TEXT)
        if problems:
            return default, problems
        endpoints = tuple(Endpoint.parse(t) for t in texts)
    # A bad port is reported, the list kept: the endpoint count is checked on its own.
    return endpoints, [("", str(e), "ports must be between 1 and 65535")
                       for e in endpoints if not 1 <= e.port <= 65535]


_ENDPOINTS = Kind("endpoints", _check_endpoints, "`host:port` list")


def _check_switch(value: Any, default: Any, values: Mapping[str, Any]) -> Checked:
    # YAML 1.1 reads a bare on/off as a boolean, so `requireSecureTransport: on` in a stack
    # file reaches the program as true: both spellings mean the same switch.
    if isinstance(value, bool):
        return ("on" if value else "off"), []
    return check_choice(value, default, SWITCHES)


_SWITCH = Kind("switch", _check_switch, " / ".join(f"`{c}`" for c in SWITCHES))


def _check_schedule(value: Any, default: Any, _: Mapping[str, Any]) -> Checked:
    if isinstance(value, str) and is_cron(value) and value.isprintable():
        return value, []
    return default, [("", value, _CRON_TEXT)]


def _check_version(value: Any, default: Any, values: Mapping[str, Any]) -> Checked:
    flavor = FLAVORS[values["flavor"]]
    return check_text(value, default, pattern=flavor.version_pattern,
                      allowed_text=f"{flavor.name} supports {flavor.versions_text}")


def _server_option_problem(key: str, value: str) -> str | None:
    if not matches(_SERVER_OPTION, key):
        return ("option names are lowercase server variables such as max_connections "
                "(quote numbers: \"500\")")
    if managed := managed_server_option(key):
        reason, option = managed
        return (f"is managed by the cluster ({reason}: it reaches {option!r}) "
                "and cannot be overridden in any spelling")
    if not value.strip() or not value.isprintable():
        return "must be a non-empty single-line value"
    return None


def _node_selector_problem(key: str, value: str) -> str | None:
    if is_label_key(key) and is_label_value(value):
        return None
    return ("node selectors are label keys ([prefix/]name, name at most 63 characters) "
            "with label values (at most 63 characters of A-Z a-z 0-9 - _ .)")


# ---------------------------------------------------------------- one place that validates

def _default(f: Field[Any]) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def _settle(cls: type, given: Mapping[str, Any], defaults: Any = None,
            ) -> tuple[dict[str, Any], list[Problem]]:
    """Every field's value, in declaration order: given ones checked (a bad one replaced by
    the default), missing and derived ones filled in. Defaults are never checked. A field
    without a default of its own (Resources) takes it from ``defaults``, its parent's."""
    values: dict[str, Any] = {}
    problems: list[Problem] = []
    for f in fields(cls):
        key: Key | None = f.metadata.get(_KEY)
        default = _default(f)
        if default is MISSING and defaults is not None:
            default = getattr(defaults, f.name)
        value = given.get(f.name, default)
        # bool and float compare equal to ints: only a value of the default's own type
        # that equals it counts as the default.
        is_default = value is default or (type(value) is type(default) and value == default)
        # None is "unset" for an optional field (its annotation, text here, allows None).
        is_default = is_default or (value is None and "None" in str(f.type))
        if key is not None and not is_default:
            value, found = key.kind.check(value, default, values)
            problems += [Problem(f.name, shown, text, suffix) for suffix, shown, text in found]
        if key is not None and key.derive is not None and value == "":
            value = key.derive(values)
        values[f.name] = value
    return values, problems


class _Validated:
    """``__post_init__`` for the config dataclasses: check every field and the rules across
    fields (:meth:`_problems`), derive what was left to derive, raise InvalidConfig."""

    def __post_init__(self) -> None:
        given = {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]
        values, problems = _settle(type(self), given)
        for name, value in values.items():
            if value is not given[name]:
                object.__setattr__(self, name, value)
        # Rules across fields only make sense once each field is good.
        if not problems:
            problems = self._problems()
        if problems:
            raise InvalidConfig(problems, self)

    def _problems(self) -> list[Problem]:
        return []


# ---------------------------------------------------------------- the declarations

@dataclass(frozen=True)
class Resources(_Validated):
    """Container requests and limits; memory limits guard the node, CPU limits are optional.
    Each component gives its own default instance (a MySQL server needs more than etcd)."""

    requests_cpu: str = _key("requests.cpu", _QUANTITY_KIND, "CPU request")
    requests_memory: str = _key("requests.memory", _QUANTITY_KIND, "memory request")
    limits_cpu: str | None = _key("limits.cpu", _QUANTITY_KIND, "CPU limit")
    limits_memory: str | None = _key("limits.memory", _QUANTITY_KIND, "memory limit")

    def _problems(self) -> list[Problem]:
        # The API server refuses a pod whose request exceeds its limit: catch it here, where
        # the message can name the keys.
        return [Problem(f"requests_{name}", request, f"must not exceed {{0}} ({limit})",
                        refs=(f"limits_{name}",))
                for name, request, limit in (("cpu", self.requests_cpu, self.limits_cpu),
                                             ("memory", self.requests_memory,
                                              self.limits_memory))
                if limit is not None and quantity_value(request) > quantity_value(limit)]


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
class ReplicationInitConfig(_Validated):
    """How the ReplicationInit provider reaches the pods from where ``pulumi up`` runs.

    ``in-cluster``: the runner is a pod (GitOps); endpoints default to pod DNS names.
    ``port-forward``: a laptop with ``kubectl port-forward``; endpoints are required,
    primary first, then one per replica in ordinal order.
    """

    enabled: bool = _key("enabled", _BOOLEAN, "run ReplicationInit on every `pulumi up`",
                         default=True)
    access: Access = _key("access", _choice(ACCESSES), "how `pulumi up` reaches the pods: pod "
                          "DNS, or `kubectl port-forward` (docs/mysql.md)", default="in-cluster")
    endpoints: tuple[Endpoint, ...] = _key(
        "endpoints", _ENDPOINTS, "port-forward: the local end for every pod, by ordinal",
        default=())
    timeout_seconds: int = _key("timeoutSeconds", _integer(minimum=10, maximum=3600),
                                "how long an up waits for replicas to catch up", default=300)
    ca_file: str | None = _key(
        "caFile", _text(_ABSOLUTE_PATH, "must be an absolute path without quotes or "
                        "backslashes"), "mysql.tls: the TLS Secret's `ca.crt` where `pulumi up` "
        "runs; its connections then verify the servers (host names too, in-cluster)",
        default=None)


@dataclass(frozen=True)
class MySQLTLSConfig(_Validated):
    """TLS for clients and replication. The Secret is cert-manager's Certificate Secret or any
    Secret with ``tls.crt``, ``tls.key`` and ``ca.crt``; the program never generates keys."""

    enabled: bool = _key("enabled", _BOOLEAN, "TLS for clients and replication (the server's "
                         "certificate, replicas verify the primary against `ca.crt`)",
                         default=False)
    secret: str | None = _key("secret", _SECRET_NAME, "Secret with `tls.crt`, `tls.key` and "
                              "`ca.crt` (cert-manager's Certificate Secret fits); read and "
                              "checked at deploy time, so it must exist before `pulumi up`",
                              default=None)
    require_secure_transport: Switch = _key(
        "requireSecureTransport", _SWITCH, "`on`: TCP clients without TLS are "
        "refused (the pod-local socket, which the probes use, stays open)", default="off")

    def _problems(self) -> list[Problem]:
        if self.enabled and not self.secret:
            return [Problem("secret", None, "is required when tls.enabled is true: the name of "
                            "a Secret with tls.crt, tls.key and ca.crt")]
        if self.require_secure_transport == "on" and not self.enabled:
            return [Problem("require_secure_transport", "on", "needs tls.enabled: true (without "
                            "TLS every TCP client would be refused)")]
        return []


@dataclass(frozen=True)
class FailoverConfig(_Validated):
    """Automatic failover: the arbiter Deployment and a fencing agent in every MySQL pod.

    Off by default: it moves the primary without a person, so a stack opts in knowingly
    (docs/mysql.md, "Automatic failover", says what it guarantees and what it costs).
    A failover takes about ``checks`` x ``periodSeconds`` to detect, then ``ttlSeconds``
    before the new primary is writable (the old one's agent demotes it within that).
    """

    enabled: bool = _key("enabled", _BOOLEAN, "run the arbiter and the fencing agents",
                         default=False)
    ttl_seconds: int = _key("ttlSeconds", _integer(minimum=3, maximum=300),
                            "a primary that cannot confirm the record for this long, less "
                            "two periods, makes itself read-only; the arbiter's leader "
                            "lease", default=10)
    checks: int = _key("checks", _integer(minimum=1, maximum=100),
                       "consecutive failed checks (connect + a write-free query) that fail "
                       "the primary", default=3)
    period_seconds: int = _key("periodSeconds", _integer(minimum=1, maximum=60),
                               "time between checks; also each check's timeout", default=1)
    max_lag_seconds: int = _key("maxLagSeconds", _integer(minimum=0, maximum=86400),
                                "a replica lagging more is never promoted", default=30)
    image: str | None = _key("image", _PINNED, "arbiter image (deploy/arbiter/Dockerfile); "
                             "required when enabled", default=None)

    def _problems(self) -> list[Problem]:
        problems = []
        if self.ttl_seconds < 3 * self.period_seconds:
            problems.append(Problem(
                "ttl_seconds", self.ttl_seconds,
                f"must be at least 3 x {{0}} ({3 * self.period_seconds}): the agent demotes "
                "after ttl - 2 periods without a confirmation", refs=("period_seconds",)))
        if self.enabled and self.image is None:
            problems.append(Problem("image", None, "required when failover is enabled: the "
                                    "arbiter image built from deploy/arbiter/Dockerfile, "
                                    "pinned to a tag or digest"))
        return problems


_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_PREFIX = re.compile(r"[A-Za-z0-9!_.*'()/-]{0,512}")
_ENDPOINT_URL = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?/?")
_POINT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})"
                    r"|\d+-\d+-\d+(,\d+-\d+-\d+)*")
# Kubernetes' limit for a CronJob's name (its Jobs' names append the scheduled minute).
_CRON_JOB_NAME_MAX = 52
_BACKUP_ID = re.compile(r"latest|[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class BackupRetentionConfig(_Validated):
    """Only complete backups (with a manifest) count; the newest complete one is never
    deleted (mysqlbackup/catalog.py)."""

    count: int = _key("count", _integer(minimum=1, maximum=1000), "complete backups kept",
                      default=7)
    max_age_days: int | None = _key("maxAgeDays", _integer(minimum=1, maximum=3650),
                                    "complete backups older than this are deleted",
                                    default=None)


@dataclass(frozen=True)
class BackupVerifyConfig(_Validated):
    """The verification CronJob (components/mysql/_backup.py): a backup is proven only by
    restoring it, so this restores the newest one plus every archived binlog into a scratch
    server and records the outcome next to it (``backups/<id>/verification.json``)."""

    enabled: bool = _key("enabled", _BOOLEAN, "a CronJob that restores the newest backup "
                         "and archived binlogs into a scratch server and records the result "
                         "next to the backup; needs backup.enabled", default=False)
    # An hour after the default backup: that backup is normally done, and if it is not the
    # Job waits for it on the cluster lock.
    schedule: str = _key("schedule", Kind("cron", _check_schedule, "cron"), "when a "
                         "verification runs", default="0 4 * * *")


@dataclass(frozen=True)
class ObjectStoreConfig(_Validated):
    """Where an S3-compatible store is and which Secret holds its keys: declared once, for
    mysql.backup (its keys at the top of the object, as before) and etcd.snapshot.store.

    The keys come from the Secret (keys ``access-key`` and ``secret-key``) mounted as files;
    they never appear in the stack config, argv, environment or outputs.
    """

    endpoint: str | None = _key("endpoint", _text(_ENDPOINT_URL, "must be an http(s) URL "
                                "such as https://s3.eu-west-1.amazonaws.com"),
                                "S3-compatible endpoint URL", default=None)
    bucket: str | None = _key("bucket", _text(_BUCKET, "must be an S3 bucket name (3-63 "
                              "lowercase letters, digits, dots and hyphens)"), "bucket",
                              default=None)
    prefix: str | None = _key("prefix", _text(_PREFIX, "must be an object key prefix"),
                              "key prefix of this cluster's objects (unset: the StatefulSet "
                              "name)", default=None)
    region: str = _key("region", _text(re.compile(r"[a-z0-9-]{1,32}"), "must be a region "
                       "name such as us-east-1"), "bucket region", default="us-east-1")
    path_style: bool = _key("pathStyle", _BOOLEAN, "path-style addressing (most "
                            "S3-compatible servers need it)", default=True)
    credentials_secret: str | None = _key("credentialsSecret", _SECRET_NAME, "Secret holding "
                                          "`access-key` and `secret-key`", default=None)

    def missing_store_fields(self) -> list[str]:
        """The fields without which nothing can reach the store (field names)."""
        return [name for name in ("endpoint", "bucket", "credentials_secret")
                if getattr(self, name) is None]

    def _required_when(self, switch: str) -> list[Problem]:
        return [Problem(name, None, f"is required when {switch} is true")
                for name in self.missing_store_fields()]


@dataclass(frozen=True)
class BackupConfig(ObjectStoreConfig):
    """Physical backups streamed to an S3-compatible store, and binlog archiving (issue 14).
    The store's fields (ObjectStoreConfig) come first in the object, then these."""

    enabled: bool = _key("enabled", _BOOLEAN, "scheduled backups and binlog archiving",
                         default=False)
    schedule: str = _key("schedule", Kind("cron", _check_schedule, "cron"), "when a backup "
                         "runs", default="0 3 * * *")
    compression: str = _key("compression", _choice(("gzip", "zstd", "none")),
                            "stream compression", default="gzip")
    archive_interval_seconds: int = _key(
        "archiveIntervalSeconds", _integer(minimum=1, maximum=3600),
        "binlog rotation and upload interval: the recovery point", default=10)
    retention: BackupRetentionConfig = _key("retention", _OBJECT, "",
                                            nested=BackupRetentionConfig,
                                            default=BackupRetentionConfig())
    verify: BackupVerifyConfig = _key("verify", _OBJECT, "", nested=BackupVerifyConfig,
                                      default=BackupVerifyConfig())

    def _problems(self) -> list[Problem]:
        if not self.enabled and self.verify.enabled:
            # Without backups there is nothing newer to verify, and the Job would need the
            # store settings backup.enabled makes required.
            return [Problem("verify.enabled", True, "needs {0}: it verifies the backups and "
                            "archived binlogs that scheduled backups write", refs=("enabled",))]
        return self._required_when("backup.enabled") if self.enabled else []


@dataclass(frozen=True)
class RestoreConfig(_Validated):
    """A new cluster's primary restored from the backup store (mysql.backup's endpoint)."""

    backup: str | None = _key("backup", _text(_BACKUP_ID, "must be a backup id or latest"),
                              "backup to restore (`latest` or an id); unset: no restore",
                              default=None)
    point_in_time: str | None = _key(
        "pointInTime", _text(_POINT, "must be an RFC 3339 time with a zone "
                             "(2026-12-03T08:00:00Z) or a GTID position (0-1-42)"),
        "replay archived binlogs up to this time or GTID (unset: the backup itself)",
        default=None)


def _mysql_version(values: Mapping[str, Any]) -> str:
    return FLAVORS[values["flavor"]].default_version


@dataclass(frozen=True)
class MySQLConfig(_Validated):
    # The StatefulSet's name; pods are <name>-0 (the primary), <name>-1...
    name: str = _key("name", _cluster_name("orders-db"), "StatefulSet name", default="mysql")
    flavor: Flavor = _key("flavor", _choice(tuple(FLAVORS)), "server flavor: MySQL 8.4.x, "
                          "or MariaDB 10.11.x / 11.4.x", default="mariadb")
    version: str = _key("version", Kind("version", _check_version, "of the flavor"),
                        "server version", derive=_mysql_version, derived=", ".join(
                            f"`{spec.default_version}` ({name})"
                            for name, spec in FLAVORS.items()))
    replicas: int = _key("replicas", _integer(minimum=1, maximum=9),
                         "total pods; `primary` says which ordinal is the primary", default=2)
    storage: str = _key("storage", _QUANTITY_KIND, "data PVC per pod", default="10Gi")
    storage_class: str | None = _key("storageClass", _STORAGE_CLASS, "StorageClass of the "
                                     "data PVCs (unset: the cluster default)", default=None)
    resources: Resources = _key("resources", _OBJECT, "server container", nested=Resources,
                                default=Resources("500m", "1Gi", None, "2Gi"))
    server_image: str = _key("images.server", _PINNED, "server image", derived="pinned per "
                             "flavor and version",
                             derive=lambda v: FLAVORS[v["flavor"]].server_image(v["version"]))
    backup_image: str = _key("images.backup", _PINNED, "backup tool image", derived="pinned "
                             "per flavor and version",
                             derive=lambda v: FLAVORS[v["flavor"]].backup_image(v["version"]))
    # Labels each pod with its role; distroless, no shell (see components/mysql/cluster.py).
    kubectl_image: str = _key("images.kubectl", _PINNED, "image that labels each pod with "
                              "its role", default=KUBECTL_DEFAULT_IMAGE)
    max_replica_lag_seconds: int = _key(
        "maxReplicaLagSeconds", _integer(minimum=1, maximum=86400),
        "a replica is Ready only within this lag", default=30)
    spread: Spread = _key("spread", _choice(SPREADS), "`required`: never two pods on one "
                          "node; `preferred`: if possible", default="preferred")
    # server_id is 32-bit; each cluster takes a block of 1000 ids for its ordinals.
    server_id_base: int | None = _key(
        "serverIdBase", _integer(minimum=1000, maximum=4_294_966_000, multiple_of=1000),
        "first server-id of the cluster's block", default=None,
        derived="hashed from project/stack/namespace/name")
    pvc_retention_when_deleted: Retention = _key(
        "pvcRetention.whenDeleted", _choice(RETENTIONS),
        "StatefulSet PVC retention when it is deleted", default="Retain")
    pvc_retention_when_scaled: Retention = _key(
        "pvcRetention.whenScaled", _choice(RETENTIONS),
        "StatefulSet PVC retention when it is scaled down", default="Retain")
    # MariaDB's maximum (99 days); a larger value would be cut to it without a word.
    binlog_expire_seconds: int = _key(
        "binlogExpireSeconds", _integer(minimum=3600, maximum=BINLOG_EXPIRE_MAX_SECONDS),
        "binary log retention (the maximum is MariaDB's)", default=7 * 86400)
    extra_server_config: tuple[tuple[str, str], ...] = _key(
        "extraServerConfig", Kind("map", lambda v, d, _: check_text_map(
            v, entry=_server_option_problem)),
        "extra server options; any spelling the server would take for an option "
        "replication, durability, the pod's paths and network, or security rely on is "
        "refused (`loose-`/`skip-`/`disable-`/`enable-`/`maximum-` prefixes, `-` or `_`, "
        "case, abbreviations)", default=())
    node_selector: tuple[tuple[str, str], ...] = _key(
        "nodeSelector", Kind("map", lambda v, d, _: check_text_map(
            v, entry=_node_selector_problem)),
        "node selector for the pods (label keys and values)", default=())
    # Namespaces (besides the cluster's own) whose pods may connect to the MySQL port.
    client_namespaces: tuple[str, ...] = _key(
        "clientNamespaces", _NAMESPACES, "other namespaces allowed to reach port 3306",
        default=())
    # A Secret the user manages (Vault, External Secrets, sealed secrets) instead of
    # pulumi-random's passwords; its keys are checked at deploy time, when it is read.
    existing_secret: str | None = _key(
        "credentials.existingSecret", _SECRET_NAME, "Secret you manage with every "
        "`<account>-password` key (docs/mysql.md); unset: passwords from pulumi-random",
        default=None)
    replication_init: ReplicationInitConfig = _key(
        "replicationInit", _OBJECT, "", nested=ReplicationInitConfig,
        default=ReplicationInitConfig())
    tls: MySQLTLSConfig = _key("tls", _OBJECT, "", nested=MySQLTLSConfig,
                               default=MySQLTLSConfig())
    backup: BackupConfig = _key("backup", _OBJECT, "", nested=BackupConfig,
                                default=BackupConfig())
    restore: RestoreConfig = _key("restore", _OBJECT, "", nested=RestoreConfig,
                                  default=RestoreConfig())
    # Switchover and durability (components/mysql/_switchover.py, docs/mysql.md): a changed
    # `primary` is a switchover, run by ReplicationInit under the per-cluster lock.
    primary: int = _key("primary", _integer(minimum=0, maximum=8), "the primary's ordinal; "
                        "changing it is a planned switchover during `pulumi up`", default=0)
    durability: Durability = _key(
        "durability", _choice(DURABILITIES), "`semisync`: a commit waits for "
        "`semisyncWaitCount` replicas' acknowledgement (async again after "
        "`semisyncTimeoutSeconds` without one, shown as drift)", default="async")
    semisync_wait_count: int = _key(
        "semisyncWaitCount", _integer(minimum=1, maximum=8),
        "replicas that acknowledge each commit (MariaDB: exactly 1)", default=1)
    semisync_timeout_seconds: int = _key(
        "semisyncTimeoutSeconds", _integer(minimum=1, maximum=3600),
        "how long a commit waits for acknowledgements before the primary runs async",
        default=10)
    switchover_grace_seconds: int = _key(
        "switchoverGraceSeconds", _integer(minimum=0, maximum=3600),
        "switchover: how long the old primary's client sessions may finish before they are "
        "ended", default=5)
    switchover_timeout_seconds: int = _key(
        "switchoverTimeoutSeconds", _integer(minimum=1, maximum=3600),
        "switchover: how long the candidate may take to apply the old primary's last "
        "commit before the switchover is rolled back", default=30)
    failover: FailoverConfig = _key("failover", _OBJECT, "", nested=FailoverConfig,
                                    default=FailoverConfig())

    def _problems(self) -> list[Problem]:
        store = (self.backup.endpoint, self.backup.bucket, self.backup.credentials_secret)
        if self.restore.backup is not None and None in store:
            return [Problem("restore.backup", self.restore.backup,
                            "a restore reads the store that mysql.backup names: set "
                            "backup.endpoint, bucket and credentialsSecret")]
        if self.restore.point_in_time is not None and self.restore.backup is None:
            return [Problem("restore.point_in_time", self.restore.point_in_time,
                            "needs restore.backup (an id or latest)")]
        init = self.replication_init
        problems = []
        if self.failover.enabled and (not init.enabled or self.replicas < 2):
            problems.append(Problem("failover.enabled", True,
                            f"needs {{0}} (it writes the primary record the arbiter acts on) "
                            f"and at least 2 replicas; got replicationInit.enabled="
                            f"{str(init.enabled).lower()}, replicas={self.replicas}",
                            refs=("replication_init.enabled",)))
        if self.restore.backup is not None and self.flavor != "mariadb":
            problems.append(Problem("restore.backup", self.restore.backup, "restores support "
                                    "MariaDB only so far (no XtraBackup path)"))
        verify_name = f"{self.name}-backup-verify"
        if self.backup.verify.enabled and len(verify_name) > _CRON_JOB_NAME_MAX:
            # The API server refuses longer CronJob names: their Jobs' names add a suffix.
            problems.append(Problem("name", self.name, f"is too long for the verification "
                                    f"CronJob {verify_name!r} ({len(verify_name)} characters, "
                                    f"at most {_CRON_JOB_NAME_MAX}): shorten it to at most "
                                    f"{_CRON_JOB_NAME_MAX - len('-backup-verify')} characters "
                                    "or leave backup.verify off"))
        if self.backup.enabled and self.flavor != "mariadb":
            # The pod scripts refuse it too, but only as a crash-looping sidecar.
            problems.append(Problem("backup.enabled", True, "backups and binlog archiving "
                                    "support MariaDB only so far (no XtraBackup path)"))
        if init.enabled and init.access == "port-forward" and len(init.endpoints) != self.replicas:
            problems.append(Problem(
                "replication_init.endpoints", [str(e) for e in init.endpoints],
                f"port-forward access needs exactly {self.replicas} endpoints "
                "(ordinal 0 first, then each ordinal in order)"))
        return problems + self._topology_problems()

    def _topology_problems(self) -> list[Problem]:
        """What a switchover or semisync needs of the rest of the config."""
        problems = []
        if self.primary >= self.replicas:
            problems.append(Problem(
                "primary", self.primary, f"the cluster has {{0}} = {self.replicas} pod(s): "
                f"ordinals 0..{self.replicas - 1}; switch over to one of them before scaling "
                "down", refs=("replicas",)))
        # Only ReplicationInit moves the primary or sets semisync: without it the keys
        # would be accepted and silently do nothing.
        runs = self.replication_init.enabled and self.replicas > 1
        if self.primary != 0 and not runs and self.primary < self.replicas:
            problems.append(Problem(
                "primary", self.primary, "a switchover is run by ReplicationInit: it needs "
                "{0} true and more than one pod", refs=("replication_init.enabled",)))
        if self.durability == "semisync":
            if not runs:
                problems.append(Problem(
                    "durability", self.durability, "semisync is set by ReplicationInit: it "
                    "needs {0} true and more than one pod", refs=("replication_init.enabled",)))
            if self.flavor == "mariadb" and self.semisync_wait_count != 1:
                problems.append(Problem(
                    "semisync_wait_count", self.semisync_wait_count, "MariaDB's semi-sync "
                    "waits for exactly one replica's acknowledgement: use 1"))
            elif self.semisync_wait_count > self.replicas - 1:
                problems.append(Problem(
                    "semisync_wait_count", self.semisync_wait_count, f"only "
                    f"{self.replicas - 1} replica(s) can acknowledge ({{0}} = {self.replicas})",
                    refs=("replicas",)))
        return problems


@dataclass(frozen=True)
class EtcdTLSConfig(_Validated):
    """Certificates come from Secrets (cert-manager issues them); we never generate keys."""

    enabled: bool = _key("enabled", _BOOLEAN, "peer and client TLS", default=False)
    peer_secret: str | None = _key("peerSecret", _SECRET_NAME,
                                   "cert-manager Secret of the peer certificate", default=None)
    client_secret: str | None = _key(
        "clientSecret", _SECRET_NAME, "cert-manager Secret of the client certificate",
        default=None)

    def _problems(self) -> list[Problem]:
        if self.enabled and not (self.peer_secret and self.client_secret):
            return [Problem("", "enabled without secrets",
                            "tls.enabled needs both peerSecret and clientSecret (cert-manager "
                            "Certificate secrets with tls.crt, tls.key and ca.crt)")]
        return []


@dataclass(frozen=True)
class EtcdSnapshotStoreConfig(ObjectStoreConfig):
    """The object store etcd's snapshots are uploaded to (and restored from): the same
    fields, checks and manifest rule as mysql.backup's (mysqlbackup/catalog.py)."""

    enabled: bool = _key("enabled", _BOOLEAN, "upload every snapshot to the object store "
                         "(manifest last); off: the snapshot PVC only", default=False)
    # The etcd image is distroless (no Python): uploads and fetches run `python -m
    # mysqlbackup` in the backup agent image, which the program passes to EtcdCluster.
    image: str | None = _key("image", _PINNED, "image that runs `python -m mysqlbackup` for "
                             "the upload and the restore's fetch (unset: the backup agent "
                             "image of mysql.version)", default=None)

    def _problems(self) -> list[Problem]:
        return self._required_when("etcd.snapshot.store.enabled") if self.enabled else []


@dataclass(frozen=True)
class EtcdSnapshotConfig(_Validated):
    enabled: bool = _key("enabled", _BOOLEAN, "snapshot CronJob", default=True)
    schedule: str = _key("schedule", Kind("cron", _check_schedule, "cron"), "when it runs",
                         default="0 */6 * * *")
    retain: int = _key("retain", _integer(minimum=1, maximum=1000), "snapshots kept on the "
                       "PVC and, with the store, complete ones in the store", default=8)
    storage: str = _key("storage", _QUANTITY_KIND, "snapshot PVC", default="5Gi")
    store: EtcdSnapshotStoreConfig = _key("store", _OBJECT, "", nested=EtcdSnapshotStoreConfig,
                                          default=EtcdSnapshotStoreConfig())

    def _problems(self) -> list[Problem]:
        if self.store.enabled and not self.enabled:
            return [Problem("store.enabled", True, "uploads the CronJob's snapshots: it needs "
                            "{0} true", refs=("enabled",))]
        return []


@dataclass(frozen=True)
class EtcdRestoreConfig(_Validated):
    """A new etcd cluster created from a snapshot in etcd.snapshot.store."""

    snapshot: str | None = _key("snapshot", _text(_BACKUP_ID, "must be a snapshot id or "
                                                  "latest"),
                                "snapshot every initial member restores before its first "
                                "start (`latest` or an id); unset: no restore", default=None)


@dataclass(frozen=True)
class EtcdMembershipConfig(_Validated):
    """How the EtcdMembership provider reaches the cluster's client API."""

    enabled: bool = _key("enabled", _BOOLEAN, "membership changes through the etcd API",
                         default=True)
    access: Access = _key("access", _choice(ACCESSES), "how EtcdMembership reaches etcd",
                          default="in-cluster")
    endpoints: tuple[Endpoint, ...] = _key("endpoints", _ENDPOINTS,
                                           "port-forward: client endpoints", default=())
    # How long one membership change may wait for etcd (a restarted cluster refuses
    # "member add" for its first 5 seconds).
    timeout_seconds: int = _key("timeoutSeconds", _integer(minimum=10, maximum=3600),
                                "how long one membership change may wait", default=120)
    # Client TLS files on the machine that runs `pulumi up` (client TLS only).
    ca_file: str | None = _key("caFile", _text(), "port-forward: client TLS CA file",
                               default=None)
    cert_file: str | None = _key("certFile", _text(), "port-forward: client certificate file",
                                 default=None)
    key_file: str | None = _key("keyFile", _text(), "port-forward: client key file",
                                default=None)

    def _problems(self) -> list[Problem]:
        problems = []
        if self.key_file and not self.cert_file:
            problems.append(Problem("key_file", self.key_file, "needs membership.certFile as well"))
        if self.enabled and self.access == "port-forward" and not self.endpoints:
            problems.append(Problem("endpoints", [], "port-forward access needs at least one "
                                    "client endpoint"))
        return problems


@dataclass(frozen=True)
class EtcdConfig(_Validated):
    # The StatefulSet's name; pods are <name>-0, <name>-1...
    name: str = _key("name", _cluster_name("locks-etcd"), "StatefulSet name", default="etcd")
    # 1, 3, 5 or 7: an even size tolerates no more failures than the odd size below it,
    # and past 7 (etcd's recommended maximum) every write waits on a larger majority.
    # Scaling between sizes still changes one member at a time, in one `pulumi up`
    # (see components/etcd/_membership.py).
    replicas: int = _key("replicas", _integer(choices=ETCD_SIZES), "members", default=3)
    version: str = _key("version", _text(_ETCD_VERSION, "must be an etcd release 3.5.3 or "
                                         f"later, such as {ETCD_DEFAULT_VERSION} (3.5.0-3.5.2 "
                                         "can corrupt data)", "3.5.3 or later"),
                        "etcd version", default=ETCD_DEFAULT_VERSION)
    image: str = _key("images.etcd", _PINNED, "etcd image", derived="pinned per version",
                      derive=lambda v: f"gcr.io/etcd-development/etcd:v{v['version']}")
    # A pinned busybox: the etcd image is distroless, its start-up script needs a shell.
    shell_image: str = _key("images.shell", _PINNED, "static busybox for the start-up "
                            "script", default=ETCD_SHELL_DEFAULT_IMAGE)
    storage: str = _key("storage", _QUANTITY_KIND, "data PVC per member", default="2Gi")
    storage_class: str | None = _key("storageClass", _STORAGE_CLASS, "StorageClass of the "
                                     "data PVCs (unset: the cluster default)", default=None)
    resources: Resources = _key("resources", _OBJECT, "etcd container", nested=Resources,
                                default=Resources("100m", "256Mi", None, "512Mi"))
    spread: Spread = _key("spread", _choice(SPREADS), "as for MySQL", default="preferred")
    tls: EtcdTLSConfig = _key("tls", _OBJECT, "", nested=EtcdTLSConfig, default=EtcdTLSConfig())
    snapshot: EtcdSnapshotConfig = _key("snapshot", _OBJECT, "", nested=EtcdSnapshotConfig,
                                        default=EtcdSnapshotConfig())
    membership: EtcdMembershipConfig = _key("membership", _OBJECT, "",
                                            nested=EtcdMembershipConfig,
                                            default=EtcdMembershipConfig())
    # Namespaces (besides the cluster's own) whose pods may reach the client port.
    client_namespaces: tuple[str, ...] = _key(
        "clientNamespaces", _NAMESPACES, "other namespaces allowed to reach 2379", default=())
    restore: EtcdRestoreConfig = _key("restore", _OBJECT, "", nested=EtcdRestoreConfig,
                                      default=EtcdRestoreConfig())

    def _problems(self) -> list[Problem]:
        missing = self.snapshot.store.missing_store_fields()
        if self.restore.snapshot is not None and missing:
            return [Problem("restore.snapshot", self.restore.snapshot,
                            "a restore reads the store that etcd.snapshot.store names: set "
                            "its endpoint, bucket and credentialsSecret")]
        return []


@dataclass(frozen=True)
class LocksConfig(_Validated):
    enabled: bool = _key("enabled", _BOOLEAN, "install the Lock CRD and roles", default=False)
    # Deleting the CRD deletes every Lock object; only with force may a held lock go.
    force_delete: bool = _key("forceDelete", _BOOLEAN, "let a destroy delete the CRD while "
                              "locks are held", default=False)
    # ServiceAccounts ("namespace/name") bound to the lock-user ClusterRole.
    users: tuple[str, ...] = _key(
        "users", Kind("text list", lambda v, d, _: check_text_list(
            v, pattern=_USER, allowed_text="must be a list of 'namespace/serviceaccount'")),
        "ServiceAccounts (`namespace/name`) bound to the lock-user role", default=())
    # How long `pulumi up` waits for the CRD's Established condition before failing.
    establish_timeout_seconds: int = _key(
        "establishTimeoutSeconds", _integer(minimum=5, maximum=3600),
        "how long `pulumi up` waits for the CRD to be Established", default=60)


@dataclass(frozen=True)
class MetricsConfig(_Validated):
    """The exporter sidecar and the prometheus-operator objects (components/mysql/_metrics.py).
    ServiceMonitor and PrometheusRule are CRDs of the prometheus-operator: they must exist in
    the cluster before either switch is turned on."""

    enabled: bool = _key("enabled", _BOOLEAN, "a `mysqld_exporter` sidecar in every MySQL pod "
                         "and metrics Services for MySQL and etcd", default=False)
    exporter_image: str = _key("images.exporter", _PINNED, "mysqld_exporter image",
                               default=EXPORTER_DEFAULT_IMAGE)
    scrape_namespaces: tuple[str, ...] = _key(
        "scrapeNamespaces", _NAMESPACES, "namespaces (besides the cluster's own) whose pods "
        "may scrape the metrics ports: where Prometheus runs", default=())
    service_monitor: bool = _key("serviceMonitor.enabled", _BOOLEAN, "ServiceMonitors for "
                                 "MySQL and etcd (prometheus-operator CRD)", default=False)
    prometheus_rule: bool = _key("prometheusRule.enabled", _BOOLEAN, "a PrometheusRule with "
                                 "the cluster's alerts (prometheus-operator CRD)", default=False)
    backup_margin_seconds: int = _key(
        "prometheusRule.backupMarginSeconds", _integer(minimum=60, maximum=86400),
        "alert when the newest backup is older than its schedule plus this", default=3600)
    binlog_archive_max_lag_seconds: int = _key(
        "prometheusRule.binlogArchiveMaxLagSeconds", _integer(minimum=10, maximum=86400),
        "alert when the binary log archive is further behind", default=600)
    etcd_quota_percent: int = _key(
        "prometheusRule.etcdQuotaPercent", _integer(minimum=1, maximum=99),
        "alert when etcd's database is above this share of its quota", default=80)
    lock_held_max_seconds: int = _key(
        "prometheusRule.lockHeldMaxSeconds", _integer(minimum=1, maximum=86400),
        "alert when one distlock lock is held longer", default=300)

    def _problems(self) -> list[Problem]:
        return [Problem(name, True, "needs metrics.enabled: true (the exporter and metrics "
                        "Services it reads)")
                for name in ("service_monitor", "prometheus_rule")
                if getattr(self, name) and not self.enabled]


@dataclass(frozen=True)
class StackConfig(_Validated):
    project: str
    stack: str
    namespace: str = _key(
        "namespace", _text(DNS_LABEL, "must be a namespace name (lowercase RFC 1123 label)"),
        "namespace of every object; must exist", required=(
            "is required: set it with `pulumi config set namespace <name>` "
            "(the default namespace is never used)"))
    mysql: MySQLConfig = _key("mysql", _OBJECT, "", nested=MySQLConfig, default=MySQLConfig())
    etcd: EtcdConfig = _key("etcd", _OBJECT, "", nested=EtcdConfig, default=EtcdConfig())
    locks: LocksConfig = _key("locks", _OBJECT, "", nested=LocksConfig, default=LocksConfig())
    metrics: MetricsConfig = _key("metrics", _OBJECT, "", nested=MetricsConfig,
                                  default=MetricsConfig())

    def _problems(self) -> list[Problem]:
        if self.mysql.name == self.etcd.name:
            return [Problem("etcd.name", self.etcd.name,
                            "must differ from mysql.name: both are StatefulSets in one namespace")]
        return []


# ---------------------------------------------------------------- the YAML reader

def _read(cls: type[T], reader: Reader, defaults: Any = None,
          extra: Mapping[str, Any] | None = None) -> tuple[T, dict[str, str]]:
    """Read ``cls`` from ``reader`` by its declarations; report every problem under its
    Pulumi key. Returns the instance and each field path's Pulumi key ("" is the object)."""
    keys = {"": reader.path}
    given: dict[str, Any] = dict(extra or {})
    children: dict[str, Reader] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        key: Key | None = f.metadata.get(_KEY)
        if key is None:
            continue
        *parents, leaf = key.name.split(".")
        holder = reader
        for depth in range(len(parents)):
            prefix = ".".join(parents[:depth + 1])
            if prefix not in children:
                children[prefix] = holder.child(parents[depth])
            holder = children[prefix]
        keys[f.name] = holder.key(leaf)
        if key.nested is not None:
            nested_default = getattr(defaults, f.name) if defaults is not None else _default(f)
            given[f.name], nested = _read(key.nested, holder.child(leaf), nested_default)
            keys.update({f"{f.name}.{path}" if path else f.name: pulumi_key
                         for path, pulumi_key in nested.items()})
            continue
        raw = holder._get(leaf)
        if raw is not None:
            given[f.name] = raw
        elif key.required:
            reader.errors.add(keys[f.name], None, key.required)
    # A missing required key stays MISSING: reported above, never checked again.
    values, problems = _settle(cls, given, defaults)
    try:
        instance = cls(**values)
    except InvalidConfig as invalid:
        problems += invalid.structured
        instance = invalid.instance  # type: ignore[assignment]
    for problem in problems:
        text = problem.text.format(*(keys[r] for r in problem.refs)) if problem.refs \
            else problem.text
        reader.errors.add(keys[problem.field] + problem.suffix, problem.value, text)
    for child in children.values():
        child.finish()
    reader.finish()
    return instance, keys


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
    config, _ = _read(StackConfig, top, extra={"project": project, "stack": stack})
    errors.raise_if_any()
    return config


def load() -> StackConfig:
    """Read the running program's config through the Pulumi runtime."""
    raw = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    return parse(raw, stack=pulumi.get_stack(), project=pulumi.get_project())


# ---------------------------------------------------------------- the README table

def _shown_default(key: Key, value: Any) -> str:
    if key.required or key.derived:
        return key.derived or "required"
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple):
        return "`{}`" if key.kind.name == "map" else "`[]`"
    if isinstance(value, int):
        return str(value)
    return f"`{value}`"


def _rows(cls: type, prefix: str, defaults: Any) -> list[str]:
    rows = []
    for f in fields(cls):
        key: Key | None = f.metadata.get(_KEY)
        if key is None:
            continue
        name = f"{prefix}{key.name}"
        value = getattr(defaults, f.name) if defaults is not None else _default(f)
        if key.nested is not None:
            rows += _rows(key.nested, f"{name}.", value)
            continue
        meaning = key.doc + (f" ({key.kind.allowed})" if key.kind.allowed else "")
        rows.append(f"| `{name}` | {_shown_default(key, value)} | {meaning} |")
    return rows


def markdown_table() -> str:
    """The README's stack configuration table, generated from the declarations."""
    return "\n".join(["| key | default | meaning |", "|---|---|---|",
                      *_rows(StackConfig, "", None)]) + "\n"


__all__ = [
    "ConfigError",
    "EtcdConfig",
    "LocksConfig",
    "MetricsConfig",
    "MySQLConfig",
    "MySQLTLSConfig",
    "StackConfig",
    "load",
    "markdown_table",
    "parse",
]

if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["--markdown"]:
        raise SystemExit("usage: python -m components.config --markdown")
    sys.stdout.write(markdown_table())
