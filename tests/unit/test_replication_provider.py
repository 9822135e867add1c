"""ReplicationInit without servers: Check, Diff decisions, floats, secrets, pickling.

The SQL each flavor speaks and the rules that judge a replica (``_replication_sql.py``)
are pinned in test_replication_sql.py; this file is the provider around them.
"""

from __future__ import annotations

import base64
import ssl
from dataclasses import dataclass
from typing import Any

import pulumi
import pytest
from pulumi.dynamic.dynamic import serialize_provider
from pulumi.runtime import rpc

import distlock
from components.config import Endpoint
from components.mysql import _replication as replication
from components.mysql._replication import (
    ReplicationInit,
    ReplicationInitArgs,
    _Observation,
    _ReplicationProvider,
)

PASSWORD = "rotate-me-0123456789"


def props(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "flavor": "mariadb",
        "primary": {"host": "127.0.0.1", "port": 13306.0},
        "replicas": [{"host": "127.0.0.1", "port": 13307.0},
                     {"host": "127.0.0.1", "port": 13308.0}],
        "source_host": "orders-mysql-0.orders-mysql.db.svc.cluster.local",
        "source_port": 3306.0,
        "admin_user": "admin",
        "admin_password": "admin-secret",
        "replication_user": "repl",
        "replication_password": PASSWORD,
        "max_lag_seconds": 30.0,
        "timeout_seconds": 300.0,
        "lock_endpoints": [],
    }
    base.update(overrides)
    return base


def failures(**overrides: Any) -> dict[str, str]:
    result = _ReplicationProvider().check({}, props(**overrides))
    return {f.property: f.reason for f in result.failures}


# --- Check ---------------------------------------------------------------------------


def test_valid_inputs_pass_and_floats_come_back_as_ints() -> None:
    result = _ReplicationProvider().check({}, props())
    assert result.failures == []
    assert result.inputs["source_port"] == 3306
    assert isinstance(result.inputs["source_port"], int)
    assert result.inputs["replicas"][1] == {"host": "127.0.0.1", "port": 13308}
    assert result.inputs["max_lag_seconds"] == 30


@pytest.mark.parametrize(("overrides", "prop", "fragment"), [
    ({"flavor": "postgres"}, "flavor", "must be one of"),
    ({"primary": {"host": "127.0.0.1", "port": 70000}}, "primary.port", "between 1 and 65535"),
    ({"primary": {"host": "bad host", "port": 1}}, "primary.host", "DNS name"),
    ({"primary": {"host": "h", "port": 1, "tls": True}}, "primary", "unknown keys"),
    ({"primary": "127.0.0.1:3306"}, "primary", "object with host and port"),
    ({"replicas": [{"host": "127.0.0.1", "port": 13306}]}, "replicas[0]", "primary's endpoint"),
    ({"replicas": [{"host": "h", "port": 1}, {"host": "h", "port": 1}]}, "replicas[1]",
     "listed twice"),
    ({"replicas": "h:1"}, "replicas", "list of endpoints"),
    ({"source_port": 2.5}, "source_port", "whole number"),
    ({"source_port": True}, "source_port", "whole number"),
    ({"source_host": ""}, "source_host", "DNS name"),
    ({"max_lag_seconds": 0}, "max_lag_seconds", "between 1 and 86400"),
    ({"timeout_seconds": "60"}, "timeout_seconds", "whole number"),
    ({"admin_user": "ad min"}, "admin_user", "account name"),
    ({"replication_user": "admin"}, "replication_user", "must differ from admin_user"),
    ({"replication_password": ""}, "replication_password", "never empty"),
    ({"admin_password": None}, "admin_password", "is required"),
    ({"replication_password": "x" * 97}, "replication_password", "at most 96"),
    ({"flavor": "mysql", "replication_password": "x" * 33}, "replication_password", "at most 32"),
    ({"flavor": "mysql", "replication_user": "r" * 33}, "replication_user", "at most 32"),
    ({"lock_endpoints": ["etcd:2379"]}, "lock_endpoints[0]", "etcd client URL"),
    ({"replica_count": 2}, "replica_count", "not a ReplicationInit property"),
    ({"kubernetes_lock": "yes"}, "kubernetes_lock", "true or false"),
    ({"kubernetes_lock": True}, "kubernetes_lock", "needs record_namespace"),
])
def test_bad_inputs_become_check_failures_naming_the_property(
        overrides: dict[str, Any], prop: str, fragment: str) -> None:
    found = failures(**overrides)
    assert prop in found, found
    assert fragment in found[prop]


def test_every_problem_is_reported_at_once() -> None:
    found = failures(flavor="nope", source_port=0, replication_password="")
    assert {"flavor", "source_port", "replication_password"} <= set(found)


def test_password_values_never_appear_in_check_failures() -> None:
    long_password = "p" * 200
    found = failures(replication_password=long_password, admin_password=7)
    assert long_password not in repr(found)
    assert "200 characters" in found["replication_password"]


