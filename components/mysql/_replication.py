"""ReplicationInit: a dynamic resource that makes live replication match the stack.

Why a dynamic provider and not a Job or an init script: the pod scripts configure
replication once, from a clone, and cannot see the stack. Rotating the replication
password, repointing a replica that drifted, or noticing that one stopped are stack-level
decisions that should happen, and be previewed, on every ``pulumi up``. A provider that
talks to the servers over pymysql from where ``pulumi up`` runs does exactly that, and
its Read/Diff make ``pulumi refresh`` and ``pulumi preview`` show the live state.

How ``pulumi up`` reaches the servers (``primary`` and ``replicas`` endpoints):

- from a laptop: ``kubectl port-forward pod/<name>-<ordinal> <local>:3306`` per pod and
  endpoints ``127.0.0.1:<local>``;
- from an in-cluster GitOps runner: the pods' DNS names
  (``<name>-<ordinal>.<headless>.<namespace>.svc``), port 3306.

Either way replicas reach the primary through ``source_host`` (its pod DNS), which is
the same for both, so switching between laptop and runner changes no server.

Design rules this module keeps:

- Nothing unpicklable is captured: the provider is stateless, lives in an importable
  module (dill pickles it by reference, the provider process imports current code),
  and every method opens and closes its own connections.
- Numbers arrive from the engine as floats (``3306.0``); every method parses its
  properties through :func:`_parse`, on the rules of :mod:`components._check` that all
  providers share (integral numbers only, full pattern matches, unknowns left alone).
- Passwords are outputs only because Diff and Delete need them; they are secret via
  ``additional_secret_outputs`` and never appear in an error (statements show ``***``).
- Converge changes only what is wrong. It never resets anything on the primary and
  writes nothing there but the replication account. On replicas it stops, repoints and
  starts replication; it never skips transactions or touches data.
- Refusals come first (:func:`_preflight`): a converge that refused a server only after
  repointing another would leave a half-changed cluster, so every server is read and
  judged before the first statement that changes any of them.
- Success means verified: the outputs of a converge are its last read-only look, and
  any drift in it (an IO thread still Connecting, an errant GTID) fails the update. A
  replica that merely applied the primary's position with its IO thread disconnected is
  not caught up.
- Errant GTIDs are reported and refused, never repaired: the only repairs are a reset
  or skipping the primary's transactions, and both lose or hide data.
- ``read_only`` on replicas comes from the replica's server config; the admin account
  deliberately lacks READ ONLY ADMIN/SUPER, so the provider verifies and reports it.
- With ``lock_endpoints`` every converge and delete holds the etcd lock
  ``mysql-cluster/<source_host>:<source_port>/replication`` (distlock), so two runners
  never repoint one replica at once; with ``kubernetes_lock`` instead, the same name as
  a Kubernetes Lock object, the failover arbiter's backend without etcd. Diff and Read
  only read and take no lock.
- A read-only recorded primary is opened only when it holds every GTID a replica
  executed or retrieved: one restarted in place may have dropped a commit they hold,
  and opening it would fork history (:func:`~components.mysql._switchover.primary_behind`).
- Connections use TLS whenever the server offers it (unverified, like pymysql's own
  default); passwords otherwise cross only the port-forward tunnel or the pod network.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import re
import ssl
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pulumi
import pulumi.dynamic
import pymysql
import pymysql.cursors
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    UpdateResult,
)

import distlock
from components._check import HOST, Checker, has_unknowns
from components._wire import whole_number
from components.config import Endpoint, MySQLConfig
from components.mysql._record import (
    KubernetesPodLabels,
    KubernetesRecordStore,
    PrimaryRecord,
    RecordError,
    RecordStore,
    StaleLockToken,
    fence,
    lock_epoch,
)
from components.mysql._replication_sql import (
    DIALECTS,
    EXPORTER_HOST,
    EXPORTER_MAX_CONNECTIONS,
    IDENTITY,
    Desired,
    Dialect,
    GtidSetError,
    Identity,
    Limits,
    ReplicaStatus,
    Session,
    Statement,
    errant_text,
    held_gtids,
    identity_problems,
    missing_gtids,
    parse_identity,
    replica_drift,
    replica_refusals,
    replica_repair,
)
from components.mysql._switchover import (
    Plan,
    Source,
    SwitchoverError,
    make_writable,
    primary_behind,
    switchover,
)
from components.mysql._tls import pymysql_ssl
from components.mysql.flavor import FLAVORS, Flavor

_SECRET_OUTPUTS = ("admin_password", "replication_password", "topology_password",
                   "exporter_password", "kubeconfig")
_INPUT_KEYS = ("flavor", "primary", "replicas", "source_host", "source_port", "admin_user",
               "admin_password", "replication_user", "replication_password",
               "max_lag_seconds", "timeout_seconds", "lock_endpoints", "primary_ordinal",
               "sources", "topology_user", "topology_password", "record_namespace",
               "record_name", "switchover_grace_seconds", "switchover_timeout_seconds",
               "durability", "semisync_wait_count", "semisync_timeout_seconds", "pods",
               "tls_ca_file", "tls_verify_identity", "replication_tls_ca",
               "exporter_user", "exporter_password", "kubeconfig", "context",
               "kubernetes_lock")
_OUTPUT_KEYS = ("replica_status", "primary_gtid_position", "in_sync", "epoch",
                "recorded_primary", "record_fenced", "durability_status", "primary_decision")
_USER = re.compile(r"[A-Za-z0-9_][-A-Za-z0-9_.]*")
# Printable, no quote or backslash: the path lands in a SQL string literal as it is.
_ABSOLUTE_PATH = re.compile(r"/[^'\\\x00-\x1f\x7f]*")
_POD = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
_CONNECT_TIMEOUT = 10
# A blocking GTID wait is cut into slices so a replica whose threads stop while we wait
# is reported at once with its error, not after the whole timeout.
_WAIT_SLICE_SECONDS = 2
# How often a replica that applied the position but whose IO thread is still connecting
# is looked at again (no server-side wait exists for "connected").
_RECONNECT_POLL_SECONDS = 0.2
# A crashed provider keeps the cluster locked this long (etcdctl lock's default too);
# distlock also retries an unreachable etcd for this long before giving up.
_LOCK_TTL_SECONDS = 10


@dataclass(frozen=True)
class ReplicationInitArgs:
    flavor: str                        # "mysql" | "mariadb"
    primary: Endpoint                  # reachable from where `pulumi up` runs
    replicas: tuple[Endpoint, ...]     # same, ordinals 1..n-1 in order
    source_host: str                   # how replicas reach the primary (pod DNS of ordinal 0)
    source_port: int
    admin_user: str
    admin_password: pulumi.Input[str]  # a secret Output
    replication_user: str
    replication_password: pulumi.Input[str]  # a secret Output
    max_lag_seconds: int
    timeout_seconds: int
    lock_endpoints: tuple[str, ...] = ()     # etcd client URLs for the per-cluster lock, if any
    # Switchover (see _switchover.py): the wanted primary, how replicas reach each ordinal,
    # the account topology statements run as, and the record (a ConfigMap) of who is primary.
    primary_ordinal: int = 0
    sources: tuple[Endpoint, ...] = ()
    topology_user: str = ""
    topology_password: pulumi.Input[str] | None = None
    record_namespace: str = ""
    record_name: str = ""
    switchover_grace_seconds: int = 5
    switchover_timeout_seconds: int = 30
    durability: str = "async"              # "async" | "semisync"
    semisync_wait_count: int = 1
    semisync_timeout_seconds: int = 10
    # The pods by ordinal (in record_namespace): their role labels follow the record.
    pods: tuple[str, ...] = ()
    # mysql.tls: the CA file where `pulumi up` runs (connections to the servers then verify
    # their certificates; the host name too when ``tls_verify_identity``), and the CA file on
    # the replicas, which CHANGE MASTER / CHANGE REPLICATION SOURCE then verifies the primary
    # against. Empty: no TLS asked for (pymysql still prefers it when the server offers it).
    tls_ca_file: str = ""
    tls_verify_identity: bool = True
    replication_tls_ca: str = ""
    # metrics.enabled: the exporter sidecar's account, which the primary must have (clusters
    # bootstrapped before metrics existed lack it); empty: not managed.
    exporter_user: str = ""
    exporter_password: pulumi.Input[str] | None = None  # a secret Output
    # The cluster the record and the pod labels are in: the stack's kubernetes:kubeconfig
    # and kubernetes:context (components._kube.stack_cluster), the kubeconfig a secret.
    # None: found as kubectl finds it ($KUBECONFIG, ~/.kube/config, in-cluster).
    kubeconfig: pulumi.Input[str] | None = None
    context: str | None = None
    # Without lock_endpoints: hold the per-cluster lock as a Kubernetes Lock object in
    # record_namespace, the one the failover arbiter takes with its Kubernetes backend.
    kubernetes_lock: bool = False


def switchover_args(config: MySQLConfig, *, sources: tuple[Endpoint, ...],
                    record_namespace: str, record_name: str, pods: tuple[str, ...],
                    topology_user: str, topology_password: pulumi.Input[str]) -> dict[str, Any]:
    """The switchover and durability part of ReplicationInitArgs, from the stack config."""
    return {"primary_ordinal": config.primary, "sources": sources,
            "topology_user": topology_user, "topology_password": topology_password,
            "record_namespace": record_namespace, "record_name": record_name,
            "switchover_grace_seconds": config.switchover_grace_seconds,
            "switchover_timeout_seconds": config.switchover_timeout_seconds,
            "durability": config.durability,
            "semisync_wait_count": config.semisync_wait_count,
            "semisync_timeout_seconds": config.semisync_timeout_seconds, "pods": pods}


class ReplicationError(RuntimeError):
    """Converge, read or delete failed; the message names the server, statement and error."""


def cluster_lock_name(host: str, port: int) -> str:
    """The per-cluster lock every topology change takes (`pulumi up`, the failover arbiter),
    named after ordinal 0's source address as replicas reach it."""
    return f"mysql-cluster/{host}:{port}/replication"


