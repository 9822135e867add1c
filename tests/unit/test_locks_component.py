"""The Locks component and the Lock CRD manifest, under Pulumi mocks (no cluster).

What these prove: the CRD manifest is valid Kubernetes for every version we support and
declares exactly what distlock's Kubernetes backend writes (every status the backend
can produce passes the CRD's schema without a field being pruned); the component
registers the CRD through the dynamic provider with the kubeconfig as a secret, roles
that grant lock users no delete, and a RoleBinding only when users are configured;
bad ``locks.*`` config is rejected naming the key.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Mapping
from typing import Any

import kubernetes_validate
import pulumi
import pulumi.runtime
import pytest
from pulumi.runtime import settings
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from components.config import ConfigError, LocksConfig, parse
from components.locks import Locks, LocksArgs
from components.locks.crd import lock_crd_manifest
from components.locks.rbac import lock_user_binding
from distlock import _kube, kube
from tests.support.crd_schema import prune, validate_schema
from tests.support.mocks import Mocks, ProgramResult, Recorded, config_map, run_stack

DYNAMIC = "pulumi-python:dynamic:Resource"


def _run(build: Callable[[], object], config: Mapping[str, Any] | None = None) -> list[Recorded]:
    """Build resources under mocks, as the engine would run a program, and record them."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        mocks = Mocks()
        settings.ROOT.set(None)
        pulumi.runtime.set_mocks(mocks, project="mysql-cluster", stack="dev", preview=False)
        pulumi.runtime.set_all_config(config_map(config or {}))

        def program() -> None:
            build()

        _sync_await(run_pulumi_func(program))
        return list(mocks.resources)
    finally:
        settings.ROOT.set(None)
        asyncio.set_event_loop(None)
        loop.close()


def _locks(config: LocksConfig, **kwargs: Any) -> Callable[[], object]:
    return lambda: Locks("locks", LocksArgs(namespace="shop", config=config,
                                            owner="mysql-cluster/dev", **kwargs))


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = lock_crd_manifest()["spec"]["versions"][0]["schema"][
        "openAPIV3Schema"]
    return schema


# -- the manifest ----------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.25", "1.30", "1.37"])
def test_crd_manifest_is_valid_kubernetes(version: str) -> None:
    kubernetes_validate.validate(lock_crd_manifest(), version, strict=True)


def test_crd_declares_the_group_version_kind_distlock_uses() -> None:
    crd = lock_crd_manifest()
    spec = crd["spec"]
    assert crd["metadata"]["name"] == kube.CRD_NAME == f"{kube.PLURAL}.{kube.GROUP}"
    assert spec["group"] == kube.GROUP
    assert spec["names"]["kind"] == kube.KIND
    assert spec["names"]["plural"] == kube.PLURAL
    assert spec["scope"] == "Namespaced"
    [version] = spec["versions"]
    assert version["name"] == kube.VERSION
    assert version["served"]
    assert version["storage"]
    assert version["subresources"] == {"status": {}}


def test_printer_columns_show_holder_token_next_waiter_and_age() -> None:
    columns = {c["name"]: c for c in lock_crd_manifest()["spec"]["versions"][0][
        "additionalPrinterColumns"]}
    assert columns["Holder"]["jsonPath"] == ".status.holder"
    assert columns["Token"]["jsonPath"] == ".status.fencingToken"
    assert columns["Token"]["type"] == "integer"
    # The first entry, not a count: appends do not keep a stored count up to date.
    assert columns["Next"]["jsonPath"] == ".status.waiters[0].identity"
    assert "Waiters" not in columns
    assert columns["Age"] == {"name": "Age", "type": "date",
                              "jsonPath": ".metadata.creationTimestamp"}


