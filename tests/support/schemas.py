"""Kubernetes objects checked strictly against the official OpenAPI schemas
(kubernetes-validate, offline): strict mode rejects unknown fields, so a misspelt key fails a
test instead of being silently dropped by the API server.

The prometheus-operator's objects (ServiceMonitor, PrometheusRule; metrics.*) are not in
Kubernetes' schemas: they are validated against the openAPIV3Schema of the operator's own CRDs
(v0.93.0, ``tests/support/crds/``, Apache-2.0, copied unchanged from the operator's
``example/prometheus-operator-crd``), with unknown fields refused as the API server's pruning
would silently drop them."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import kubernetes_validate

VERSIONS = ["1.30", kubernetes_validate.latest_version()]
CRDS = Path(__file__).resolve().parent / "crds"
OPERATOR_GROUP = "monitoring.coreos.com/"
# kubernetes-validate's own validator; no type stubs in the venv: imported as a plain module.
jsonschema: Any = importlib.import_module("jsonschema")


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
    """Raises kubernetes_validate.ValidationError or jsonschema.ValidationError."""
    if manifest["apiVersion"].startswith(OPERATOR_GROUP):
        jsonschema.validate(manifest, operator_schema(manifest["kind"]))
    else:
        kubernetes_validate.validate(manifest, version, strict=True)


def schema_failures(objects: Iterable[dict[str, Any]], version: str) -> list[str]:
    """One line per object that does not validate for Kubernetes ``version``."""
    failures = []
    for manifest in objects:
        try:
            validate(manifest, version)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as error:
            failures.append(f"{manifest['kind']}/{manifest['metadata']['name']}: {error}")
    return failures
