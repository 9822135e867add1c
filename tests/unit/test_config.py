"""Stack config through the real path: the stack files parse, and every class of bad input
stops the program before a single resource is registered, with a message naming the key,
the value and what is allowed."""

from __future__ import annotations

import copy
import importlib
import subprocess
import sys
from typing import Any

import pytest

from components.config import ConfigError, StackConfig, parse
from tests.support import mocks
from tests.support.mocks import load_stack_file, run_program

PROJECT = "mysql-cluster"


def _parse(config: dict[str, Any], stack: str = "dev") -> StackConfig:
    return parse(mocks.config_map(config), stack=stack)


def _with(stack: str, section: str, path: str, value: Any) -> dict[str, Any]:
    """The stack file with one (dotted) key of ``section`` set; ``...`` deletes it."""
    config = copy.deepcopy(load_stack_file(stack))
    target = config.setdefault(f"{PROJECT}:{section}", {})
    *parents, leaf = path.split(".")
    for parent in parents:
        target = target.setdefault(parent, {})
    if value is ...:
        target.pop(leaf, None)
    else:
        target[leaf] = value
    return config


# ---------------------------------------------------------------- the stack files

def test_dev_stack_is_small() -> None:
    config = _parse(load_stack_file("dev"))
    assert config.namespace == "mysql-dev"
    assert config.mysql.replicas == 2
    assert config.etcd.replicas == 1
    assert config.mysql.flavor == "mariadb"


def test_prod_stack_spreads_three_of_each_across_nodes() -> None:
    config = _parse(load_stack_file("prod"), stack="prod")
    assert config.mysql.replicas == 3
    assert config.etcd.replicas == 3
    assert config.mysql.spread == "required"
    assert config.etcd.spread == "required"
    assert config.mysql.replication_init.enabled
    assert config.mysql.replication_init.access == "in-cluster"


def test_stack_files_declare_only_the_project_namespace() -> None:
    for stack in ("dev", "prod"):
        assert all(key.startswith(f"{PROJECT}:") for key in load_stack_file(stack))


def test_defaults_pin_images_per_flavor() -> None:
    mariadb = _parse(_with("dev", "mysql", "flavor", "mariadb")).mysql
    assert mariadb.server_image == f"mariadb:{mariadb.version}"
    assert mariadb.backup_image == mariadb.server_image
    config = _with("dev", "mysql", "flavor", "mysql")
    config[f"{PROJECT}:mysql"]["version"] = "8.4.5"
    mysql = _parse(config).mysql
    assert mysql.server_image == "mysql:8.4.5"
    assert mysql.backup_image.startswith("percona/percona-xtrabackup:8.4.")


# ---------------------------------------------------------------- each class of bad input

