"""Every Kubernetes object a stack's program creates, as plain manifests.

Two sources, because the program creates objects two ways: Kubernetes provider
resources (``tests.support.mocks.manifests``), and manifests handed to a dynamic provider
that applies them itself (the Lock CRD, applied by the locks provider so that stacks can
share it). Policy and RBAC checks must see both, or an object would escape them.
"""

from __future__ import annotations

from typing import Any

from tests.support.mocks import ProgramResult, manifests, run_stack

DYNAMIC = "pulumi-python:dynamic:Resource"


def program_objects(result: ProgramResult) -> list[dict[str, Any]]:
    objects = manifests(result)
    for resource in result.of_type(DYNAMIC):
        manifest = resource.inputs.get("manifest")
        if isinstance(manifest, dict) and isinstance(manifest.get("kind"), str):
            objects.append(manifest)
    return objects


def stack_objects(stack: str) -> list[dict[str, Any]]:
    """The objects of ``Pulumi.<stack>.yaml``'s run under mocks."""
    return program_objects(run_stack(stack))
