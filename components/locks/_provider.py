"""LockCRD: a dynamic provider that installs the Lock CRD and removes it only when safe.

Why not ``pulumi_kubernetes.apiextensions.v1.CustomResourceDefinition``: it would create
the CRD, but (a) pulumi-kubernetes has no awaiter for CRDs, so a Lock created in the
same run could race the CRD's ``Established`` condition; (b) a cluster-scoped CRD
shared by several stacks would be created by the first and then fail (or be stolen)
in the second; (c) ``pulumi destroy`` would delete it unconditionally, and with it
every Lock object and fencing counter in the cluster. This provider waits for
Established, shares the CRD between stacks through an owners annotation, and refuses
to delete it while any lock is in use unless ``forceDelete`` is set
(:mod:`components.locks.crd` does the cluster work).

Provider rules this module follows (see REFERENCE.md): the provider object is pickled
into state by dill and run in ``python -m pulumi.dynamic``, so it holds no client; every
method builds its own from the inputs (``kubeconfig`` path or text, ``context``), else
``$KUBECONFIG``/``~/.kube/config``, else in-cluster credentials, exactly as
pulumi-kubernetes' default provider finds its cluster. Numbers arrive as floats.
``check`` names each bad property. The kubeconfig may hold credentials: it is a
secret input, listed in ``additional_secret_outputs``, and never printed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.dynamic import (
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    Resource,
    ResourceProvider,
    UpdateResult,
)

from components._check import Checker
from components._wire import integral_floats
from components.locks.crd import OWNERS_ANNOTATION, apply_crd, kube_api, remove_crd

_DEFAULT_TIMEOUT_SECONDS = 60
_MAX_TIMEOUT_SECONDS = 3600
# The owners annotation is a comma-separated list of "project/stack".
_OWNER = re.compile(r"[^,]+")
# Inputs whose change means "apply again"; crdName means a different object: replace.
_UPDATED_BY = ("manifest", "owner", "forceDelete", "establishTimeoutSeconds", "kubeconfig",
               "context")


def _client(props: Mapping[str, Any]) -> Any:
    """A fresh API client per call: a client held by the provider could not be pickled.

    distlock.kube brings the Kubernetes client, so it is imported here, in the provider
    process, and never by the program that only declares the resource.
    """
    from distlock.kube import api_client  # noqa: PLC0415

    return api_client(props.get("kubeconfig") or None, context=props.get("context") or None)


def _manifest_digest(manifest: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]


class LockCRDProvider(ResourceProvider):
    """Create/update = apply and wait Established; delete = leave or refuse safely."""

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        check = Checker()
        manifest = news.get("manifest")
        crd_name = news.get("crdName")
        if not isinstance(manifest, Mapping) or manifest.get("kind") != (
                "CustomResourceDefinition"):
            check.fail("manifest", "must be a CustomResourceDefinition manifest (a mapping "
                                   "with kind CustomResourceDefinition)")
        elif (manifest.get("metadata") or {}).get("name") != crd_name:
            check.fail("crdName", f"must equal the manifest's metadata.name "
                                  f"({(manifest.get('metadata') or {}).get('name')!r}), "
                                  f"got {crd_name!r}")
        check.string("owner", news.get("owner"), pattern=_OWNER, max_length=None,
                     what="a non-empty 'project/stack' string without commas")
        force_delete = check.boolean("forceDelete", news.get("forceDelete", False))
        timeout = check.integer("establishTimeoutSeconds",
                                news.get("establishTimeoutSeconds", _DEFAULT_TIMEOUT_SECONDS),
                                minimum=1, maximum=_MAX_TIMEOUT_SECONDS)
        check.cluster_access(news)
        if check.failures or check.unknown:
            return CheckResult(news, check.failures)
        return CheckResult({**news, "establishTimeoutSeconds": timeout,
                            "forceDelete": force_delete}, [])

    def _apply(self, props: Mapping[str, Any], *, drop_owner: str | None) -> dict[str, Any]:
        crd = apply_crd(_client(props), integral_floats(props["manifest"]), owner=props["owner"],
                        drop_owner=drop_owner,
                        timeout=float(props.get("establishTimeoutSeconds",
                                                _DEFAULT_TIMEOUT_SECONDS)))
        status = crd.get("status") or {}
        return {**props, "established": True, "namesAccepted": True,
                "storedVersions": list(status.get("storedVersions") or []),
                "uid": crd["metadata"].get("uid"),
                "manifestDigest": _manifest_digest(integral_floats(props["manifest"]))}

    def create(self, props: dict[str, Any]) -> CreateResult:
        outs = self._apply(props, drop_owner=None)
        return CreateResult(id_=str(props["crdName"]), outs=outs)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = ["crdName"] if olds.get("crdName") != news.get("crdName") else []
        changed = [k for k in _UPDATED_BY if olds.get(k) != news.get(k)]
        # A refresh that found the CRD not Established, or its names refused, is drift:
        # the update applies it again and waits (failing at once, naming the conflict,
        # while NamesAccepted is False). Create's outputs carry no namesAccepted: None.
        drifted = olds.get("established") is False or olds.get("namesAccepted") is False
        return DiffResult(changes=bool(changed or replaces or drifted), replaces=replaces,
                          delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        old_owner = olds.get("owner")
        outs = self._apply(news, drop_owner=old_owner if old_owner != news["owner"] else None)
        return UpdateResult(outs=outs)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        api: Any = kube_api.client.ApiextensionsV1Api(_client(props))
        try:
            response = api.read_custom_resource_definition(id_, _preload_content=False)
        except kube_api.ApiException as error:
            if error.status == 404:
                return ReadResult(id_="", outs={})  # gone: the engine drops it from state
            raise
        crd = json.loads(response.data)
        conditions = {c["type"]: c.get("status")
                      for c in (crd.get("status") or {}).get("conditions") or []}
        owners = ((crd["metadata"].get("annotations") or {}).get(OWNERS_ANNOTATION) or "")
        outs = {**props, "established": conditions.get("Established") == "True",
                "namesAccepted": conditions.get("NamesAccepted") != "False",
                "storedVersions": list((crd.get("status") or {}).get("storedVersions") or []),
                "uid": crd["metadata"].get("uid"), "owners": owners}
        return ReadResult(id_=id_, outs=outs)

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        remove_crd(_client(props), id_, owner=props["owner"],
                   force=bool(props.get("forceDelete", False)),
                   timeout=float(props.get("establishTimeoutSeconds",
                                           _DEFAULT_TIMEOUT_SECONDS)))


@dataclass(frozen=True)
class LockCRDArgs:
    """What the LockCRD resource needs; ``kubeconfig`` is treated as a secret."""

    manifest: Mapping[str, Any]
    owner: str
    force_delete: bool = False
    establish_timeout_seconds: int = _DEFAULT_TIMEOUT_SECONDS
    kubeconfig: pulumi.Input[str] | None = None
    context: str | None = None


class LockCRD(Resource):
    """The Lock CustomResourceDefinition, installed through :class:`LockCRDProvider`."""

    # Attribute names are the property names the provider returns.
    crdName: pulumi.Output[str]
    established: pulumi.Output[bool]
    storedVersions: pulumi.Output[list[str]]

    def __init__(self, name: str, args: LockCRDArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        props: dict[str, Any] = {
            "manifest": dict(args.manifest),
            "crdName": args.manifest["metadata"]["name"],
            "owner": args.owner,
            "forceDelete": args.force_delete,
            "establishTimeoutSeconds": args.establish_timeout_seconds,
            "kubeconfig": (pulumi.Output.secret(args.kubeconfig)
                           if args.kubeconfig is not None else None),
            "context": args.context,
            "established": None,
            "storedVersions": None,
            "uid": None,
            "manifestDigest": None,
        }
        secret = pulumi.ResourceOptions(additional_secret_outputs=["kubeconfig"])
        super().__init__(LockCRDProvider(), name, props,
                         pulumi.ResourceOptions.merge(opts, secret))


__all__ = ["LockCRD", "LockCRDArgs", "LockCRDProvider"]
