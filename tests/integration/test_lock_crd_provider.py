"""The LockCRD provider through the real provider server, exactly as `pulumi up` drives it,
against the real API server.

The provider process gets the kubeconfig the way a stack gives it (a secret input, or
``$KUBECONFIG`` in its environment) and talks to the session's kube-apiserver
(tests/conftest.py) through a fault proxy that records every request. Established and
NamesAccepted are set by the real apiextensions controllers; the delete guard, shared
ownership and adoption run against real resourceVersions and real CRD deletion (the
cleanup finalizer deletes every Lock object). Each test drives up / preview / refresh /
destroy through :class:`ResourceDriver` and then looks at what is in the cluster, so
every assertion is about an effect, not a call. Tests share the API server, so each
starts and ends with no Lock CRD installed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML ships with kubernetes
from kubernetes import client as k8s

from components.locks._provider import LockCRDProvider
from components.locks.crd import EXTERNAL_OWNER, OWNERS_ANNOTATION, lock_crd_manifest
from distlock.kube import CRD_NAME, GROUP, PLURAL, VERSION, KubeLockBackend, api_client
from tests.support.controlplane import ApiServer, ControlPlane
from tests.support.fault_proxy import FaultProxy
from tests.support.procs import wait_until
from tests.support.provider_server import ProviderError, ProviderServer, ResourceDriver

pytestmark = pytest.mark.integration

RIVAL_CRD = f"rivals.{GROUP}"
# Deleting the Lock CRD waits for the API server's cleanup finalizer to delete every Lock
# object of it, and the control plane is session-wide: after the lock suites that is hundreds,
# on 2 shared cores (60 s was too short in whole-suite runs, twice).
CRD_DELETION_SECONDS = 240


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProviderServer]:
    log = tmp_path_factory.mktemp("provider") / "provider.log"
    with ProviderServer(log_path=log) as srv:
        srv.configure()
        yield srv


@dataclass
class Cluster:
    """One API server as the provider sees it (through ``proxy``) and as tests see it."""

    plane: ControlPlane
    proxy: FaultProxy
    api: Any
    """Admin ApiClient straight to the API server."""

    @property
    def token(self) -> str:
        return self.plane.token

    def kubeconfig(self) -> dict[str, Any]:
        return self.plane.kubeconfig_document(server=self.proxy.url)

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        return self.plane.write_kubeconfig(path, namespace=namespace, server=self.proxy.url)

    def crd(self, name: str = CRD_NAME) -> dict[str, Any] | None:
        extensions: Any = k8s.ApiextensionsV1Api(self.api)
        try:
            crd: dict[str, Any] = self.api.sanitize_for_serialization(
                extensions.read_custom_resource_definition(name))
        except k8s.ApiException as error:
            if error.status == 404:
                return None
            raise
        return crd

    def lock(self, namespace: str, name: str) -> dict[str, Any] | None:
        objects: Any = k8s.CustomObjectsApi(self.api)
        try:
            obj: dict[str, Any] = objects.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name)
        except k8s.ApiException as error:
            if error.status == 404:
                return None
            raise
        return obj

    def remove_crds(self) -> None:
        """Delete the Lock CRD (and this module's rival) and wait until they are gone."""
        extensions: Any = k8s.ApiextensionsV1Api(self.api)
        for name in (CRD_NAME, RIVAL_CRD):
            try:
                extensions.delete_custom_resource_definition(name)
            except k8s.ApiException as error:
                if error.status != 404:
                    raise
            wait_until(lambda n=name: self.crd(n) is None,  # type: ignore[misc]
                       timeout=CRD_DELETION_SECONDS,
                       what=f"CustomResourceDefinition {name} to be deleted")


def _cluster(plane: ControlPlane, api_server: ApiServer | None = None,
             ) -> Iterator[Cluster]:
    with plane.proxy(api_server) as proxy:
        target = api_server or plane.api_server
        path = plane.write_kubeconfig(plane.base / f"admin-{target.name}.kubeconfig",
                                      server=target.url)
        cluster = Cluster(plane, proxy, api_client(str(path)))
        cluster.remove_crds()
        proxy.requests.clear()
        try:
            yield cluster
        finally:
            cluster.remove_crds()


@pytest.fixture
def cluster(control_plane: ControlPlane) -> Iterator[Cluster]:
    """The session's API server, with no Lock CRD before and after the test."""
    yield from _cluster(control_plane)


@pytest.fixture(scope="module")
def ha_api_server(control_plane: ControlPlane) -> Iterator[ApiServer]:
    """An API server configured for an HA control plane (``--apiserver-count=2``) on an
    etcd prefix of its own: the real apiextensions server then keeps a new CRD
    Installing for 5 s before establishing it, so an up must wait for Established."""
    with control_plane.extra_api_server("kube-apiserver-ha", etcd_prefix="/ha-registry",
                                        extra_args=["--apiserver-count=2"]) as api_server:
        yield api_server


@pytest.fixture
def ha_cluster(control_plane: ControlPlane, ha_api_server: ApiServer) -> Iterator[Cluster]:
    yield from _cluster(control_plane, ha_api_server)


def _inputs(cluster: Cluster, *, owner: str = "mysql-cluster/dev", **extra: Any,
            ) -> dict[str, Any]:
    manifest = lock_crd_manifest()
    return {"manifest": manifest, "crdName": manifest["metadata"]["name"], "owner": owner,
            "forceDelete": False, "establishTimeoutSeconds": 30,
            "kubeconfig": yaml.safe_dump(cluster.kubeconfig()), **extra}


def _driver(server: ProviderServer, name: str = "locks-crd") -> ResourceDriver:
    return ResourceDriver(server, LockCRDProvider(), name=name,
                          secret_inputs=frozenset({"kubeconfig"}),
                          additional_secret_outputs=frozenset({"kubeconfig"}))


def _session(cluster: Cluster, tmp_path: Path, namespace: str = "default",
             ) -> KubeLockBackend:
    cluster.plane.create_namespace(namespace)
    kubeconfig = cluster.write_kubeconfig(tmp_path / f"client-{namespace}.yaml", namespace)
    return KubeLockBackend(api_client(str(kubeconfig)), namespace, ttl=5)


def test_up_installs_the_crd_and_locks_work_through_it(server: ProviderServer,
                                                       cluster: Cluster,
                                                       tmp_path: Path) -> None:
    driver = _driver(server)
    result = driver.up(_inputs(cluster))
    assert result.operation == "create"
    assert result.outputs["established"] is True
    assert result.outputs["storedVersions"] == ["v1"]
    crd = cluster.crd()
    assert crd is not None
    # The real server defaults what the manifest leaves out (conversion: None).
    wanted = lock_crd_manifest()["spec"]
    assert {key: crd["spec"][key] for key in wanted} == wanted
    assert crd["spec"]["conversion"] == {"strategy": "None"}
    assert crd["metadata"]["annotations"][OWNERS_ANNOTATION] == "mysql-cluster/dev"
    # The custom resources are served: a real lock round trip through the CRD.
    with _session(cluster, tmp_path) as session:
        grant = session.acquire("shop/orders", timeout=5)
        assert grant is not None
        assert grant.token == 1
        session.release(grant)
    assert driver.up(_inputs(cluster)).operation == "same"


def test_create_waits_for_established(server: ProviderServer, ha_cluster: Cluster) -> None:
    """On an HA-configured API server the real controller establishes a new CRD only
    after 5 s: the provider must keep polling until then, and report Established."""
    driver = _driver(server)
    outcome: dict[str, Any] = {}

    def up() -> None:
        try:
            outcome["result"] = driver.up(_inputs(ha_cluster))
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = error

    thread = threading.Thread(target=up)
    thread.start()

    def installing() -> bool:
        crd = ha_cluster.crd()
        conditions = {c["type"]: c["status"] for c in
                      ((crd or {}).get("status") or {}).get("conditions") or []}
        return conditions.get("NamesAccepted") == "True" and conditions.get(
            "Established") != "True"

    wait_until(installing, timeout=30, what="the CRD to be accepted and still Installing")
    wait_until(lambda: len([p for m, p in ha_cluster.proxy.requests
                            if m == "GET" and p.endswith(CRD_NAME)]) >= 3, timeout=30,
               what="the provider polling the CRD while it is not yet Established")
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert "error" not in outcome, outcome
    assert outcome["result"].outputs["established"] is True
    crd = ha_cluster.crd()
    assert crd is not None
    established = next(c for c in crd["status"]["conditions"] if c["type"] == "Established")
    assert established["status"] == "True", "the real controller set Established"
    driver.destroy()


def test_establish_timeout_fails_naming_the_conditions(server: ProviderServer,
                                                       ha_cluster: Cluster) -> None:
    driver = _driver(server)
    with pytest.raises(ProviderError) as failure:
        driver.up(_inputs(ha_cluster, establishTimeoutSeconds=1))
    assert f"CustomResourceDefinition {CRD_NAME} was not Established within 1s" in (
        failure.value.details)
    assert "Established=False" in failure.value.details


def test_destroy_refuses_while_a_lock_is_held_then_succeeds(server: ProviderServer,
                                                            cluster: Cluster,
                                                            tmp_path: Path) -> None:
    driver = _driver(server)
    driver.up(_inputs(cluster))
    session = _session(cluster, tmp_path, "shop")
    grant = session.acquire("orders", timeout=5)
    assert grant is not None
    with pytest.raises(ProviderError) as failure:
        driver.destroy()
    details = failure.value.details
    assert f"refusing to delete CustomResourceDefinition {CRD_NAME}" in details
    assert f"shop/orders held by {session.identity} (token 1" in details
    assert "forceDelete" in details
    # Nothing was changed: the CRD and the lock are intact, the holder still holds.
    assert cluster.crd() is not None
    assert cluster.lock("shop", "orders")["status"]["holder"] == (  # type: ignore[index]
        session.identity)
    assert not grant.lost.is_set()
    session.close()  # releases
    assert driver.state is not None
    driver.destroy()
    assert cluster.crd() is None


def test_force_delete_removes_the_crd_and_every_lock(server: ProviderServer,
                                                     cluster: Cluster,
                                                     tmp_path: Path) -> None:
    driver = _driver(server)
    driver.up(_inputs(cluster))
    session = _session(cluster, tmp_path)
    assert session.acquire("held", timeout=5) is not None
    # forceDelete reaches state through an update, as `pulumi up` after a config change.
    assert driver.up(_inputs(cluster, forceDelete=True)).operation == "update"
    driver.destroy()
    assert cluster.crd() is None
    assert cluster.lock("default", "held") is None
    session.close()  # its lock went with the CRD: closing must not fail


def test_two_stacks_share_the_crd_and_the_last_one_deletes_it(server: ProviderServer,
                                                              cluster: Cluster) -> None:
    dev = _driver(server, "dev-crd")
    prod = _driver(server, "prod-crd")
    dev.up(_inputs(cluster, owner="mysql-cluster/dev"))
    prod.up(_inputs(cluster, owner="mysql-cluster/prod"))
    crd = cluster.crd()
    assert crd is not None
    assert crd["metadata"]["annotations"][OWNERS_ANNOTATION] == (
        "mysql-cluster/dev,mysql-cluster/prod")
    dev.destroy()
    crd = cluster.crd()
    assert crd is not None, "destroying one stack deleted a CRD another stack uses"
    assert crd["metadata"]["annotations"][OWNERS_ANNOTATION] == "mysql-cluster/prod"
    prod.destroy()
    assert cluster.crd() is None


def test_manifest_change_updates_the_crd_in_place(server: ProviderServer,
                                                  cluster: Cluster) -> None:
    driver = _driver(server)
    driver.up(_inputs(cluster))
    uid = cluster.crd()["metadata"]["uid"]  # type: ignore[index]
    changed = _inputs(cluster)
    changed["manifest"]["spec"]["versions"][0]["additionalPrinterColumns"].append(
        {"name": "Renewed", "type": "date", "jsonPath": ".status.renewTime", "priority": 1})
    preview = driver.preview(changed)
    assert preview is not None
    assert preview.changes is True
    assert preview.replaces == ()
    assert len(cluster.crd()["spec"]["versions"][0]["additionalPrinterColumns"]) == 5  # type: ignore[index]
    assert driver.up(changed).operation == "update"
    crd = cluster.crd()
    assert crd is not None
    assert crd["metadata"]["uid"] == uid
    assert [c["name"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]][-1] == (
        "Renewed")


def test_refresh_sees_a_crd_deleted_behind_our_back(server: ProviderServer,
                                                    cluster: Cluster) -> None:
    driver = _driver(server)
    driver.up(_inputs(cluster))
    assert driver.refresh()["established"] is True
    api = cluster.api
    from kubernetes import client as k8s_client  # noqa: PLC0415

    k8s_client.ApiextensionsV1Api(api).delete_custom_resource_definition(CRD_NAME)
    wait_until(lambda: cluster.crd() is None, timeout=CRD_DELETION_SECONDS,
               what="the CRD to be deleted")
    driver.refresh()
    assert driver.state is not None
    assert driver.state.id == ""  # the engine drops a resource read back without an id


def test_check_names_each_bad_property(server: ProviderServer, cluster: Cluster) -> None:
    driver = _driver(server)
    bad = _inputs(cluster, owner="", forceDelete="yes", establishTimeoutSeconds=2.5,
                  context="")
    bad["crdName"] = "other.example.com"
    result = driver.check(bad)
    reasons = {f.property: f.reason for f in result.failures}
    assert set(reasons) == {"owner", "forceDelete", "establishTimeoutSeconds", "crdName",
                            "context"}
    assert "got 2.5" in reasons["establishTimeoutSeconds"]
    assert "locks.locks.mysql-cluster.io" in reasons["crdName"]
    assert cluster.crd() is None


def test_kubeconfig_from_the_environment_and_never_in_plaintext_state(
        cluster: Cluster, tmp_path: Path) -> None:
    kubeconfig = cluster.write_kubeconfig(tmp_path / "env-kubeconfig.yaml")
    with ProviderServer(env={"KUBECONFIG": str(kubeconfig)},
                        log_path=tmp_path / "provider.log") as env_server:
        env_server.configure()
        driver = _driver(env_server)
        inputs = _inputs(cluster)
        del inputs["kubeconfig"]
        driver.up(inputs)
        assert cluster.crd() is not None
        driver.destroy()
        assert cluster.crd() is None
    # With the kubeconfig as an input, its token must never reach plaintext state.
    with ProviderServer(log_path=tmp_path / "provider2.log") as plain_server:
        plain_server.configure()
        driver = _driver(plain_server)
        driver.up(_inputs(cluster))
        driver.assert_no_plaintext([cluster.token])


def test_wrong_credentials_are_a_clear_error(server: ProviderServer,
                                             cluster: Cluster) -> None:
    inputs = _inputs(cluster)
    inputs["kubeconfig"] = inputs["kubeconfig"].replace(cluster.token, "wrong-token")
    with pytest.raises(ProviderError) as failure:
        _driver(server).up(inputs)
    assert "not allowed to" in failure.value.details
    assert "401" in failure.value.details
    assert cluster.crd() is None


def test_preview_changes_nothing_in_the_cluster(server: ProviderServer,
                                                cluster: Cluster) -> None:
    driver = _driver(server)
    assert driver.preview(_inputs(cluster)) is None
    assert driver.calls == ["check"]
    assert not [m for m, _ in cluster.proxy.requests if m != "GET"]
    assert cluster.crd() is None


def test_a_crd_installed_by_hand_is_adopted_but_never_deleted(server: ProviderServer,
                                                              cluster: Cluster) -> None:
    from kubernetes import client as k8s_client  # noqa: PLC0415

    api = cluster.api
    extensions: Any = k8s_client.ApiextensionsV1Api(api)
    extensions.create_custom_resource_definition(lock_crd_manifest())  # `kubectl apply`
    driver = _driver(server)
    driver.up(_inputs(cluster))
    crd = cluster.crd()
    assert crd is not None
    assert crd["metadata"]["annotations"][OWNERS_ANNOTATION] == (
        f"{EXTERNAL_OWNER},mysql-cluster/dev")
    driver.destroy()
    crd = cluster.crd()
    assert crd is not None, "destroy deleted a CRD that Pulumi did not create"
    assert crd["metadata"]["annotations"][OWNERS_ANNOTATION] == EXTERNAL_OWNER


def test_a_names_conflict_fails_at_once_naming_it(server: ProviderServer,
                                                 cluster: Cluster) -> None:
    from kubernetes import client as k8s_client  # noqa: PLC0415

    rival = lock_crd_manifest()
    rival["metadata"]["name"] = f"rivals.{GROUP}"
    rival["spec"]["names"] = {"kind": "Rival", "plural": "rivals", "shortNames": ["dlock"]}
    extensions: Any = k8s_client.ApiextensionsV1Api(cluster.api)
    extensions.create_custom_resource_definition(rival)
    with pytest.raises(ProviderError) as failure:
        _driver(server).up(_inputs(cluster, establishTimeoutSeconds=600))
    assert f"CustomResourceDefinition {CRD_NAME} was not accepted: ShortNamesConflict" in (
        failure.value.details)
    assert "dlock" in failure.value.details
