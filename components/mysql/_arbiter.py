"""The failover arbiter in the cluster: a Deployment of 2, its RBAC, and the fencing agent.

Why a Deployment of two and not an agent beside each MySQL pod deciding among
themselves: the decision needs a view of every server and one actor, and the actor must
not share fate with the primary it judges. Agents that elect each other from inside the
MySQL pods would lose a vote with every MySQL pod that dies, and with three pods one
lost node takes a third of the electorate with it; a pod that is also the primary's
neighbour sees a partition from the wrong side. Two arbiter replicas on other nodes
(spread like the database) elect a leader through distlock on etcd, so one can be lost
without a gap longer than the lock's TTL; two, not more, because only one ever acts.
What *must* run beside each server is the fencing (the Patroni rule: a primary cut off
from everyone must stop itself), so that part is a small sidecar, ``python -m arbiter
agent``, in every MySQL pod.

RBAC is limited to what each writes: the arbiter gets ``get``/``update`` on the record
and its status ConfigMap (by name; ``create`` for the status, which it makes on first
use and which RBAC cannot limit by name), ``patch`` on the cluster's own pods (the role
labels), ``create`` on events; the agent only ``get`` on the record. Nothing else, and
no access to Secrets: passwords reach both as mounted files of the cluster's Secret.

The JSON configuration both read is built here by :func:`arbiter_config` from the same
names the StatefulSet uses, and the unit tests parse it with the arbiter's own loader.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components import _kube
from components._kube import mount
from components.config import FailoverConfig
from components.mysql import credentials

CONFIG_DIR = "/etc/mysql-cluster/arbiter"
SECRETS_DIR = "/run/secrets/mysql-cluster-arbiter"
ARBITER_CONFIG = "arbiter.json"
AGENT_CONFIG = "agent.json"
# The arbiter image's non-root user (deploy/arbiter/Dockerfile).
ARBITER_UID = 1000
# Keys of the cluster's credentials Secret the arbiter reads: the topology account
# (bootstrap-users.sh: read_only, sessions, replication statements) and the replication one.
TOPOLOGY_SECRET_KEY = credentials.secret_key("topology")
REPLICATION_SECRET_KEY = credentials.secret_key("replication")


@dataclass(frozen=True)
class ArbiterPlan:
    """Everything the arbiter objects need, from the cluster's own names."""

    cluster: str                     # the StatefulSet's name
    namespace: str
    flavor: str
    pods: tuple[str, ...]            # pod names by ordinal
    hosts: tuple[str, ...]           # pod DNS names by ordinal (how everyone reaches them)
    port: int
    secret: str                      # the cluster's credentials Secret
    record: str                      # the primary record's ConfigMap
    topology_user: str
    replication_user: str
    lock_endpoints: tuple[str, ...]  # etcd; empty: the Kubernetes lock backend
    lock_name: str                   # the lock `pulumi up` (ReplicationInit) takes
    failover: FailoverConfig
    role_label: str
    durability: str = "async"
    semisync_timeout_seconds: int = 10

    @property
    def name(self) -> str:
        return f"{self.cluster}-arbiter"

    @property
    def agent_account(self) -> str:
        return f"{self.cluster}-fencing-agent"

    @property
    def status(self) -> str:
        return f"{self.record}-failover"


def arbiter_config(plan: ArbiterPlan, *, agent: bool = False) -> dict[str, Any]:
    """The JSON both programs read (:mod:`arbiter._config`); the agent's reaches its own
    server on the pod's loopback."""
    failover = plan.failover
    servers = [{"host": "127.0.0.1" if agent else host, "port": plan.port}
               for host in plan.hosts]
    return {
        "flavor": plan.flavor,
        "servers": servers,
        "sources": [{"host": host, "port": plan.port} for host in plan.hosts],
        "topology_user": plan.topology_user,
        "topology_password_file": f"{SECRETS_DIR}/{TOPOLOGY_SECRET_KEY}",
        "replication_user": plan.replication_user,
        "replication_password_file": f"{SECRETS_DIR}/{REPLICATION_SECRET_KEY}",
        "record": {"namespace": plan.namespace, "name": plan.record},
        "status_name": plan.status,
        "lock": {"backend": "etcd" if plan.lock_endpoints else "kubernetes",
                 "endpoints": list(plan.lock_endpoints), "namespace": plan.namespace,
                 "name": plan.lock_name, "leader_name": f"{plan.lock_name}/arbiter"},
        "failover": {"ttl_seconds": failover.ttl_seconds, "checks": failover.checks,
                     "period_seconds": failover.period_seconds,
                     "max_lag_seconds": failover.max_lag_seconds},
        "durability": plan.durability,
        "semisync_timeout_seconds": plan.semisync_timeout_seconds,
        "pods": list(plan.pods),
        "role_label": plan.role_label,
    }


def arbiter_rules(plan: ArbiterPlan) -> list[k8s.rbac.v1.PolicyRuleArgsDict]:
    rules: list[k8s.rbac.v1.PolicyRuleArgsDict] = [
        {"api_groups": [""], "resources": ["configmaps"], "verbs": ["get", "update"],
         "resource_names": [plan.record, plan.status]},
        {"api_groups": [""], "resources": ["configmaps"], "verbs": ["create"]},
        {"api_groups": [""], "resources": ["pods"], "verbs": ["get", "patch"],
         "resource_names": list(plan.pods)},
        {"api_groups": [""], "resources": ["events"], "verbs": ["create"]},
    ]
    if not plan.lock_endpoints:
        from distlock.crd import GROUP, PLURAL  # noqa: PLC0415

        rules += [{"api_groups": [GROUP], "resources": [PLURAL],
                   "verbs": ["get", "list", "watch", "create"]},
                  {"api_groups": [GROUP], "resources": [f"{PLURAL}/status"],
                   "verbs": ["get", "update", "patch"]}]
    return rules


