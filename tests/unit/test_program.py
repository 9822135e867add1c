"""How __main__.py ties the components together (each component is tested on its own)."""

from __future__ import annotations

import pytest

from tests.support.mocks import ProgramResult, load_stack_file, run_stack

REPLICATION_INIT = "pulumi-python:dynamic/mysql:ReplicationInit"
ETCD = "mysql-cluster:index:EtcdCluster"


@pytest.fixture(scope="module")
def prod() -> ProgramResult:
    return run_stack("prod")


def test_replication_init_converges_under_the_stacks_etcd_lock(prod: ProgramResult) -> None:
    (init,) = prod.of_type(REPLICATION_INIT)
    etcd = prod.component(ETCD)
    (etcd_statefulset,) = etcd.kubernetes("StatefulSet")
    # The in-cluster runner reaches etcd through its client Service.
    assert init.inputs["lock_endpoints"] == ["http://etcd-client.mysql-prod.svc:2379"]
    # ...and the lock service is up before ReplicationInit asks it for the lock.
    assert etcd_statefulset.urn in init.dependencies


def test_no_lock_when_etcd_speaks_only_tls() -> None:
    etcd = load_stack_file("prod")["mysql-cluster:etcd"]
    tls = {"enabled": True, "peerSecret": "etcd-peer", "clientSecret": "etcd-client"}
    result = run_stack("prod", etcd={**etcd, "tls": tls})
    (init,) = result.of_type(REPLICATION_INIT)
    assert init.inputs.get("lock_endpoints", []) == []
