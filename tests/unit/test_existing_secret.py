"""``mysql.credentials.existingSecret`` under mocks: the user's Secret replaces pulumi-random.

What must hold: the Secret is read (a ``get``), never created, owned or replaced; the pods
mount it by its name; ReplicationInit and the stack outputs get its passwords, always as
secrets; a Secret lacking keys stops the deploy naming every bad key, before any object
of the MySQL cluster is registered.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from components import ConfigError
from components.config import parse
from components.mysql import credentials
from tests.support import mocks
from tests.support.mocks import ProgramResult, run_program, stack_with

NAMESPACE = "mysql-prod"
SECRET = "orders-vault-credentials"
PASSWORDS = {account: f"{account}-Pw#'\" \\x-{index}"
             for index, account in enumerate(credentials.PASSWORD_VARIABLES)}
COMPONENT = "mysql-cluster:index:MySQLCluster"
REPLICATION_INIT = "pulumi-python:dynamic/mysql:ReplicationInit"


def encoded(passwords: dict[str, str]) -> dict[str, str]:
    return {credentials.secret_key(account): base64.b64encode(value.encode()).decode()
            for account, value in passwords.items()}


def secret_object(data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "data": data,
            "metadata": {"name": SECRET, "namespace": NAMESPACE}}


def deploy(data: dict[str, str]) -> ProgramResult:
    config = stack_with("prod", credentials={"existingSecret": SECRET})
    return run_program(config, stack="prod",
                       existing={f"{NAMESPACE}/{SECRET}": secret_object(data)})


@pytest.fixture(scope="module")
def deployed() -> ProgramResult:
    return deploy(encoded(PASSWORDS))


def test_the_secret_is_read_not_created_and_no_password_is_generated(
        deployed: ProgramResult) -> None:
    assert deployed.kubernetes("Secret") == []
    assert deployed.of_type("random:index/randomPassword:RandomPassword") == []
    mysql = deployed.component(COMPONENT)
    assert mysql.kubernetes("StatefulSet"), "the cluster was not built"
    assert mocks.last_mocks is not None
    assert ("kubernetes:core/v1:Secret", f"{NAMESPACE}/{SECRET}") in mocks.last_mocks.reads


def test_pods_mount_the_users_secret(deployed: ProgramResult) -> None:
    spec = deployed.one("StatefulSet", "mysql").inputs["spec"]["template"]["spec"]
    names = {volume["secret"]["secretName"] for volume in spec["volumes"]
             if volume.get("secret")}
    assert names == {SECRET}


def test_replication_init_and_outputs_get_its_passwords_as_secrets(
        deployed: ProgramResult) -> None:
    (init,) = deployed.of_type(REPLICATION_INIT)
    assert init.inputs["admin_password"] == PASSWORDS["admin"]
    assert init.inputs["replication_password"] == PASSWORDS["replication"]
    assert init.is_secret("admin_password")
    assert init.is_secret("replication_password")
    outputs = deployed.outputs
    assert outputs["mysqlSecretName"].value == SECRET
    assert not outputs["mysqlSecretName"].secret, "a Secret's name is no secret"
    for output, account in (("mysqlAdminPassword", "admin"), ("mysqlRootPassword", "root")):
        assert outputs[output].value == PASSWORDS[account]
        assert outputs[output].secret, f"{output} is not a secret output"
    plain = [name for name, output in outputs.items() if not output.secret
             and any(password in str(output.value) for password in PASSWORDS.values())]
    assert plain == []


def failed_deploy(data: dict[str, str]) -> tuple[str, list[str]]:
    """The program's error and every MySQL object it registered, for a bad Secret."""
    return mocks.failed_deploy("tests.unit.test_existing_secret:deploy", data, NAMESPACE)


def test_a_secret_lacking_keys_stops_the_deploy_naming_each_and_builds_nothing() -> None:
    data = encoded(PASSWORDS)
    del data["replication-password"]
    data["monitor-password"] = base64.b64encode(b"\n").decode()  # empty once read
    data["backup-password"] = ""
    message, built = failed_deploy(data)
    assert "invalid stack configuration" in message, message
    for key, problem in (("replication-password", "is missing"),
                         ("monitor-password", "is empty"), ("backup-password", "is empty")):
        assert f"Secret {NAMESPACE}/{SECRET}: key '{key}' {problem}" in message, message
    assert "mysql-cluster:mysql.credentials.existingSecret" in message
    assert "admin-password" not in message
    assert "root-password" not in message
    assert built == []


def test_passwords_from_secret_data_drops_trailing_newlines_as_the_pods_do() -> None:
    data = encoded({**PASSWORDS, "root": "s3cret\n\n"})
    assert credentials.passwords_from_secret_data(data)["root"] == "s3cret"


@pytest.mark.parametrize(("value", "problem"), [
    ("not base64!", "is not UTF-8 text"),
    (base64.b64encode(b"\xff\xfe").decode(), "is not UTF-8 text"),
    (base64.b64encode(b"two\nlines").decode(), "holds a line break or a NUL byte"),
    (base64.b64encode(b"nul\0byte").decode(), "holds a line break or a NUL byte"),
])
def test_unusable_values_are_named(value: str, problem: str) -> None:
    data = {**encoded(PASSWORDS), "admin-password": value}
    with pytest.raises(credentials.SecretKeyProblems) as raised:
        credentials.passwords_from_secret_data(data)
    assert raised.value.problems == [f"key 'admin-password' {problem}"]


def test_no_data_at_all_names_every_key() -> None:
    with pytest.raises(credentials.SecretKeyProblems) as raised:
        credentials.passwords_from_secret_data(None)
    assert raised.value.problems == [f"key {credentials.secret_key(a)!r} is missing"
                                     for a in credentials.PASSWORD_VARIABLES]


def test_the_secret_name_is_checked_with_the_stack_config() -> None:
    config = stack_with("prod", credentials={"existingSecret": "Not_A_Name"})
    with pytest.raises(ConfigError) as raised:
        parse(config, stack="prod")
    assert "mysql-cluster:mysql.credentials.existingSecret: got 'Not_A_Name'" in str(raised.value)
