"""The real program deployed by the real engine onto the test control plane (issue 12).

Everything the mocks tests assume about the engine is checked here against the Pulumi
CLI and Kubernetes provider built from tools/pulumi and a real kube-apiserver
(tests/support/controlplane.py; kwok marks the pods Ready, no container runs). The stack
is ``Pulumi.e2e.yaml`` of the repository, the program is ``__main__.py`` unchanged, run
through the Automation API (tests/support/toolchain.py says why), with a file backend and a
random passphrase. The passwords come from a Secret made beforehand
(``mysql.credentials.existingSecret``): pulumi-random's provider cannot be built here.

In order, sharing one deployment (each test needs the state the previous one left):
first ``up`` (every object the mocks render exists, pods Ready, the Lock CRD
Established, outputs, no password or token in the state in plaintext, nothing reached
the network); ``preview --expect-no-changes``, ``refresh`` and a no-op ``up``; scaling
with one ``up`` each; a second stack sharing the Lock CRD; ``destroy`` refused while a
lock is held, then done, the PVCs, the namespace and the user's Secret kept; the other
stack's locks still working, and its destroy removing the CRD; then bad stack files,
each failing with the config message and leaving no object behind; and, on a stack of its
own, a TLS Secret lacking a key stopping the up before any MySQL object.

Wall times of the first ``up``, a no-op ``up`` and ``destroy`` are printed
(``-s`` shows them; docs/benchmarks.md records them with the machine's load).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pulumi import automation as auto

from components.locks.crd import OWNERS_ANNOTATION
from distlock.kube import CRD_NAME, KubeLockBackend, api_client
from tests.support.certs import issue, make_ca
from tests.support.controlplane import ControlPlane
from tests.support.e2e_deployment import (
    CLI_DEADLINE,
    NAMESPACE,
    PROJECT,
    STACK_FILE,
    Deployment,
    changes,
    new_deployment,
    timed,
)
from tests.support.e2e_kube import SECRET, STORAGE_CLASS, Kubectl, condition, prepare_cluster
from tests.support.toolchain import CliDeadline, PulumiSandbox, RunLog

pytestmark = pytest.mark.e2e

OTHER_NAMESPACE = "mysql-e2e-b"
BAD_NAMESPACE = "mysql-e2e-bad"


# Stacks deployed and not yet destroyed: the module's teardown destroys them.
_stacks: dict[str, auto.Stack] = {}


@pytest.fixture(scope="module")
def kubectl(control_plane: ControlPlane) -> Kubectl:
    prepare_cluster(control_plane, nodes=3, volumes=10, storage_class=STORAGE_CLASS,
                    prefix="e2e")
    return Kubectl(control_plane)


@pytest.fixture(scope="module")
def deployed(stack_sandbox: PulumiSandbox, control_plane: ControlPlane,
             kubectl: Kubectl) -> Iterator[Deployment]:
    """The e2e stack after its first ``pulumi up``; destroyed at the end whatever happened
    (the control plane is shared: the next tests expect no Lock CRD)."""
    deployment = new_deployment(stack_sandbox, control_plane, kubectl, "e2e", NAMESPACE)
    _stacks[deployment.name] = deployment.stack
    try:
        started = time.monotonic()
        deployment.first_up = deployment.up()
        timed("first up", deployment.timings, started)
        yield deployment
    finally:
        for stack in _stacks.values():
            try:
                started = time.monotonic()
                with CliDeadline(CLI_DEADLINE, f"cleanup destroy of {stack.name}"):
                    stack.destroy()
                timed(f"destroy of {stack.name}", deployment.timings, started)
            except auto.CommandError as error:
                print(f"cleanup: destroy of {stack.name} failed: {error}")


def test_first_up_creates_every_object_as_the_mocks_say(deployed: Deployment) -> None:
    assert deployed.first_up is not None
    assert deployed.first_up.summary.result == "succeeded"
    expected = deployed.expected_objects()
    assert expected, "the mocks rendered nothing"
    live = deployed.kubectl.live(expected)
    assert [(o["kind"], o["metadata"]["name"]) for o in live] == [
        (o["kind"], o["metadata"]["name"]) for o in expected]
    for want, have in zip(expected, live, strict=True):
        labels = (want["metadata"].get("labels") or {}).items()
        assert labels <= (have["metadata"].get("labels") or {}).items(), want["metadata"]
    # The user's Secret is read, not owned: the stack made no Secret of its own.
    made = [o for o in expected if o["kind"] == "Secret"]
    assert made == []
    deployed.kubectl.wait_ready(deployed.namespace, deployed.mysql["name"],
                                deployed.mysql["replicas"])
    deployed.kubectl.wait_ready(deployed.namespace, "etcd", deployed.etcd["replicas"])
    crd = deployed.kubectl.crd(CRD_NAME)
    assert condition(crd, "Established") == "True"
    assert crd is not None
    assert crd["metadata"]["annotations"][OWNERS_ANNOTATION] == f"{PROJECT}/{deployed.name}"


def test_first_up_outputs_and_state(deployed: Deployment) -> None:
    outputs = deployed.stack.outputs()
    namespace = deployed.namespace
    assert outputs["namespace"].value == namespace
    assert outputs["mysqlPrimaryHost"].value == f"mysql-primary.{namespace}.svc"
    assert outputs["mysqlReadHost"].value == f"mysql-read.{namespace}.svc"
    assert outputs["mysqlPort"].value == 3306
    assert outputs["mysqlSecretName"].value == SECRET
    assert not outputs["mysqlSecretName"].secret
    assert outputs["lockCrdName"].value == CRD_NAME
    for name, account in (("mysqlAdminPassword", "admin"), ("mysqlRootPassword", "root")):
        assert outputs[name].secret, f"{name} is not a secret output"
        assert outputs[name].value == deployed.passwords[account]
    state = list(deployed.sandbox.state_files())
    assert state, "no state files"
    for path in state:
        text = path.read_text(errors="replace")
        leaked = [s for s in deployed.secrets_in_play() if s in text]
        assert leaked == [], f"{len(leaked)} secret(s) in plaintext in {path}"
    assert deployed.sandbox.trap.connections == [], "a run tried to reach the network"


def test_no_op_preview_refresh_and_up(deployed: Deployment) -> None:
    log = RunLog()
    try:
        deployed.stack.preview(expect_no_changes=True, diff=True, on_output=log.on_output)
    except auto.CommandError as error:
        raise AssertionError(f"preview --expect-no-changes found changes:\n{error}") from None
    deployed.refresh_until_clean()
    # What made this fail before (issue 12): pods kwok had made Ready were marked not Ready
    # by the node lifecycle controller, the refresh recorded the Services and StatefulSets
    # as not ready, and the preview then proposed updates with no field diff.
    assert deployed.init_errors() == {}
    deployed.stack.preview(expect_no_changes=True)
    started = time.monotonic()
    again = deployed.up()
    timed("no-op up", deployed.timings, started)
    # Everything "same"; the user's Secret is "read" again, as on every run.
    summary = changes(again.summary.resource_changes)
    assert {op: n for op, n in summary.items() if op != "same"} == {"read": 1}, again.stdout


def test_scaling_converges_with_one_up_each(deployed: Deployment) -> None:
    deployed.set_sections(mysql={**deployed.mysql, "replicas": 3})
    deployed.up()
    deployed.kubectl.wait_ready(deployed.namespace, "mysql", 3)
    for size in (3, 1):
        deployed.set_sections(etcd={**deployed.etcd, "replicas": size})
        deployed.up()
        deployed.kubectl.wait_ready(deployed.namespace, "etcd", size)
    # What the engine left is what the program says for the new sizes.
    expected = deployed.expected_objects()
    live = deployed.kubectl.live(expected)
    sizes = {o["metadata"]["name"]: o["spec"]["replicas"]
             for o in live if o["kind"] == "StatefulSet"}
    assert sizes == {o["metadata"]["name"]: o["spec"]["replicas"]
                     for o in expected if o["kind"] == "StatefulSet"} == {"mysql": 3, "etcd": 1}


@pytest.fixture(scope="module")
def other(stack_sandbox: PulumiSandbox, control_plane: ControlPlane, kubectl: Kubectl,
          deployed: Deployment) -> Deployment:
    """A second stack of the project in its own namespace, on the same cluster."""
    deployment = new_deployment(stack_sandbox, control_plane, kubectl, "e2e-b",
                                OTHER_NAMESPACE)
    _stacks[deployment.name] = deployment.stack
    deployment.up()
    return deployment


def test_a_second_stack_shares_the_lock_crd(deployed: Deployment, other: Deployment) -> None:
    crd = deployed.kubectl.crd(CRD_NAME)
    assert crd is not None
    owners = set(crd["metadata"]["annotations"][OWNERS_ANNOTATION].split(","))
    assert owners == {f"{PROJECT}/{deployed.name}", f"{PROJECT}/{other.name}"}


def lock_session(deployment: Deployment, namespace: str) -> KubeLockBackend:
    path = deployment.plane.write_kubeconfig(
        deployment.sandbox.root / f"locks-{namespace}.kubeconfig", namespace=namespace)
    return KubeLockBackend(api_client(str(path)), namespace, ttl=10)


def test_destroying_one_stack_leaves_the_other_its_crd_and_locks(
        deployed: Deployment, other: Deployment) -> None:
    """The CRD is shared: destroying one owner only removes it from the owners, so a lock
    held meanwhile (in the destroyed stack's namespace) is not in the way and keeps
    working; the namespace, the PVCs and the user's Secret stay."""
    namespace = deployed.namespace
    with lock_session(deployed, namespace) as session:
        grant = session.acquire("orders", timeout=10)
        assert grant is not None
        pvcs_before = deployed.kubectl.pvcs(namespace)
        started = time.monotonic()
        deployed.destroy()
        timed("destroy", deployed.timings, started)
        del _stacks[deployed.name]
        assert not grant.lost.is_set()
        session.release(grant)
    deployed.kubectl.wait_project_gone(namespace)
    assert deployed.kubectl.pvcs(namespace) == pvcs_before
    assert len(pvcs_before) >= 3, pvcs_before  # the MySQL and etcd claims
    deployed.kubectl("get", "namespace", namespace)
    deployed.kubectl("get", "secret", SECRET, "-n", namespace)
    crd = deployed.kubectl.crd(CRD_NAME)
    assert crd is not None
    assert crd["metadata"]["annotations"][OWNERS_ANNOTATION] == f"{PROJECT}/{other.name}"


def test_the_last_owners_destroy_is_refused_while_a_lock_is_held(
        deployed: Deployment, other: Deployment) -> None:
    session = lock_session(other, other.namespace)
    try:
        grant = session.acquire("payments", timeout=10)
        assert grant is not None
        with pytest.raises(auto.CommandError) as refused, CliDeadline(
                CLI_DEADLINE, "the refused destroy"):
            other.stack.destroy()
        assert f"{other.namespace}/payments held by {session.identity}" in str(refused.value)
        assert deployed.kubectl.crd(CRD_NAME) is not None
        assert not grant.lost.is_set()
    finally:
        session.close()  # releases
    other.destroy()
    del _stacks[other.name]
    assert deployed.kubectl.crd(CRD_NAME) is None


# One per class of bad input the config tests cover: (what is wrong, sections, message).
BAD_STACK_FILES: list[tuple[str, dict[str, dict[str, Any]], str]] = [
    ("wrong type", {"mysql": {"replicas": "two"}}, "mysql-cluster:mysql.replicas: got 'two'"),
    ("out of range", {"mysql": {"replicas": 0}}, "mysql-cluster:mysql.replicas: got 0"),
    ("even etcd size", {"etcd": {"replicas": 2}}, "mysql-cluster:etcd.replicas: got 2"),
    ("malformed quantity", {"mysql": {"storage": "1 GB"}},
     "mysql-cluster:mysql.storage: got '1 GB'"),
    ("unknown flavor", {"mysql": {"flavor": "postgres"}},
     "mysql-cluster:mysql.flavor: got 'postgres'"),
    ("misspelled key", {"mysql": {"storge": "1Gi"}}, "did you mean 'storage'?"),
]


def test_bad_stack_files_fail_with_the_config_message_and_leave_nothing(
        stack_sandbox: PulumiSandbox, control_plane: ControlPlane, kubectl: Kubectl) -> None:
    sandbox = stack_sandbox
    bad = new_deployment(sandbox, control_plane, kubectl, "e2e-bad", BAD_NAMESPACE)
    crd_before = kubectl.crd(CRD_NAME)  # the e2e stack's, if the destroy tests were skipped
    for what, sections, message in BAD_STACK_FILES:
        bad.set_sections(**{key: {**getattr(bad, key), **value}
                            for key, value in sections.items()})
        with pytest.raises(auto.CommandError) as failed, CliDeadline(CLI_DEADLINE, what):
            bad.stack.up()
        assert message in str(failed.value), (what, str(failed.value))
        assert "invalid stack configuration" in str(failed.value), what
        assert kubectl.project_objects(BAD_NAMESPACE) == [], what
        assert kubectl.crd(CRD_NAME) == crd_before, what
        bad.set_sections(mysql=dict(STACK_FILE[f"{PROJECT}:mysql"]),
                         etcd=dict(STACK_FILE[f"{PROJECT}:etcd"]))
    assert sandbox.trap.connections == [], "a run tried to reach the network"


TLS_NAMESPACE = "mysql-e2e-tls"
TLS_SECRET = "mysql-e2e-tls"


def test_a_tls_secret_lacking_a_key_stops_the_up_before_any_mysql_object(
        stack_sandbox: PulumiSandbox, control_plane: ControlPlane, kubectl: Kubectl,
        tmp_path: Path) -> None:
    """mysql.tls.secret read by the real provider (a ``get``) and refused by the program,
    naming the missing key, before one object of the MySQL cluster exists."""
    deployment = new_deployment(stack_sandbox, control_plane, kubectl, "e2e-tls", TLS_NAMESPACE)
    ca = make_ca(tmp_path / "certs")
    leaf = issue(ca, tmp_path / "certs", "mysql")
    kubectl("create", "secret", "generic", TLS_SECRET, "-n", TLS_NAMESPACE,
            f"--from-file=tls.crt={leaf.cert}", f"--from-file=tls.key={leaf.key}")
    deployment.set_sections(mysql={**deployment.mysql,
                                   "tls": {"enabled": True, "secret": TLS_SECRET}})
    try:
        with pytest.raises(auto.CommandError) as failed, CliDeadline(CLI_DEADLINE, "tls up"):
            deployment.stack.up()
        assert (f"mysql-cluster:mysql.tls.secret: Secret {TLS_NAMESPACE}/{TLS_SECRET}: "
                "missing key ca.crt") in str(failed.value), str(failed.value)
        mysql = [o for o in kubectl.project_objects(TLS_NAMESPACE)
                 if o.split("/", 1)[1].startswith("mysql")]
        assert mysql == []
    finally:
        # What else the up created (etcd, the Lock CRD) goes; the control plane is shared.
        deployment.destroy()
