"""The Lock CRD and the cluster operations that install and remove it (no Pulumi here).

The manifest is a YAML file beside this module (``lock-crd.yaml``) so that it can be
read, reviewed and ``kubectl apply``-ed on its own; the group, version and kind it
declares are the ones distlock's Kubernetes backend writes (a unit test holds the two
together).

Why installing is more than "create the object":

- A CRD is cluster-scoped, but stacks are per environment, and several environments
  may share one cluster. So the CRD records which stacks use it in an annotation
  (:data:`OWNERS_ANNOTATION`); a stack that finds it already installed joins the owners
  and updates it, and destroying a stack only deletes the CRD when it was the last
  owner. A CRD found without the annotation was installed by hand, so it gets the
  owner :data:`EXTERNAL_OWNER` and no stack ever deletes it. Every change is a
  compare-and-swap on ``resourceVersion`` (409: re-read, retry).
- A CRD is usable only once ``Established``; creating custom resources before that
  fails. :func:`apply_crd` waits for the condition, and fails early, naming the
  conflicting names, if the API server reports ``NamesAccepted=False``.
- Deleting a CRD deletes every object of it, which for locks means every holder loses
  its lock *and* every fencing counter restarts from zero. :func:`remove_crd` refuses
  while any lock is held or waited for, naming them, unless forced.
"""

from __future__ import annotations

import copy
import functools
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml  # type: ignore[import-untyped]  # PyYAML ships with kubernetes; no stubs pinned

from distlock.crd import CRD_NAME, GROUP, KIND, PLURAL, VERSION

MANIFEST_PATH = Path(__file__).with_name("lock-crd.yaml")
OWNERS_ANNOTATION = f"{GROUP}/owners"
# Recorded as an owner when a stack adopts a CRD someone installed without Pulumi
# (kubectl apply): no stack's destroy may then delete what it did not create.
EXTERNAL_OWNER = "external"
_POLL_SECONDS = 0.2
_STORAGE_INIT_SECONDS = 30.0
_CONFLICT_RETRIES = 20

T = TypeVar("T")


class _KubernetesClient:
    """``kubernetes.client`` and its ApiException, imported on first use.

    Only the provider process talks to the API. The Pulumi program imports this module
    for the manifest and the names, and importing the client would cost every
    ``pulumi up`` and preview about 0.7 s for nothing it uses.
    """

    @functools.cached_property
    def client(self) -> Any:
        from kubernetes import client  # noqa: PLC0415 - see the class docstring

        return client

    @functools.cached_property
    def ApiException(self) -> Any:
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        return ApiException


kube_api = _KubernetesClient()


class CRDError(RuntimeError):
    """Installing or removing the Lock CRD failed; the message says what and why."""


def lock_crd_manifest() -> dict[str, Any]:
    """The Lock CustomResourceDefinition as a plain dict (a fresh copy every call)."""
    manifest: dict[str, Any] = yaml.safe_load(MANIFEST_PATH.read_text())
    return copy.deepcopy(manifest)


def _message(error: Any) -> str:
    try:
        return str(json.loads(error.body or "").get("message") or error.reason)
    except (ValueError, TypeError, AttributeError):
        return str(error.reason)


def _explain(error: Any, action: str) -> CRDError:
    if error.status in (401, 403):
        return CRDError(f"not allowed to {action}: CustomResourceDefinitions are "
                        "cluster-scoped, so the credentials need cluster-level rights on "
                        f"apiextensions.k8s.io ({error.status}: {_message(error)})")
    return CRDError(f"could not {action}: {error.status} {_message(error)}")


def _owners(crd: Mapping[str, Any]) -> list[str]:
    annotations = (crd.get("metadata") or {}).get("annotations") or {}
    text = annotations.get(OWNERS_ANNOTATION, "")
    return [o for o in text.split(",") if o]