BAD_INPUTS = [
    # (id, section, key path, value, the key as reported, words of what is allowed)
    ("wrong type", "mysql", "replicas", "three", "mysql-cluster:mysql.replicas",
     "whole number"),
    ("bool is not a number", "mysql", "replicas", True, "mysql-cluster:mysql.replicas",
     "whole number"),
    ("out of range low", "mysql", "replicas", 0, "mysql-cluster:mysql.replicas", "between 1"),
    ("out of range high", "mysql", "maxReplicaLagSeconds", 0,
     "mysql-cluster:mysql.maxReplicaLagSeconds", "between 1 and 86400"),
    ("etcd size", "etcd", "replicas", 11, "mysql-cluster:etcd.replicas", "one of 1, 3, 5, 7"),
    ("even etcd size", "etcd", "replicas", 4, "mysql-cluster:etcd.replicas",
     "one of 1, 3, 5, 7"),
    ("malformed quantity", "mysql", "storage", "10GB", "mysql-cluster:mysql.storage",
     "Kubernetes quantity"),
    ("zero quantity", "mysql", "storage", "0", "mysql-cluster:mysql.storage",
     "greater than zero"),
    ("malformed cpu", "mysql", "resources.requests.cpu", "two",
     "mysql-cluster:mysql.resources.requests.cpu", "Kubernetes quantity"),
    ("unknown flavor", "mysql", "flavor", "postgres", "mysql-cluster:mysql.flavor",
     "'mysql', 'mariadb'"),
    ("version of another flavor", "mysql", "version", "8.4.5", "mysql-cluster:mysql.version",
     "mariadb supports"),
    ("misspelled key", "mysql", "replicaz", 3, "mysql-cluster:mysql.replicaz",
     "did you mean 'replicas'"),
    ("misspelled nested key", "mysql", "resources.request.cpu", "1",
     "mysql-cluster:mysql.resources.request", "did you mean 'requests'"),
    ("unknown spread", "mysql", "spread", "always", "mysql-cluster:mysql.spread",
     "'required', 'preferred', 'none'"),
    ("unpinned image", "mysql", "images.server", "mariadb:latest",
     "mysql-cluster:mysql.images.server", "pinned"),
    ("tagless image", "mysql", "images.backup", "mariadb",
     "mysql-cluster:mysql.images.backup", "pinned"),
    ("cluster name", "mysql", "name", "My_DB", "mysql-cluster:mysql.name", "RFC 1123"),
    ("server-id base", "mysql", "serverIdBase", 10, "mysql-cluster:mysql.serverIdBase",
     "between 1000"),
    ("port-forward endpoints", "mysql", "replicationInit",
     {"access": "port-forward", "endpoints": ["127.0.0.1:13306"]},
     "mysql-cluster:mysql.replicationInit.endpoints", "exactly 2 endpoints"),
    ("bad endpoint", "mysql", "replicationInit.endpoints", ["localhost"],
     "mysql-cluster:mysql.replicationInit.endpoints", "host:port"),
    ("client namespaces", "mysql", "clientNamespaces", "apps",
     "mysql-cluster:mysql.clientNamespaces", "list of namespace names"),
    ("locks flag", "locks", "enabled", "yes", "mysql-cluster:locks.enabled", "true or false"),
    ("primary outside the pods", "mysql", "primary", 2, "mysql-cluster:mysql.primary",
     "ordinals 0..1"),
    ("unknown durability", "mysql", "durability", "sync", "mysql-cluster:mysql.durability",
     "'async', 'semisync'"),
    ("switchover timeout", "mysql", "switchoverTimeoutSeconds", 0,
     "mysql-cluster:mysql.switchoverTimeoutSeconds", "between 1"),
]


