"""ReplicationInit under the real engine against real MariaDB servers (issue 12, steps 2-4).

kwok runs no container, so the MySQL "pods" are started the way the pod-script harness
starts them (tests/support/pods.py: real mariadbd per ordinal, the replicas cloned by
the real clone.sh, replication configured by the real sidecar), and the stack reaches
them with ``replicationInit.access: port-forward`` endpoints, as from a laptop.

One thing a cluster gives that one machine does not: ReplicationInit tells each replica
to replicate from the primary's pod DNS name (``mysql-0.mysql-headless:3306``), which
only resolves inside a cluster. So the pods' DNS names are given to the servers and the
scripts through a hosts file of their own (nss_wrapper's ``NSS_WRAPPER_HOSTS``, preloaded
into the processes this test starts; nothing on the machine changes) resolving to
127.0.0.1, the primary listens on 3306 and the pods' environment names peers by those
names (``PEER_HOST_TEMPLATE``), exactly as the StatefulSet's does. The lock ReplicationInit
holds is in a real etcd, reached through ``etcd.membership.endpoints``.

In order: the first ``up`` configures and verifies replication (a row written on the
primary reaches the replica); ``preview --expect-no-changes`` and ``refresh`` find
nothing; replication stopped by hand shows as an update in ``preview`` and one ``up``
repairs it; a third replica, cloned for real, joins with one ``up``; a new replication
password in the user's Secret converges with one ``up``.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from components.mysql import credentials
from components.mysql._record import ROLE_LABEL
from tests.support.controlplane import ControlPlane
from tests.support.e2e_deployment import STACK_FILE, Deployment, changes, new_deployment
from tests.support.e2e_kube import STORAGE_CLASS, Kubectl, prepare_cluster
from tests.support.etcd import EtcdCluster
from tests.support.mariadb import DEBIAN
from tests.support.pods import ClusterSecrets, Pod, PodCluster
from tests.support.procs import LOCALHOST, missing_tool, wait_until
from tests.support.toolchain import PulumiSandbox, RunLog

pytestmark = pytest.mark.e2e

NSS_WRAPPER = Path("/usr/lib/x86_64-linux-gnu/libnss_wrapper.so")
NAMESPACE = "mysql-e2e-repl"
MYSQL_PORT = 3306  # where replicas look for the primary: mysql-0.mysql-headless:3306
PORT_STRIDE = 2
PODS = 3


def endpoint(ordinal: int) -> str:
    return f"{LOCALHOST}:{MYSQL_PORT + ordinal * PORT_STRIDE}"


@dataclass
class Servers:
    pods: PodCluster
    etcd: EtcdCluster


@pytest.fixture(scope="module")
def pod_dns(tmp_path_factory: pytest.TempPathFactory,
            control_plane: ControlPlane) -> Iterator[None]:
    """Every process this module starts resolves the pods' DNS names to 127.0.0.1
    (``control_plane`` is asked for so that it is started before, without the wrapper)."""
    if not NSS_WRAPPER.is_file():
        missing_tool(f"{NSS_WRAPPER} is missing (Debian's libnss-wrapper; scripts/test.sh "
                     "installs it)")
    for port in range(MYSQL_PORT, MYSQL_PORT + PODS * PORT_STRIDE):
        with socket.socket() as probe:
            if probe.connect_ex((LOCALHOST, port)) == 0:
                pytest.fail(f"port {port} on {LOCALHOST} is taken; this test's primary must "
                            "listen on 3306, where replicas look for it")
    hosts = tmp_path_factory.mktemp("pod-dns") / "hosts"
    names = " ".join(f"mysql-{ordinal}.mysql-headless" for ordinal in range(PODS))
    # The wrapper answers every lookup from this file: the tools' own names must be in it.
    hosts.write_text(f"{LOCALHOST} localhost {socket.gethostname()} {names}\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LD_PRELOAD", str(NSS_WRAPPER))
        # No $KUBECONFIG (stack_sandbox removes it): ReplicationInit's primary record and
        # pod labels reach the API server only through the stack's kubernetes:kubeconfig.
        patch.setenv("NSS_WRAPPER_HOSTS", str(hosts))
        yield


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, pod_dns: None) -> Iterator[Servers]:
    base = tmp_path_factory.mktemp("repl-servers")
    etcd = EtcdCluster(base / "etcd", size=1).start()
    pods = PodCluster(base / "pods", name="mysql", max_pods=PODS, port_base=MYSQL_PORT,
                      peer_host_template="mysql-{ordinal}.mysql-headless", version=DEBIAN)
    try:
        pods.start_pod(0)
        pods.start_pod(1)
        yield Servers(pods, etcd)
    finally:
        try:
            pods.close()
        finally:
            etcd.stop()


def passwords_of(cluster_secrets: ClusterSecrets) -> dict[str, str]:
    return {account: cluster_secrets.password(account)
            for account in credentials.PASSWORD_VARIABLES}


@pytest.fixture(scope="module")
def stack(stack_sandbox: PulumiSandbox, control_plane: ControlPlane,
          servers: Servers) -> Iterator[Deployment]:
    kubectl = Kubectl(control_plane)
    prepare_cluster(control_plane, nodes=1, volumes=5, storage_class=STORAGE_CLASS,
                    prefix="e2e-repl")
    deployment = new_deployment(stack_sandbox, control_plane, kubectl, "e2e-repl", NAMESPACE,
                                passwords=passwords_of(servers.pods.secrets))
    etcd_endpoints = [e.removeprefix("http://") for e in servers.etcd.endpoints]
    deployment.set_sections(
        mysql={**STACK_FILE["mysql-cluster:mysql"], "version": "10.11.10",
               "replicationInit": {"enabled": True, "access": "port-forward",
                                   "endpoints": [endpoint(0), endpoint(1)],
                                   "timeoutSeconds": 120}},
        etcd={**STACK_FILE["mysql-cluster:etcd"],
              "membership": {"enabled": False, "access": "port-forward",
                             "endpoints": etcd_endpoints}})
    try:
        deployment.up()
        yield deployment
    finally:
        deployment.destroy()


def replica_status(pod: Pod) -> dict[str, object]:
    (row,) = pod.query("SHOW REPLICA STATUS")
    return row


def replicates_from_the_primary(pod: Pod) -> bool:
    status = replica_status(pod)
    return (status["Master_Host"], status["Master_Port"]) == ("mysql-0.mysql-headless",
                                                               MYSQL_PORT) and (
        status["Slave_IO_Running"], status["Slave_SQL_Running"]) == ("Yes", "Yes")


def a_write_reaches(servers: Servers, *ordinals: int) -> None:
    primary = servers.pods.primary
    primary.query("CREATE DATABASE IF NOT EXISTS e2e")
    primary.query("CREATE TABLE IF NOT EXISTS e2e.t (v VARCHAR(64) PRIMARY KEY)")
    value = secrets.token_hex(8)
    primary.query("INSERT INTO e2e.t VALUES (%s)", (value,))
    gtid = primary.gtid_binlog_pos()
    for ordinal in ordinals:
        servers.pods.pod(ordinal).wait_for_gtid(gtid, timeout=60)
        assert servers.pods.pod(ordinal).query("SELECT v FROM e2e.t WHERE v = %s", (value,))


def test_first_up_configures_replication_through_the_engine(stack: Deployment,
                                                            servers: Servers) -> None:
    replica = servers.pods.pod(1)
    assert replicates_from_the_primary(replica), replica_status(replica)
    a_write_reaches(servers, 1)
    # The record and the role labels, written through the stack's kubeconfig (there is
    # no $KUBECONFIG), which the state holds only encrypted.
    assert "KUBECONFIG" not in os.environ
    record = stack.kubectl.json("get", "configmap", "mysql-primary-record", "-n", NAMESPACE)
    assert record["data"]["primary"] == "0", record["data"]
    for ordinal, role in ((0, "primary"), (1, "replica")):
        labels = stack.kubectl.json("get", "pod", f"mysql-{ordinal}", "-n",
                                    NAMESPACE)["metadata"]["labels"]
        assert labels.get(ROLE_LABEL) == role, labels
    for path in stack.sandbox.state_files():
        assert stack.plane.token not in path.read_text(errors="replace"), path


def test_no_changes_then_a_stopped_replica_is_previewed_and_repaired(
        stack: Deployment, servers: Servers) -> None:
    stack.stack.preview(expect_no_changes=True)
    stack.refresh_until_clean()
    assert stack.init_errors() == {}  # as in test_stack's no-op test
    replica = servers.pods.pod(1)
    replica.query("STOP REPLICA")
    log = RunLog()
    preview = stack.stack.preview(diff=True, on_output=log.on_output)
    assert changes(preview.change_summary).get("update") == 1, log.text()
    stack.up()
    assert replicates_from_the_primary(replica), replica_status(replica)
    a_write_reaches(servers, 1)


def test_a_third_replica_cloned_for_real_joins_with_one_up(stack: Deployment,
                                                           servers: Servers) -> None:
    third = servers.pods.start_pod(2)  # clone.sh from mysql-1, by its DNS name
    assert "donor=" in (third.data_dir / ".clone-complete").read_text()
    init = stack.mysql["replicationInit"]
    stack.set_sections(mysql={**stack.mysql, "replicas": 3, "replicationInit": {
        **init, "endpoints": [endpoint(0), endpoint(1), endpoint(2)]}})
    stack.up()
    stack.kubectl.wait_ready(NAMESPACE, "mysql", 3)
    assert replicates_from_the_primary(third), replica_status(third)
    a_write_reaches(servers, 1, 2)


def test_a_new_replication_password_converges_with_one_up(stack: Deployment,
                                                          servers: Servers) -> None:
    new = secrets.token_urlsafe(18)
    stack.kubectl("patch", "secret", "mysql-e2e-credentials", "-n", NAMESPACE,
                  "--type=merge", "-p",
                  json.dumps({"stringData": {"replication-password": new}}))
    stack.up()
    primary = servers.pods.primary
    wait_until(lambda: primary.server.query("SELECT 1 AS one", user="repl", password=new,
                                            host=LOCALHOST) == [{"one": 1}],
               timeout=30, what="repl to log in with the new password")
    # Every replica started so far (the third only if its test ran).
    replicas = sorted(ordinal for ordinal in servers.pods.pods if ordinal != 0)
    for ordinal in replicas:
        assert replicates_from_the_primary(servers.pods.pod(ordinal))
    a_write_reaches(servers, *replicas)
    assert os.environ.get("NSS_WRAPPER_HOSTS"), "the pods' DNS names were not in effect"
