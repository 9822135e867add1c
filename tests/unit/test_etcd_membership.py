"""EtcdMembership's provider (``components/etcd/_membership.py``) without a running etcd.

The decisions are pure functions of etcd's member list (who may be removed without losing
quorum, what counts as drift, which transitions are allowed), so they are checked table by
table; the update's order of writes is checked against a recording stand-in for etcd's
member API. The real etcd runs in tests/integration/test_etcd_cluster.py and
test_etcd_membership_faults.py, which drive the same provider through scale-ups, scale-downs
and faults.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from components.etcd import _membership as membership
from components.etcd._membership import (
    DESIRED_MEMBERS_KEY,
    EtcdMembershipProvider,
    MembershipError,
    _bootstrap_cluster,
    _check_scale_down,
    _check_transition,
    _Gateway,
    _Member,
    _member_drift,
    _quorum,
    _removal_refusal,
    _remove,
)

# --- EtcdMembershipProvider decisions that need no etcd ---------------------------------

def _members(count: int) -> list[dict[str, str]]:
    return [{"name": f"etcd-{i}", "peer_url": f"http://etcd-{i}.p:2380"} for i in range(count)]


def test_check_admits_any_step_up_or_down_in_one_update() -> None:
    provider = EtcdMembershipProvider()
    news = {"members": _members(5), "endpoints": ["http://c:2379"], "timeout_seconds": 30.0}
    for old, new in ((3, 5), (5, 7), (1, 3), (5, 3), (7, 1), (3, 4)):
        result = provider.check({"members": _members(old)}, {**news, "members": _members(new)})
        assert not result.failures, (old, new, result.failures)
    # Floats from the engine become whole seconds.
    assert provider.check({"members": _members(3)}, news).inputs["timeout_seconds"] == 30


def test_check_refuses_moving_a_member_and_bad_input() -> None:
    provider = EtcdMembershipProvider()
    moved = [{**m, "peer_url": m["peer_url"].replace(".p:", ".q:")} for m in _members(3)]
    result = provider.check({"members": _members(3)},
                            {"members": moved, "endpoints": ["http://c:2379"]})
    assert "cannot move" in result.failures[0].reason
    bad = provider.check({}, {"members": [{"name": "x"}], "endpoints": ["ftp://c"],
                              "timeout_seconds": -1})
    assert {f.property for f in bad.failures} == {"members", "endpoints", "timeout_seconds"}


class _FakeGateway(_Gateway):
    """etcd's member API as the provider sees it, recording every change in order."""

    def __init__(self, members: list[_Member], *, refuse_remove: str | None = None,
                 slot_race: bool = False) -> None:
        super().__init__(["http://unused:2379"], timeout=1, tls={})
        self.listed = members
        self.calls: list[tuple[str, str]] = []
        self.refuse_remove = refuse_remove
        self.slot_race = slot_race
        self.kv: dict[str, str] = {}

    def members(self) -> list[_Member]:
        return list(self.listed)

    def remove(self, member_id: str) -> None:
        if self.refuse_remove == member_id:
            raise MembershipError("etcd refused /v3/cluster/member/remove: etcdserver: "
                                  "unhealthy cluster")
        self.calls.append(("remove", member_id))
        self.listed = [m for m in self.listed if m.id != member_id]

    def add_learner(self, peer_url: str) -> None:
        if self.slot_race:
            raise MembershipError("etcd refused /v3/cluster/member/add: etcdserver: too many "
                                  "learner members in cluster")
        if any(m.is_learner for m in self.listed):
            raise AssertionError("etcd admits one learner at a time")
        self.calls.append(("add", peer_url))
        self.listed.append(_Member(f"new-{peer_url}", "", (peer_url,), True))

    def promote(self, member_id: str) -> None:
        raise MembershipError("etcdserver: can only promote a learner member which is in sync")

    def put(self, key: str, value: str) -> None:
        self.calls.append(("put", value))
        self.kv[key] = value

    def get(self, key: str) -> str | None:
        return self.kv.get(key)


def _member(i: int, *, started: bool = True, learner: bool = False) -> _Member:
    return _Member(str(100 + i), f"etcd-{i}" if started else "", (f"http://etcd-{i}.p:2380",),
                   learner)


def _url(i: int) -> str:
    return f"http://etcd-{i}.p:2380"


Update = Callable[[_FakeGateway, int, int], None]


@pytest.fixture
def update(monkeypatch: pytest.MonkeyPatch) -> Update:
    """The provider's update() from ``old`` to ``new`` members, against a fake etcd."""
    def run(gateway: _FakeGateway, old: int, new: int) -> None:
        monkeypatch.setattr(membership, "_Gateway", lambda *_a, **_k: gateway)
        olds = {"members": _members(old), "endpoints": ["http://c:2379"],
                "timeout_seconds": 1, "bootstrap_cluster": "etcd-0=http://etcd-0.p:2380"}
        EtcdMembershipProvider().update("id", olds, {**olds, "members": _members(new)})

    return run


