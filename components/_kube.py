"""Kubernetes building blocks every component in this package shares.

Why a module of small functions rather than a base class: the MySQL and etcd components
differ in almost everything except *policy*: how objects are labelled, how a pod is
locked down, how replicas are spread over nodes and how many may be disrupted at once.
Keeping that policy here means a security fix (say, a stricter seccomp profile) lands
in every StatefulSet at once, and the unit tests of each component can assert the same
shapes.

Everything returns plain dicts in Pulumi's Python spelling (``run_as_non_root``); the
Pulumi SDK translates those keys to the Kubernetes wire names, and the manifests the
mocks record come back in Kubernetes spelling (``runAsNonRoot``).

The shared helpers for what every component derives (volume mounts, container resources,
hashes of the files a pod runs and of a stack's identity) live here too, so the two
StatefulSets cannot drift apart in how they compute them.

Labels follow the Kubernetes recommended set (``app.kubernetes.io/*``). Selectors use
only the labels that never change over an object's life (name, instance, component):
a StatefulSet's selector is immutable, so a label carrying the version must never be
part of it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import pulumi
import pulumi_kubernetes as k8s

if TYPE_CHECKING:
    # Only for annotations: components.config must import without pulumi_kubernetes (the
    # provider process reads it), so this module never imports it at run time.
    from components.config import Resources

# How a StatefulSet's pods spread over nodes (see topology_spread). The stack config
# checks values against components.config.SPREADS, which a test keeps equal to this.
Spread = Literal["required", "preferred", "none"]

PART_OF = "mysql-cluster"
MANAGED_BY = "pulumi"
HOSTNAME_TOPOLOGY = "kubernetes.io/hostname"
ZONE_TOPOLOGY = "topology.kubernetes.io/zone"

_core = k8s.core.v1


@dataclass(frozen=True)
class AppLabels:
    """The recommended ``app.kubernetes.io`` labels of one component instance.

    ``name`` is the application (``mysql``, ``etcd``), ``instance`` the unique name of this
    deployment of it (the component's resource name), ``component`` its role in the
    architecture (``database``, ``lock-store``), ``version`` the software version.
    """

    name: str
    instance: str
    component: str
    version: str

    def selector(self) -> dict[str, str]:
        """The immutable subset: safe for StatefulSet, Service and PDB selectors."""
        return {
            "app.kubernetes.io/name": self.name,
            "app.kubernetes.io/instance": self.instance,
            "app.kubernetes.io/component": self.component,
        }

    def all(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """Every label for an object's metadata (selector labels plus version and owner)."""
        return {
            **self.selector(),
            "app.kubernetes.io/version": _label_value(self.version),
            "app.kubernetes.io/part-of": PART_OF,
            "app.kubernetes.io/managed-by": MANAGED_BY,
            **(extra or {}),
        }


def _label_value(text: str) -> str:
    # Label values allow [-A-Za-z0-9_.], at most 63 characters; image tags may not fit.
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:63]
    return cleaned.strip("-_.") or "unknown"


def metadata(name: str, namespace: str, labels: AppLabels, *,
             extra_labels: Mapping[str, str] | None = None,
             annotations: Mapping[str, str] | None = None) -> k8s.meta.v1.ObjectMetaArgsDict:
    """ObjectMeta with an explicit name: we never rely on Pulumi auto-naming for objects
    that scripts, DNS names or other components refer to by name."""
    meta: dict[str, Any] = {
        "name": name, "namespace": namespace, "labels": labels.all(extra_labels)}
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def pod_security_context(*, user: int, group: int) -> _core.PodSecurityContextArgsDict:
    """Pod-level hardening (restricted Pod Security Standard).

    ``fs_group`` makes mounted volumes group-writable for ``group``, so every container of
    the pod (server, backup tool, init steps) can share the data volume even when their
    images declare different users. ``OnRootMismatch`` avoids a recursive chown of a large
    data volume on every restart.
    """
    return {
        "run_as_non_root": True,
        "run_as_user": user,
        "run_as_group": group,
        "fs_group": group,
        "fs_group_change_policy": "OnRootMismatch",
        "seccomp_profile": {"type": "RuntimeDefault"},
    }


def container_security_context(
    *, read_only_root_filesystem: bool = True
) -> _core.SecurityContextArgsDict:
    """Container-level hardening: no privilege escalation, no capabilities, no writes to the
    image (writable paths are emptyDirs declared explicitly by the component)."""
    return {
        "run_as_non_root": True,
        "allow_privilege_escalation": False,
        "privileged": False,
        "read_only_root_filesystem": read_only_root_filesystem,
        "capabilities": {"drop": ["ALL"]},
        "seccomp_profile": {"type": "RuntimeDefault"},
    }