@pytest.mark.parametrize(("section", "path", "value", "key", "allowed"),
                         [case[1:] for case in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_stops_the_program_before_any_resource(section: str, path: str, value: Any,
                                                         key: str, allowed: str) -> None:
    config = _with("dev", section, path, value)
    with pytest.raises(ConfigError) as raised:
        run_program(config)
    message = str(raised.value)
    assert key in message
    assert allowed in message
    if not isinstance(value, dict):
        assert repr(value) in message
    assert mocks.last_mocks is not None
    assert mocks.last_mocks.resources == []


def test_missing_namespace_is_an_error_not_the_default_namespace() -> None:
    config = load_stack_file("dev")
    del config[f"{PROJECT}:namespace"]
    with pytest.raises(ConfigError, match=r"mysql-cluster:namespace: got None; is required"):
        run_program(config)
    assert mocks.last_mocks is not None
    assert mocks.last_mocks.resources == []


def test_every_problem_is_reported_at_once() -> None:
    config = _with("dev", "mysql", "replicas", 0)
    config[f"{PROJECT}:mysql"]["storage"] = "lots"
    config[f"{PROJECT}:etcd"]["replicas"] = "one"
    with pytest.raises(ConfigError) as raised:
        _parse(config)
    assert len(raised.value.problems) == 3


def test_object_keys_must_be_objects() -> None:
    config = load_stack_file("dev")
    config[f"{PROJECT}:mysql"] = "mariadb"
    with pytest.raises(ConfigError, match=r"mysql-cluster:mysql: got 'mariadb'; must be an obj"):
        _parse(config)


def test_misspelled_top_level_key() -> None:
    config = load_stack_file("dev")
    config[f"{PROJECT}:mysq"] = {}
    with pytest.raises(ConfigError, match=r"mysql-cluster:mysq: .*did you mean 'mysql'"):
        run_program(config)


@pytest.mark.parametrize("option", ["server_id", "read-only", "log_bin", "sync_binlog"])
def test_server_options_the_cluster_manages_cannot_be_overridden(option: str) -> None:
    config = _with("dev", "mysql", "extraServerConfig", {option: "1"})
    with pytest.raises(ConfigError, match=rf"extraServerConfig\.{option}: .*managed by the cl"):
        run_program(config)


def test_server_options_must_be_strings() -> None:
    config = _with("dev", "mysql", "extraServerConfig", {"max_connections": 500})
    with pytest.raises(ConfigError, match=r"extraServerConfig: .*mapping of strings"):
        _parse(config)


def test_json_text_from_the_engine_is_decoded() -> None:
    """The engine passes object-valued keys as JSON text; the parser must accept that."""
    raw = mocks.config_map(load_stack_file("prod"))
    assert isinstance(raw[f"{PROJECT}:mysql"], str)
    assert parse(raw, stack="prod").mysql.replicas == 3


# ---------------------------------------------------------------- the project file

def _project_file() -> dict[str, Any]:
    yaml: Any = importlib.import_module("yaml")
    project: dict[str, Any] = yaml.safe_load((mocks.REPO_ROOT / "Pulumi.yaml").read_text())
    return project


def test_project_installs_its_own_dependencies() -> None:
    project = _project_file()
    assert project["name"] == PROJECT
    assert project["runtime"] == {"name": "python",
                                  "options": {"toolchain": "pip", "virtualenv": "venv"}}
    assert (mocks.REPO_ROOT / "requirements.txt").is_file()


def test_config_declarations_use_only_types_the_cli_accepts() -> None:
    declarations = _project_file()["config"]
    for key, declaration in declarations.items():
        assert key not in ("mysql", "etcd", "locks"), "object keys cannot be declared typed"
        assert declaration.get("type") in ("string", "integer", "boolean", "array"), key
        assert declaration.get("description"), key
    assert "default" not in declarations["namespace"]  # required: never a default namespace


def test_config_module_imports_without_pulumi_kubernetes() -> None:
    """The dynamic-provider process imports components.* to unpickle providers; the package
    must not drag every component (and an import cycle) in with it."""
    code = ("import sys, components.config, components.mysql.flavor; "
            "sys.exit('pulumi_kubernetes' in sys.modules)")
    completed = subprocess.run([sys.executable, "-c", code], cwd=mocks.REPO_ROOT, check=False)
    assert completed.returncode == 0


@pytest.mark.parametrize(("settings", "key", "text"), [
    ({"durability": "semisync", "semisyncWaitCount": 2},
     "mysql-cluster:mysql.semisyncWaitCount", "exactly one replica"),
    ({"flavor": "mysql", "durability": "semisync", "semisyncWaitCount": 2},
     "mysql-cluster:mysql.semisyncWaitCount", "only 1 replica(s) can acknowledge"),
    ({"durability": "semisync", "replicationInit": {"enabled": False}},
     "mysql-cluster:mysql.durability", "mysql-cluster:mysql.replicationInit.enabled true"),
    ({"primary": 1, "replicationInit": {"enabled": False}},
     "mysql-cluster:mysql.primary", "a switchover is run by ReplicationInit"),
    ({"primary": 1, "replicas": 1}, "mysql-cluster:mysql.primary",
     "mysql-cluster:mysql.replicas = 1 pod(s): ordinals 0..0; switch over"),
], ids=["mariadb-wait-count", "more-acks-than-replicas", "semisync-without-init",
        "switchover-without-init", "scaled-below-the-primary"])
def test_switchover_and_durability_need_what_they_rely_on(
        settings: dict[str, Any], key: str, text: str) -> None:
    config = copy.deepcopy(load_stack_file("dev"))
    config[f"{PROJECT}:mysql"].update(settings)
    with pytest.raises(ConfigError) as raised:
        run_program(config)
    assert key in str(raised.value)
    assert text in str(raised.value)
    assert mocks.last_mocks is not None
    assert mocks.last_mocks.resources == []


def test_switchover_and_durability_keys_reach_the_config() -> None:
    config = copy.deepcopy(load_stack_file("prod"))
    config[f"{PROJECT}:mysql"].update({
        "primary": 2, "durability": "semisync", "switchoverGraceSeconds": 0,
        "switchoverTimeoutSeconds": 120, "semisyncTimeoutSeconds": 3})
    mysql = _parse(config, stack="prod").mysql
    assert (mysql.primary, mysql.durability, mysql.semisync_wait_count) == (2, "semisync", 1)
    assert (mysql.switchover_grace_seconds, mysql.switchover_timeout_seconds,
            mysql.semisync_timeout_seconds) == (0, 120, 3)