def test_every_status_the_backend_writes_fits_the_schema_unpruned() -> None:
    """A field the backend writes but the schema lacks would be silently dropped."""
    schema = _schema()
    status = _kube._status({"status": {}})
    statuses = []
    status = _kube._enqueued(status, "a-1", 10, set(), 1)
    statuses.append(status)
    status = _kube._enqueued(status, "b-2", 10, set(), 1)
    status = _kube._waiter_renewed(status, "b-2", 2)
    statuses.append(status)
    status = _kube._claimed(status, "a-1", 10, set())
    statuses.append(status)
    status = _kube._holder_renewed(status)
    statuses.append(status)
    statuses.append(_kube._released(status, lambda _w: False, lambda _w: True))  # to b-2
    status = _kube._dequeued(_kube._released(status, lambda _w: True, lambda _w: False), "b-2")
    statuses.append(status)
    for each in statuses:
        obj = {"spec": {"lockName": "shop/orders"}, "status": each}
        assert validate_schema(obj, {**schema, "properties": {
            k: v for k, v in schema["properties"].items() if k != "metadata"}}) == []
        assert prune(copy.deepcopy(obj), schema) == obj, "a field would be pruned"
    assert statuses[2]["fencingToken"] == 1
    assert statuses[2]["holder"] == "a-1"
    assert all("waiterCount" not in each for each in statuses)


def test_schema_rejects_a_negative_token_and_a_nameless_waiter() -> None:
    schema = _schema()
    bad = {"status": {"fencingToken": -1, "waiters": [{"leaseDurationSeconds": 5}]}}
    problems = validate_schema(bad, schema)
    assert any("status.fencingToken" in p for p in problems)
    assert any("status.waiters[0].identity: Required value" in p for p in problems)


# -- the component -----------------------------------------------------------------------


def test_component_registers_crd_provider_roles_and_binding() -> None:
    config = LocksConfig(enabled=True, force_delete=False,
                         users=("shop/api", "batch/cron"), establish_timeout_seconds=90)
    resources = _run(_locks(config))
    [crd] = [r for r in resources if r.type == DYNAMIC]
    assert crd.inputs["crdName"] == kube.CRD_NAME
    assert crd.inputs["manifest"] == lock_crd_manifest()
    assert crd.inputs["owner"] == "mysql-cluster/dev"
    assert crd.inputs["forceDelete"] is False
    assert crd.inputs["establishTimeoutSeconds"] == 90
    assert crd.inputs.get("kubeconfig") is None  # found as kubectl finds it

    roles = {r.metadata_name: r for r in resources
             if r.type == "kubernetes:rbac.authorization.k8s.io/v1:ClusterRole"}
    user = roles["mysql-cluster:shop:lock-user"]
    verbs = {tuple(rule["resources"]): set(rule["verbs"]) for rule in user.inputs["rules"]}
    assert verbs == {("locks",): {"get", "list", "watch", "create"},
                     ("locks/status",): {"get", "update", "patch"}}
    assert all(rule["apiGroups"] == [kube.GROUP] for rule in user.inputs["rules"])
    viewer = roles["mysql-cluster:shop:lock-viewer"]
    assert viewer.inputs["metadata"]["labels"][
        "rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert all(set(rule["verbs"]) == {"get", "list", "watch"}
               for rule in viewer.inputs["rules"])

    [binding] = [r for r in resources
                 if r.type == "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding"]
    assert binding.inputs["metadata"]["namespace"] == "shop"
    assert binding.inputs["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                         "kind": "ClusterRole",
                                         "name": "mysql-cluster:shop:lock-user"}
    assert binding.inputs["subjects"] == [
        {"kind": "ServiceAccount", "name": "api", "namespace": "shop"},
        {"kind": "ServiceAccount", "name": "cron", "namespace": "batch"}]


def test_lock_users_may_not_delete_lock_objects() -> None:
    """Deleting a Lock object would restart its fencing counter."""
    resources = _run(_locks(LocksConfig(enabled=True, force_delete=False, users=())))
    for role in (r for r in resources if r.kind == "ClusterRole"):
        for rule in role.inputs["rules"]:
            assert not {"delete", "deletecollection", "*"} & set(rule["verbs"])


def test_no_binding_without_users() -> None:
    resources = _run(_locks(LocksConfig(enabled=True, force_delete=False, users=())))
    assert not [r for r in resources if "RoleBinding" in r.type]


def test_stack_kubeconfig_reaches_the_provider_as_a_secret() -> None:
    kubeconfig = "apiVersion: v1\nclusters: []\n"
    resources = _run(_locks(LocksConfig(enabled=True, force_delete=True, users=())),
                     {"kubernetes:kubeconfig": kubeconfig, "kubernetes:context": "prod"})
    [crd] = [r for r in resources if r.type == DYNAMIC]
    assert crd.inputs["kubeconfig"] == kubeconfig
    assert crd.is_secret("kubeconfig")
    assert crd.inputs["context"] == "prod"
    assert crd.inputs["forceDelete"] is True


