"""Every Kubernetes object the program creates, validated strictly against the official
OpenAPI schemas (kubernetes-validate, offline): Kubernetes 1.30 and the newest bundled.

Strict mode rejects unknown fields, so a misspelt key (``publishNotReadyAdresses``) or a
field a version does not have fails here instead of being silently dropped by the API
server. The schemas do not check enum values or name formats; the component tests do.
"""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from tests.support.mocks import ProgramResult, manifests
from tests.support.schemas import VERSIONS, schema_failures


def _objects(result: ProgramResult) -> list[dict[str, Any]]:
    objects = manifests(result)
    assert objects, "the program created no Kubernetes objects"
    return objects


@pytest.mark.parametrize("version", VERSIONS)
def test_every_object_of_every_stack_validates(any_stack: ProgramResult, version: str) -> None:
    failures = schema_failures(_objects(any_stack), version)
    assert not failures, "\n".join(failures)


def test_manifests_are_plain_kubernetes_objects(dev: ProgramResult) -> None:
    for manifest in _objects(dev):
        assert set(manifest) >= {"apiVersion", "kind", "metadata"}
        assert manifest["metadata"]["name"]


def test_validation_catches_an_unknown_field(dev: ProgramResult) -> None:
    """The check itself is not vacuous: a misspelt field fails in strict mode."""
    statefulset = next(m for m in _objects(dev) if m["kind"] == "StatefulSet")
    broken = {**statefulset, "spec": {**statefulset["spec"], "serviceNme": "x"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.30", strict=True)
