"""Every object both stacks create is accepted by the real API server.

The unit tests validate the same objects offline against the published schemas; a
schema cannot see what admission and the API server's own validation enforce (enum
values, DNS-1123 names, label syntax, cross-field rules, immutable fields, defaulting).
So each stack's objects, rendered by the real program under mocks
(:func:`tests.support.objects.stack_objects`), are applied with server-side apply and
``--dry-run=server`` by kubectl to the session's kube-apiserver: the full write path runs,
nothing is stored.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML ships with kubernetes

from tests.support.controlplane import ControlPlane
from tests.support.objects import stack_objects
from tests.support.procs import run
from tests.support.tools import tool

pytestmark = pytest.mark.integration

FIELD_MANAGER = "pulumi-kubernetes"  # what the provider's server-side apply uses


def dry_run_apply(plane: ControlPlane, objects: list[dict[str, Any]]) -> tuple[int, str]:
    """``kubectl apply --server-side --dry-run=server`` of ``objects``: (exit code, output)."""
    result = run([str(tool("kubectl")), f"--kubeconfig={plane.kubeconfig}", "apply",
                  "--server-side", "--dry-run=server", f"--field-manager={FIELD_MANAGER}",
                  "-f", "-"], input_text=yaml.safe_dump_all(objects), check=False,
                 timeout=180)
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_every_object_of_the_stack_passes_the_real_api_servers_admission(
        control_plane: ControlPlane, stack: str) -> None:
    objects = stack_objects(stack)
    assert objects, "the program created no Kubernetes objects"
    for namespace in sorted({o["metadata"].get("namespace") for o in objects} - {None}):
        control_plane.create_namespace(namespace)  # the README: it must exist before an up
    code, output = dry_run_apply(control_plane, objects)
    assert code == 0, output
    applied = [line for line in output.splitlines() if "serverside-applied (server dry run)"
               in line]
    assert len(applied) == len(objects), output


def test_the_dry_run_refuses_what_an_offline_schema_accepts(
        control_plane: ControlPlane) -> None:
    """The check has teeth: a schema-valid Service whose type is no known enum value, and
    a name that is no DNS-1123 label, are refused by the server."""
    control_plane.create_namespace("dry-run-check")
    bad = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "Not_A_DNS_Name", "namespace": "dry-run-check"},
           "spec": {"type": "Bogus", "ports": [{"port": 80}]}}
    code, output = dry_run_apply(control_plane, [bad])
    assert code != 0, output
    assert "Unsupported value: \"Bogus\"" in output or "Invalid value" in output, output
