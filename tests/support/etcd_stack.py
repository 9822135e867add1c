"""An EtcdCluster rendered under the Pulumi mocks from etcd stack config alone.

Shared by the unit tests (which inspect the objects) and the integration tests (which run
the rendered StatefulSet's exact command line and scripts as local processes), so both
judge the same rendering.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from unittest import mock

from components import config as stack_config
from components.etcd.cluster import EtcdCluster, EtcdClusterArgs
from tests.support.mocks import Mocks, ProgramResult, run_program

NAMESPACE = "db"
DYNAMIC = "pulumi-python:dynamic:Resource"


@dataclass
class Rendered:
    result: ProgramResult

    @property
    def resources(self) -> list[tuple[str, str, dict[str, Any]]]:
        return [(r.type, r.name, r.inputs) for r in self.result.resources]

    def of_type(self, typ: str) -> list[dict[str, Any]]:
        return [inputs for t, _, inputs in self.resources if t == typ]

    def one(self, typ: str) -> dict[str, Any]:
        found = self.of_type(typ)
        assert len(found) == 1, f"expected one {typ}, found {len(found)}"
        return found[0]

    @property
    def statefulset(self) -> dict[str, Any]:
        return self.one("kubernetes:apps/v1:StatefulSet")

    @property
    def etcd_container(self) -> dict[str, Any]:
        containers = self.statefulset["spec"]["template"]["spec"]["containers"]
        return next(c for c in containers if c["name"] == "etcd")

    def env(self, container: Mapping[str, Any] | None = None) -> dict[str, Any]:
        container = container or self.etcd_container
        return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def _stack(etcd: Mapping[str, Any]) -> dict[str, Any]:
    return {"mysql-cluster:namespace": NAMESPACE, "mysql-cluster:etcd": dict(etcd)}


def etcd_config(**etcd: Any) -> stack_config.EtcdConfig:
    return stack_config.parse(_stack(etcd), stack="dev").etcd


def _program() -> None:
    config = stack_config.load()
    EtcdCluster("locks", EtcdClusterArgs(namespace=config.namespace, config=config.etcd))


def render(*, recorded: Mapping[str, Any] | None = None, **etcd: Any) -> Rendered:
    """Build an EtcdCluster from ``etcd`` stack config under the shared mocks.

    ``recorded``: outputs the engine holds in state for the component's dynamic resource
    (what its provider's create or update returned). The mocks echo a resource's inputs,
    which is what a first deployment gets; a later ``up`` gets the recorded ones.
    """
    if recorded is None:
        return Rendered(run_program(_stack(etcd), stack="dev", program=_program))
    echo = Mocks.new_resource
    state = dict(recorded)

    def with_state(self: Mocks, args: Any) -> tuple[str, dict[str, Any]]:
        resource_id, outputs = echo(self, args)
        return resource_id, ({**outputs, **state} if args.typ == DYNAMIC else outputs)

    with mock.patch.object(Mocks, "new_resource", with_state):
        return Rendered(run_program(_stack(etcd), stack="dev", program=_program))