@dataclass(frozen=True)
class _Spec:
    flavor: Flavor
    primary: Endpoint
    replicas: tuple[Endpoint, ...]
    source_host: str
    source_port: int
    admin_user: str
    admin_password: str = field(repr=False)
    replication_user: str
    replication_password: str = field(repr=False)
    max_lag_seconds: int
    timeout_seconds: int
    lock_endpoints: tuple[str, ...]
    primary_ordinal: int = 0
    # Every server by ordinal, and how replicas reach each (only ordinal 0's when absent).
    servers: tuple[Endpoint, ...] = ()
    sources: tuple[Endpoint, ...] = ()
    topology_user: str = ""
    topology_password: str = field(default="", repr=False)
    record_namespace: str = ""
    record_name: str = ""
    switchover_grace_seconds: int = 5
    switchover_timeout_seconds: int = 30
    durability: str = "async"
    semisync_wait_count: int = 1
    semisync_timeout_seconds: int = 10
    pods: tuple[str, ...] = ()
    tls_ca_file: str = ""
    tls_verify_identity: bool = True
    replication_tls_ca: str = ""
    exporter_user: str = ""
    exporter_password: str = field(default="", repr=False)
    kubeconfig: str = field(default="", repr=False)
    context: str = ""
    kubernetes_lock: bool = False
    # The primary of this view: primary/replicas/source_* above are that ordinal's.
    current: int = 0

    def at(self, ordinal: int) -> _Spec:
        """The same cluster seen with ``ordinal`` as its primary."""
        if ordinal == self.current:
            return self
        source = self.sources[ordinal]
        return dataclasses.replace(
            self, primary=self.servers[ordinal],
            replicas=tuple(e for o, e in enumerate(self.servers) if o != ordinal),
            source_host=source.host, source_port=source.port, current=ordinal)

    def replica_ordinal(self, index: int) -> int:
        return index if index < self.current else index + 1

    @property
    def dialect(self) -> Dialect:
        return DIALECTS[self.flavor]

    @property
    def desired(self) -> Desired:
        return Desired(self.source_host, self.source_port, self.replication_user,
                       self.max_lag_seconds)

    @property
    def primary_label(self) -> str:
        return f"primary {self.primary}"

    def replica_label(self, index: int) -> str:
        return f"replica {self.replica_ordinal(index)} ({self.replicas[index]})"

    def server_label(self, ordinal: int) -> str:
        return f"server {ordinal} ({self.servers[ordinal]})"

    @property
    def lock_name(self) -> str:
        # The source address is the cluster's identity as every runner sees it: a laptop
        # and a GitOps runner use different endpoints but the same pod DNS name. Ordinal
        # 0's, wherever the primary is, so every run of one cluster takes one lock.
        first = self.sources[0]
        return cluster_lock_name(first.host, first.port)

    def to_props(self) -> dict[str, Any]:
        first = self.sources[0]
        return {
            "flavor": self.flavor,
            "primary": _endpoint_props(self.servers[0]),
            "replicas": [_endpoint_props(r) for r in self.servers[1:]],
            "source_host": first.host,
            "source_port": first.port,
            "admin_user": self.admin_user,
            "admin_password": self.admin_password,
            "replication_user": self.replication_user,
            "replication_password": self.replication_password,
            "max_lag_seconds": self.max_lag_seconds,
            "timeout_seconds": self.timeout_seconds,
            "lock_endpoints": list(self.lock_endpoints),
            "primary_ordinal": self.primary_ordinal,
            "sources": [_endpoint_props(s) for s in self.sources],
            "topology_user": self.topology_user,
            "topology_password": self.topology_password,
            "record_namespace": self.record_namespace,
            "record_name": self.record_name,
            "switchover_grace_seconds": self.switchover_grace_seconds,
            "switchover_timeout_seconds": self.switchover_timeout_seconds,
            "durability": self.durability,
            "semisync_wait_count": self.semisync_wait_count,
            "semisync_timeout_seconds": self.semisync_timeout_seconds,
            "pods": list(self.pods),
            # As the component sends them: present only with TLS on.
            **({"tls_ca_file": self.tls_ca_file, "tls_verify_identity": self.tls_verify_identity,
                "replication_tls_ca": self.replication_tls_ca}
               if self.tls_ca_file or self.replication_tls_ca else {}),
            # Present only with metrics on, as for TLS.
            **({"exporter_user": self.exporter_user, "exporter_password": self.exporter_password}
               if self.exporter_user else {}),
            **_cluster_props(self.kubeconfig or None, self.context or None),
            **({"kubernetes_lock": True} if self.kubernetes_lock else {}),
        }


def _endpoint_props(endpoint: Endpoint) -> dict[str, Any]:
    return {"host": endpoint.host, "port": endpoint.port}


def _cluster_props(kubeconfig: object, context: str | None) -> dict[str, Any]:
    """Only what is set: a stack without kubernetes:kubeconfig keeps exactly the inputs it
    had (no update on the first up after an upgrade). A changed kubeconfig is an update,
    as for the Lock CRD: Read and Delete then get the new one from the state."""
    return {**({"kubeconfig": kubeconfig} if kubeconfig is not None else {}),
            **({"context": context} if context is not None else {})}


# --- input validation ----------------------------------------------------------------


class _Checker(Checker):
    """The shared input rules plus ReplicationInit's own shapes: endpoints and flavors."""

    def endpoint(self, name: str, value: object) -> Endpoint | None:
        if not self.present(name, value):
            return None
        if not isinstance(value, Mapping):
            self.fail(name, f"must be an object with host and port; got {value!r}")
            return None
        extra = sorted(set(value) - {"host", "port"})
        if extra:
            self.fail(name, f"has unknown keys {extra}; only host and port are allowed")
        host = self.string(f"{name}.host", value.get("host"), pattern=HOST,
                           what="a DNS name or IPv4 address")
        port = self.integer(f"{name}.port", value.get("port"), minimum=1, maximum=65535)
        return Endpoint(host, port) if host and port else None

    def endpoints(self, name: str, value: object) -> list[Endpoint]:
        found = (self.endpoint(f"{name}[{index}]", item)
                 for index, item in enumerate(self.sequence(name, value, "endpoints")))
        return [e for e in found if e is not None]

    def replicas(self, name: str, value: object, primary: Endpoint | None) -> list[Endpoint]:
        replicas: list[Endpoint] = []
        for index, item in enumerate(self.sequence(name, value, "endpoints")):
            endpoint = self.endpoint(f"{name}[{index}]", item)
            if endpoint is None:
                continue
            if endpoint == primary:
                self.fail(f"{name}[{index}]", f"{endpoint} is the primary's endpoint")
            elif endpoint in replicas:
                self.fail(f"{name}[{index}]", f"{endpoint} is listed twice")
            replicas.append(endpoint)
        return replicas

    def urls(self, name: str, value: object) -> list[str]:
        return [self.url(f"{name}[{index}]", url,
                         what="an etcd client URL such as http://etcd-0.etcd:2379")
                for index, url in enumerate(self.sequence(name, value, "URLs"))]


