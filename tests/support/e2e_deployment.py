"""One stack of the real project deployed by the real engine, and what judges it.

Shared by the end-to-end tests that deploy ``Pulumi.e2e.yaml`` (test_stack.py,
test_replication_engine.py): each stack gets its namespace, the user-managed Secret its
``mysql.credentials.existingSecret`` names, the admin kubeconfig as the secret
``kubernetes:kubeconfig`` and a project directory of its own
(:meth:`PulumiSandbox.project_stack`).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml  # type: ignore[import-untyped]  # PyYAML ships with kubernetes
from pulumi import automation as auto

from components.mysql import credentials
from tests.support.controlplane import ControlPlane
from tests.support.e2e_kube import SECRET, Kubectl, make_user_secret
from tests.support.mocks import load_stack_file, run_program
from tests.support.objects import program_objects
from tests.support.toolchain import CliDeadline, PulumiSandbox, RunLog

R = TypeVar("R")
# Far above a converging run's wall time (docs/benchmarks.md: first up well under a
# minute), far below pulumi-kubernetes' own 10-minute awaits.
CLI_DEADLINE = 300.0

PROJECT = "mysql-cluster"
STACK_FILE = load_stack_file("e2e")
NAMESPACE = STACK_FILE[f"{PROJECT}:namespace"]


def changes(summary: Mapping[Any, int] | None) -> dict[str, int]:
    return {getattr(op, "value", op): count for op, count in (summary or {}).items()}


def timed(label: str, timings: dict[str, float], started: float) -> None:
    timings[label] = time.monotonic() - started
    print(f"\ne2e wall time: {label} {timings[label]:.1f} s")


@dataclass
class Deployment:
    """One stack of the real project, with what the tests need to judge it."""

    sandbox: PulumiSandbox
    plane: ControlPlane
    kubectl: Kubectl
    stack: auto.Stack
    name: str
    namespace: str
    passwords: dict[str, str]
    mysql: dict[str, Any]
    etcd: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    first_up: auto.UpResult | None = None

    def config_map(self) -> dict[str, Any]:
        """The engine's config map for the mocks run of the same stack."""
        return {**STACK_FILE, f"{PROJECT}:namespace": self.namespace,
                f"{PROJECT}:mysql": self.mysql, f"{PROJECT}:etcd": self.etcd}

    @property
    def stack_file(self) -> Path:
        return Path(self.stack.workspace.work_dir) / f"Pulumi.{self.name}.yaml"

    def set_sections(self, **sections: dict[str, Any]) -> None:
        """Edit the stack file as a user would: the object-valued keys (``mysql``,
        ``etcd``) replaced, everything else (encryption salt, secrets) kept."""
        document = yaml.safe_load(self.stack_file.read_text())
        for key, value in sections.items():
            setattr(self, key, value)
            document["config"][f"{PROJECT}:{key}"] = value
        self.stack_file.write_text(yaml.safe_dump(document, sort_keys=False))

    def _bounded(self, verb: str, run: Callable[[], R]) -> R:
        """One CLI run, killed by PID past CLI_DEADLINE (toolchain.CliDeadline: why)."""
        with CliDeadline(CLI_DEADLINE, f"pulumi {verb} of {self.name}") as deadline:
            try:
                return run()
            except auto.CommandError as error:
                expired = f"{deadline.message()}\n" if deadline.expired else ""
                raise AssertionError(
                    f"{expired}pulumi {verb} of {self.name} failed:\n{error}") from None

    def up(self) -> auto.UpResult:
        log = RunLog()
        return self._bounded("up", lambda: self.stack.up(on_output=log.on_output,
                                                         on_event=log.on_event))

    def destroy(self) -> auto.DestroyResult:
        return self._bounded("destroy", self.stack.destroy)

    def refresh_until_clean(self) -> None:
        """Refresh twice: the first may report only the user's Secret, read with a ``get``,
        as updated ("+apiVersion,kind,metadata": the provider's Read gives a read resource
        inputs that the up stored it without), and nothing in the cluster changes; the
        second must report nothing."""
        first = RunLog()
        self.stack.refresh(on_event=first.on_event)
        assert [step.split("::")[-1] for step in first.changed()] in (
            [], ["mysql-existing-credentials"]), first.changed()
        again = RunLog()
        refresh = self.stack.refresh(on_event=again.on_event)
        assert again.changed() == [], refresh.stdout

    def init_errors(self) -> dict[str, list[str]]:
        """Resources whose last Create, Update or Read (refresh) found them not ready, by
        name, with the provider's reasons: the engine updates each of them on the next
        ``up`` and a preview shows that update with no field diff."""
        resources = (self.stack.export_stack().deployment or {}).get("resources") or []
        return {r["urn"].split("::")[-1]: list(r["initErrors"])
                for r in resources if r.get("initErrors")}

    def expected_objects(self) -> list[dict[str, Any]]:
        """What the mocks tests say this stack creates: the same program and config under
        mocks, with the user's Secret as a ``get`` finds it."""
        data = {credentials.secret_key(account): _b64(value)
                for account, value in self.passwords.items()}
        result = run_program(self.config_map(), stack=self.name, existing={
            f"{self.namespace}/{SECRET}": {"apiVersion": "v1", "kind": "Secret",
                                           "data": data}})
        return program_objects(result)

    def secrets_in_play(self) -> list[str]:
        return [*self.passwords.values(), self.plane.token]


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def new_deployment(sandbox: PulumiSandbox, plane: ControlPlane, kubectl: Kubectl,
                   name: str, namespace: str, *,
                   passwords: Mapping[str, str] | None = None) -> Deployment:
    """A new stack ``name`` of the project in ``namespace`` (created, with the user's
    Secret holding ``passwords``, random ones by default), not yet deployed."""
    plane.create_namespace(namespace)  # the README: it must exist before the first up
    passwords = make_user_secret(kubectl, namespace, passwords)
    kubeconfig = plane.write_kubeconfig(sandbox.root / f"{name}.kubeconfig").read_text()
    stack = sandbox.project_stack(name, config={
        "kubernetes:kubeconfig": auto.ConfigValue(kubeconfig, secret=True)})
    deployment = Deployment(sandbox, plane, kubectl, stack, name, namespace, dict(passwords),
                            mysql=dict(STACK_FILE[f"{PROJECT}:mysql"]),
                            etcd=dict(STACK_FILE[f"{PROJECT}:etcd"]))
    if namespace != NAMESPACE:
        stack.set_config(f"{PROJECT}:namespace", auto.ConfigValue(namespace))
    return deployment