@pytest.mark.parametrize(("old", "new"), [(3, 5), (5, 7), (1, 3)])
def test_scale_up_records_the_desired_members_then_adds_the_first_new_one(
        update: Update, old: int, new: int) -> None:
    gateway = _FakeGateway([_member(i) for i in range(old)])
    update(gateway, old, new)
    desired = ",".join(_url(i) for i in range(new))
    # The desired list first (the further pods add themselves from it), then one learner:
    # the lowest new ordinal, before its pod exists.
    assert gateway.calls == [("put", desired), ("add", _url(old))]
    assert gateway.kv[DESIRED_MEMBERS_KEY] == desired


def test_scale_up_leaves_a_taken_learner_slot_to_the_pods(update: Update) -> None:
    # A learner still catching up (a previous scale-up) holds the slot: nothing is added;
    # etcd-5 and etcd-6 add themselves once it is free. etcd-4's pod already runs, so the
    # update waits for its promotion and, when that does not come within the timeout,
    # fails naming it: an up never ends with a member it already had still a learner.
    busy = _FakeGateway([*(_member(i) for i in range(4)), _member(4, learner=True)])
    with pytest.raises(MembershipError, match=r"did not converge .* etcd-4 .* is a learner"):
        update(busy, 5, 7)
    assert busy.calls == [("put", ",".join(_url(i) for i in range(7)))]
    # A joining pod takes the slot between the provider's list and its add: not an error.
    raced = _FakeGateway([_member(i) for i in range(3)], slot_race=True)
    update(raced, 3, 5)
    assert [c[0] for c in raced.calls] == ["put"]
    # Re-running an interrupted update adds nobody twice.
    again = _FakeGateway([*(_member(i) for i in range(3)),
                          _member(3, started=False, learner=True)])
    update(again, 3, 5)
    assert [c[0] for c in again.calls] == ["put"]


def test_learners_nobody_wants_are_removed_so_they_cannot_hold_the_slot(update: Update) -> None:
    # etcd-5: a learner left by an interrupted run or by a pod that raced a scale-down.
    gateway = _FakeGateway([*(_member(i) for i in range(3)),
                            _member(5, started=False, learner=True)])
    update(gateway, 3, 5)
    assert gateway.calls == [("put", ",".join(_url(i) for i in range(5))), ("remove", "105"),
                             ("add", _url(3))]


def test_scale_down_records_the_smaller_list_before_removing_highest_first(update: Update) -> None:
    gateway = _FakeGateway([_member(i) for i in range(5)])
    update(gateway, 5, 3)
    assert gateway.calls == [("put", ",".join(_url(i) for i in range(3))),
                             ("remove", "104"), ("remove", "103")]


def test_a_refused_scale_down_keeps_the_members_left_desired(update: Update) -> None:
    # etcd refuses to remove etcd-3 after etcd-4 went: etcd-3 stays a voting member and
    # must stay desired, or its pod would not re-add itself after losing its data dir.
    gateway = _FakeGateway([_member(i) for i in range(5)], refuse_remove="103")
    with pytest.raises(MembershipError, match="refusing to remove etcd-3"):
        update(gateway, 5, 3)
    assert gateway.calls == [("put", ",".join(_url(i) for i in range(3))), ("remove", "104"),
                             ("put", ",".join(_url(i) for i in range(4)))]


def test_remove_refuses_when_the_rest_could_not_form_a_quorum() -> None:
    # Five voters of which two never started: removing a started one leaves 4 voters
    # (quorum 3) with only 2 started.
    gateway = _FakeGateway([_member(0), _member(1), _member(2), _member(3, started=False),
                            _member(4, started=False)])
    with pytest.raises(MembershipError, match="need 3 for quorum, but only 2"):
        _remove(gateway, {"name": "etcd-2", "peer_url": "http://etcd-2.p:2380"}, 0.0)
    assert gateway.calls == []
    healthy = _FakeGateway([_member(i) for i in range(5)])
    _remove(healthy, {"name": "etcd-4", "peer_url": "http://etcd-4.p:2380"}, 0.0)
    assert healthy.calls == [("remove", "104")]
    # Idempotent: a member already gone is not an error.
    _remove(healthy, {"name": "etcd-4", "peer_url": "http://etcd-4.p:2380"}, 0.0)
    assert healthy.calls == [("remove", "104")]


# --- the pure rules, table by table -----------------------------------------------------


@pytest.mark.parametrize(("voters", "quorum"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (7, 4)])
def test_quorum_is_a_strict_majority_of_voters(voters: int, quorum: int) -> None:
    assert _quorum(voters) == quorum


def test_bootstrap_cluster_is_etcds_initial_cluster_flag_in_ordinal_order() -> None:
    assert _bootstrap_cluster(_members(3)) == ("etcd-0=http://etcd-0.p:2380,"
                                               "etcd-1=http://etcd-1.p:2380,"
                                               "etcd-2=http://etcd-2.p:2380")


