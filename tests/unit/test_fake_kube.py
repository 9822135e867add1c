"""The fake API server checked against documented Kubernetes API behaviour.

Every test drives the fake through the official ``kubernetes`` client, as the code
under test does, and asserts one documented behaviour. Sources, cited per test:

- [concepts] Kubernetes API Concepts, kubernetes.io/docs/reference/using-api/api-concepts/
  (resourceVersion, watch from a resourceVersion, synthetic ADDED events, 410 Gone).
- [conventions] API Conventions, "Concurrency Control and Consistency" (409 Conflict on
  a stale resourceVersion) and "Response Status Kind" (Status reason/code).
- [crd] Custom Resource Definitions task page and the CustomResourceSubresourceStatus
  API reference (status subresource; generation; pruning; validation; Established;
  deleting a CRD deletes its objects; name must be ``<plural>.<group>``).
- [watch-410] kubernetes/kubernetes#25151: an expired watch is a 200 stream carrying an
  ERROR event whose object is a Status with code 410, reason Expired.

What the fake does *not* reproduce is listed in its module docstring (RBAC, admission,
server-side apply, strategic merge, pagination), so nothing here claims it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException

from components.locks.crd import lock_crd_manifest
from distlock.kube import CRD_NAME, GROUP, PLURAL, VERSION, api_client
from tests.support.fake_kube import FakeKubeServer

NS = "default"


@pytest.fixture
def fake() -> Iterator[FakeKubeServer]:
    with FakeKubeServer() as kube:
        yield kube


@pytest.fixture
def api(fake: FakeKubeServer, tmp_path: Path) -> Any:
    return api_client(str(fake.write_kubeconfig(tmp_path / "kubeconfig")))


@pytest.fixture
def crd(api: Any) -> dict[str, Any]:
    extensions: Any = k8s_client.ApiextensionsV1Api(api)
    created: dict[str, Any] = extensions.create_custom_resource_definition(
        lock_crd_manifest(), _preload_content=False).json()
    return created


@pytest.fixture
def objects(api: Any, crd: dict[str, Any]) -> Any:
    return k8s_client.CustomObjectsApi(api)


def _lock(name: str, **status: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Lock",
                            "metadata": {"name": name}, "spec": {"lockName": name}}
    if status:
        body["status"] = status
    return body


def _error(error: pytest.ExceptionInfo[ApiException]) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(error.value.body or "{}")
    return body


def _create(objects: Any, name: str) -> dict[str, Any]:
    created: dict[str, Any] = objects.create_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, _lock(name))
    return created


def _watch(objects: Any, **params: Any) -> list[dict[str, Any]]:
    response = objects.list_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, watch=True, timeout_seconds=1, _preload_content=False,
        **params)
    try:
        return [json.loads(line) for line in response.data.decode().splitlines() if line]
    finally:
        response.release_conn()


# -- [conventions] status responses, 404, 409 AlreadyExists, 401 ----------------------------


def test_unknown_object_is_404_notfound_status(objects: Any) -> None:
    with pytest.raises(ApiException) as error:
        objects.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "missing")
    assert error.value.status == 404
    body = _error(error)
    assert (body["kind"], body["status"], body["reason"], body["code"]) == (
        "Status", "Failure", "NotFound", 404)
    assert body["message"] == f'{PLURAL}.{GROUP} "missing" not found'


def test_create_twice_is_409_alreadyexists(objects: Any) -> None:
    _create(objects, "a")
    with pytest.raises(ApiException) as error:
        _create(objects, "a")
    assert error.value.status == 409
    assert _error(error)["reason"] == "AlreadyExists"


def test_create_in_a_missing_namespace_is_404(objects: Any) -> None:
    with pytest.raises(ApiException) as error:
        objects.create_namespaced_custom_object(GROUP, VERSION, "nope", PLURAL, _lock("a"))
    assert error.value.status == 404
    assert _error(error)["message"] == 'namespaces "nope" not found'


def test_requests_without_the_bearer_token_are_401(fake: FakeKubeServer, tmp_path: Path) -> None:
    config = fake.kubeconfig()
    config["users"][0]["user"]["token"] = "wrong"
    path = tmp_path / "wrong"
    path.write_text(json.dumps(config))
    with pytest.raises(ApiException) as error:
        k8s_client.CustomObjectsApi(api_client(str(path))).list_cluster_custom_object(
            GROUP, VERSION, PLURAL)
    assert error.value.status == 401


# -- [concepts] [conventions] resourceVersion and optimistic concurrency ----------------------


def test_create_sets_server_fields_and_resource_versions_increase(objects: Any) -> None:
    first, second = _create(objects, "a"), _create(objects, "b")
    meta = first["metadata"]
    assert meta["uid"]
    assert meta["creationTimestamp"]
    assert meta["generation"] == 1
    assert meta["namespace"] == NS
    assert int(second["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])


def test_stale_resource_version_is_409_conflict(objects: Any) -> None:
    created = _create(objects, "a")
    stale = json.loads(json.dumps(created))
    created["status"] = {"holder": "x"}
    objects.replace_namespaced_custom_object_status(GROUP, VERSION, NS, PLURAL, "a", created)
    stale["status"] = {"holder": "y"}
    with pytest.raises(ApiException) as error:
        objects.replace_namespaced_custom_object_status(GROUP, VERSION, NS, PLURAL, "a", stale)
    assert error.value.status == 409
    body = _error(error)
    assert body["reason"] == "Conflict"
    assert "the object has been modified; please apply your changes to the latest version" in (
        body["message"])
    current = objects.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "a")
    assert current["status"] == {"holder": "x"}


def test_custom_resources_refuse_unconditional_updates(objects: Any) -> None:
    created = _create(objects, "a")
    del created["metadata"]["resourceVersion"]
    with pytest.raises(ApiException) as error:
        objects.replace_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "a", created)
    assert error.value.status == 422
    assert "must be specified for an update" in _error(error)["message"]


def test_a_write_that_changes_nothing_keeps_the_resource_version(objects: Any) -> None:
    created = _create(objects, "a")
    again = objects.replace_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "a", created)
    assert again["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


def test_list_carries_the_collection_resource_version(objects: Any, fake: FakeKubeServer,
                                                      ) -> None:
    _create(objects, "a")
    listing = objects.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL,
                                                    field_selector="metadata.name=a")
    assert [i["metadata"]["name"] for i in listing["items"]] == ["a"]
    assert listing["metadata"]["resourceVersion"] == str(fake.resource_version)


def test_delete_preconditions_and_merge_patch_conditions(objects: Any) -> None:
    created = _create(objects, "a")
    with pytest.raises(ApiException) as error:
        objects.delete_namespaced_custom_object(
            GROUP, VERSION, NS, PLURAL, "a",
            body={"preconditions": {"resourceVersion": "1"}})
    assert error.value.status == 409
    with pytest.raises(ApiException) as error:
        objects.patch_namespaced_custom_object(
            GROUP, VERSION, NS, PLURAL, "a",
            {"metadata": {"resourceVersion": "1"}, "spec": {"lockName": "b"}})
    assert error.value.status == 409
    objects.delete_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, "a",
        body={"preconditions": {"resourceVersion": created["metadata"]["resourceVersion"]}})
    with pytest.raises(ApiException) as error:
        objects.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "a")
    assert error.value.status == 404


def test_strategic_merge_patch_is_unsupported_for_custom_resources(objects: Any) -> None:
    _create(objects, "a")
    with pytest.raises(ApiException) as error:
        objects.patch_namespaced_custom_object(
            GROUP, VERSION, NS, PLURAL, "a", {"spec": {"lockName": "b"}},
            _content_type="application/strategic-merge-patch+json")
    assert error.value.status == 415


# -- [crd] status subresource, generation, validation, pruning ------------------------------


def test_status_subresource_separates_spec_and_status_writes(objects: Any) -> None:
    created = objects.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL,
                                                      _lock("a", holder="ignored"))
    assert "status" not in created, "status in a create body must be ignored"
    created["status"] = {"holder": "me"}
    created["spec"] = {"lockName": "changed-through-status"}
    after_status = objects.replace_namespaced_custom_object_status(GROUP, VERSION, NS, PLURAL,
                                                                   "a", created)
    assert after_status["status"] == {"holder": "me"}
    assert after_status["spec"] == {"lockName": "a"}, "/status changed the spec"
    assert after_status["metadata"]["generation"] == 1, "a status write bumped generation"
    after_status["status"] = {"holder": "changed-through-main"}
    after_status["spec"] = {"lockName": "b"}
    after_main = objects.replace_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "a",
                                                          after_status)
    assert after_main["status"] == {"holder": "me"}, "the main resource changed status"
    assert after_main["spec"] == {"lockName": "b"}
    assert after_main["metadata"]["generation"] == 2


def test_schema_violations_are_422_naming_the_field(objects: Any) -> None:
    created = _create(objects, "a")
    created["status"] = {"fencingToken": -1, "waiters": [{"identity": "w"}]}
    with pytest.raises(ApiException) as error:
        objects.replace_namespaced_custom_object_status(GROUP, VERSION, NS, PLURAL, "a",
                                                        created)
    assert error.value.status == 422
    body = _error(error)
    assert body["reason"] == "Invalid"
    assert "status.fencingToken" in body["message"]
    assert "status.waiters[0].leaseDurationSeconds: Required value" in body["message"]


def test_unknown_fields_are_pruned(objects: Any) -> None:
    body = _lock("a")
    body["spec"]["surprise"] = 1
    body["extra"] = {"x": 1}
    created = objects.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)
    assert created["spec"] == {"lockName": "a"}
    assert "extra" not in created


def test_crd_reports_established_and_serves_then_deletes_its_objects(
        api: Any, fake: FakeKubeServer) -> None:
    objects = k8s_client.CustomObjectsApi(api)
    with pytest.raises(ApiException) as error:
        objects.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL)
    assert error.value.status == 404, "custom resources served before their CRD exists"
    extensions: Any = k8s_client.ApiextensionsV1Api(api)
    crd = extensions.create_custom_resource_definition(lock_crd_manifest(),
                                                       _preload_content=False).json()
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions == {"NamesAccepted": "True", "Established": "True"}
    assert crd["status"]["storedVersions"] == [VERSION]
    _create(objects, "a")
    extensions.delete_custom_resource_definition(CRD_NAME)
    assert fake.get_object(GROUP, PLURAL, NS, "a") is None, "objects outlived their CRD"
    with pytest.raises(ApiException) as error:
        objects.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL)
    assert error.value.status == 404


def test_crd_name_must_be_plural_dot_group(api: Any) -> None:
    manifest = lock_crd_manifest()
    manifest["metadata"]["name"] = "locks.example.com"
    extensions: Any = k8s_client.ApiextensionsV1Api(api)
    with pytest.raises(ApiException) as error:
        extensions.create_custom_resource_definition(manifest)
    assert error.value.status == 422


def test_crd_not_yet_established_does_not_serve(tmp_path: Path) -> None:
    with FakeKubeServer(establish=False) as fake:
        api = api_client(str(fake.write_kubeconfig(tmp_path / "kc")))
        extensions: Any = k8s_client.ApiextensionsV1Api(api)
        crd = extensions.create_custom_resource_definition(lock_crd_manifest(),
                                                           _preload_content=False).json()
        assert {c["type"]: c["status"] for c in crd["status"]["conditions"]}[
            "Established"] == "False"
        objects: Any = k8s_client.CustomObjectsApi(api)
        with pytest.raises(ApiException) as error:
            objects.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL)
        assert error.value.status == 404
        fake.establish(CRD_NAME)
        assert objects.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL)["items"] == []


# -- [concepts] [watch-410] watch ------------------------------------------------------------


def test_watch_without_a_version_starts_with_synthetic_added_events(objects: Any) -> None:
    _create(objects, "a")
    _create(objects, "b")
    events = _watch(objects)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "a"), ("ADDED", "b")]


def test_watch_from_a_version_replays_later_changes_in_order(objects: Any) -> None:
    created = _create(objects, "a")
    since = created["metadata"]["resourceVersion"]
    created["status"] = {"holder": "me"}
    objects.replace_namespaced_custom_object_status(GROUP, VERSION, NS, PLURAL, "a", created)
    _create(objects, "b")
    objects.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "a")
    events = _watch(objects, resource_version=since)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("MODIFIED", "a"), ("ADDED", "b"), ("DELETED", "a")]
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert versions == sorted(versions)
    assert versions[0] > int(since)
    named = _watch(objects, resource_version=since, field_selector="metadata.name=b")
    assert [e["type"] for e in named] == ["ADDED"]


def test_watch_from_a_compacted_version_is_a_410_expired_event(objects: Any,
                                                               fake: FakeKubeServer) -> None:
    created = _create(objects, "a")
    _create(objects, "b")
    fake.compact()
    response = objects.list_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, watch=True, timeout_seconds=1, _preload_content=False,
        resource_version=created["metadata"]["resourceVersion"])
    assert response.status == 200
    [event] = [json.loads(line) for line in response.data.decode().splitlines() if line]
    assert event["type"] == "ERROR"
    assert (event["object"]["kind"], event["object"]["code"], event["object"]["reason"]) == (
        "Status", 410, "Expired")
    assert event["object"]["message"].startswith("too old resource version")
    assert fake.expired_watches == 1
    # The documented recovery: list, then watch from the list's resourceVersion.
    listing = objects.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL)
    assert _watch(objects, resource_version=listing["metadata"]["resourceVersion"]) == []


@pytest.mark.parametrize("hang", [True, False])
def test_unreachable_answers_nothing_and_recovers_with_the_data(objects: Any,
                                                                fake: FakeKubeServer,
                                                                hang: bool) -> None:
    _create(objects, "a")
    with fake.unreachable(hang=hang):
        with pytest.raises(Exception) as error:  # noqa: PT011 - whatever urllib3 raises
            objects.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "a",
                                                 _request_timeout=0.5)
        assert not isinstance(error.value, ApiException), "got an HTTP answer"
    again = objects.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "a")
    assert again["metadata"]["name"] == "a"


def test_json_patch_applies_operations_and_fails_a_test_operation(objects: Any) -> None:
    _create(objects, "a")
    patched = objects.patch_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, "a",
        [{"op": "test", "path": "/spec/lockName", "value": "a"},
         {"op": "replace", "path": "/spec/lockName", "value": "b"}],
        _content_type="application/json-patch+json")
    assert patched["spec"] == {"lockName": "b"}
    with pytest.raises(ApiException) as error:
        objects.patch_namespaced_custom_object(
            GROUP, VERSION, NS, PLURAL, "a",
            [{"op": "test", "path": "/spec/lockName", "value": "a"},
             {"op": "replace", "path": "/spec/lockName", "value": "c"}],
            _content_type="application/json-patch+json")
    assert error.value.status == 422
    current = objects.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "a")
    assert current["spec"] == {"lockName": "b"}
