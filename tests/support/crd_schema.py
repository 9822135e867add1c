"""The Lock CRD's structural schema, applied offline: validation and pruning.

Kept from the retired in-process fake API server (the rest of it is replaced by the real
kube-apiserver of tests/support/controlplane.py) for one reason the real server cannot
serve: unit tests run without any server, and tests/unit/test_locks_component.py checks
there that every status shape distlock's Kubernetes backend can write fits the CRD's
schema without a field being pruned. The real server does the same on every write in the
integration tests; this is the quick, offline half. Messages are phrased as the API
server's field errors; only the schema keywords the Lock CRD uses are implemented.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

_TYPES: dict[str, Callable[[object], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
}


def validate_schema(  # noqa: PLR0912 - one branch per schema keyword reads best
        value: object, schema: Mapping[str, Any], path: str = "") -> list[str]:
    """Problems with ``value`` under ``schema``, phrased as the API server's field errors."""
    problems: list[str] = []
    if value is None:
        if not schema.get("nullable"):
            problems.append(f"{path}: Invalid value: \"null\": {path} in body must be of type "
                            f"{schema.get('type', 'object')}")
        return problems
    expected = schema.get("type")
    if expected and not _TYPES[expected](value):
        return [f"{path}: Invalid value: {json.dumps(value)}: {path} in body must be of type "
                f"{expected}"]
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(json.dumps(e) for e in schema["enum"])
        problems.append(f"{path}: Unsupported value: {json.dumps(value)}: supported values: "
                        f"{allowed}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            problems.append(f"{path}: Invalid value: {value}: {path} in body should be greater "
                            f"than or equal to {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            problems.append(f"{path}: Invalid value: {value}: {path} in body should be less "
                            f"than or equal to {schema['maximum']}")
    if isinstance(value, str):
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            problems.append(f"{path}: Too long: may not be more than {schema['maxLength']} "
                            "bytes")
        if "minLength" in schema and len(value) < schema["minLength"]:
            problems.append(f"{path}: Invalid value: {json.dumps(value)}: {path} in body should "
                            f"be at least {schema['minLength']} chars long")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            problems.append(f"{path}: Invalid value: {json.dumps(value)}: {path} in body should "
                            f"match '{schema['pattern']}'")
    if isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            problems.append(f"{path}: Too many: {len(value)}: must have at most "
                            f"{schema['maxItems']} items")
        for index, item in enumerate(value):
            problems += validate_schema(item, schema.get("items", {}), f"{path}[{index}]")
    if isinstance(value, dict):
        for required in schema.get("required", []):
            if required not in value:
                problems.append(f"{path}.{required}: Required value".lstrip("."))
        properties = schema.get("properties", {})
        additional = schema.get("additionalProperties")
        for key, item in value.items():
            child = f"{path}.{key}".lstrip(".")
            if key in properties:
                problems += validate_schema(item, properties[key], child)
            elif isinstance(additional, dict):
                problems += validate_schema(item, additional, child)
    return problems


def prune(value: object, schema: Mapping[str, Any]) -> object:
    """Drop fields the schema does not declare, as structural schemas require."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return value
    if isinstance(value, dict):
        properties = schema.get("properties")
        additional = schema.get("additionalProperties")
        if properties is None and additional is None:
            return value
        result = {}
        for key, item in value.items():
            if properties and key in properties:
                result[key] = prune(item, properties[key])
            elif isinstance(additional, dict):
                result[key] = prune(item, additional)
        return result
    if isinstance(value, list):
        return [prune(item, schema.get("items", {})) for item in value]
    return value