def _topology_fields(check: _Checker, props: Mapping[str, Any], *, flavor: Flavor | None,
                     limits: Any, primary: Endpoint | None, replicas: list[Endpoint],
                     source: tuple[str, int]) -> dict[str, Any]:
    """The switchover and durability inputs, checked; _Spec keyword arguments."""
    source_host, source_port = source
    servers = ([primary] if primary else []) + replicas
    ordinal = check.integer("primary_ordinal", props.get("primary_ordinal", 0),
                            minimum=0, maximum=999)
    if primary is not None and not check.unknown and ordinal >= len(servers):
        check.fail("primary_ordinal", f"got {ordinal}; the cluster has {len(servers)} "
                                      f"server(s): ordinals 0..{len(servers) - 1}")
    sources = check.endpoints("sources", props.get("sources", []))
    if source_host and source_port:
        if not sources:
            sources = [Endpoint(source_host, source_port)]
        elif sources[0] != Endpoint(source_host, source_port):
            check.fail("sources[0]", f"{sources[0]} is not source_host:source_port "
                                     f"{source_host}:{source_port}")
    if sources and len(sources) not in (1, len(servers)):
        check.fail("sources", f"has {len(sources)} endpoints; one per server "
                              f"({len(servers)}) is needed")
    if ordinal and len(sources) != len(servers):
        check.fail("sources", "must list how replicas reach every ordinal for "
                              f"primary_ordinal {ordinal}")
    topology_user = ""
    topology_password = ""
    if props.get("topology_user"):
        topology_user = check.string("topology_user", props.get("topology_user"),
                                     pattern=_USER, max_length=limits.user,
                                     what="an account name")
        topology_password = check.secret("topology_password", props.get("topology_password"),
                                         max_length=1024)
    record_namespace = str(props.get("record_namespace") or "")
    record_name = str(props.get("record_name") or "")
    if bool(record_namespace) != bool(record_name):
        check.fail("record_name", "record_namespace and record_name go together")
    pods = [check.string(f"pods[{i}]", pod, pattern=_POD, max_length=253,
                         what="a pod name (RFC 1123)")
            for i, pod in enumerate(check.sequence("pods", props.get("pods", []), "pod names"))]
    if pods and not record_name:
        check.fail("pods", "labelling the pods follows the primary record: record_name is needed")
    if pods and primary is not None and not check.unknown and len(pods) != len(servers):
        check.fail("pods", f"has {len(pods)} names; one per server ({len(servers)}) is needed")
    grace = check.integer("switchover_grace_seconds", props.get("switchover_grace_seconds", 5),
                          minimum=0, maximum=3600)
    switch_timeout = check.integer("switchover_timeout_seconds",
                                   props.get("switchover_timeout_seconds", 30),
                                   minimum=1, maximum=86400)
    return {"primary_ordinal": ordinal, "servers": tuple(servers), "sources": tuple(sources),
            "topology_user": topology_user, "topology_password": topology_password,
            "record_namespace": record_namespace, "record_name": record_name,
            "switchover_grace_seconds": grace, "switchover_timeout_seconds": switch_timeout,
            "pods": tuple(pods),
            **_durability_fields(check, props, flavor=flavor, replicas=len(replicas))}


def _durability_fields(check: _Checker, props: Mapping[str, Any], *, flavor: Flavor | None,
                       replicas: int) -> dict[str, Any]:
    durability = check.choice("durability", props.get("durability", "async"),
                              ("async", "semisync"))
    wait_count = check.integer("semisync_wait_count", props.get("semisync_wait_count", 1),
                               minimum=1, maximum=8)
    semisync_timeout = check.integer("semisync_timeout_seconds",
                                     props.get("semisync_timeout_seconds", 10),
                                     minimum=1, maximum=3600)
    if durability == "semisync":
        if flavor == "mariadb" and wait_count != 1:
            check.fail("semisync_wait_count", f"got {wait_count}; MariaDB's semi-sync waits "
                                              "for exactly one replica's acknowledgement")
        if wait_count > replicas:
            check.fail("semisync_wait_count", f"got {wait_count}, but the cluster has "
                                              f"{replicas} replica(s)")
        if not props.get("topology_user"):
            check.fail("durability", "semisync needs topology_user (setting it is a "
                                     "privileged topology change)")
    return {"durability": durability or "async", "semisync_wait_count": wait_count,
            "semisync_timeout_seconds": semisync_timeout}


def _parse(props: Mapping[str, Any], *, strict: bool) -> tuple[_Spec | None, list[CheckFailure]]:
    """Validate a property bag; the spec is None when anything is wrong or unknown.

    ``strict`` (Check) also rejects unknown keys; state written by this provider carries
    outputs beside the inputs, so the other methods read leniently.
    """
    check = _Checker()
    flavor = check.choice("flavor", props.get("flavor"), FLAVORS)
    limits = DIALECTS[flavor or "mysql"].limits  # the stricter limits until flavor is known
    primary = check.endpoint("primary", props.get("primary"))
    replicas = check.replicas("replicas", props.get("replicas"), primary)
    source_host = check.string("source_host", props.get("source_host"), pattern=HOST,
                               max_length=limits.host, what="a DNS name or IPv4 address")
    source_port = check.integer("source_port", props.get("source_port"),
                                minimum=1, maximum=65535)
    admin_user = check.string("admin_user", props.get("admin_user"), pattern=_USER,
                              max_length=limits.user, what="an account name")
    replication_user = check.string("replication_user", props.get("replication_user"),
                                    pattern=_USER, max_length=limits.user, what="an account name")
    if admin_user and admin_user == replication_user:
        check.fail("replication_user", "must differ from admin_user: the replication account "
                                       "gets exactly REPLICATION SLAVE and nothing else")
    admin_password = check.secret("admin_password", props.get("admin_password"),
                                  max_length=1024)
    replication_password = check.secret("replication_password",
                                        props.get("replication_password"),
                                        max_length=limits.password)
    max_lag = check.integer("max_lag_seconds", props.get("max_lag_seconds"),
                            minimum=1, maximum=86400)
    timeout = check.integer("timeout_seconds", props.get("timeout_seconds"),
                            minimum=1, maximum=86400)
    lock_endpoints = check.urls("lock_endpoints", props.get("lock_endpoints", []))
    kubernetes_lock = check.boolean("kubernetes_lock", props.get("kubernetes_lock", False))
    tls = _tls_fields(check, props)
    exporter = _exporter_fields(check, props, limits=limits, taken=(admin_user, replication_user))
    kubeconfig, context = check.cluster_access(props)
    topology = _topology_fields(check, props, flavor=flavor, limits=limits, primary=primary,
                                replicas=replicas, source=(source_host, source_port))
    if kubernetes_lock and not topology.get("record_namespace"):
        check.fail("kubernetes_lock", "needs record_namespace: the Lock object lives there, "
                                      "beside the record")
    if strict:
        check.only(props, inputs=_INPUT_KEYS, outputs=_OUTPUT_KEYS, resource="ReplicationInit")
    if check.failures or check.unknown or flavor is None or primary is None:
        return None, check.failures
    return _Spec(flavor, primary, tuple(replicas), source_host, source_port, admin_user,
                 admin_password, replication_user, replication_password, max_lag, timeout,
                 tuple(lock_endpoints), **topology, **tls, **exporter, kubeconfig=kubeconfig,
                 context=context, kubernetes_lock=kubernetes_lock), []


def _tls_fields(check: _Checker, props: Mapping[str, Any]) -> dict[str, Any]:
    """mysql.tls's inputs, checked; _Spec keyword arguments (absent in older state: off).
    The paths go into SQL string literals (the CHANGE MASTER clause), hence no quotes."""
    fields: dict[str, Any] = {
        name: check.string(name, props.get(name) or None, pattern=_ABSOLUTE_PATH,
                           max_length=4096, required=False,
                           what="an absolute file path without quotes or backslashes")
        for name in ("tls_ca_file", "replication_tls_ca")}
    fields["tls_verify_identity"] = check.boolean("tls_verify_identity",
                                                  props.get("tls_verify_identity", True))
    return fields


def _exporter_fields(check: _Checker, props: Mapping[str, Any], *, limits: Limits,
                     taken: tuple[str | None, ...]) -> dict[str, Any]:
    """metrics.enabled's inputs, checked; _Spec keyword arguments (absent: not managed)."""
    user = check.string("exporter_user", props.get("exporter_user") or None, pattern=_USER,
                        max_length=limits.user, required=False, what="an account name")
    if not user:
        return {}
    if user in taken:
        check.fail("exporter_user", "must differ from admin_user and replication_user: the "
                                    "exporter account gets exactly its monitoring privilege")
    password = check.secret("exporter_password", props.get("exporter_password"),
                            max_length=limits.password)
    return {"exporter_user": user, "exporter_password": password}


def _spec(props: Mapping[str, Any]) -> _Spec:
    spec, failures = _parse(props, strict=False)
    if spec is None:
        reasons = "; ".join(f"{f.property} {f.reason}" for f in failures) or "unknown values"
        raise ReplicationError(f"invalid ReplicationInit properties: {reasons}")
    return spec


# --- talking to servers ----------------------------------------------------------------


# pymysql raises RuntimeError when caching_sha2_password needs RSA and `cryptography` is
# missing, and lets some socket errors through unwrapped.
_CONNECT_ERRORS = (pymysql.MySQLError, OSError, RuntimeError)


def _server_message(error: Exception) -> str:
    if isinstance(error, pymysql.MySQLError) and len(error.args) >= 2:
        return f"error {error.args[0]}: {error.args[1]}"
    return str(error)


def _errno(error: Exception) -> int | None:
    first = error.args[0] if error.args else None
    return first if isinstance(first, int) else None


class _Session(Session):
    error = ReplicationError

    def describe(self, error: pymysql.MySQLError) -> str:
        return _server_message(error)


