"""The LockCRD provider through the real provider server, exactly as `pulumi up` drives it.

The provider process gets the kubeconfig the way a stack gives it (a secret input, or
``$KUBECONFIG`` in its environment) and talks to the in-process fake API server
(tests/support/fake_kube.py) over real HTTP with the official client. Each test
drives up / preview / refresh / destroy through :class:`ResourceDriver` and then looks
at what is in the "cluster", so every assertion is about an effect, not a call.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML ships with kubernetes

from components.locks.crd import EXTERNAL_OWNER, OWNERS_ANNOTATION, lock_crd_manifest
from components.locks.provider import LockCRDProvider
from distlock.kube import CRD_NAME, GROUP, PLURAL, KubeLockBackend, api_client
from tests.support.fake_kube import CRD_GROUP, CRD_PLURAL, FakeKubeServer
from tests.support.procs import wait_until
from tests.support.provider_server import ProviderError, ProviderServer, ResourceDriver

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProviderServer]:
    log = tmp_path_factory.mktemp("provider") / "provider.log"
    with ProviderServer(log_path=log) as srv:
        srv.configure()
        yield srv


@pytest.fixture
def fake() -> Iterator[FakeKubeServer]:
    with FakeKubeServer() as kube:
        yield kube


def _inputs(fake: FakeKubeServer, *, owner: str = "mysql-cluster/dev", **extra: Any,
            ) -> dict[str, Any]:
    manifest = lock_crd_manifest()
    return {"manifest": manifest, "crdName": manifest["metadata"]["name"], "owner": owner,
            "forceDelete": False, "establishTimeoutSeconds": 30,
            "kubeconfig": yaml.safe_dump(fake.kubeconfig()), **extra}


def _driver(server: ProviderServer, name: str = "locks-crd") -> ResourceDriver:
    return ResourceDriver(server, LockCRDProvider(), name=name,
                          secret_inputs=frozenset({"kubeconfig"}),
                          additional_secret_outputs=frozenset({"kubeconfig"}))


def _crd(fake: FakeKubeServer) -> dict[str, Any] | None:
    return fake.get_object(CRD_GROUP, CRD_PLURAL, "", CRD_NAME)


def _session(fake: FakeKubeServer, tmp_path: Path, namespace: str = "default",
             ) -> KubeLockBackend:
    kubeconfig = fake.write_kubeconfig(tmp_path / f"client-{namespace}.yaml",
                                       namespace=namespace)
    return KubeLockBackend(api_client(str(kubeconfig)), namespace, ttl=5)


def test_up_installs_the_crd_and_locks_work_through_it(server: ProviderServer,
                                                       fake: FakeKubeServer,
                                                       tmp_path: Path) -> None:
    driver = _driver(server)
    result = driver.up(_inputs(fake))
    assert result.operation == "create"
    assert result.outputs["established"] is True
    assert result.outputs["storedVersions"] == ["v1"]
    crd = _crd(fake)
    assert crd is not None
    assert crd["spec"] == lock_crd_manifest()["spec"]
    assert crd["metadata"]["annotations"][OWNERS_ANNOTATION] == "mysql-cluster/dev"
    # The custom resources are served: a real lock round trip through the CRD.
    with _session(fake, tmp_path) as session:
        grant = session.acquire("shop/orders", timeout=5)
        assert grant is not None
        assert grant.token == 1
        session.release(grant)
    assert driver.up(_inputs(fake)).operation == "same"


def test_create_waits_for_established(server: ProviderServer, tmp_path: Path) -> None:
    with FakeKubeServer(establish=False) as fake:
        driver = _driver(server)
        outcome: dict[str, Any] = {}

        def up() -> None:
            try:
                outcome["result"] = driver.up(_inputs(fake))
            except Exception as error:  # noqa: BLE001 - reported by the assertion below
                outcome["error"] = error

        thread = threading.Thread(target=up)
        thread.start()

        def polled_while_installing() -> bool:
            reads = [p for m, p in fake.requests if m == "GET" and p.endswith(CRD_NAME)]
            return len(reads) >= 3

        wait_until(polled_while_installing, timeout=20,
                   what="the provider polling the CRD while it is not yet Established")
        assert thread.is_alive(), f"up returned before Established: {outcome}"
        assert "result" not in outcome
        fake.establish(CRD_NAME)
        thread.join(timeout=30)
        assert not thread.is_alive()
        assert outcome["result"].outputs["established"] is True


def test_establish_timeout_fails_naming_the_conditions(server: ProviderServer) -> None:
    with FakeKubeServer(establish=False) as fake:
        driver = _driver(server)
        with pytest.raises(ProviderError) as failure:
            driver.up(_inputs(fake, establishTimeoutSeconds=1))
        assert f"CustomResourceDefinition {CRD_NAME} was not Established within 1s" in (
            failure.value.details)
        assert "Established=False" in failure.value.details


def test_destroy_refuses_while_a_lock_is_held_then_succeeds(server: ProviderServer,
                                                            fake: FakeKubeServer,
                                                            tmp_path: Path) -> None:
    driver = _driver(server)
    driver.up(_inputs(fake))
    fake.create_namespace("shop")
    session = _session(fake, tmp_path, "shop")
    grant = session.acquire("orders", timeout=5)
    assert grant is not None
    with pytest.raises(ProviderError) as failure:
        driver.destroy()
    details = failure.value.details
    assert f"refusing to delete CustomResourceDefinition {CRD_NAME}" in details
    assert f"shop/orders held by {session.identity} (token 1" in details
    assert "forceDelete" in details
    # Nothing was changed: the CRD and the lock are intact, the holder still holds.
    assert _crd(fake) is not None
    assert fake.get_object(GROUP, PLURAL, "shop", "orders")["status"]["holder"] == (  # type: ignore[index]
        session.identity)
    assert not grant.lost.is_set()
    session.close()  # releases
    assert driver.state is not None
    driver.destroy()
    assert _crd(fake) is None


def test_force_delete_removes_the_crd_and_every_lock(server: ProviderServer,
                                                     fake: FakeKubeServer,
                                                     tmp_path: Path) -> None:
    driver = _driver(server)
    driver.up(_inputs(fake))
    session = _session(fake, tmp_path)
    assert session.acquire("held", timeout=5) is not None
    # forceDelete reaches state through an update, as `pulumi up` after a config change.
    assert driver.up(_inputs(fake, forceDelete=True)).operation == "update"
    driver.destroy()
    assert _crd(fake) is None
    assert fake.get_object(GROUP, PLURAL, "default", "held") is None
    session.close()  # its lock went with the CRD: closing must not fail


def test_two_stacks_share_the_crd_and_the_last_one_deletes_it(server: ProviderServer,
                                                              fake: FakeKubeServer) -> None:
    dev = _driver(server, "dev-crd")
    prod = _driver(server, "prod-crd")
    dev.up(_inputs(fake, owner="mysql-cluster/dev"))
    prod.up(_inputs(fake, owner="mysql-cluster/prod"))
    crd = _crd(fake)
    assert crd is not None
    assert crd["metadata"]["annotations"][OWNERS_ANNOTATION] == (
        "mysql-cluster/dev,mysql-cluster/prod")
    dev.destroy()
    crd = _crd(fake)
    assert crd is not None, "destroying one stack deleted a CRD another stack uses"
    assert crd["metadata"]["annotations"][OWNERS_ANNOTATION] == "mysql-cluster/prod"
    prod.destroy()
    assert _crd(fake) is None


def test_manifest_change_updates_the_crd_in_place(server: ProviderServer,
                                                  fake: FakeKubeServer) -> None:
    driver = _driver(server)
    driver.up(_inputs(fake))
    uid = _crd(fake)["metadata"]["uid"]  # type: ignore[index]
    changed = _inputs(fake)
    changed["manifest"]["spec"]["versions"][0]["additionalPrinterColumns"].append(
        {"name": "Renewed", "type": "date", "jsonPath": ".status.renewTime", "priority": 1})
    preview = driver.preview(changed)
    assert preview is not None
    assert preview.changes is True
    assert preview.replaces == ()
    assert len(_crd(fake)["spec"]["versions"][0]["additionalPrinterColumns"]) == 5  # type: ignore[index]
    assert driver.up(changed).operation == "update"
    crd = _crd(fake)
    assert crd is not None
    assert crd["metadata"]["uid"] == uid
    assert [c["name"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]][-1] == (
        "Renewed")


def test_refresh_sees_a_crd_deleted_behind_our_back(server: ProviderServer,
                                                    fake: FakeKubeServer) -> None:
    driver = _driver(server)
    driver.up(_inputs(fake))
    assert driver.refresh()["established"] is True
    api = api_client(yaml.safe_dump(fake.kubeconfig()))
    from kubernetes import client as k8s_client  # noqa: PLC0415

    k8s_client.ApiextensionsV1Api(api).delete_custom_resource_definition(CRD_NAME)
    driver.refresh()
    assert driver.state is not None
    assert driver.state.id == ""  # the engine drops a resource read back without an id


def test_check_names_each_bad_property(server: ProviderServer, fake: FakeKubeServer) -> None:
    driver = _driver(server)
    bad = _inputs(fake, owner="", forceDelete="yes", establishTimeoutSeconds=2.5,
                  context="")
    bad["crdName"] = "other.example.com"
    result = driver.check(bad)
    reasons = {f.property: f.reason for f in result.failures}
    assert set(reasons) == {"owner", "forceDelete", "establishTimeoutSeconds", "crdName",
                            "context"}
    assert "got 2.5" in reasons["establishTimeoutSeconds"]
    assert "locks.locks.mysql-cluster.io" in reasons["crdName"]
    assert _crd(fake) is None


def test_kubeconfig_from_the_environment_and_never_in_plaintext_state(
        fake: FakeKubeServer, tmp_path: Path) -> None:
    kubeconfig = fake.write_kubeconfig(tmp_path / "env-kubeconfig.yaml")
    with ProviderServer(env={"KUBECONFIG": str(kubeconfig)},
                        log_path=tmp_path / "provider.log") as env_server:
        env_server.configure()
        driver = _driver(env_server)
        inputs = _inputs(fake)
        del inputs["kubeconfig"]
        driver.up(inputs)
        assert _crd(fake) is not None
        driver.destroy()
        assert _crd(fake) is None
    # With the kubeconfig as an input, its token must never reach plaintext state.
    with ProviderServer(log_path=tmp_path / "provider2.log") as plain_server:
        plain_server.configure()
        driver = _driver(plain_server)
        driver.up(_inputs(fake))
        assert fake.token is not None
        driver.assert_no_plaintext([fake.token])


def test_wrong_credentials_are_a_clear_error(server: ProviderServer,
                                             fake: FakeKubeServer) -> None:
    inputs = _inputs(fake)
    inputs["kubeconfig"] = inputs["kubeconfig"].replace(str(fake.token), "wrong-token")
    with pytest.raises(ProviderError) as failure:
        _driver(server).up(inputs)
    assert "not allowed to" in failure.value.details
    assert "401" in failure.value.details
    assert _crd(fake) is None


def test_preview_changes_nothing_in_the_cluster(server: ProviderServer,
                                                fake: FakeKubeServer) -> None:
    driver = _driver(server)
    assert driver.preview(_inputs(fake)) is None
    assert driver.calls == ["check"]
    assert not [m for m, _ in fake.requests if m != "GET"]
    assert _crd(fake) is None


def test_a_crd_installed_by_hand_is_adopted_but_never_deleted(server: ProviderServer,
                                                              fake: FakeKubeServer) -> None:
    from kubernetes import client as k8s_client  # noqa: PLC0415

    api = api_client(yaml.safe_dump(fake.kubeconfig()))
    extensions: Any = k8s_client.ApiextensionsV1Api(api)
    extensions.create_custom_resource_definition(lock_crd_manifest())  # `kubectl apply`
    driver = _driver(server)
    driver.up(_inputs(fake))
    crd = _crd(fake)
    assert crd is not None
    assert crd["metadata"]["annotations"][OWNERS_ANNOTATION] == (
        f"{EXTERNAL_OWNER},mysql-cluster/dev")
    driver.destroy()
    crd = _crd(fake)
    assert crd is not None, "destroy deleted a CRD that Pulumi did not create"
    assert crd["metadata"]["annotations"][OWNERS_ANNOTATION] == EXTERNAL_OWNER


def test_a_names_conflict_fails_at_once_naming_it(server: ProviderServer,
                                                 fake: FakeKubeServer) -> None:
    from kubernetes import client as k8s_client  # noqa: PLC0415

    rival = lock_crd_manifest()
    rival["metadata"]["name"] = f"rivals.{GROUP}"
    rival["spec"]["names"] = {"kind": "Rival", "plural": "rivals", "shortNames": ["dlock"]}
    extensions: Any = k8s_client.ApiextensionsV1Api(api_client(yaml.safe_dump(fake.kubeconfig())))
    extensions.create_custom_resource_definition(rival)
    with pytest.raises(ProviderError) as failure:
        _driver(server).up(_inputs(fake, establishTimeoutSeconds=600))
    assert f"CustomResourceDefinition {CRD_NAME} was not accepted: ShortNamesConflict" in (
        failure.value.details)
    assert "dlock" in failure.value.details
