"""components._check: the input rules every dynamic provider's check shares.

Each rule is tested on the checker and, where a provider used to judge it its own way,
through that provider's check: a trailing newline got through ReplicationInit's patterns
(``re.match`` with ``$``) and EtcdMembership's URLs (``urlsplit`` drops it), and unknown
preview values failed EtcdMembership's and the Lock CRD provider's checks.
"""

from __future__ import annotations

from typing import Any

import pytest
from pulumi.runtime.rpc import UNKNOWN

from components._check import HOST, Checker, has_unknowns, is_url
from components.etcd._membership import EtcdMembershipProvider
from components.locks._provider import LockCRDProvider
from components.mysql._replication import _ReplicationProvider


def _replication_inputs(**overrides: Any) -> dict[str, Any]:
    return {"flavor": "mariadb", "primary": {"host": "127.0.0.1", "port": 13306.0},
            "replicas": [{"host": "127.0.0.1", "port": 13307.0}],
            "source_host": "db-0.db", "source_port": 3306.0, "admin_user": "admin",
            "admin_password": "a-password", "replication_user": "repl",
            "replication_password": "r-password", "max_lag_seconds": 30.0,
            "timeout_seconds": 300.0, "lock_endpoints": [], **overrides}


def _etcd_inputs(**overrides: Any) -> dict[str, Any]:
    return {"members": [{"name": "etcd-0", "peer_url": "http://etcd-0.p:2380"}],
            "endpoints": ["http://etcd-client.db.svc:2379"], "timeout_seconds": 30.0,
            **overrides}


def _crd_inputs(**overrides: Any) -> dict[str, Any]:
    return {"manifest": {"kind": "CustomResourceDefinition", "metadata": {"name": "x.io"}},
            "crdName": "x.io", "owner": "mysql-cluster/dev", **overrides}


def _failed(result: Any) -> dict[str, str]:
    return {f.property: f.reason for f in result.failures}


# --- the checker -------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["db-0\n", "db-0\r\n", "\ndb-0", "db 0", "db-0.", "-db",
                                  "db\u00e9", ""])
def test_a_pattern_must_match_all_of_an_ascii_string(text: str) -> None:
    check = Checker()
    assert check.string("host", text, pattern=HOST) == ""
    assert [f.property for f in check.failures] == ["host"]
    assert repr(text) in check.failures[0].reason


def test_a_good_string_passes_and_length_is_bounded() -> None:
    check = Checker()
    assert check.string("host", "db-0.db.svc", pattern=HOST) == "db-0.db.svc"
    assert check.string("name", "x" * 256) == ""
    assert check.string("text", "x" * 10_000, max_length=None) == "x" * 10_000
    assert [f.property for f in check.failures] == ["name"]
    assert "at most 255 characters" in check.failures[0].reason


@pytest.mark.parametrize(("text", "port", "ok"), [
    ("http://etcd-0.etcd:2379", False, True),
    ("https://10.0.0.1:2379/", False, True),
    ("http://etcd", False, True),
    ("http://etcd", True, False),
    ("http://etcd:2379\n", False, False),
    ("http://etcd:0", False, False),
    ("http://etcd:65536", False, False),
    ("http://etcd:\uff12\uff13\uff17\uff19", False, False),
    ("etcd:2379", False, False),
    ("ftp://etcd:2379", False, False),
    ("http://etcd:2379/v3", False, False),
])
def test_etcd_urls(text: str, port: bool, ok: bool) -> None:
    assert is_url(text, port=port) is ok


@pytest.mark.parametrize(("value", "number"), [(3306.0, 3306), (3306, 3306), (2.5, 0),
                                               (True, 0), ("3306", 0), (0, 0), (70000, 0)])
def test_integers_arrive_as_floats_and_only_whole_ones_in_bounds_pass(
        value: object, number: int) -> None:
    check = Checker()
    assert check.integer("port", value, minimum=1, maximum=65535) == number
    assert bool(check.failures) is (number == 0)


