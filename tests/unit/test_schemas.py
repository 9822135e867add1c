"""Every Kubernetes object the program creates, validated strictly against the official
OpenAPI schemas (kubernetes-validate, offline): Kubernetes 1.30 and the newest bundled.

Strict mode rejects unknown fields, so a misspelt key (``publishNotReadyAdresses``) or a
field a version does not have fails here instead of being silently dropped by the API
server. The schemas do not check enum values or name formats; the component tests do.

The prometheus-operator's objects (ServiceMonitor, PrometheusRule; metrics.*) are not in
Kubernetes' schemas: they are validated against the openAPIV3Schema of the operator's own CRDs
(v0.93.0, ``tests/support/crds/``, Apache-2.0, copied unchanged from the operator's
``example/prometheus-operator-crd``), with unknown fields refused as the API server's pruning
would silently drop them.
"""

from __future__ import annotations

import functools
import importlib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from tests.support.mocks import ProgramResult, manifests

# kubernetes-validate's own validator; no type stubs in the venv: imported as a plain module.
jsonschema: Any = importlib.import_module("jsonschema")
VERSIONS = ["1.30", kubernetes_validate.latest_version()]
CRDS = Path(__file__).resolve().parents[1] / "support" / "crds"
OPERATOR_GROUP = "monitoring.coreos.com/"


def _strict(schema: Any) -> Any:
    """The CRD schema with additionalProperties false wherever it lists properties: a
    misspelt field fails here, where the API server would prune it without a word."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        # Go's regexp takes a flag group anywhere; Python only at the start.
        if isinstance(out.get("pattern"), str) and "(?i)" in out["pattern"]:
            out["pattern"] = "(?i)" + out["pattern"].replace("(?i)", "")
        if "properties" in out and "additionalProperties" not in out \
                and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@functools.cache
def operator_schema(kind: str) -> dict[str, Any]:
    # PyYAML comes with pulumi (no type stubs in the venv): imported as a plain module.
    yaml: Any = importlib.import_module("yaml")
    for path in CRDS.glob("*.yaml"):
        crd = yaml.safe_load(path.read_text(encoding="utf-8"))
        if crd["spec"]["names"]["kind"] == kind:
            (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
            schema: dict[str, Any] = _strict(version["schema"]["openAPIV3Schema"])
            # metadata is the API server's ObjectMeta, not described by the CRD.
            schema["properties"]["metadata"] = {"type": "object"}
            return schema
    raise AssertionError(f"no CRD for {kind} in {CRDS}")


def validate(manifest: dict[str, Any], version: str) -> None:
    if manifest["apiVersion"].startswith(OPERATOR_GROUP):
        jsonschema.validate(manifest, operator_schema(manifest["kind"]))
    else:
        kubernetes_validate.validate(manifest, version, strict=True)


def _objects(result: ProgramResult) -> list[dict[str, Any]]:
    objects = manifests(result)
    assert objects, "the program created no Kubernetes objects"
    return objects


@pytest.mark.parametrize("version", VERSIONS)
def test_every_object_of_every_stack_validates(every_stack: ProgramResult, version: str) -> None:
    failures = []
    for manifest in _objects(every_stack):
        try:
            validate(manifest, version)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as error:
            failures.append(f"{manifest['kind']}/{manifest['metadata']['name']}: {error}")
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


def test_operator_objects_are_checked_against_their_crds(prod_tls_metrics: ProgramResult) -> None:
    """The TLS/metrics variant creates both kinds, and a misspelt field fails."""
    kinds = {m["kind"] for m in _objects(prod_tls_metrics)
             if m["apiVersion"].startswith(OPERATOR_GROUP)}
    assert kinds == {"ServiceMonitor", "PrometheusRule"}
    monitor = next(m for m in _objects(prod_tls_metrics) if m["kind"] == "ServiceMonitor")
    broken = {**monitor, "spec": {**monitor["spec"], "endpoint": monitor["spec"]["endpoints"]}}
    with pytest.raises(jsonschema.ValidationError):
        validate(broken, "1.30")
    rule = next(m for m in _objects(prod_tls_metrics) if m["kind"] == "PrometheusRule")
    group = rule["spec"]["groups"][0]
    broken = {**rule, "spec": {"groups": [{**group, "rules": [{"alrt": "x", "expr": "1"}]}]}}
    with pytest.raises(jsonschema.ValidationError):
        validate(broken, "1.30")