def test_unknown_values_in_preview_are_not_failures() -> None:
    result = _ReplicationProvider().check({}, props(replication_password=rpc.UNKNOWN))
    assert result.failures == []
    assert result.inputs["replication_password"] == rpc.UNKNOWN


# --- Diff ----------------------------------------------------------------------------


@dataclass
class FakeCluster:
    """Stands in for the live look at the cluster: the problems it reports, who asked."""

    problems: tuple[str, ...] = ()
    calls: int = 0


@pytest.fixture
def observed(monkeypatch: pytest.MonkeyPatch) -> FakeCluster:
    fake = FakeCluster()

    def observe(_spec: Any, *, with_position: bool) -> _Observation:
        fake.calls += 1
        return _Observation("0-1-5", (), fake.problems)

    monkeypatch.setattr(replication, "_observe", observe)
    return fake


def olds_from_state(**overrides: Any) -> dict[str, Any]:
    """State as the engine hands it back: every number a float, outputs beside inputs."""
    state = props(**overrides)
    state.update({"replica_status": [{"ordinal": 1.0, "lag_seconds": 0.0}],
                  "primary_gtid_position": "0-1-5", "in_sync": True, "__provider": "x"})
    return state


def test_diff_is_empty_for_the_same_inputs_with_floats_and_healthy_servers(
        observed: FakeCluster) -> None:
    news = _ReplicationProvider().check({}, props()).inputs
    result = _ReplicationProvider().diff("id", olds_from_state(), news)
    assert result.changes is False
    assert result.replaces == []
    assert observed.calls == 1, "unchanged inputs: the live state decides"


def test_diff_reports_live_drift_with_unchanged_inputs(observed: FakeCluster) -> None:
    observed.problems = ("replica 1 (127.0.0.1:13307): IO thread is No",)
    result = _ReplicationProvider().diff("id", olds_from_state(), props())
    assert result.changes is True
    assert not result.replaces, "nothing is ever replaced: every change is an in-place update"


@pytest.mark.parametrize("change", [
    {"replication_password": "new-password"},
    {"replicas": [{"host": "127.0.0.1", "port": 13307.0}]},
    {"source_host": "other-0.other.db.svc"},
    {"timeout_seconds": 60.0},
])
def test_changed_inputs_diff_without_touching_servers(monkeypatch: pytest.MonkeyPatch,
                                                      change: dict[str, Any]) -> None:
    def no_servers(*_: object, **__: object) -> _Observation:
        raise AssertionError("an input change needs no server round trip")

    monkeypatch.setattr(replication, "_observe", no_servers)
    result = _ReplicationProvider().diff("id", olds_from_state(), props(**change))
    assert result.changes is True
    assert not result.replaces


def test_unknown_news_in_preview_diff_as_a_change(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replication, "_observe", None)
    result = _ReplicationProvider().diff("id", olds_from_state(),
                                         props(replication_password=rpc.UNKNOWN))
    assert result.changes is True


# --- the resource and its provider as Pulumi sees them -----------------------------------


def test_provider_pickles_by_reference_with_nothing_captured() -> None:
    pickled = base64.b64decode(serialize_provider(_ReplicationProvider()))
    assert b"components.mysql._replication" in pickled
    assert b"pymysql" not in pickled
    assert len(pickled) < 200, "the provider must be pickled by reference, not by value"


class _Mocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.resources: list[pulumi.runtime.MockResourceArgs] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.resources.append(args)
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], Any]:
        return {}, None


@pulumi.runtime.test  # type: ignore[untyped-decorator]
def test_resource_sends_passwords_as_secrets_and_marks_secret_outputs() -> Any:
    mocks = _Mocks()
    pulumi.runtime.set_mocks(mocks, project="mysql-cluster", stack="test", preview=False)
    seen_opts: list[pulumi.ResourceOptions] = []

    def capture(args: pulumi.ResourceTransformationArgs) -> None:
        seen_opts.append(args.opts)

    resource = ReplicationInit("orders-replication", ReplicationInitArgs(
        flavor="mariadb", primary=Endpoint("orders-mysql-0.orders-mysql", 3306),
        replicas=(Endpoint("orders-mysql-1.orders-mysql", 3306),),
        source_host="orders-mysql-0.orders-mysql", source_port=3306,
        admin_user="admin", admin_password=pulumi.Output.secret("admin-pw"),
        replication_user="repl", replication_password="plain-but-made-secret",
        max_lag_seconds=30, timeout_seconds=300),
        pulumi.ResourceOptions(transformations=[capture]))
    assert seen_opts[0].additional_secret_outputs is not None
    assert {"admin_password", "replication_password", "kubeconfig"} <= set(
        seen_opts[0].additional_secret_outputs)

    def verify(secret: list[bool]) -> None:
        assert secret == [True, True]
        (registered,) = [r for r in mocks.resources if r.name == "orders-replication"]
        assert registered.typ == "pulumi-python:dynamic/mysql:ReplicationInit"
        for key in ("admin_password", "replication_password"):
            assert rpc.is_rpc_secret(registered.inputs[key]), key
        assert registered.inputs["replicas"] == [
            {"host": "orders-mysql-1.orders-mysql", "port": 3306}]
        assert registered.inputs["lock_endpoints"] == []

    outputs: Any = resource
    return pulumi.Output.all(
        pulumi.Output.from_input(outputs.admin_password.is_secret()),
        pulumi.Output.from_input(outputs.replication_password.is_secret()),
    ).apply(verify)