def topology_spread(
    spread: Spread, selector: Mapping[str, str]
) -> list[_core.TopologySpreadConstraintArgsDict]:
    """Spread pods over zones and nodes.

    ``required`` and ``preferred`` both *prefer* spreading over zones and nodes
    (``ScheduleAnyway``): a zone spread that refuses to schedule would leave a cluster on
    a single-zone platform unable to start. The hard one-pod-per-node rule of
    ``required`` is expressed by :func:`anti_affinity`, because a topology spread
    constraint only bounds the skew between nodes; it does not forbid two pods on one.
    ``matchLabelKeys`` makes a rolling update count only the pods of the same revision.
    """
    if spread == "none":
        return []
    return [
        {
            "max_skew": 1,
            "topology_key": key,
            "when_unsatisfiable": "ScheduleAnyway",
            "label_selector": {"match_labels": dict(selector)},
            "match_label_keys": ["controller-revision-hash"],
        }
        for key in (ZONE_TOPOLOGY, HOSTNAME_TOPOLOGY)
    ]


def anti_affinity(spread: Spread, selector: Mapping[str, str]) -> _core.AffinityArgsDict | None:
    """``required``: never two pods of this instance on one node (a node failure then costs
    at most one replica or one etcd member). Pods stay Pending when nodes run out; that
    is the point of asking for it."""
    if spread != "required":
        return None
    return {
        "pod_anti_affinity": {
            "required_during_scheduling_ignored_during_execution": [
                {
                    "topology_key": HOSTNAME_TOPOLOGY,
                    "label_selector": {"match_labels": dict(selector)},
                }
            ]
        }
    }


def place(spec: dict[str, Any], spread: Spread, selector: Mapping[str, str],
          node_selector: Sequence[tuple[str, str]] = ()) -> None:
    """Set the scheduling fields of a pod spec in place: topology spread and anti-affinity
    per ``spread``, and the node selector."""
    constraints = topology_spread(spread, selector)
    if constraints:
        spec["topology_spread_constraints"] = constraints
    affinity = anti_affinity(spread, selector)
    if affinity:
        spec["affinity"] = affinity
    if node_selector:
        spec["node_selector"] = dict(node_selector)


def field_env(name: str, field_path: str) -> _core.EnvVarArgsDict:
    """An env var from the downward API (``metadata.name``, ``metadata.namespace``...)."""
    return {"name": name, "value_from": {"field_ref": {"field_path": field_path}}}


def value_env(name: str, value: str | int) -> _core.EnvVarArgsDict:
    return {"name": name, "value": str(value)}


def data_claim_template(labels: AppLabels, storage: str,
                        storage_class: str | None) -> _core.PersistentVolumeClaimArgsDict:
    """A StatefulSet's ``data`` volumeClaimTemplate (ReadWriteOnce, one per pod).

    Selector labels only: any change to a claim template forces the StatefulSet to be
    replaced, and the full label set carries the version, which changes on upgrades.
    """
    spec: dict[str, Any] = {
        "access_modes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": storage}},
    }
    if storage_class:
        spec["storage_class_name"] = storage_class
    return {"metadata": {"name": "data", "labels": labels.selector()}, "spec": spec}


def namespace_clients(client_namespaces: Sequence[str]
                      ) -> list[k8s.networking.v1.NetworkPolicyPeerArgsDict]:
    """NetworkPolicy peers for a client port: every pod of the object's own namespace,
    plus every pod of each listed namespace (a GitOps runner, applications elsewhere)."""
    peers: list[k8s.networking.v1.NetworkPolicyPeerArgsDict] = [{"pod_selector": {}}]
    peers += [{"namespace_selector": {"match_labels": {"kubernetes.io/metadata.name": ns}}}
              for ns in client_namespaces]
    return peers


def empty_dir(name: str, *, memory: bool = False,
              size_limit: str | None = None) -> _core.VolumeArgsDict:
    """A scratch volume; ``memory`` keeps secrets-bearing files (client option files) off
    disk."""
    source: dict[str, Any] = {}
    if memory:
        source["medium"] = "Memory"
    if size_limit:
        source["size_limit"] = size_limit
    return {"name": name, "empty_dir": source}