def test_booleans_choices_and_lists() -> None:
    check = Checker()
    assert check.boolean("force", True) is True
    assert check.boolean("force", "yes") is False
    assert check.choice("flavor", "mysql", ("mariadb", "mysql")) == "mysql"
    assert check.choice("flavor", "postgres", ("mariadb", "mysql")) is None
    assert check.sequence("items", [1], "numbers", non_empty=True) == [1]
    assert check.sequence("items", [], "numbers", non_empty=True) == ()
    assert check.sequence("items", "1,2", "numbers") == ()
    assert [f.property for f in check.failures] == ["force", "flavor", "items", "items"]
    assert "must be one of ['mariadb', 'mysql']; got 'postgres'" in check.failures[1].reason


def test_unknown_values_are_accepted_unchecked_and_marked() -> None:
    check = Checker()
    assert check.string("host", UNKNOWN, pattern=HOST) == ""
    assert check.integer("port", UNKNOWN, minimum=1, maximum=2) == 0
    assert check.failures == []
    assert check.unknown
    assert has_unknowns({"a": [1, {"b": UNKNOWN}]})
    assert not has_unknowns({"a": [1, {"b": "x"}]})


def test_missing_values_are_required_unless_optional() -> None:
    check = Checker()
    check.string("context", None, required=False)
    check.secret("kubeconfig", None, max_length=None, required=False)
    assert check.failures == []
    check.string("owner", None)
    assert _failed(check) == {"owner": "is required"}


def test_a_secret_is_never_shown() -> None:
    check = Checker()
    check.secret("password", "s3cret\0", max_length=None)
    check.secret("other", "s3cret" * 40, max_length=32)
    check.secret("empty", "", max_length=None, what="kubeconfigs")
    assert "s3cret" not in repr(check.failures)
    assert "240 characters" in _failed(check)["other"]
    assert "kubeconfigs are never empty" in _failed(check)["empty"]


def test_only_known_keys_pass_and_outputs_are_known() -> None:
    check = Checker()
    check.only({"a", "out", "__provider", "typo"}, inputs=("a", "b"), outputs=("out",),
               resource="Thing")
    assert _failed(check) == {"typo": "is not a Thing property; known: a, b"}


# --- the same rules through each provider ----------------------------------------------


@pytest.mark.parametrize(("overrides", "prop"), [
    ({"source_host": "db-0.db\n"}, "source_host"),
    ({"primary": {"host": "127.0.0.1\n", "port": 13306.0}}, "primary.host"),
    ({"admin_user": "admin\n"}, "admin_user"),
    ({"replication_user": "repl\n"}, "replication_user"),
    ({"lock_endpoints": ["http://etcd:2379\n"]}, "lock_endpoints[0]"),
])
def test_replication_init_refuses_a_trailing_newline(overrides: dict[str, Any],
                                                     prop: str) -> None:
    assert _ReplicationProvider().check({}, _replication_inputs()).failures == []
    assert prop in _failed(_ReplicationProvider().check({}, _replication_inputs(**overrides)))


def test_etcd_membership_refuses_a_trailing_newline_in_its_urls() -> None:
    provider = EtcdMembershipProvider()
    assert provider.check({}, _etcd_inputs()).failures == []
    bad_peer = [{"name": "etcd-0", "peer_url": "http://etcd-0.p:2380\n"}]
    assert set(_failed(provider.check({}, _etcd_inputs(members=bad_peer)))) == {"members"}
    bad_client = _etcd_inputs(endpoints=["http://etcd-client.db.svc:2379\n"])
    assert set(_failed(provider.check({}, bad_client))) == {"endpoints"}


def test_etcd_membership_accepts_unknown_preview_values() -> None:
    provider = EtcdMembershipProvider()
    for inputs in (_etcd_inputs(members=UNKNOWN), _etcd_inputs(endpoints=UNKNOWN),
                   _etcd_inputs(members=[{"name": "etcd-0", "peer_url": UNKNOWN}])):
        result = provider.check({}, inputs)
        assert result.failures == []
        assert result.inputs == inputs  # left for the engine to resolve, not rewritten


def test_lock_crd_accepts_unknown_preview_values_and_never_shows_a_kubeconfig() -> None:
    provider = LockCRDProvider()
    assert provider.check({}, _crd_inputs()).failures == []
    assert provider.check({}, _crd_inputs(owner=UNKNOWN)).failures == []
    kubeconfig = "users: [{name: a, user: {token: tok-0123456789}}]\0"
    failed = _failed(provider.check({}, _crd_inputs(kubeconfig=kubeconfig)))
    assert set(failed) == {"kubeconfig"}
    assert "tok-0123456789" not in repr(failed)
