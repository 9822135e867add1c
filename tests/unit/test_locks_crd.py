"""The Lock CRD module (``components/locks/crd.py``): manifest, owners, error messages, retries.

What the module does to a cluster (install, adopt, share, refuse to delete, delete) runs
against the real API server through the LockCRD provider in
tests/integration/test_lock_crd_provider.py. What is pinned here are the decisions that need
no server: the owners annotation as it is read and written, what an API error becomes, and
which errors a read-modify-write retries. The errors are the Kubernetes client's own
ApiException, built as the client builds them from a response.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from components.locks import crd
from components.locks.crd import (
    CRD_NAME,
    EXTERNAL_OWNER,
    OWNERS_ANNOTATION,
    CRDError,
    _explain,
    _owners,
    _retry_conflicts,
    _with_owners,
    lock_crd_manifest,
)
from distlock import crd as names


def _api_error(status: int, reason: str, body: dict[str, str] | str | None = None,
               ) -> ApiException:
    error = ApiException(status=status, reason=reason)
    error.body = json.dumps(body) if isinstance(body, dict) else body
    return error


def test_the_manifest_declares_the_names_distlock_writes() -> None:
    manifest = lock_crd_manifest()
    assert manifest["metadata"]["name"] == CRD_NAME == names.CRD_NAME == (
        f"{names.PLURAL}.{names.GROUP}")
    assert f"{names.GROUP}/owners" == OWNERS_ANNOTATION
    # A fresh copy every call: a caller that edits one (adding owners) changes no other.
    manifest["metadata"]["name"] = "edited"
    assert lock_crd_manifest()["metadata"]["name"] == CRD_NAME


@pytest.mark.parametrize(("annotations", "owners"), [
    (None, []),
    ({}, []),
    ({"other": "x"}, []),
    ({OWNERS_ANNOTATION: ""}, []),
    ({OWNERS_ANNOTATION: "mysql-cluster/dev"}, ["mysql-cluster/dev"]),
    ({OWNERS_ANNOTATION: "a/dev,,b/prod,"}, ["a/dev", "b/prod"]),   # empty entries dropped
])
def test_owners_are_read_from_the_annotation(annotations: dict[str, str] | None,
                                             owners: list[str]) -> None:
    assert _owners({"metadata": {"annotations": annotations}}) == owners
    assert _owners({}) == []


def test_owners_are_written_sorted_once_each_and_the_manifest_is_left_alone() -> None:
    manifest: dict[str, Any] = {"metadata": {"name": CRD_NAME, "annotations": {"keep": "me"}}}
    written = _with_owners(manifest, ["b/prod", "a/dev", "b/prod", EXTERNAL_OWNER])
    assert written["metadata"]["annotations"] == {
        "keep": "me", OWNERS_ANNOTATION: f"a/dev,b/prod,{EXTERNAL_OWNER}"}
    assert manifest["metadata"]["annotations"] == {"keep": "me"}
    assert _owners(written) == ["a/dev", "b/prod", EXTERNAL_OWNER]
    # A manifest without metadata annotations gets them.
    assert _with_owners({}, ["a/dev"]) == {"metadata": {"annotations": {
        OWNERS_ANNOTATION: "a/dev"}}}


@pytest.mark.parametrize(("error", "message"), [
    (_api_error(403, "Forbidden", {"message": "customresourcedefinitions is forbidden"}),
     "not allowed to install it: CustomResourceDefinitions are cluster-scoped, so the "
     "credentials need cluster-level rights on apiextensions.k8s.io "
     "(403: customresourcedefinitions is forbidden)"),
    (_api_error(401, "Unauthorized"), "not allowed to install it: CustomResourceDefinitions "
     "are cluster-scoped, so the credentials need cluster-level rights on "
     "apiextensions.k8s.io (401: Unauthorized)"),
    (_api_error(422, "Unprocessable Entity", {"message": "spec.names.plural: Invalid"}),
     "could not install it: 422 spec.names.plural: Invalid"),
    # A body that is no JSON (a proxy's HTML page) falls back to the reason.
    (_api_error(502, "Bad Gateway", "<html>bad gateway</html>"),
     "could not install it: 502 Bad Gateway"),
    (_api_error(500, "Internal Server Error", {"kind": "Status"}),
     "could not install it: 500 Internal Server Error"),
])
def test_api_errors_become_messages_that_say_what_failed(error: ApiException,
                                                         message: str) -> None:
    explained = _explain(error, "install it")
    assert isinstance(explained, CRDError)
    assert str(explained) == message


class _Flaky:
    """An operation that fails with the given statuses, in order, then returns "done"."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.statuses:
            raise _api_error(self.statuses.pop(0), "Conflict")
        return "done"


def test_a_conflict_is_retried_until_the_write_lands() -> None:
    operation = _Flaky(409, 409)
    assert _retry_conflicts(operation, "update it") == "done"
    assert operation.calls == 3


def test_anything_but_a_conflict_fails_at_once() -> None:
    operation = _Flaky(403)
    with pytest.raises(CRDError, match="not allowed to update it"):
        _retry_conflicts(operation, "update it")
    assert operation.calls == 1


def test_conflicts_that_never_end_fail_after_the_last_retry(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(crd, "_CONFLICT_RETRIES", 3)
    operation = _Flaky(409, 409, 409, 409)
    with pytest.raises(CRDError, match="could not update it: 409 Conflict"):
        _retry_conflicts(operation, "update it")
    assert operation.calls == 3
