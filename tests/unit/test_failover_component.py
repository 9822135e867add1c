"""The arbiter objects a stack with ``mysql.failover.enabled`` gets, under Pulumi mocks.

The JSON both programs read is parsed here with the arbiter's own loader, so the
component and the programs cannot drift apart; the RBAC is pinned rule by rule, because
least privilege is the point (the record, the status, the cluster's pods, events).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from arbiter._config import parse
from tests.support.mocks import ProgramResult, Recorded, run_stack

IMAGE = "ghcr.io/example/mysql-cluster-arbiter:1.0.0"


def _stack(**failover: Any) -> ProgramResult:
    mysql = {"replicas": 3, "failover": {"enabled": True, "image": IMAGE, **failover}}
    return run_stack("dev", mysql=mysql)


def _one(result: ProgramResult, kind: str, name: str) -> Recorded:
    found = [r for r in result.resources
             if r.type == f"kubernetes:{kind}" and r.inputs["metadata"]["name"] == name]
    assert len(found) == 1, [r.name for r in result.resources if r.type.endswith(kind)]
    return found[0]


@pytest.fixture(scope="module")
def enabled() -> ProgramResult:
    return _stack()


def test_no_arbiter_objects_unless_enabled() -> None:
    result = run_stack("dev")
    assert not [r for r in result.resources if "arbiter" in r.name]
    statefulset = _one(result, "apps/v1:StatefulSet", "mysql")
    containers = statefulset.inputs["spec"]["template"]["spec"]["containers"]
    assert "fencing-agent" not in [c["name"] for c in containers]


def test_the_rendered_configuration_is_what_the_arbiter_reads(enabled: ProgramResult,
                                                              tmp_path: Path) -> None:
    data = _one(enabled, "core/v1:ConfigMap", "mysql-arbiter").inputs["data"]
    for key, agent in (("arbiter.json", False), ("agent.json", True)):
        raw = json.loads(data[key])
        for field in ("topology_password_file", "replication_password_file"):
            assert raw[field].startswith("/run/secrets/mysql-cluster-arbiter/")
            (tmp_path / field).write_text("x")
            raw[field] = field
        config = parse(raw, tmp_path)
        assert config.record_name == "mysql-primary-record"
        assert config.lock_backend == "etcd"
        assert config.lock_name == "mysql-cluster/mysql-0.mysql-headless:3306/replication"
        assert config.pods == ("mysql-0", "mysql-1", "mysql-2")
        assert config.sources[0].host == "mysql-0.mysql-headless"
        expected = "127.0.0.1" if agent else "mysql-0.mysql-headless"
        assert config.servers[0].host == expected
        assert config.failover.ttl_seconds == 10


def test_the_deployment_runs_two_pinned_arbiters(enabled: ProgramResult) -> None:
    deployment = _one(enabled, "apps/v1:Deployment", "mysql-arbiter").inputs["spec"]
    assert deployment["replicas"] == 2
    pod = deployment["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == IMAGE
    assert container["command"][:4] == ["python", "-m", "arbiter", "run"]
    assert pod["serviceAccountName"] == "mysql-arbiter"
    assert "affinity" in pod or "topologySpreadConstraints" in pod
    secrets = next(v for v in pod["volumes"] if "secret" in v)["secret"]
    assert secrets["secretName"] == "mysql-credentials"
    assert {i["key"] for i in secrets["items"]} == {"topology-password", "replication-password"}


def test_rbac_allows_only_the_record_the_status_the_pods_and_events(
        enabled: ProgramResult) -> None:
    rules = _one(enabled, "rbac.authorization.k8s.io/v1:Role", "mysql-arbiter").inputs["rules"]
    assert rules == [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "update"],
         "resourceNames": ["mysql-primary-record", "mysql-primary-record-failover"]},
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "patch"],
         "resourceNames": ["mysql-0", "mysql-1", "mysql-2"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    ]
    agent = _one(enabled, "rbac.authorization.k8s.io/v1:Role", "mysql-arbiter-agent")
    assert agent.inputs["rules"] == [{"apiGroups": [""], "resources": ["configmaps"],
                                      "verbs": ["get"],
                                      "resourceNames": ["mysql-primary-record"]}]
    binding = _one(enabled, "rbac.authorization.k8s.io/v1:RoleBinding", "mysql-arbiter-agent")
    assert binding.inputs["subjects"][0]["name"] == "mysql-pod-labeler"


def test_every_mysql_pod_gets_the_fencing_agent(enabled: ProgramResult) -> None:
    statefulset = _one(enabled, "apps/v1:StatefulSet", "mysql")
    pod = statefulset.inputs["spec"]["template"]["spec"]
    agent = next(c for c in pod["containers"] if c["name"] == "fencing-agent")
    assert agent["image"] == IMAGE
    assert agent["command"][:4] == ["python", "-m", "arbiter", "agent"]
    assert {m["name"] for m in agent["volumeMounts"]} == {
        "arbiter-config", "arbiter-secrets", "kube-api-access"}
    assert agent["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"arbiter-config", "arbiter-secrets"} <= {v["name"] for v in pod["volumes"]}


def test_failover_needs_replication_init() -> None:
    from components.config import ConfigError  # noqa: PLC0415

    with pytest.raises(ConfigError, match=r"failover\.enabled.*replicationInit\.enabled"):
        run_stack("dev", mysql={"replicas": 3, "replicationInit": {"enabled": False},
                                "failover": {"enabled": True, "image": IMAGE}})


def test_replication_init_takes_the_arbiters_kubernetes_lock_when_there_is_no_etcd_lock(
        enabled: ProgramResult) -> None:
    """The arbiter uses distlock's Kubernetes backend when the stack gives no etcd client
    URLs (etcd with TLS); `pulumi up` must take the same lock then, and only then."""
    [init] = enabled.of_type("pulumi-python:dynamic/mysql:ReplicationInit")
    assert init.inputs["lock_endpoints"]  # etcd: the arbiter locks there too
    assert "kubernetes_lock" not in init.inputs
    etcd_tls = {"tls": {"enabled": True, "peerSecret": "etcd-peer", "clientSecret": "etcd-c"}}
    mysql = {"replicas": 3, "failover": {"enabled": True, "image": IMAGE}}
    result = run_stack("dev", mysql=mysql, etcd=etcd_tls)
    [init] = result.of_type("pulumi-python:dynamic/mysql:ReplicationInit")
    [config_map] = [r for r in result.resources if r.type == "kubernetes:core/v1:ConfigMap"
                    and "arbiter.json" in (r.inputs.get("data") or {})]
    lock = json.loads(config_map.inputs["data"]["arbiter.json"])["lock"]
    assert lock["backend"] == "kubernetes"
    assert init.inputs["kubernetes_lock"] is True
    assert init.inputs["record_namespace"] == lock["namespace"]
    assert init.inputs.get("lock_endpoints", []) == []
    without_failover = run_stack("dev", mysql={"replicas": 3}, etcd=etcd_tls)
    [init] = without_failover.of_type("pulumi-python:dynamic/mysql:ReplicationInit")
    assert "kubernetes_lock" not in init.inputs  # no arbiter: nothing creates Lock objects
