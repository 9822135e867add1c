"""Every Kubernetes object a stack's program creates, as plain manifests.

Two sources, because the program creates objects two ways: Kubernetes provider
resources (``tests.support.mocks.manifests``), and manifests handed to a dynamic provider
that applies them itself (the Lock CRD, applied by the locks provider so that stacks can
share it). Policy and RBAC checks must see both, or an object would escape them.
"""

from __future__ import annotations

from typing import Any

from tests.support.mocks import ProgramResult, load_stack_file, manifests, run_program, run_stack

DYNAMIC = "pulumi-python:dynamic:Resource"


def with_tls_and_metrics(config: dict[str, Any]) -> dict[str, Any]:
    """A stack config with every TLS and metrics switch on: what the schema, policy and
    wiring tests see of the objects those switches add."""
    mysql = {**config["mysql-cluster:mysql"],
             "tls": {"enabled": True, "secret": "mysql-tls", "requireSecureTransport": "on"}}
    return {**config, "mysql-cluster:mysql": mysql, "mysql-cluster:metrics": {
        "enabled": True, "scrapeNamespaces": ["monitoring"],
        "serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}}


def program_objects(result: ProgramResult) -> list[dict[str, Any]]:
    objects = manifests(result)
    for resource in result.of_type(DYNAMIC):
        manifest = resource.inputs.get("manifest")
        if isinstance(manifest, dict) and isinstance(manifest.get("kind"), str):
            objects.append(manifest)
    return objects


# Variants of a stack file, checked like the stacks themselves: <stack>-tls-metrics.
_TLS_METRICS = "-tls-metrics"


def stack_objects(stack: str) -> list[dict[str, Any]]:
    """The objects of ``Pulumi.<stack>.yaml``'s run under mocks (``<stack>-tls-metrics``: with
    every TLS and metrics switch on)."""
    if stack.endswith(_TLS_METRICS):
        base = stack.removesuffix(_TLS_METRICS)
        return program_objects(run_program(with_tls_and_metrics(load_stack_file(base)),
                                           stack=base))
    return program_objects(run_stack(stack))