def test_connections_share_one_preferred_tls_context() -> None:
    """TLS when offered (as pymysql's default), without rebuilding a CA store per connect."""
    connection: Any = replication._Connection(host="127.0.0.1", port=1, defer_connect=True)
    context = connection.ctx
    assert context is replication._preferred_tls()
    assert context.verify_mode == ssl.CERT_NONE
    assert connection.ssl is True
    assert connection._ssl_required is False, "a server without TLS must still be reachable"


class _LostLock:
    def check(self) -> None:
        raise distlock.LockLost("lock 'mysql-cluster/x/replication' was lost: lease expired")


def test_a_lost_lock_stops_the_next_change_with_a_clear_message() -> None:
    guard = replication._Guard(_LostLock())  # type: ignore[arg-type]
    with pytest.raises(replication.ReplicationError) as stopped:
        guard.check("changing replica 2 (127.0.0.1:13308)")
    message = str(stopped.value)
    assert "lease expired" in message
    assert "stopped before changing replica 2 (127.0.0.1:13308)" in message
    replication._Guard().check("anything")  # no lock configured: never in the way


# --- which cluster the record and the labels are in --------------------------------------


KUBECONFIG_TEXT = "apiVersion: v1\nkind: Config\nusers: [{name: u, user: {token: s3cret}}]\n"


def _with_record(**overrides: Any) -> dict[str, Any]:
    return props(record_namespace="db", record_name="orders-mysql-primary-record",
                 pods=["orders-mysql-0", "orders-mysql-1", "orders-mysql-2"], **overrides)


class _Reached(Exception):
    """Raised by the patched api_client: which kubeconfig and context it was given."""


def test_record_and_labels_reach_the_cluster_of_the_given_kubeconfig(
        monkeypatch: pytest.MonkeyPatch) -> None:
    reached: list[tuple[str | None, str | None]] = []

    def api_client(kubeconfig: str | None = None, *, context: str | None = None) -> Any:
        reached.append((kubeconfig, context))
        raise _Reached

    monkeypatch.setattr(distlock.kube, "api_client", api_client)
    spec = replication._spec(_ReplicationProvider().check(
        {}, _with_record(kubeconfig=KUBECONFIG_TEXT, context="ops")).inputs)
    store, labels = replication._record_store(spec), replication._pod_labels(spec)
    assert store is not None
    assert labels is not None
    with pytest.raises(_Reached):
        store.read()
    with pytest.raises(_Reached):
        labels.read()
    assert reached == [(KUBECONFIG_TEXT, "ops")] * 2
    # Without one, as kubectl finds the cluster (distlock's api_client(None)).
    plain = replication._spec(_ReplicationProvider().check({}, _with_record()).inputs)
    store = replication._record_store(plain)
    assert store is not None
    with pytest.raises(_Reached):
        store.read()
    assert reached[-1] == (None, None)


def test_the_kubernetes_lock_is_taken_in_the_cluster_of_the_given_kubeconfig(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Without etcd the per-cluster lock is a Lock object beside the record: in the same
    cluster, so through the same kubeconfig and context."""
    reached: list[tuple[str | None, str | None]] = []

    def api_client(kubeconfig: str | None = None, *, context: str | None = None) -> Any:
        reached.append((kubeconfig, context))
        raise _Reached

    monkeypatch.setattr(distlock._kube, "api_client", api_client)
    spec = replication._spec(_ReplicationProvider().check({}, _with_record(
        kubeconfig=KUBECONFIG_TEXT, context="ops", kubernetes_lock=True)).inputs)
    service = replication._lock_service(spec)
    assert service is not None
    assert service.backend == "kubernetes"
    with pytest.raises(_Reached):
        distlock.open_backend(service.backend, service.options)
    assert reached == [(KUBECONFIG_TEXT, "ops")]


def test_a_bad_kubeconfig_is_a_check_failure_that_never_shows_it() -> None:
    found = failures(kubeconfig=7, context="")
    assert set(found) == {"kubeconfig", "context"}
    assert "never empty" in found["kubeconfig"]
    secret = "\0" + KUBECONFIG_TEXT
    found = failures(kubeconfig=secret)
    assert "s3cret" not in repr(found)


def test_a_changed_kubeconfig_is_an_update_and_absent_stays_absent(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replication, "_observe", None)  # decided from the inputs alone
    result = _ReplicationProvider().diff("id", olds_from_state(kubeconfig="/etc/old.conf"),
                                         props(kubeconfig=KUBECONFIG_TEXT))
    assert result.changes is True
    assert "kubeconfig" not in _ReplicationProvider().check({}, props()).inputs
