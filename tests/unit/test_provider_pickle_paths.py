"""Stacks deployed before the provider modules became private still load their providers.

pulumi.dynamic stores each resource's provider in state as a dill pickle that names the
class by module path, and the provider process unpickles it on every operation. The
fixture holds the pickles main's code wrote before the rename (old paths); they must load
through the real provider server, and a provider pickled now must name its new, private
module, so the alias modules can go once every stack has been updated.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import dill
import pytest
from pulumi.dynamic import ResourceProvider
from pulumi.dynamic.dynamic import serialize_provider

from components.etcd._membership import EtcdMembershipProvider
from components.locks._provider import LockCRDProvider
from components.mysql._replication import _ReplicationProvider
from tests.support.provider_server import PROVIDER_KEY, ProviderServer

FIXTURE = json.loads((Path(__file__).parent / "data" / "provider-pickles-before-rename.json")
                     .read_text(encoding="utf-8"))
OLD_PICKLES: dict[str, str] = FIXTURE["pickles"]
NOW: dict[str, type[ResourceProvider]] = {
    "components.mysql.replication._ReplicationProvider": _ReplicationProvider,
    "components.etcd.membership.EtcdMembershipProvider": EtcdMembershipProvider,
    "components.locks.provider.LockCRDProvider": LockCRDProvider,
}


@pytest.fixture(scope="module")
def server() -> Iterator[ProviderServer]:
    with ProviderServer() as srv:
        srv.configure()
        yield srv


def test_the_fixture_holds_every_provider_under_its_old_path() -> None:
    assert set(OLD_PICKLES) == set(NOW)
    for old_path, pickled in OLD_PICKLES.items():
        module, name = old_path.rsplit(".", 1)
        raw = base64.b64decode(pickled)
        assert module.encode() in raw
        assert name.encode() in raw


@pytest.mark.parametrize("old_path", sorted(NOW))
def test_an_old_pickle_loads_as_the_provider_now(old_path: str) -> None:
    # The fixture is this repository's own file, as trusted as the stack state it copies.
    loaded = dill.loads(base64.b64decode(OLD_PICKLES[old_path]))  # noqa: S301
    assert type(loaded) is NOW[old_path]


@pytest.mark.parametrize("old_path", sorted(NOW))
def test_the_provider_server_runs_an_old_pickle(server: ProviderServer, old_path: str) -> None:
    # Check is the first call of every up and preview; the provider process unpickles
    # __provider before it can answer at all (a failure to load is a gRPC error here).
    result = server.check("urn:pulumi:test::mysql-cluster::pulumi-python:dynamic:Resource::old",
                          {}, {PROVIDER_KEY: OLD_PICKLES[old_path]})
    assert result.inputs[PROVIDER_KEY] == OLD_PICKLES[old_path]


@pytest.mark.parametrize("provider", list(NOW.values()), ids=lambda c: c.__name__)
def test_a_new_pickle_names_the_private_module(provider: type[ResourceProvider]) -> None:
    raw = base64.b64decode(serialize_provider(provider()))
    module = provider.__module__
    assert module.rsplit(".", 1)[1].startswith("_")
    assert module.encode() in raw
    old_module = module.replace("._", ".")
    assert old_module.encode() not in raw
    assert len(raw) < 200, "pickled by reference, not by value"