@functools.cache
def _preferred_tls() -> ssl.SSLContext:
    """TLS whenever the server offers it, unverified: what pymysql's default mode does.

    pymysql builds that context per connection by loading the system CA store, which
    it then ignores (no CA means CERT_NONE); that costs ~100 ms per connection and made
    a no-op Diff 0.4 s for two replicas. One context per provider process is enough.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


if TYPE_CHECKING:
    _BaseConnection = pymysql.connections.Connection[Any]
else:  # generic only in the type stubs
    _BaseConnection = pymysql.connections.Connection


class _Connection(_BaseConnection):
    def _create_ssl_ctx(self, sslp: object) -> ssl.SSLContext:
        if sslp == {}:  # pymysql's "preferred" mode: no TLS options were given
            return _preferred_tls()
        context: ssl.SSLContext = super()._create_ssl_ctx(sslp)  # type: ignore[misc]
        return context


def _connect(endpoint: Endpoint, user: str, password: str, read_timeout: int,
             tls: tuple[str, bool] = ("", True)) -> pymysql.connections.Connection[Any]:
    """``tls``: (CA file, verify the host name); no CA file: pymysql's preferred TLS."""
    ca_file, verify_identity = tls
    verified = ({**pymysql_ssl(ca_file), "ssl_verify_identity": verify_identity}
                if ca_file else {})
    return _Connection(host=endpoint.host, port=endpoint.port, user=user, password=password,
                       connect_timeout=_CONNECT_TIMEOUT, read_timeout=read_timeout,
                       write_timeout=read_timeout, autocommit=True, **verified)


@contextlib.contextmanager
def _session(label: str, endpoint: Endpoint, user: str, password: str,
             *, read_timeout: int = 60, tls: tuple[str, bool] = ("", True)
             ) -> Iterator[_Session]:
    try:
        connection = _connect(endpoint, user, password, read_timeout, tls)
    except _CONNECT_ERRORS as error:
        raise ReplicationError(f"{label}: cannot connect as {user!r}: "
                               f"{_server_message(error)}") from None
    try:
        yield _Session(label, connection)
    finally:
        connection.close()


def _admin(spec: _Spec, label: str, endpoint: Endpoint, **kwargs: Any) -> Any:
    return _session(label, endpoint, spec.admin_user, spec.admin_password,
                    tls=_client_tls(spec), **kwargs)


def _client_tls(spec: _Spec) -> tuple[str, bool]:
    return spec.tls_ca_file, spec.tls_verify_identity


def _replication_account_grants(spec: _Spec) -> list[str] | None:
    """Log in to the primary as the replication user; its grants, or None if refused.

    Logging in is the only check of the password that needs no privilege on the mysql
    schema, and an account may always list its own grants.
    """
    label = f"{spec.primary_label} as {spec.replication_user!r}"
    try:
        connection = _connect(spec.primary, spec.replication_user, spec.replication_password,
                              read_timeout=30, tls=_client_tls(spec))
    except _CONNECT_ERRORS as error:
        if _errno(error) == 1045:  # access denied: no such account or another password
            return None
        raise ReplicationError(f"{label}: cannot connect: {_server_message(error)}") from None
    try:
        rows = _Session(label, connection).run(spec.dialect.own_grants)
    finally:
        connection.close()
    return [str(next(iter(row.values()))) for row in rows]


def _account_problems(spec: _Spec) -> list[str]:
    grants = _replication_account_grants(spec)
    if grants is None:
        return [f"{spec.primary_label}: {spec.replication_user!r} cannot log in with the "
                "current replication password (missing account or another password)"]
    if not spec.dialect.grants_exact(grants):
        return [f"{spec.primary_label}: {spec.replication_user!r} holds privileges other than "
                "exactly REPLICATION SLAVE on *.*"]
    return []


def _ensure_replication_account(spec: _Spec, guard: _Guard) -> bool:
    """Make the account exist with the current password and exactly REPLICATION SLAVE.

    Returns whether anything was changed. Each change is a statement on the primary
    that replicates to the replicas; an account already right is left untouched, so a
    no-op run writes nothing to the binary log.
    """
    dialect = spec.dialect
    user, password = spec.replication_user, spec.replication_password
    grants = _replication_account_grants(spec)
    if grants is not None and dialect.grants_exact(grants):
        return False
    guard.check(f"changing {user!r} on the {spec.primary_label}")
    with _admin(spec, spec.primary_label, spec.primary) as primary:
        if grants is None:
            primary.run(dialect.create_user(user, password))
            primary.run(dialect.set_password(user, password))
            grants = _replication_account_grants(spec)
            if grants is None:
                raise ReplicationError(
                    f"{spec.primary_label}: {user!r} still cannot log in after its password "
                    "was set: another account (such as an anonymous ''@host one) shadows it")
        if not dialect.grants_exact(grants):
            primary.run(dialect.revoke_all(user))
            primary.run(dialect.grant_replication(user))
    return True


def _exporter_problems(spec: _Spec) -> list[str]:
    """How the primary's exporter account differs from what bootstrap-users.sh gives it
    (the password aside: no server shows it, so it is set when it changes, see below)."""
    if not spec.exporter_user:
        return []
    dialect, user = spec.dialect, spec.exporter_user
    with _admin(spec, spec.primary_label, spec.primary) as primary:
        row = primary.one(dialect.exporter_limit(user))
        if row is None:
            return [f"{spec.primary_label}: the exporter account {user!r}@{EXPORTER_HOST!r} "
                    "is missing"]
        grants = [str(next(iter(r.values()))) for r in primary.run(dialect.exporter_grants(user))]
    problems = []
    if int(row["max_connections"]) != EXPORTER_MAX_CONNECTIONS:
        problems.append(f"{spec.primary_label}: {user!r} may open {row['max_connections']} "
                        f"connections, not {EXPORTER_MAX_CONNECTIONS}")
    if not dialect.exporter_grants_exact(grants):
        problems.append(f"{spec.primary_label}: {user!r} holds privileges other than exactly "
                        f"{dialect.monitor_privilege} on *.*")
    return problems


def _ensure_exporter_account(spec: _Spec, guard: _Guard, *, rewrite_password: bool) -> None:
    """The exporter sidecar's account on the primary, as bootstrap-users.sh creates it.

    Only on the primary: the replicas get it by replication (they are read-only, and a
    statement run on one would be an errant transaction). Idempotent, and an account already
    right is not touched, so a no-op run writes nothing to the binary log: the password is
    set when the account is created and when ``rewrite_password`` (the Secret's password
    changed, or this resource is new), because no server shows the stored one.
    """
    problems = _exporter_problems(spec)
    if not problems and not rewrite_password:
        return
    dialect, user = spec.dialect, spec.exporter_user
    guard.check(f"changing {user!r} on the {spec.primary_label}")
    with _admin(spec, spec.primary_label, spec.primary) as primary:
        for statement in dialect.exporter_account(user, spec.exporter_password):
            primary.run(statement)
        grants = [str(next(iter(r.values()))) for r in primary.run(dialect.exporter_grants(user))]
        if not dialect.exporter_grants_exact(grants):
            primary.run(dialect.revoke_all(user, EXPORTER_HOST))
            primary.run(dialect.grant_exporter(user))


def _replica_status(session: _Session, dialect: Dialect) -> ReplicaStatus:
    row = session.one(dialect.status)
    variables = session.one(dialect.replica_variables) or {}
    return dialect.parse_status(row, variables)


def _primary_gtids(spec: _Spec) -> tuple[str, str]:
    """The primary's position (what replicas wait for) and every GTID it holds."""
    with _admin(spec, spec.primary_label, spec.primary) as primary:
        position = spec.dialect.position_from(primary.one(spec.dialect.primary_position))
        return position, spec.dialect.executed_set(primary.one(spec.dialect.executed))


def _with_errant(spec: _Spec,
                 statuses: Sequence[ReplicaStatus | None]) -> list[ReplicaStatus | None]:
    """Each replica's status with the GTIDs it holds that the primary does not.

    The primary is read after every replica: what a replica applied from the primary in
    between is then in the primary's set too, so only transactions the primary never
    had are reported.
    """
    _, primary_executed = _primary_gtids(spec)
    result: list[ReplicaStatus | None] = []
    for index, status in enumerate(statuses):
        if status is None:
            result.append(None)
            continue
        try:
            errant = missing_gtids(spec.flavor, status.executed, primary_executed)
        except GtidSetError as error:
            raise ReplicationError(f"{spec.replica_label(index)} or the {spec.primary_label}: "
                                   f"unreadable GTID set: {error}") from None
        result.append(dataclasses.replace(status, errant_gtids=errant))
    return result


def _gtid_refusals(spec: _Spec, statuses: Sequence[ReplicaStatus | None], *,
                   primary_read_only: bool) -> list[str]:
    """Replicas holding GTIDs the primary lacks: errant ones, or, with a read-only primary
    about to be opened (or switched away from), replicas that may hold the only copy of a
    commit it lost (not errant: re-cloning them would lose it)."""
    try:
        checked = _with_errant(spec, statuses)
    except ReplicationError as error:
        return [str(error)]
    if primary_read_only:
        return _primary_behind(spec, checked)
    return [f"{spec.replica_label(index)}: {errant_text(status.errant_gtids)}"
            for index, status in enumerate(checked)
            if status is not None and status.errant_gtids]