@pytest.mark.parametrize(("listed", "drift"), [
    ([_member(0), _member(1)], None),
    ([_member(0)], "etcd-1 (http://etcd-1.p:2380) is not a member of the cluster"),
    ([_member(0), _member(1, started=False)],
     "etcd-1 (http://etcd-1.p:2380) was added (101) but has not started"),
    ([_member(0), _member(1, learner=True)],
     "etcd-1 (http://etcd-1.p:2380) is a learner (101), not a voting member"),
])
def test_member_drift_names_what_keeps_a_member_from_voting(listed: list[_Member],
                                                             drift: str | None) -> None:
    assert _member_drift(listed, _members(2)[1]) == drift


@pytest.mark.parametrize(("listed", "target", "refusal"), [
    # 3 started voters: removing one leaves 2, which need 2.
    ([_member(i) for i in range(3)], 2, None),
    # Learners have no vote: they neither count towards quorum nor block a removal.
    ([_member(0), _member(1), _member(2, learner=True)], 1, None),
    ([_member(0)], 0, "refusing to remove etcd-0: it is the last voting member"),
    ([_member(0), _member(1, learner=True)], 0,
     "refusing to remove etcd-0: it is the last voting member"),
    # 3 voters, one never started: removing a started one leaves 2 (need 2), 1 started.
    ([_member(0), _member(1), _member(2, started=False)], 1,
     "refusing to remove etcd-1: 2 voting members would remain, which need 2 for quorum, "
     "but only 1 of them have started"),
    # Removing the one that never started is always safe for the rest.
    ([_member(0), _member(1), _member(2, started=False)], 2, None),
])
def test_a_removal_is_refused_when_the_rest_could_not_form_a_quorum(
        listed: list[_Member], target: int, refusal: str | None) -> None:
    member = next(m for m in listed if m.id == str(100 + target))
    assert _removal_refusal(listed, member, f"etcd-{target}") == refusal


@pytest.mark.parametrize(("listed", "old", "new", "refused"), [
    ([_member(i) for i in range(5)], 5, 3, None),
    ([_member(i) for i in range(5)], 5, 1, None),
    # Played highest first: removing etcd-2 after etcd-3 and etcd-4 leaves etcd-0 and an
    # unstarted etcd-1, one of the two needed.
    ([_member(0), _member(1, started=False), *(_member(i) for i in range(2, 5))], 5, 1,
     "refusing to remove etcd-2"),
    # Members already gone (an interrupted run) are skipped, not refused.
    ([_member(0), _member(1), _member(2)], 5, 3, None),
])
def test_a_scale_down_is_refused_before_anything_is_written(
        listed: list[_Member], old: int, new: int, refused: str | None) -> None:
    if refused is None:
        _check_scale_down(listed, _members(old), _members(new))
    else:
        with pytest.raises(MembershipError, match=f"{refused}.*; nothing was changed"):
            _check_scale_down(listed, _members(old), _members(new))


@pytest.mark.parametrize(("old", "new", "moved"), [
    (_members(3), _members(5), []),
    (_members(5), _members(1), []),
    ([], _members(3), []),
    (_members(3), [*_members(2), {"name": "etcd-2", "peer_url": "http://etcd-2.q:2380"}], [2]),
    (_members(2), [{"name": m["name"], "peer_url": m["peer_url"] + "0"} for m in _members(2)],
     [0, 1]),
])
def test_only_a_running_members_peer_url_is_fixed(old: list[dict[str, str]],
                                                  new: list[dict[str, str]],
                                                  moved: list[int]) -> None:
    failures = _check_transition(old, new)
    assert [f.reason.split(" would")[0] for f in failures] == [f"member {i}" for i in moved]
    assert all(f.property == "members" and "cannot move" in f.reason for f in failures)


def test_create_records_the_bootstrap_members_and_an_id_derived_from_them() -> None:
    provider = EtcdMembershipProvider()
    props = {"members": _members(3), "endpoints": ["http://c:2379"]}
    first = provider.create(props)
    assert (first.outs or {})["bootstrap_cluster"] == _bootstrap_cluster(_members(3))
    assert first.id == provider.create(dict(props)).id
    assert first.id != provider.create({**props, "members": _members(1)}).id
    assert first.id.startswith("etcd-")


@pytest.mark.parametrize(("olds", "news", "changes"), [
    ({"members": _members(3)}, {"members": _members(3)}, False),
    ({"members": _members(3)}, {"members": _members(5)}, True),
    ({"members": _members(3), "timeout_seconds": 60}, {"members": _members(3)}, True),
    # A refresh that saw live drift makes the next up repair it, inputs unchanged.
    ({"members": _members(3), "drift": ["etcd-2 is not a member"]}, {"members": _members(3)},
     True),
])
def test_diff_changes_on_inputs_or_recorded_drift(olds: dict[str, object],
                                                  news: dict[str, object],
                                                  changes: bool) -> None:
    result = EtcdMembershipProvider().diff("id", olds, news)
    assert result.changes is changes
    assert not result.replaces
