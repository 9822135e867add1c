"""The switchover and durability keys reach ReplicationInit, through the real program.

Under Pulumi mocks (tests/unit/mocks.py) with the real config path: the stack keys
become the provider's inputs, every secret stays a secret, and the provider's own Check
accepts exactly what the component registers (what `pulumi up` would send it).
"""

from __future__ import annotations

from typing import Any

from components.mysql._replication import _ReplicationProvider
from tests.support.mocks import ProgramResult, stack_with
from tests.support.mocks import run_program as run_whole_program

REPLICATION_INIT = "pulumi-python:dynamic/mysql:ReplicationInit"


def _init(**mysql: Any) -> tuple[ProgramResult, Any]:
    result = run_whole_program(stack_with("prod", **mysql), stack="prod")
    (init,) = result.of_type(REPLICATION_INIT)
    return result, init


def test_switchover_keys_reach_replication_init() -> None:
    result, init = _init(primary=2, durability="semisync", switchoverGraceSeconds=3,
                         switchoverTimeoutSeconds=90, semisyncTimeoutSeconds=4)
    inputs = init.inputs
    assert inputs["primary_ordinal"] == 2
    assert (inputs["durability"], inputs["semisync_wait_count"],
            inputs["semisync_timeout_seconds"]) == ("semisync", 1, 4)
    assert (inputs["switchover_grace_seconds"], inputs["switchover_timeout_seconds"]) == (3, 90)
    # How replicas reach each ordinal: pod DNS, ordinal 0 first (the lock's identity).
    assert inputs["sources"] == [{"host": f"mysql-{i}.mysql-headless", "port": 3306}
                                 for i in range(3)]
    assert inputs["source_host"] == "mysql-0.mysql-headless"
    # The record: a ConfigMap in the cluster's namespace that Pulumi itself never manages.
    assert (inputs["record_namespace"], inputs["record_name"]) == (
        "mysql-prod", "mysql-primary-record")
    assert inputs["pods"] == ["mysql-0", "mysql-1", "mysql-2"]
    # The topology account: its own Secret key, a secret input.
    passwords = result.one("Secret").inputs["stringData"]
    assert inputs["topology_user"] == "topology"
    assert inputs["topology_password"] == passwords["topology-password"]
    assert init.is_secret("topology_password")
    assert inputs["topology_password"] not in (passwords["admin-password"],
                                               passwords["replication-password"])


def test_defaults_keep_ordinal_0_async() -> None:
    _, init = _init()
    assert (init.inputs["primary_ordinal"], init.inputs["durability"]) == (0, "async")
    assert (init.inputs["switchover_grace_seconds"],
            init.inputs["switchover_timeout_seconds"]) == (5, 30)


def test_the_provider_accepts_what_the_component_registers() -> None:
    for settings in ({}, {"primary": 1, "durability": "semisync"}):
        _, init = _init(**settings)
        result = _ReplicationProvider().check({}, dict(init.inputs))
        assert result.failures == [], result.failures
        assert result.inputs["primary_ordinal"] == settings.get("primary", 0)
        assert result.inputs["pods"] == ["mysql-0", "mysql-1", "mysql-2"]


def test_the_stacks_kubeconfig_reaches_replication_init_as_a_secret() -> None:
    """The record and the role labels are written where the stack's objects are: a user
    with the kubeconfig in stack config has no $KUBECONFIG pointing there (issue 12)."""
    kubeconfig = "apiVersion: v1\nkind: Config\nclusters: []\n"
    config = {**stack_with("prod"), "kubernetes:kubeconfig": kubeconfig,
              "kubernetes:context": "ops"}
    (init,) = run_whole_program(config, stack="prod").of_type(REPLICATION_INIT)
    assert init.inputs["kubeconfig"] == kubeconfig
    assert init.is_secret("kubeconfig")
    assert init.inputs["context"] == "ops"
    checked = _ReplicationProvider().check({}, dict(init.inputs))
    assert checked.failures == [], checked.failures
    assert (checked.inputs["kubeconfig"], checked.inputs["context"]) == (kubeconfig, "ops")


def test_without_a_stack_kubeconfig_the_inputs_are_as_before() -> None:
    """No key at all (not an empty one): a stack deployed before keeps the same inputs,
    so upgrading shows no update."""
    _, init = _init()
    assert "kubeconfig" not in init.inputs
    assert "context" not in init.inputs