def _primary_behind(spec: _Spec, checked: Sequence[ReplicaStatus | None]) -> list[str]:
    """The read-only primary lacks GTIDs a replica executed or retrieved (the primary is
    read after the replicas, as in :func:`_with_errant`)."""
    _, primary_executed = _primary_gtids(spec)
    held = {spec.replica_label(index): held_gtids(status.executed, status.retrieved)
            for index, status in enumerate(checked) if status is not None}
    try:
        return primary_behind(spec.flavor, spec.primary_label, primary_executed, held)
    except GtidSetError as error:
        return [f"a replica or the {spec.primary_label}: unreadable GTID set: {error}"]


_READ_ONLY_HINT = ("It comes from the replica's server config (replica.cnf); the admin "
                   "account cannot change it by design: fix the pod's configuration")


@dataclass(frozen=True)
class _Checked:
    """What the pre-flight found: the server_id each replica endpoint must still reach."""

    replica_server_ids: tuple[int, ...]
    primary_read_only: bool = False


def _identify_replica(spec: _Spec,
                      index: int) -> tuple[Identity, ReplicaStatus | None, list[str]]:
    """Who answers at a replica endpoint; its status only when it speaks our flavor."""
    with _admin(spec, spec.replica_label(index), spec.replicas[index]) as replica:
        identity = parse_identity(replica.one(IDENTITY))
        problems = identity_problems(spec.flavor, identity)
        # The flavor's own statements run only on a server of that flavor.
        status = None if problems else _replica_status(replica, spec.dialect)
    return identity, status, problems


def _preflight(spec: _Spec, *, converging: bool,
               primary_may_be_read_only: bool = False) -> _Checked:
    """Run every refusal on every server before the first statement that changes one.

    Refused: a server that cannot be reached (its checks cannot run), of another flavor
    or an unsupported version, a replica endpoint reaching the primary, another replica
    or another cluster's server (server_id is the primary's + ordinal). Converging also
    refuses a read-only primary, a writable replica and a replica holding errant GTIDs;
    delete only stops replication on replicas, so those do not stop it. One error lists
    every refusal; nothing was changed on any server.
    """
    refusals: list[str] = []
    primary_id = None
    try:
        with _admin(spec, spec.primary_label, spec.primary) as primary:
            primary_id = parse_identity(primary.one(IDENTITY))
    except ReplicationError as error:
        refusals.append(str(error))
    if primary_id is not None:
        refusals += [f"{spec.primary_label}: {p}"
                     for p in identity_problems(spec.flavor, primary_id)]
        if converging and primary_id.read_only and not primary_may_be_read_only:
            refusals.append(f"{spec.primary_label}: read_only is ON: the primary is writable "
                            "by design, so this endpoint may reach a replica")
    statuses: list[ReplicaStatus | None] = []
    seen: dict[int, int] = {}
    for index in range(len(spec.replicas)):
        label = spec.replica_label(index)
        try:
            identity, status, problems = _identify_replica(spec, index)
        except ReplicationError as error:
            refusals.append(str(error))
            statuses.append(None)
            continue
        if primary_id is not None:
            problems += replica_refusals(spec.replica_ordinal(index), identity,
                                         primary_id.server_id, seen,
                                         primary_ordinal=spec.current)
        seen.setdefault(identity.server_id, spec.replica_ordinal(index))
        if converging and not identity.read_only:
            problems.append(f"read_only is OFF (server_id {identity.server_id}). "
                            f"{_READ_ONLY_HINT}")
        if converging and status is not None and status.super_read_only is False:
            problems.append(f"super_read_only is OFF. {_READ_ONLY_HINT}")
        refusals += [f"{label}: {p}" for p in problems]
        statuses.append(status)
    if converging and primary_id is not None and not identity_problems(spec.flavor, primary_id):
        refusals += _gtid_refusals(spec, statuses, primary_read_only=primary_id.read_only
                                   and primary_may_be_read_only)
    if refusals:
        raise ReplicationError("refused before changing anything (nothing was changed on any "
                               "server):\n  - " + "\n  - ".join(refusals))
    return _Checked(tuple(s.server_id for s in statuses if s is not None),
                    primary_read_only=bool(primary_id and primary_id.read_only))


def _same_server(label: str, status: ReplicaStatus, server_id: int) -> None:
    """The endpoint still reaches the server the pre-flight checked (a port-forward can move)."""
    if status.server_id != server_id:
        raise ReplicationError(
            f"{label}: now reaches server_id {status.server_id}, not the {server_id} checked "
            "before any change; nothing was changed on it")


def _repair_replica(spec: _Spec, index: int, guard: _Guard, server_id: int, *,
                    rewrite_password: bool) -> None:
    dialect = spec.dialect
    label = spec.replica_label(index)
    with _admin(spec, label, spec.replicas[index]) as replica:
        status = _replica_status(replica, dialect)
        _same_server(label, status, server_id)
        repair = replica_repair(status, spec.desired, rewrite_password=rewrite_password)
        if not repair.noop:
            guard.check(f"changing {spec.replica_label(index)}")
        if repair.stop:
            replica.run(dialect.stop)
        if repair.set_source:
            replica.run(dialect.change_source(spec.source_host, spec.source_port,
                                              spec.replication_user, spec.replication_password,
                                              spec.replication_tls_ca))
        if repair.start:
            replica.run(dialect.start)


def _wait_caught_up(spec: _Spec, index: int, position: str, deadline: float) -> None:
    """Block until the replica has applied ``position`` with both threads running.

    Applied is not enough: an IO thread still Connecting is not caught up (it is not
    receiving anything). Fails fast when a thread stops with an error.
    """
    dialect = spec.dialect
    label = spec.replica_label(index)
    read_timeout = _WAIT_SLICE_SECONDS + 30
    with _admin(spec, label, spec.replicas[index], read_timeout=read_timeout) as replica:
        while True:
            remaining = deadline - time.monotonic()
            seconds = max(1, min(_WAIT_SLICE_SECONDS, int(remaining)))
            row = replica.one(dialect.wait_for(position, seconds)) or {}
            applied = dialect.wait_reached(row.get("result"))
            status = _replica_status(replica, dialect)
            if applied and status.running:
                return
            if not status.sql_running or status.io_state == "No":
                raise ReplicationError(
                    f"{label}: replication stopped before reaching the primary's position "
                    f"{position!r}: {'; '.join(replica_drift(status, spec.desired))}. The "
                    "provider never skips transactions; fix the cause (or re-clone the replica) "
                    "and run `pulumi up` again")
            if time.monotonic() >= deadline:
                what = ("applied the primary's GTID position {!r}, but is not caught up"
                        if applied else "did not apply the primary's GTID position {!r}")
                problems = replica_drift(status, spec.desired)
                raise ReplicationError(
                    f"{label}: {what.format(position)} within timeout_seconds="
                    f"{spec.timeout_seconds}" + (f": {'; '.join(problems)}" if problems else ""))
            if applied:  # the wait returns at once: pace the look at the IO thread
                time.sleep(min(_RECONNECT_POLL_SECONDS, max(0.0, remaining)))


@dataclass(frozen=True)
class _Observation:
    primary_position: str
    replicas: tuple[dict[str, Any], ...]
    problems: tuple[str, ...]
    durability: dict[str, Any] = field(default_factory=dict)

    def outputs(self) -> dict[str, Any]:
        return {"replica_status": list(self.replicas),
                "primary_gtid_position": self.primary_position,
                "in_sync": not self.problems,
                "durability_status": self.durability}


def _durability_problems(spec: _Spec) -> tuple[dict[str, Any], list[str]]:
    """What the primary really does, and how that differs from the declared durability.

    Never claims semisync while running async: a primary whose replicas did not
    acknowledge within the timeout keeps committing (the documented choice: availability
    over blocking) but reports OFF, and that is drift here.
    """
    with _admin(spec, spec.primary_label, spec.primary) as primary:
        state = spec.dialect.parse_semisync(primary.one(spec.dialect.semisync_state))
    actual = ("semisync" if state.source_enabled and state.source_active
              else "async (semisync enabled, fallen back)" if state.source_enabled
              else "async")
    status = {"declared": spec.durability, "actual": actual,
              "timeout_ms": state.timeout_ms, "wait_count": state.wait_count}
    problems = []
    if spec.durability == "semisync" and actual != "semisync":
        problems.append(
            f"{spec.primary_label}: durability is declared semisync but the primary runs "
            f"{actual}: no {spec.semisync_wait_count} replica(s) acknowledged within "
            f"semisync_timeout_seconds={spec.semisync_timeout_seconds} (or semisync is off)")
    if spec.durability == "async" and state.source_enabled:
        problems.append(f"{spec.primary_label}: semisync is enabled but durability is async")
    return {**status, "drift": problems}, problems