def pod_disruption_budget(resource_name: str, *, name: str, namespace: str, labels: AppLabels,
                          max_unavailable: int,
                          opts: pulumi.ResourceOptions) -> k8s.policy.v1.PodDisruptionBudget:
    """A PDB allowing ``max_unavailable`` voluntary disruptions (drains, evictions).

    ``AlwaysAllow`` for unhealthy pods: evicting a pod that is not Ready cannot reduce
    availability, and a crash-looping pod must never block a node drain forever.
    """
    spec: k8s.policy.v1.PodDisruptionBudgetSpecArgsDict = {
        "max_unavailable": max_unavailable,
        "selector": {"match_labels": labels.selector()},
        "unhealthy_pod_eviction_policy": "AlwaysAllow",
    }
    return k8s.policy.v1.PodDisruptionBudget(
        resource_name, metadata=metadata(name, namespace, labels), spec=spec, opts=opts)


__all__ = [
    "HOSTNAME_TOPOLOGY",
    "MANAGED_BY",
    "PART_OF",
    "ZONE_TOPOLOGY",
    "AppLabels",
    "anti_affinity",
    "container_security_context",
    "data_claim_template",
    "empty_dir",
    "field_env",
    "metadata",
    "namespace_clients",
    "place",
    "pod_disruption_budget",
    "pod_security_context",
    "topology_spread",
    "value_env",
]


def mount(name: str, path: str, *, read_only: bool = False,
          sub_path: str | None = None) -> _core.VolumeMountArgsDict:
    volume_mount: dict[str, Any] = {"name": name, "mount_path": path, "read_only": read_only}
    if sub_path:
        volume_mount["sub_path"] = sub_path
    return volume_mount


def requirements(resources: Resources) -> _core.ResourceRequirementsArgsDict:
    """Container requests and limits; a limit left unset is omitted, not sent empty."""
    spec: dict[str, Any] = {
        "requests": {"cpu": resources.requests_cpu, "memory": resources.requests_memory}}
    limits = {k: v for k, v in (("cpu", resources.limits_cpu),
                                ("memory", resources.limits_memory)) if v}
    if limits:
        spec["limits"] = limits
    return spec


def files_hash(files: Mapping[str, str]) -> str:
    """sha256 hex of named files, in name order. Put in a pod template's annotations, it
    rolls the pods whenever a script or config they run changes."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + files[name].encode() + b"\0")
    return digest.hexdigest()


def stack_cluster() -> tuple[pulumi.Output[str] | None, str | None]:
    """The ``kubernetes:kubeconfig`` (a secret: it may carry credentials) and
    ``kubernetes:context`` that pulumi-kubernetes' default provider is configured with.

    Why the dynamic providers need them: they cannot borrow that provider's connection, and
    a provider that found the cluster through ``$KUBECONFIG`` instead would, for a user with
    the kubeconfig in stack config, reach another cluster than the stack's objects (or none).
    None where unset: then both find the cluster as kubectl does."""
    config = pulumi.Config("kubernetes")
    return config.get_secret("kubeconfig"), config.get("context")


def stack_digest(project: str, stack: str, namespace: str, name: str) -> bytes:
    """sha256 of one component instance's identity: stable across runs and machines and
    distinct per stack, for values that must not collide between clusters (etcd's
    cluster token, MySQL's server-id block) without anything to keep in state."""
    return hashlib.sha256(f"{project}/{stack}/{namespace}/{name}".encode()).digest()


def metrics_service(resource_name: str, *, name: str, namespace: str, labels: AppLabels,
                    port: int, service_monitor: bool,
                    opts: pulumi.ResourceOptions,
                    extra_ports: Sequence[tuple[str, int]] = ()) -> None:
    """A headless Service naming every pod's ``metrics`` port (and ``extra_ports``, named
    container ports of other exporters in the pod), and (``service_monitor``) the
    prometheus-operator ServiceMonitor that scrapes them. Prometheus labels each series with
    ``job`` = the Service's name, which is what the alert rules select on
    (components/mysql/_metrics.py). Headless with ``publishNotReadyAddresses``: a pod whose
    database is not ready is exactly the one whose metrics matter."""
    ports = [("metrics", port), *extra_ports]
    k8s.core.v1.Service(
        resource_name,
        metadata=metadata(name, namespace, labels),
        spec={"cluster_ip": "None", "publish_not_ready_addresses": True,
              "selector": labels.selector(),
              "ports": [{"name": port_name, "port": number, "target_port": port_name,
                         "protocol": "TCP"} for port_name, number in ports]},
        opts=opts)
    if service_monitor:
        k8s.apiextensions.CustomResource(
            f"{resource_name}-monitor",
            api_version="monitoring.coreos.com/v1",
            kind="ServiceMonitor",
            metadata=metadata(name, namespace, labels),
            spec={"selector": {"matchLabels": labels.selector()},
                  "namespaceSelector": {"matchNames": [namespace]},
                  "endpoints": [{"port": port_name, "interval": "30s"}
                                for port_name, _ in ports]},
            opts=opts)
