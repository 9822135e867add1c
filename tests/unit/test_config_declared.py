"""Each config key is declared once, on its dataclass field (issue 17 item 1): the YAML
reader, the validation of dataclasses built in Python and the README table all come from
that declaration, so none of them can drift from the others."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from typing import Any

import pytest

from components.config import (
    ConfigError,
    Endpoint,
    EtcdTLSConfig,
    MySQLConfig,
    ReplicationInitConfig,
    Resources,
    StackConfig,
    markdown_table,
    parse,
)
from tests.support import mocks

PROJECT = "mysql-cluster"


def _readme_table() -> str:
    text = (mocks.REPO_ROOT / "README.md").read_text(encoding="utf-8")
    table = "| key | default | meaning |" + text.split("| key | default | meaning |", 1)[1]
    return table.split("\n\n", 1)[0] + "\n"


def _yaml(**sections: Any) -> StackConfig:
    raw = {f"{PROJECT}:namespace": "apps",
           **{f"{PROJECT}:{name}": value for name, value in sections.items()}}
    return parse(mocks.config_map(raw), stack="dev")


def test_the_readme_table_is_the_generated_one() -> None:
    assert _readme_table() == markdown_table()


def test_the_module_prints_the_table() -> None:
    completed = subprocess.run([sys.executable, "-m", "components.config", "--markdown"],
                               cwd=mocks.REPO_ROOT, capture_output=True, text=True, check=True)
    assert completed.stdout == markdown_table()


def test_every_config_field_declares_its_key() -> None:
    for cls in (StackConfig, MySQLConfig, ReplicationInitConfig, Resources, EtcdTLSConfig):
        for field in dataclasses.fields(cls):
            if field.name not in ("project", "stack"):
                assert "mysql-cluster.key" in field.metadata, (cls.__name__, field.name)


def test_defaults_built_in_python_are_the_ones_yaml_gets() -> None:
    """One statement of each default: an empty section reads as the bare dataclass."""
    config = _yaml()
    assert config.mysql == MySQLConfig()
    assert config == StackConfig(project=PROJECT, stack="dev", namespace="apps")


def test_derived_defaults_follow_the_flavor_from_python_and_from_yaml() -> None:
    built = MySQLConfig(flavor="mysql")
    assert built.version == "8.4.5"
    assert built.server_image == "mysql:8.4.5"
    assert built == _yaml(mysql={"flavor": "mysql"}).mysql


BAD = [
    # (field, Python value, YAML key, YAML value, words of the message)
    ("replicas", 0, "replicas", 0, "must be between 1 and 9"),
    ("flavor", "postgres", "flavor", "postgres", "must be one of 'mysql', 'mariadb'"),
    ("storage", "10GB", "storage", "10GB", "Kubernetes quantity"),
    ("client_namespaces", ("Apps",), "clientNamespaces", ["Apps"], "list of namespace names"),
    ("extra_server_config", (("server_id", "1"),), "extraServerConfig", {"server_id": "1"},
     "managed by the cluster"),
]


@pytest.mark.parametrize(("field", "value", "key", "raw", "words"), BAD,
                         ids=[case[0] for case in BAD])
def test_python_gets_the_same_validation_as_yaml(field: str, value: Any, key: str, raw: Any,
                                                 words: str) -> None:
    with pytest.raises(ConfigError) as built:
        MySQLConfig(**{field: value})
    with pytest.raises(ConfigError) as read:
        _yaml(mysql={key: raw})
    (python_problem,) = built.value.problems
    (yaml_problem,) = read.value.problems
    assert words in python_problem
    # The same rule, word for word: only the key's spelling (and a list's brackets) differ.
    assert python_problem.split("; ", 1)[1] == yaml_problem.split("; ", 1)[1]
    assert yaml_problem.startswith(f"{PROJECT}:mysql.{key}")
    assert python_problem.startswith(field)


def test_rules_across_fields_hold_in_python_too() -> None:
    init = ReplicationInitConfig(access="port-forward", endpoints=(Endpoint("127.0.0.1", 1),))
    with pytest.raises(ConfigError, match=r"replication_init.endpoints: .*exactly 2 endpoints"):
        MySQLConfig(replication_init=init)
    with pytest.raises(ConfigError, match=r"requests_memory: .*must not exceed limits_memory"):
        Resources("1", "4Gi", None, "1Gi")
    with pytest.raises(ConfigError, match=r"mysql-cluster:mysql.resources.requests.memory: "
                       r".*must not exceed mysql-cluster:mysql.resources.limits.memory"):
        _yaml(mysql={"resources": {"requests": {"memory": "4Gi"}}})