def _ensure_durability(spec: _Spec, guard: _Guard) -> None:
    """Primary waits for acknowledgements (or not); every replica acknowledges (or not)."""
    dialect = spec.dialect
    semisync = spec.durability == "semisync"
    servers = _TopologyServers(spec)
    for ordinal in range(len(spec.servers)):
        with _admin(spec, spec.server_label(ordinal), spec.servers[ordinal]) as server:
            state = dialect.parse_semisync(server.one(dialect.semisync_state))
        statements: list[Statement] = []
        if ordinal == spec.current:
            want_timeout = spec.semisync_timeout_seconds * 1000
            if state.source_enabled != semisync or (semisync and (
                    state.timeout_ms != want_timeout
                    or state.wait_count != spec.semisync_wait_count)):
                statements += dialect.semisync_source(semisync, spec.semisync_timeout_seconds,
                                                      spec.semisync_wait_count)
        else:
            if state.source_enabled:  # a demoted primary must not wait for anyone
                statements += dialect.semisync_source(False, 0, 0)
            if state.replica_enabled != semisync:
                statements += dialect.semisync_replica(semisync)
        if not statements:
            continue
        guard.check(f"changing durability on {spec.server_label(ordinal)}")
        with servers.session(ordinal) as server:
            for statement in statements:
                server.run(statement)


def _observe(spec: _Spec, *, with_position: bool) -> _Observation:
    """Read-only look at the cluster: the account, each replica, the primary's GTIDs."""
    problems: list[str] = []
    try:
        problems += _account_problems(spec)
        problems += _exporter_problems(spec)
    except ReplicationError as error:
        problems.append(str(error))
    statuses: list[ReplicaStatus | None] = []
    errors: dict[int, str] = {}
    for index in range(len(spec.replicas)):
        try:
            with _admin(spec, spec.replica_label(index), spec.replicas[index]) as replica:
                statuses.append(_replica_status(replica, spec.dialect))
        except ReplicationError as error:
            statuses.append(None)
            errors[index] = str(error)
    position = ""
    try:
        # After the replicas (see _with_errant); the position comes from the same read.
        statuses = _with_errant(spec, statuses)
        if with_position:
            position, _ = _primary_gtids(spec)
    except ReplicationError as error:
        problems.append(str(error))
    durability: dict[str, Any] = {}
    try:
        durability, durability_problems = _durability_problems(spec)
        problems += durability_problems
    except ReplicationError as error:
        problems.append(str(error))
    replicas = []
    for index, status in enumerate(statuses):
        base: dict[str, Any] = {"ordinal": spec.replica_ordinal(index),
                                "endpoint": str(spec.replicas[index])}
        if status is None:
            unreachable = errors[index]
            replicas.append({**base, "reachable": False, "error": unreachable,
                             "drift": [unreachable]})
            problems.append(unreachable)
            continue
        drift = replica_drift(status, spec.desired)
        replicas.append({**base, "reachable": True, "error": "", **status.to_output(),
                         "drift": drift})
        problems += [f"{spec.replica_label(index)}: {d}" for d in drift]
    return _Observation(position, tuple(replicas), tuple(problems), durability)


class _Guard:
    """Checked before every change: a converge that lost its lock stops changing things.

    MySQL cannot check a fencing token, so the lock's lost signal is the fence: after a
    lost lease (keepalive failed, provider paused past the TTL) no further statement that
    changes a server is sent, and the error says what was and was not done.
    """

    def __init__(self, lock: distlock.Lock | None = None, backend: str = "") -> None:
        self.lock = lock
        self.backend = backend  # the lock service's kind, which numbers the epochs

    @property
    def token(self) -> int | None:
        """The lock's fencing token, from which a topology change's epoch is numbered."""
        return None if self.lock is None else self.lock.token

    def check(self, before: str) -> None:
        if self.lock is None:
            return
        try:
            self.lock.check()
        except distlock.DistlockError as error:
            raise ReplicationError(f"{error}; stopped before {before}. Run `pulumi up` again "
                                   "to finish converging") from None


@dataclass(frozen=True)
class _LockService:
    backend: str                    # distlock.open_backend's name
    options: distlock.BackendOptions
    where: str                      # for errors: which service


def _lock_service(spec: _Spec) -> _LockService | None:
    """Where the per-cluster lock lives: etcd with ``lock_endpoints``; else, with
    ``kubernetes_lock``, a Lock object beside the record (the failover arbiter's
    Kubernetes backend takes the same name there, so the two never act at once); else
    nowhere (a single runner: only the record's compare-and-swap guards it).

    The Kubernetes lock is reached through the same cluster access as the record store
    (:func:`_record_store`), so the lock and the record are in one cluster."""
    identity = "pulumi-replication-init"
    if spec.lock_endpoints:
        return _LockService("etcd", distlock.BackendOptions(
            endpoints=spec.lock_endpoints, ttl=_LOCK_TTL_SECONDS, identity=identity),
            f"an etcd session on {', '.join(spec.lock_endpoints)}")
    if spec.kubernetes_lock:
        return _LockService("kubernetes", distlock.BackendOptions(
            ttl=_LOCK_TTL_SECONDS, namespace=spec.record_namespace,
            kubeconfig=spec.kubeconfig or None, context=spec.context or None,
            identity=identity),
            f"Kubernetes Lock objects in namespace {spec.record_namespace!r}")
    return None


def _holder(backend: distlock.LockBackend, name: str) -> str:
    """Who holds ``name`` now, for the error of a wait that timed out (best effort)."""
    try:
        state = backend.inspect(name)
    except distlock.DistlockError:
        return ""
    return f"; held by {state.holder}" if state.holder else ""


@contextlib.contextmanager
def _cluster_lock(spec: _Spec) -> Iterator[_Guard]:
    """Hold the per-cluster lock so two runners (`pulumi up`, the failover arbiter) never
    change the topology at once (:func:`_lock_service` says where it lives).

    The wait for the lock is bounded by ``timeout_seconds``; the converge's own timeout
    starts once the lock is held.
    """
    service = _lock_service(spec)
    if service is None:
        yield _Guard()
        return
    try:
        backend = distlock.open_backend(service.backend, service.options)
    except (distlock.DistlockError, ValueError) as error:
        raise ReplicationError(f"lock {spec.lock_name!r}: cannot open {service.where}: "
                               f"{error}") from None
    try:
        lock = backend.lock(spec.lock_name)
        try:
            lock.acquire(timeout=spec.timeout_seconds)
        except distlock.LockTimeout as error:
            raise ReplicationError(
                f"lock {spec.lock_name!r}: {error}{_holder(backend, spec.lock_name)} "
                "(another `pulumi up` is converging this cluster, or the failover arbiter "
                "is moving its primary); nothing was changed") from None
        except distlock.DistlockError as error:
            raise ReplicationError(f"lock {spec.lock_name!r}: {error}; nothing was "
                                   "changed") from None
        try:
            yield _Guard(lock, service.backend)
        finally:
            # If the service cannot be told now, the lease ends after its TTL; the
            # converge's own outcome (or error) is what the user must see, not this.
            with contextlib.suppress(distlock.DistlockError):
                lock.release()
    finally:
        with contextlib.suppress(distlock.DistlockError):
            backend.close()


class _TopologyServers:
    """The switchover engine's view of the servers: by ordinal, as the topology account."""

    def __init__(self, spec: _Spec) -> None:
        self.spec = spec

    def session(self, ordinal: int, *, read_timeout: int = 60) -> Any:
        return _session(self.label(ordinal), self.spec.servers[ordinal],
                        self.spec.topology_user, self.spec.topology_password,
                        read_timeout=read_timeout, tls=_client_tls(self.spec))

    def label(self, ordinal: int) -> str:
        return self.spec.server_label(ordinal)


def _record_store(spec: _Spec) -> RecordStore | None:
    if not spec.record_name:
        return None
    return KubernetesRecordStore(spec.record_namespace, spec.record_name,
                                 kubeconfig=spec.kubeconfig or None,
                                 context=spec.context or None)


def _pod_labels(spec: _Spec) -> KubernetesPodLabels | None:
    if not spec.pods:
        return None
    return KubernetesPodLabels(spec.record_namespace, spec.pods,
                               kubeconfig=spec.kubeconfig or None, context=spec.context or None)


def _label_drift(spec: _Spec, record: PrimaryRecord | None) -> list[str]:
    """Pods whose role labels do not match the record (what the Services would get wrong)."""
    labels = _pod_labels(spec)
    if labels is None or record is None:
        return []
    try:
        found = labels.read()
    except RecordError as error:
        return [str(error)]
    return [f"pod {spec.pods[o]}: labels {found[o]} but the record wants "
            f"{labels.wanted(record.primary, record.epoch, o)}"
            for o in sorted(found)
            if found[o] != labels.wanted(record.primary, record.epoch, o)]