def agent_rules(plan: ArbiterPlan) -> list[k8s.rbac.v1.PolicyRuleArgsDict]:
    return [{"api_groups": [""], "resources": ["configmaps"], "verbs": ["get"],
             "resource_names": [plan.record]}]


def _volumes(arbiter: str, secret: str) -> list[k8s.core.v1.VolumeArgsDict]:
    return [
        {"name": "arbiter-config", "config_map": {"name": arbiter, "default_mode": 0o444}},
        {"name": "arbiter-secrets", "secret": {
            "secret_name": secret, "default_mode": 0o440,
            "items": [{"key": k, "path": k}
                      for k in (TOPOLOGY_SECRET_KEY, REPLICATION_SECRET_KEY)]}},
    ]


def add_agent(pod_spec: dict[str, Any], *, cluster: str, secret: str, image: str,
              api_volume: str) -> None:
    """Add the fencing sidecar to the MySQL pod template, in place.

    ``api_volume``: the pod's service-account token volume (the pod does not
    automount one); the agent reads the record with it.
    """
    arbiter = f"{cluster}-arbiter"
    pod_spec["containers"].append({
        "name": "fencing-agent",
        "image": image,
        "command": ["python", "-m", "arbiter", "agent", "--config",
                    f"{CONFIG_DIR}/{AGENT_CONFIG}"],
        "env": [_kube.field_env("POD_INDEX",
                                "metadata.labels['apps.kubernetes.io/pod-index']")],
        "volume_mounts": [mount("arbiter-config", CONFIG_DIR, read_only=True),
                          mount("arbiter-secrets", SECRETS_DIR, read_only=True),
                          mount(api_volume, "/var/run/secrets/kubernetes.io/serviceaccount",
                                read_only=True)],
        "resources": {"requests": {"cpu": "10m", "memory": "48Mi"},
                      "limits": {"memory": "128Mi"}},
        "security_context": _kube.container_security_context(),
    })
    pod_spec["volumes"] = [*pod_spec["volumes"], *_volumes(arbiter, secret)]


class Arbiter(pulumi.ComponentResource):
    """The arbiter Deployment with its ServiceAccount, Role, ConfigMap; the agent's Role."""

    def __init__(self, name: str, plan: ArbiterPlan, *, image: str, labels: _kube.AppLabels,
                 agent_service_account: str, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mysql-cluster:index:Arbiter", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        meta = _kube.metadata(plan.name, plan.namespace, labels)
        k8s.core.v1.ConfigMap(
            f"{name}-config", metadata=meta,
            data={ARBITER_CONFIG: json.dumps(arbiter_config(plan), indent=1, sort_keys=True),
                  AGENT_CONFIG: json.dumps(arbiter_config(plan, agent=True), indent=1,
                                           sort_keys=True)},
            opts=child)
        account = k8s.core.v1.ServiceAccount(f"{name}-account", metadata=meta,
                                             automount_service_account_token=True, opts=child)
        for suffix, rules, subject in (("", arbiter_rules(plan), plan.name),
                                       ("-agent", agent_rules(plan), agent_service_account)):
            role_meta = _kube.metadata(f"{plan.name}{suffix}", plan.namespace, labels)
            role = k8s.rbac.v1.Role(f"{name}-role{suffix}", metadata=role_meta, rules=rules,
                                    opts=child)
            k8s.rbac.v1.RoleBinding(
                f"{name}-binding{suffix}", metadata=role_meta,
                role_ref={"api_group": "rbac.authorization.k8s.io", "kind": "Role",
                          "name": f"{plan.name}{suffix}"},
                subjects=[{"kind": "ServiceAccount", "name": subject,
                           "namespace": plan.namespace}],
                opts=pulumi.ResourceOptions(parent=self, depends_on=[account, role]))
        selector = labels.selector()
        pod_spec: dict[str, Any] = {
            "service_account_name": plan.name,
            "security_context": _kube.pod_security_context(user=ARBITER_UID,
                                                           group=ARBITER_UID),
            "containers": [{
                "name": "arbiter",
                "image": image,
                "command": ["python", "-m", "arbiter", "run", "--config",
                            f"{CONFIG_DIR}/{ARBITER_CONFIG}"],
                "volume_mounts": [mount("arbiter-config", CONFIG_DIR, read_only=True),
                                  mount("arbiter-secrets", SECRETS_DIR, read_only=True)],
                "resources": {"requests": {"cpu": "20m", "memory": "64Mi"},
                              "limits": {"memory": "192Mi"}},
                "security_context": _kube.container_security_context(),
            }],
            "volumes": _volumes(plan.name, plan.secret),
        }
        # The two replicas on different nodes when the cluster has them.
        _kube.place(pod_spec, spread="preferred", selector=selector)
        k8s.apps.v1.Deployment(
            f"{name}-deployment", metadata=meta,
            spec={"replicas": 2, "selector": {"match_labels": selector},
                  # One at a time: the other keeps (or takes over) the leadership.
                  "strategy": {"type": "RollingUpdate",
                               "rolling_update": {"max_unavailable": 1, "max_surge": 0}},
                  "template": {"metadata": {"labels": labels.all()}, "spec": pod_spec}},
            opts=child)
        self.register_outputs({})
