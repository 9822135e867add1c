"""Reading numbers back after they cross the Pulumi engine to a dynamic provider.

The engine carries every number as a protobuf double, so a port of 3306 reaches a
provider's check/create/update as 3306.0, and a manifest's 1024 as 1024.0 (which the
Kubernetes API then rejects where it wants an int64). Every provider here reads numbers
through these two functions, so they all accept and refuse the same things.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def whole_number(value: object) -> int | None:
    """An integral number as int (3306.0 -> 3306); None for anything else, bool included."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def integral_floats(value: Any) -> Any:
    """``value`` with every integral float, at any depth, turned back into an int.

    For payloads such as Kubernetes manifests, where no number is meant to be a whole
    float: every one that is crossed the engine as an integer.
    """
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {k: integral_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [integral_floats(v) for v in value]
    return value
