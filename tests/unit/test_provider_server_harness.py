"""The provider-server harness behaves like the engine: real process, floats, secrets, errors."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.echo_provider import EchoProvider
from tests.support.provider_server import CheckFailedError, ProviderServer, ResourceDriver


@pytest.fixture(scope="module")
def server() -> Iterator[ProviderServer]:
    with ProviderServer() as srv:
        srv.configure()
        yield srv


def test_numbers_cross_the_wire_as_floats_and_lifecycle_runs(server: ProviderServer) -> None:
    driver = ResourceDriver(server, EchoProvider(), secret_inputs=frozenset({"password"}))
    created = driver.up({"count": 2, "password": "s3cret-value"})
    assert created.operation == "create"
    assert created.outputs["count_type"] == "float"
    assert driver.up({"count": 2, "password": "s3cret-value"}).operation == "same"
    assert driver.up({"count": 3, "password": "s3cret-value"}).operation == "update"
    driver.assert_no_plaintext(["s3cret-value"])
    assert driver.refresh()["count"] == 3
    driver.destroy()
    assert driver.calls == ["check", "create", "check", "diff", "check", "diff", "update",
                            "read", "delete"]


def test_check_failures_and_provider_process_identity(server: ProviderServer) -> None:
    driver = ResourceDriver(server, EchoProvider())
    with pytest.raises(CheckFailedError) as failure:
        driver.up({"count": "many"})
    assert failure.value.failures[0].property == "count"
    assert server.process.poll() is None