def _with_owners(manifest: Mapping[str, Any], owners: list[str]) -> dict[str, Any]:
    result = copy.deepcopy(dict(manifest))
    metadata = result.setdefault("metadata", {})
    metadata.setdefault("annotations", {})[OWNERS_ANNOTATION] = ",".join(sorted(set(owners)))
    return result


def _retry_conflicts(operation: Callable[[], T], action: str) -> T:
    """Run a read-modify-write until it lands without a 409 (another writer raced us)."""
    for attempt in range(_CONFLICT_RETRIES):
        try:
            return operation()
        except kube_api.ApiException as error:
            if error.status != 409 or attempt == _CONFLICT_RETRIES - 1:
                raise _explain(error, action) from error
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


def _get(api: Any, name: str) -> dict[str, Any] | None:
    try:
        # Raw JSON, not the client's model: what we write back must be what was stored.
        response = api.read_custom_resource_definition(name, _preload_content=False)
        result: dict[str, Any] = json.loads(response.data)
        return result
    except kube_api.ApiException as error:
        if error.status == 404:
            return None
        raise _explain(error, f"read CustomResourceDefinition {name}") from error


def apply_crd(api_client: Any, manifest: Mapping[str, Any], *, owner: str,
              drop_owner: str | None = None, timeout: float = 60.0) -> dict[str, Any]:
    """Create or update the CRD, record ``owner`` on it, wait until Established."""
    api: Any = kube_api.client.ApiextensionsV1Api(api_client)
    name = manifest["metadata"]["name"]
    action = f"install CustomResourceDefinition {name}"

    def write() -> None:
        current = _get(api, name)
        if current is None:
            api.create_custom_resource_definition(_with_owners(manifest, [owner]))
            return
        owners = [o for o in _owners(current) if o != drop_owner] + [owner]
        if OWNERS_ANNOTATION not in (current["metadata"].get("annotations") or {}):
            owners.append(EXTERNAL_OWNER)
        desired = _with_owners(manifest, owners)
        desired["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        # Keep labels and annotations others put there; ours win on the keys we own.
        for key in ("labels", "annotations"):
            merged = {**(current["metadata"].get(key) or {}), **(desired["metadata"].get(key)
                                                                   or {})}
            if merged:
                desired["metadata"][key] = merged
        api.replace_custom_resource_definition(name, desired)

    # A create that loses a race to another stack gets 409 AlreadyExists: retrying
    # re-reads and joins the owners instead.
    _retry_conflicts(write, action)
    return wait_established(api_client, name, timeout=timeout)


def wait_established(api_client: Any, name: str, *, timeout: float) -> dict[str, Any]:
    """The CRD once its Established condition is True; CRDError on a name conflict."""
    api: Any = kube_api.client.ApiextensionsV1Api(api_client)
    deadline = time.monotonic() + timeout
    while True:
        crd = _get(api, name)
        if crd is None:
            raise CRDError(f"CustomResourceDefinition {name} disappeared while waiting for it "
                           "to become Established")
        conditions = {c["type"]: c for c in (crd.get("status") or {}).get("conditions") or []}
        names = conditions.get("NamesAccepted")
        if names is not None and names.get("status") == "False":
            raise CRDError(f"CustomResourceDefinition {name} was not accepted: "
                           f"{names.get('reason')}: {names.get('message')}")
        if (conditions.get("Established") or {}).get("status") == "True":
            return crd
        if time.monotonic() >= deadline:
            summary = "; ".join(f"{t}={c.get('status')} ({c.get('message')})"
                                for t, c in conditions.items()) or "no conditions yet"
            raise CRDError(f"CustomResourceDefinition {name} was not Established within "
                           f"{timeout:g}s: {summary}")
        time.sleep(_POLL_SECONDS)


def locks_in_use(api_client: Any) -> list[str]:
    """Every Lock object, in any namespace, that has a holder or waiters."""
    api: Any = kube_api.client.CustomObjectsApi(api_client)
    deadline = time.monotonic() + _STORAGE_INIT_SECONDS
    while True:
        try:
            listing = api.list_cluster_custom_object(GROUP, VERSION, PLURAL)
            break
        except kube_api.ApiException as error:
            if error.status == 404:
                return []  # the CRD is not served (any more): no locks can exist
            # A real API server answers 429 "storage is (re)initializing" for a while
            # after a CRD is established, until its watch cache has been filled.
            if error.status == 429 and time.monotonic() < deadline:
                time.sleep(_POLL_SECONDS)
                continue
            raise _explain(error, f"list {KIND} objects") from error
    in_use = []
    for item in listing.get("items") or []:
        meta = item.get("metadata") or {}
        status = item.get("status") or {}
        where = f"{meta.get('namespace')}/{meta.get('name')}"
        waiters = len(status.get("waiters") or [])
        if status.get("holder"):
            in_use.append(f"{where} held by {status['holder']} "
                          f"(token {status.get('fencingToken')}, {waiters} waiting)")
        elif waiters:
            in_use.append(f"{where} free with {waiters} waiting")
    return in_use


def remove_crd(api_client: Any, name: str, *, owner: str, force: bool,
               timeout: float = 60.0) -> bool:
    """Drop ``owner``; delete the CRD if no owner is left. True if it was deleted.

    Refuses (CRDError, nothing changed) while locks are held or waited for, unless
    ``force``: deleting the CRD deletes every Lock object and restarts their tokens.
    """
    api: Any = kube_api.client.ApiextensionsV1Api(api_client)
    current = _get(api, name)
    if current is None:
        return False
    others = [o for o in _owners(current) if o != owner]
    if others:
        def drop() -> None:
            latest = _get(api, name)
            if latest is None:
                return
            remaining = [o for o in _owners(latest) if o != owner]
            body = {"metadata": {"resourceVersion": latest["metadata"]["resourceVersion"],
                                 "annotations": {OWNERS_ANNOTATION: ",".join(remaining)}}}
            api.patch_custom_resource_definition(name, body,
                                                 _content_type="application/merge-patch+json")

        _retry_conflicts(drop, f"remove owner {owner} from CustomResourceDefinition {name}")
        return False
    in_use = locks_in_use(api_client)
    if in_use and not force:
        listed = "; ".join(in_use[:10]) + (f"; and {len(in_use) - 10} more"
                                           if len(in_use) > 10 else "")
        raise CRDError(
            f"refusing to delete CustomResourceDefinition {name}: deleting it deletes every "
            f"Lock object, and these are in use: {listed}. Release them, or set "
            "`mysql-cluster:locks.forceDelete: true`, run `pulumi up`, then destroy again.")
    try:
        api.delete_custom_resource_definition(
            name, body=kube_api.client.V1DeleteOptions(
                preconditions=kube_api.client.V1Preconditions(
                    resource_version=current["metadata"]["resourceVersion"])))
    except kube_api.ApiException as error:
        if error.status == 404:
            return True
        if error.status == 409:
            raise CRDError(f"CustomResourceDefinition {name} changed while it was being "
                           "deleted (another stack may have joined it); run destroy again"
                           ) from error
        raise _explain(error, f"delete CustomResourceDefinition {name}") from error
    deadline = time.monotonic() + timeout
    while _get(api, name) is not None:
        if time.monotonic() >= deadline:
            raise CRDError(f"CustomResourceDefinition {name} still exists {timeout:g}s after "
                           "its deletion (a finalizer may be stuck)")
        time.sleep(_POLL_SECONDS)
    return True


__all__ = [
    "CRD_NAME",
    "EXTERNAL_OWNER",
    "GROUP",
    "KIND",
    "MANIFEST_PATH",
    "OWNERS_ANNOTATION",
    "PLURAL",
    "VERSION",
    "CRDError",
    "apply_crd",
    "lock_crd_manifest",
    "locks_in_use",
    "remove_crd",
    "wait_established",
]
