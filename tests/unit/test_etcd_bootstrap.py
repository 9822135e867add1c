"""EtcdBootstrap: without membership, the bootstrap member list is fixed at creation.

The provider is called directly (it never touches the wire), and the component is
rendered under the shared mocks with what the provider recorded, as a later ``up`` sees
it: a ``replicas`` change must leave the existing pods' template as it was, and a new
ordinal must never be an initial member (it would bootstrap a second cluster when
member 0 does not answer).
"""

from __future__ import annotations

from typing import Any

from components.etcd._bootstrap import EtcdBootstrapProvider
from tests.support.etcd_stack import DYNAMIC, render

OFF = {"enabled": False}


def _members(replicas: int) -> list[dict[str, str]]:
    inputs: list[dict[str, str]] = render(replicas=replicas, membership=OFF).one(DYNAMIC)["members"]
    return inputs


def _scaled(sizes: tuple[int, ...]) -> dict[str, Any]:
    """The outputs in state after one ``up`` per size, the first one creating."""
    provider = EtcdBootstrapProvider()
    first = provider.check({}, {"members": _members(sizes[0])})
    assert not first.failures
    created = provider.create(first.inputs)
    outputs: dict[str, Any] = dict(created.outs or {})
    inputs = first.inputs
    for size in sizes[1:]:
        checked = provider.check(inputs, {"members": _members(size)})
        assert not checked.failures
        diff = provider.diff(created.id, outputs, checked.inputs)
        assert diff.changes
        assert not diff.replaces
        outputs = dict(provider.update(created.id, outputs, checked.inputs).outs or {})
        inputs = checked.inputs
    return outputs


def test_without_membership_a_recorder_feeds_the_bootstrap_list_to_the_pods() -> None:
    rendered = render(replicas=3, membership=OFF)
    (recorder,) = rendered.of_type(DYNAMIC)
    assert [m["name"] for m in recorder["members"]] == ["etcd-0", "etcd-1", "etcd-2"]
    assert "endpoints" not in recorder  # nothing on the wire: it only keeps state
    statefulset = rendered.result.one("StatefulSet")
    (resource,) = [r for r in rendered.result.resources if r.type == DYNAMIC]
    assert resource.urn in statefulset.dependencies


def test_a_replicas_change_without_membership_leaves_the_pod_template_unchanged() -> None:
    before = render(replicas=1, membership=OFF).statefulset["spec"]
    for sizes in ((1, 3), (1, 3, 1), (1, 5, 7, 3)):
        recorded = _scaled(sizes)
        after = render(replicas=sizes[-1], membership=OFF, recorded=recorded)
        spec = after.statefulset["spec"]
        assert spec["replicas"] == sizes[-1]
        assert spec["template"] == before["template"], sizes
        env = after.env()
        # Only etcd-0 may ever bootstrap: a new pod is never an initial member.
        assert env["MEMBER_BOOTSTRAP_CLUSTER"] == "etcd-0=http://etcd-0.etcd-peer.db.svc:2380"
        assert env["MEMBER_CLUSTER_ENDPOINTS"] == "http://etcd-0.etcd-peer.db.svc:2379"


def test_the_recorder_without_state_would_move_the_list_so_the_test_above_can_fail() -> None:
    """What the mocks render for a first deployment of three: all three are initial
    (they start empty together and must bootstrap together)."""
    env = render(replicas=3, membership=OFF).env()
    assert env["MEMBER_BOOTSTRAP_CLUSTER"].count("=http://") == 3


def test_an_ordinal_keeps_its_peer_url() -> None:
    provider = EtcdBootstrapProvider()
    old = provider.check({}, {"members": _members(3)}).inputs
    moved = [dict(m) for m in _members(3)]
    moved[1]["peer_url"] = "http://elsewhere.etcd-peer.db.svc:2380"
    result = provider.check(old, {"members": moved})
    assert result.failures
    assert result.failures[0].property == "members"
    assert "member 1 would change its peer URL" in result.failures[0].reason


def test_bad_members_are_refused_with_the_property_named() -> None:
    result = EtcdBootstrapProvider().check({}, {"members": [{"name": "etcd-0"}]})
    assert [f.property for f in result.failures] == ["members"]
    assert "peer_url" in result.failures[0].reason