def test_explicit_kubeconfig_wins_and_is_secret() -> None:
    resources = _run(_locks(LocksConfig(enabled=True, force_delete=False, users=()),
                            kubeconfig="/etc/kube/admin.conf", context="ops"),
                     {"kubernetes:kubeconfig": "ignored"})
    [crd] = [r for r in resources if r.type == DYNAMIC]
    assert crd.inputs["kubeconfig"] == "/etc/kube/admin.conf"
    assert crd.is_secret("kubeconfig")
    assert crd.inputs["context"] == "ops"


def test_cluster_wide_binding_helper_and_bad_accounts() -> None:
    resources = _run(lambda: lock_user_binding(
        "ops", role_name="mysql-cluster:shop:lock-user", service_accounts=["ops/runner"],
        namespace=None))
    [binding] = resources
    assert binding.type == "kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding"
    with pytest.raises(ValueError, match="namespace/name"):
        lock_user_binding("bad", role_name="r", service_accounts=["runner"], namespace="x")
    with pytest.raises(ValueError, match="at least one"):
        lock_user_binding("none", role_name="r", service_accounts=[], namespace="x")


# -- config ------------------------------------------------------------------------------


def _parse(locks: Mapping[str, Any]) -> LocksConfig:
    return parse({"mysql-cluster:namespace": "shop", "mysql-cluster:locks": dict(locks)},
                 stack="dev").locks


def test_locks_config_defaults_and_values() -> None:
    assert _parse({}) == LocksConfig(enabled=False, force_delete=False, users=(),
                                     establish_timeout_seconds=60)
    parsed = _parse({"enabled": True, "forceDelete": True, "users": ["shop/api"],
                     "establishTimeoutSeconds": 120})
    assert parsed == LocksConfig(enabled=True, force_delete=True, users=("shop/api",),
                                 establish_timeout_seconds=120)


@pytest.mark.parametrize(("locks", "message"), [
    ({"enabled": "yes"}, "mysql-cluster:locks.enabled: got 'yes'; must be true or false"),
    ({"users": ["api"]}, "mysql-cluster:locks.users: got ['api']; must be a list of "
                         "'namespace/serviceaccount'"),
    ({"establishTimeoutSeconds": 1}, "mysql-cluster:locks.establishTimeoutSeconds: got 1; "
                                     "must be between 5 and 3600"),
    ({"forcedelete": True}, "mysql-cluster:locks.forcedelete: got True; unknown key; did you "
                            "mean 'forceDelete'?"),
])
def test_bad_locks_config_names_the_key(locks: Mapping[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        _parse(locks)
    assert message in str(error.value)


# -- the program ---------------------------------------------------------------------------


def _lock_resources(result: ProgramResult) -> list[Recorded]:
    return [r for r in result.resources
            if r.type == "mysql-cluster:index:Locks"
            or (r.type == DYNAMIC and r.inputs.get("crdName") == kube.CRD_NAME)
            or (r.metadata_name or "").endswith(":lock-user")]


def test_program_installs_nothing_for_locks_unless_enabled() -> None:
    result = run_stack("dev", locks={"enabled": False})
    assert _lock_resources(result) == []
    assert "lockCrdName" not in result.outputs


def test_program_wires_locks_when_enabled() -> None:
    result = run_stack("dev", locks={"enabled": True, "users": ["shop/api"]})
    types = sorted({r.type for r in _lock_resources(result)})
    assert types == ["kubernetes:rbac.authorization.k8s.io/v1:ClusterRole",
                     "mysql-cluster:index:Locks", DYNAMIC]
    [crd] = [r for r in result.resources if r.type == DYNAMIC
             and r.inputs.get("crdName") == kube.CRD_NAME]
    assert crd.inputs["owner"] == "mysql-cluster/dev"
    assert result.outputs["lockCrdName"].value == kube.CRD_NAME
    namespace = result.outputs["namespace"].value
    assert result.outputs["lockUserRole"].value == f"mysql-cluster:{namespace}:lock-user"
    bindings = [r for r in result.kubernetes("RoleBinding")
                if r.inputs["roleRef"]["name"] == f"mysql-cluster:{namespace}:lock-user"]
    assert [b.inputs["subjects"] for b in bindings] == [
        [{"kind": "ServiceAccount", "name": "api", "namespace": "shop"}]]