def _ensure_labels(spec: _Spec, claim: _Claim) -> None:
    """Move the role labels to the record's primary, fenced by this run's epoch."""
    labels = _pod_labels(spec)
    if labels is None or claim.store is None or claim.record is None:
        return
    if not _label_drift(spec, claim.record):
        return
    try:
        # Under the record's epoch, which is this run's once it wrote the record: an up
        # that only adopts the record (or fixes labels) claims no epoch, and only checks
        # that nobody moved the record since it read it. Labels ahead of the record would
        # read as drift forever.
        fence(claim.store, claim.record.epoch, "moving the role labels")
        labels.move(claim.record.primary, claim.record.epoch)
    except RecordError as error:
        raise ReplicationError(str(error)) from None


@dataclass(frozen=True)
class PrimaryDecision:
    """What an up does with the primary: keep it, adopt the record's, or switch over.

    ``target`` is the ordinal the up leaves as primary; ``message`` is what preview and
    the error texts say about it.
    """

    kind: str        # "keep" | "adopt" | "switchover"
    target: int
    message: str


def decide_primary(*, previous: int | None, wanted: int, recorded: int) -> PrimaryDecision:
    """Whose primary wins: the record's unless the user changed ``mysql.primary``.

    The arbiter moves the primary without touching the stack, so the stack's
    ``primary_ordinal`` is the user's last wish, not the truth. An up whose
    ``primary_ordinal`` equals the last applied one (``previous``) has no new wish and
    adopts the recorded primary: moving it back would undo a failover the user never
    asked to undo. Only a changed ``primary_ordinal`` (or a first up, ``previous`` None)
    is a request to switch over.
    """
    if previous is not None and previous == wanted:
        if recorded == wanted:
            return PrimaryDecision("keep", recorded, f"the primary stays ordinal {recorded}")
        return PrimaryDecision(
            "adopt", recorded,
            f"the record names ordinal {recorded} as primary (moved by the failover arbiter "
            f"or another run) while mysql.primary is still {wanted}: adopting it, no "
            f"switchover; set mysql.primary to {recorded} to match")
    if recorded == wanted:
        return PrimaryDecision("keep", recorded, f"the primary stays ordinal {recorded}")
    return PrimaryDecision("switchover", wanted,
                           f"switchover from ordinal {recorded} to {wanted} (mysql.primary "
                           "changed)")


@dataclass(frozen=True)
class _Claim:
    store: RecordStore | None
    record: PrimaryRecord | None
    current: int   # the recorded primary (ordinal 0 before any record)
    epoch: int     # this run's epoch


def _claim(spec: _Spec, guard: _Guard, seen_epoch: int | None) -> _Claim:
    """Read the record and decide this run's epoch; refuse a run that is out of date.

    ``seen_epoch``: the epoch this stack's state last saw. A record at another epoch was
    changed by another run since: this run's plan was made on a topology that is gone.
    """
    store = _record_store(spec)
    if store is None:
        if spec.primary_ordinal:
            raise ReplicationError(
                f"primary_ordinal {spec.primary_ordinal}: a switchover needs the primary "
                "record (record_namespace/record_name); nothing was changed")
        return _Claim(None, None, 0, 0)
    try:
        record = store.read()
    except RecordError as error:
        raise ReplicationError(f"{error}; nothing was changed") from None
    if record is not None and seen_epoch is not None and record.epoch != seen_epoch:
        raise ReplicationError(
            f"{store.describe()} is at epoch {record.epoch} ({record.describe()}), but this "
            f"stack last saw epoch {seen_epoch}: another run "
            "changed the topology since; nothing was changed. Run `pulumi refresh`, then "
            "`pulumi up` again")
    # A fenced record (a switchover that did not finish) names the ordinal that holds
    # every acknowledged commit: this run starts from it.
    current = record.authority if record is not None else 0
    if current >= len(spec.servers):
        raise ReplicationError(
            f"{store.describe()} names primary ordinal {current}, but the stack has "
            f"{len(spec.servers)} server(s): switch over to a lower ordinal before scaling "
            "down; nothing was changed")
    recorded = record.epoch if record is not None else 0
    if guard.token is None:
        return _Claim(store, record, current, recorded + 1)
    try:
        # Numbered as the failover arbiter numbers its epochs under the same lock.
        epoch = lock_epoch(guard.backend, guard.token, recorded)
    except StaleLockToken as error:
        raise ReplicationError(f"{store.describe()}: {error} (this run's lock token): "
                               "refused; nothing was changed") from None
    return _Claim(store, record, current, epoch)


def _candidate_refusals(view: _Spec, target: int) -> list[str]:
    """Why ordinal ``target`` cannot become the primary of ``view``'s cluster."""
    index = target if target < view.current else target - 1
    label = view.replica_label(index)
    with _admin(view, label, view.replicas[index]) as replica:
        status = _replica_status(replica, view.dialect)
    [checked] = _with_errant(view, [status])
    assert checked is not None
    return [f"switchover candidate {label}: {problem}"
            for problem in replica_drift(checked, view.desired)]


def _switch(spec: _Spec, view: _Spec, claim: _Claim, target: int) -> _Claim:
    """Move the primary from ``claim.current`` to ``target``."""
    assert claim.store is not None
    refusals = _candidate_refusals(view, target)
    if not spec.topology_user:
        refusals.append("a switchover needs topology_user (the account that may set "
                        "read_only and end sessions)")
    if refusals:
        raise ReplicationError("switchover refused before changing anything:\n  - "
                               + "\n  - ".join(refusals))
    source = spec.sources[target]
    plan = Plan(old=claim.current, new=target, ordinals=tuple(range(len(spec.servers))),
                epoch=claim.epoch, grace_seconds=spec.switchover_grace_seconds,
                timeout_seconds=spec.switchover_timeout_seconds,
                topology_user=spec.topology_user,
                source=Source(source.host, source.port, spec.replication_user,
                              spec.replication_password))
    labels = _pod_labels(spec)
    try:
        outcome = switchover(_TopologyServers(spec), spec.dialect, plan, claim.store,
                             record=claim.record,
                             labeller=labels.move if labels is not None else None)
    except (SwitchoverError, RecordError) as error:
        raise ReplicationError(str(error)) from None
    return dataclasses.replace(claim, record=outcome.record, current=target)


def _open_primary(spec: _Spec, claim: _Claim) -> _Claim:
    """The recorded primary is read-only (every server starts so): this epoch opens it."""
    assert claim.store is not None
    if not spec.topology_user:
        raise ReplicationError(f"{spec.server_label(claim.current)}: the recorded primary is "
                               "read-only and making it writable needs topology_user")
    try:
        record = claim.store.write(claim.current, claim.epoch, claim.record)
        make_writable(_TopologyServers(spec), spec.dialect, claim.current, claim.epoch,
                      claim.store)
    except RecordError as error:
        raise ReplicationError(str(error)) from None
    return dataclasses.replace(claim, record=record)


def _converge(spec: _Spec, *, rewrite_password: bool, old: _Spec | None,
              seen_epoch: int | None = None) -> dict[str, Any]:
    """Make the live cluster match ``spec``, wait for the replicas, return the outputs.

    ``old``: the last applied spec; an unchanged ``primary_ordinal`` adopts the record's
    primary (:func:`decide_primary`), and then an epoch moved since (a failover) is no
    reason to refuse: this run changes no primary.
    """
    previous = old.primary_ordinal if old is not None else None
    adopting = previous == spec.primary_ordinal
    with _cluster_lock(spec) as guard:
        # The converge's own deadline starts once the lock is held.
        deadline = time.monotonic() + spec.timeout_seconds
        claim = _claim(spec, guard, None if adopting else seen_epoch)
        decision = decide_primary(previous=previous, wanted=spec.primary_ordinal,
                                  recorded=claim.current)
        view = spec.at(claim.current)
        checked = _preflight(view, converging=True,
                             primary_may_be_read_only=claim.store is not None)
        if decision.kind == "switchover":
            claim = _switch(spec, view, claim, decision.target)
            view = spec.at(claim.current)
            checked = _preflight(view, converging=True)
        elif checked.primary_read_only:
            claim = _open_primary(spec, claim)
        elif claim.store is not None and (claim.record is None or claim.record.fenced):
            # No record yet, or one fenced by a run that died before demoting anybody.
            claim = dataclasses.replace(claim, record=claim.store.write(
                claim.current, claim.epoch, claim.record))
        account_changed = _ensure_replication_account(view, guard)
        _ensure_exporter_account(view, guard, rewrite_password=(
            old is None or old.exporter_password != spec.exporter_password))
        failures: list[str] = []
        healthy: list[int] = []
        for index in range(len(view.replicas)):
            try:
                # A changed account means the replicas' stored password may be stale too.
                _repair_replica(view, index, guard, checked.replica_server_ids[index],
                                rewrite_password=rewrite_password or account_changed)
                healthy.append(index)
            except ReplicationError as error:
                failures.append(str(error))
        # After the repairs: a replica's IO thread restarts to pick its setting up.
        _ensure_durability(view, guard)
        try:
            _ensure_labels(spec, claim)
        except ReplicationError as error:
            failures.append(str(error))
        position, _ = _primary_gtids(view)
        for index in healthy:
            try:
                _wait_caught_up(view, index, position, deadline)
            except ReplicationError as error:
                failures.append(str(error))
        if (not failures and old is not None
                and old.replication_user != spec.replication_user):
            # Every replica now uses the new account; the old one is ours to remove.
            guard.check(f"dropping {old.replication_user!r}")
            with _admin(view, view.primary_label, view.primary) as primary:
                primary.run(spec.dialect.drop_user(old.replication_user))
        observation = _observe(view, with_position=False)
    # An up never succeeds with drift in its own outputs (a write on a replica, a thread
    # that stopped since its wait ended): what it reports is what it verified.
    failures = failures or list(observation.problems)
    if failures:
        raise ReplicationError("replication did not converge:\n  - " + "\n  - ".join(failures))
    return {**observation.outputs(), "primary_gtid_position": position,
            **_record_outputs(claim.record), "primary_decision": decision.message}


