"""The arbiter's and the agent's settings: one JSON file, passwords in files beside it.

Why a file and not flags or environment: the component renders it into a ConfigMap from
the same stack config that builds the StatefulSet (one source for ordinals, addresses
and account names), and passwords stay in mounted Secret files, never in argv, env or
the ConfigMap. Every problem is reported at once, naming the key, before anything runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.mysql._replication_sql import DIALECTS, Dialect

LOCK_BACKENDS = ("etcd", "kubernetes")
DURABILITIES = ("async", "semisync")


class ConfigError(ValueError):
    """The configuration is unusable; the message lists every problem."""


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class FailoverSettings:
    ttl_seconds: float = 5.0
    checks: int = 3
    period_seconds: float = 1.0
    max_lag_seconds: int = 30
    # How long a candidate may take to apply what it had retrieved before it is given up.
    apply_timeout_seconds: float = 30.0


@dataclass(frozen=True)
class Config:
    flavor: str
    servers: tuple[Address, ...]      # how the arbiter and agents reach each ordinal
    sources: tuple[Address, ...]      # how replicas reach each ordinal (pod DNS)
    topology_user: str
    topology_password: str
    replication_user: str
    replication_password: str
    record_namespace: str
    record_name: str
    status_name: str                  # ConfigMap the arbiter reports its state in
    lock_backend: str
    lock_endpoints: tuple[str, ...]
    lock_namespace: str | None
    lock_name: str                    # the per-cluster lock `pulumi up` takes too
    leader_lock_name: str
    failover: FailoverSettings
    durability: str = "async"
    semisync_timeout_seconds: int = 10
    semisync_wait_count: int = 1
    pods: tuple[str, ...] = ()        # pod names by ordinal, for the role labels
    role_label: str = "mysql-cluster.io/role"
    kubeconfig: str | None = None

    @property
    def dialect(self) -> Dialect:
        return DIALECTS[self.flavor]  # type: ignore[index]

    def label(self, ordinal: int) -> str:
        return f"server {ordinal} ({self.servers[ordinal]})"


class _Reader:
    """Reads typed values out of the decoded JSON, collecting problems instead of raising."""

    def __init__(self, data: dict[str, Any], base: Path) -> None:
        self.data = data
        self.base = base
        self.problems: list[str] = []

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        node: Any = self.data
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                if default is ...:
                    self.problems.append(f"{key}: required")
                return None if default is ... else default
            node = node[part]
        if isinstance(node, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            self.problems.append(f"{key}: got {node!r}; expected {_kind_name(kind)}")
            return None if default is ... else default
        if not isinstance(node, kind):
            self.problems.append(f"{key}: got {node!r}; expected {_kind_name(kind)}")
            return None if default is ... else default
        return node

    def number(self, key: str, default: float, low: float, high: float) -> float:
        value = self.get(key, (int, float), default)
        if value is not None and not low <= value <= high:
            self.problems.append(f"{key}: got {value!r}; must be between {low:g} and {high:g}")
        return float(value if value is not None else default)

    def secret_file(self, key: str) -> str:
        path = self.get(key, str)
        if path is None:
            return ""
        file = (self.base / path) if not Path(path).is_absolute() else Path(path)
        try:
            text = file.read_text().strip()
        except OSError as error:
            self.problems.append(f"{key}: cannot read {file}: {error.strerror}")
            return ""
        if not text:
            self.problems.append(f"{key}: {file} is empty (passwords are never empty)")
        return text

    def addresses(self, key: str, default: Any = ...) -> tuple[Address, ...]:
        items = self.get(key, list, default)
        found: list[Address] = []
        for index, item in enumerate(items or []):
            host = item.get("host") if isinstance(item, dict) else None
            port = item.get("port") if isinstance(item, dict) else None
            if not isinstance(host, str) or not host or isinstance(port, bool) \
                    or not isinstance(port, int) or not 0 < port < 65536:
                self.problems.append(f"{key}[{index}]: got {item!r}; expected "
                                     "{{\"host\": NAME, \"port\": 1-65535}}")
                continue
            found.append(Address(host, port))
        return tuple(found)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join({"int": "a whole number", "float": "a number", "str": "a string",
                        "list": "a list", "bool": "true/false", "dict": "an object"}
                       .get(k.__name__, k.__name__) for k in kinds)


def parse(data: Any, base: Path) -> Config:
    """A :class:`Config` from decoded JSON; ``base`` resolves relative password files."""
    if not isinstance(data, dict):
        raise ConfigError(f"arbiter configuration: expected a JSON object, got {data!r}")
    r = _Reader(data, base)
    flavor = r.get("flavor", str, "mariadb")
    if flavor not in DIALECTS:
        r.problems.append(f"flavor: got {flavor!r}; expected one of {', '.join(DIALECTS)}")
    servers = r.addresses("servers")
    if not servers:
        r.problems.append("servers: at least one server is needed")
    sources = r.addresses("sources", []) or servers
    if len(sources) != len(servers):
        r.problems.append(f"sources: {len(sources)} given for {len(servers)} servers")
    backend = r.get("lock.backend", str, "etcd")
    if backend not in LOCK_BACKENDS:
        r.problems.append(f"lock.backend: got {backend!r}; expected one of "
                          f"{', '.join(LOCK_BACKENDS)}")
    endpoints = tuple(r.get("lock.endpoints", list, []) or [])
    if backend == "etcd" and not endpoints:
        r.problems.append("lock.endpoints: the etcd backend needs at least one client URL")
    durability = r.get("durability", str, "async")
    if durability not in DURABILITIES:
        r.problems.append(f"durability: got {durability!r}; expected one of "
                          f"{', '.join(DURABILITIES)}")
    failover = FailoverSettings(
        ttl_seconds=r.number("failover.ttl_seconds", 5, 1, 300),
        checks=int(r.number("failover.checks", 3, 1, 100)),
        period_seconds=r.number("failover.period_seconds", 1, 0.1, 60),
        max_lag_seconds=int(r.number("failover.max_lag_seconds", 30, 0, 86400)),
        apply_timeout_seconds=r.number("failover.apply_timeout_seconds", 30, 1, 3600))
    pods = tuple(r.get("pods", list, []) or [])
    if pods and len(pods) != len(servers):
        r.problems.append(f"pods: {len(pods)} names given for {len(servers)} servers")
    config = Config(
        flavor=flavor, servers=servers, sources=sources,
        topology_user=r.get("topology_user", str) or "",
        topology_password=r.secret_file("topology_password_file"),
        replication_user=r.get("replication_user", str) or "",
        replication_password=r.secret_file("replication_password_file"),
        record_namespace=r.get("record.namespace", str) or "",
        record_name=r.get("record.name", str) or "",
        status_name=r.get("status_name", str, "") or "",
        lock_backend=backend, lock_endpoints=tuple(str(e) for e in endpoints),
        lock_namespace=r.get("lock.namespace", str, None),
        lock_name=r.get("lock.name", str) or "",
        leader_lock_name=r.get("lock.leader_name", str) or "",
        failover=failover, durability=durability,
        semisync_timeout_seconds=int(r.number("semisync_timeout_seconds", 10, 1, 3600)),
        semisync_wait_count=int(r.number("semisync_wait_count", 1, 1, 8)),
        pods=tuple(str(p) for p in pods),
        role_label=r.get("role_label", str, "mysql-cluster.io/role"),
        kubeconfig=r.get("kubeconfig", str, None))
    if failover.ttl_seconds < 3 * failover.period_seconds:
        r.problems.append(f"failover.ttl_seconds: got {failover.ttl_seconds:g}; must be at "
                          f"least 3 x period_seconds ({3 * failover.period_seconds:g}): the "
                          "agent demotes after ttl - 2 periods without a confirmation")
    if r.problems:
        raise ConfigError(f"arbiter configuration ({len(r.problems)} problem(s)):\n  - "
                          + "\n  - ".join(r.problems))
    return config


def load(path: Path) -> Config:
    try:
        data = json.loads(path.read_text())
    except OSError as error:
        raise ConfigError(f"arbiter configuration {path}: cannot read: {error.strerror}") from None
    except json.JSONDecodeError as error:
        raise ConfigError(f"arbiter configuration {path}: not JSON: {error}") from None
    return parse(data, path.parent)
