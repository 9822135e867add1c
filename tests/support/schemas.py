"""Kubernetes objects checked strictly against the official OpenAPI schemas
(kubernetes-validate, offline): strict mode rejects unknown fields, so a misspelt key fails a
test instead of being silently dropped by the API server."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import kubernetes_validate

VERSIONS = ["1.30", kubernetes_validate.latest_version()]


def schema_failures(objects: Iterable[dict[str, Any]], version: str) -> list[str]:
    """One line per object that does not validate for Kubernetes ``version``."""
    failures = []
    for manifest in objects:
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            failures.append(f"{manifest['kind']}/{manifest['metadata']['name']}: {error}")
    return failures