def _record_outputs(record: PrimaryRecord | None) -> dict[str, Any]:
    return {"epoch": record.epoch if record else 0,
            "recorded_primary": record.authority if record else 0,
            "record_fenced": bool(record and record.fenced)}


def _record_outputs_of(olds: Mapping[str, Any]) -> dict[str, Any]:
    """The record outputs a state holds, in :func:`_record_outputs`'s shape."""
    return {"epoch": whole_number(olds.get("epoch") or 0) or 0,
            "recorded_primary": whole_number(olds.get("recorded_primary") or 0) or 0,
            "record_fenced": bool(olds.get("record_fenced"))}


def _seen_epoch(olds: Mapping[str, Any]) -> int | None:
    return whole_number(olds.get("epoch")) if olds.get("epoch") else None


def _recorded(spec: _Spec) -> PrimaryRecord | None:
    store = _record_store(spec)
    if store is None:
        return None
    try:
        return store.read()
    except RecordError as error:
        raise ReplicationError(str(error)) from None


def _teardown(spec: _Spec) -> None:
    """Stop and forget replication on every replica, then drop the replication account."""
    dialect = spec.dialect
    failures: list[str] = []
    with _cluster_lock(spec) as guard:
        checked = _preflight(spec, converging=False)
        for index in range(len(spec.replicas)):
            label = spec.replica_label(index)
            try:
                with _admin(spec, label, spec.replicas[index]) as replica:
                    status = _replica_status(replica, dialect)
                    _same_server(label, status, checked.replica_server_ids[index])
                    if status.configured:
                        guard.check(f"stopping {spec.replica_label(index)}")
                        replica.run(dialect.stop)
                        replica.run(dialect.reset_all)
            except ReplicationError as error:
                failures.append(str(error))
        if failures:
            # The account stays while any replica may still use it; a retry finishes.
            raise ReplicationError("could not stop replication:\n  - " + "\n  - ".join(failures))
        guard.check(f"dropping {spec.replication_user!r}")
        with _admin(spec, spec.primary_label, spec.primary) as primary:
            primary.run(dialect.drop_user(spec.replication_user))


class _ReplicationProvider(pulumi.dynamic.ResourceProvider):
    """Stateless: every method parses its properties and opens its own connections."""

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        spec, failures = _parse(news, strict=True)
        inputs = spec.to_props() if spec is not None else dict(news)
        inputs.pop("__provider", None)
        return CheckResult(inputs, failures)

    def create(self, props: dict[str, Any]) -> CreateResult:
        spec = _spec(props)
        outputs = _converge(spec, rewrite_password=True, old=None)
        return CreateResult(f"replication-{uuid.uuid4().hex[:12]}",
                            {**spec.to_props(), **outputs})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        if has_unknowns(news):
            return DiffResult(changes=True, replaces=[], delete_before_replace=False)
        old, _ = _parse(olds, strict=False)
        spec = _spec(news)
        # Never a replacement: a moved primary, adopted or switched to, is an update.
        if old != spec:
            return DiffResult(changes=True, replaces=[], delete_before_replace=False)
        # Inputs unchanged: the live cluster decides. Unreachable servers count as drift,
        # so the update runs and reports the connection error with its context.
        record = _recorded(spec)
        current = record.authority if record else 0
        decision = decide_primary(previous=old.primary_ordinal, wanted=spec.primary_ordinal,
                                  recorded=current)
        if (decision.kind == "switchover" or current >= len(spec.servers)
                or (record is not None and record.fenced)):
            return DiffResult(changes=True, replaces=[], delete_before_replace=False)
        # An adopted primary the state has not seen yet is an output change (epoch,
        # recorded_primary), applied by an update that switches nothing over.
        drifted = bool(_record_outputs(record) != _record_outputs_of(olds)
                       or _observe(spec.at(current), with_position=False).problems
                       or _label_drift(spec, record))
        return DiffResult(changes=drifted, replaces=[], delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        spec = _spec(news)
        old, _ = _parse(olds, strict=False)
        rewrite = old is None or old.replication_password != spec.replication_password
        outputs = _converge(spec, rewrite_password=rewrite, old=old,
                            seen_epoch=_seen_epoch(olds))
        return UpdateResult({**spec.to_props(), **outputs})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        spec = _spec(props)
        record = _recorded(spec)
        current = record.authority if record else 0
        view = spec.at(current) if current < len(spec.servers) else spec
        observation = _observe(view, with_position=True)
        return ReadResult(id_, {**spec.to_props(), **observation.outputs(),
                                **_record_outputs(record)})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        _teardown(_spec(props))


class ReplicationInit(pulumi.dynamic.Resource, module="mysql", name="ReplicationInit"):
    """Replication of one MySQLCluster, converged and verified on every `pulumi up`.

    Outputs: ``replica_status`` (per replica, in ordinal order: threads, lag, GTID
    position, last errors, read_only and a ``drift`` list), ``primary_gtid_position``
    (what the replicas were waited for), ``in_sync``, and the record's
    ``recorded_primary`` and ``epoch``: an up with an unchanged ``primary_ordinal``
    adopts the recorded primary (the arbiter's, after a failover) instead of moving the
    primary back; set ``mysql.primary`` to ``recorded_primary`` to make the stack say so.
    """

    replica_status: pulumi.Output[list[dict[str, Any]]]
    primary_gtid_position: pulumi.Output[str]
    in_sync: pulumi.Output[bool]
    # The record's primary and epoch: after a failover, what to set mysql.primary to.
    recorded_primary: pulumi.Output[int]
    epoch: pulumi.Output[int]

    def __init__(self, name: str, args: ReplicationInitArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        props: dict[str, Any] = {
            "flavor": args.flavor,
            "primary": _endpoint_props(args.primary),
            "replicas": [_endpoint_props(r) for r in args.replicas],
            "source_host": args.source_host,
            "source_port": args.source_port,
            "admin_user": args.admin_user,
            "admin_password": pulumi.Output.secret(args.admin_password),
            "replication_user": args.replication_user,
            "replication_password": pulumi.Output.secret(args.replication_password),
            "max_lag_seconds": args.max_lag_seconds,
            "timeout_seconds": args.timeout_seconds,
            "lock_endpoints": list(args.lock_endpoints),
            "primary_ordinal": args.primary_ordinal,
            "sources": [_endpoint_props(s) for s in args.sources],
            "topology_user": args.topology_user,
            "record_namespace": args.record_namespace,
            "record_name": args.record_name,
            "switchover_grace_seconds": args.switchover_grace_seconds,
            "switchover_timeout_seconds": args.switchover_timeout_seconds,
            "durability": args.durability,
            "semisync_wait_count": args.semisync_wait_count,
            "semisync_timeout_seconds": args.semisync_timeout_seconds,
            "pods": list(args.pods),
            # Only when TLS is on: a stack without it keeps exactly the inputs it had.
            **({"tls_ca_file": args.tls_ca_file, "tls_verify_identity": args.tls_verify_identity,
                "replication_tls_ca": args.replication_tls_ca}
               if args.tls_ca_file or args.replication_tls_ca else {}),
            **_cluster_props(pulumi.Output.secret(args.kubeconfig)
                             if args.kubeconfig is not None else None, args.context),
            # Only when set, for the same reason.
            **({"kubernetes_lock": True} if args.kubernetes_lock else {}),
            **dict.fromkeys(_OUTPUT_KEYS),
        }
        if args.topology_password is not None:
            props["topology_password"] = pulumi.Output.secret(args.topology_password)
        if args.exporter_user:
            props["exporter_user"] = args.exporter_user
            props["exporter_password"] = pulumi.Output.secret(args.exporter_password)
        secret_opts = pulumi.ResourceOptions(additional_secret_outputs=list(_SECRET_OUTPUTS))
        super().__init__(_ReplicationProvider(), name, props,
                         pulumi.ResourceOptions.merge(opts, secret_opts))


__all__ = ["PrimaryDecision", "ReplicationError", "ReplicationInit", "ReplicationInitArgs",
           "decide_primary"]
