"""The Kubernetes lock backend's pure parts: timing ratios, name mapping, local expiry.

The expiry tests give the observer a hand-moved clock in place of time.monotonic (the
only clock the backend consults for expiry), so moving it is exactly "time passing"
from the backend's point of view; no wall-clock value is consulted anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distlock import BackendOptions, DistlockError, _kube, kube

VALID_NAME = _kube._OBJECT_NAME


@pytest.mark.parametrize("ttl", [1, 2.0, 10, 15, 60, 3600])
def test_lease_exceeds_renew_deadline_exceeds_retry_period(ttl: float) -> None:
    timing = kube.Timing.from_ttl(ttl)
    assert timing.lease_seconds >= ttl
    assert timing.lease_seconds > timing.renew_deadline > timing.retry_period > 0
    # A waiter refreshes its queue entry several times per lease.
    assert timing.waiter_renew_period * 2 < timing.lease_seconds
    assert timing.request_timeout < timing.renew_deadline


def test_client_go_defaults_for_a_fifteen_second_ttl() -> None:
    timing = kube.Timing.from_ttl(15)
    assert (timing.lease_seconds, timing.renew_deadline, timing.retry_period) == (15, 10, 2)


@pytest.mark.parametrize("ttl", [0, 0.5, -1, True, "10", 100000])
def test_bad_ttl_is_refused(ttl: object) -> None:
    with pytest.raises(ValueError, match="ttl must be between 1 and 86400"):
        kube.Timing.from_ttl(ttl)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["orders", "shop.orders", "a-1", "x" * 200])
def test_object_names_are_kept_when_valid(name: str) -> None:
    assert kube.object_name(name) == name


@pytest.mark.parametrize("name", ["Shop/Orders", "shop/orders", "a b", "x" * 201, "-lead",
                                  "trail-", "a..b", "ünïcode", "/"])
def test_other_names_map_to_distinct_valid_object_names(name: str) -> None:
    mapped = kube.object_name(name)
    assert mapped != name
    assert VALID_NAME.match(mapped)
    assert len(mapped) <= 253
    assert kube.object_name(name) == mapped, "the mapping must be stable"


def test_similar_names_do_not_collide() -> None:
    names = ["shop/orders", "shop-orders", "Shop/Orders", "shop//orders", "shop/orders/"]
    assert len({kube.object_name(n) for n in names}) == len(names)


@pytest.mark.parametrize("name", ["", "tab\there", "x" * 1025, "nul\x00"])
def test_unusable_names_are_value_errors(name: str) -> None:
    with pytest.raises(ValueError, match="lock name"):
        kube.object_name(name)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _status(holder: str, token: int, renewals: int) -> dict[str, object]:
    return {"holder": holder, "fencingToken": token, "renewals": renewals, "waiters": [
        {"identity": "w", "leaseDurationSeconds": 5, "renewals": renewals}]}


def test_holder_expires_only_after_a_lease_without_a_renewal(clock: Clock) -> None:
    observer = _kube._Observer(clock)
    observer.observe("n", _status("h", 1, 0))
    clock.now += 4.9
    assert observer.remaining("n", "holder", "h", 5) > 0
    observer.observe("n", _status("h", 1, 1))  # a renewal: the clock starts again
    clock.now += 4.9
    assert observer.remaining("n", "holder", "h", 5) > 0
    observer.observe("n", _status("h", 1, 1))  # same value again: no renewal
    clock.now += 0.2
    assert observer.remaining("n", "holder", "h", 5) <= 0


def test_a_new_grant_is_a_new_observation_even_with_equal_renewals(clock: Clock) -> None:
    observer = _kube._Observer(clock)
    observer.observe("n", _status("h", 1, 0))
    clock.now += 10
    observer.observe("n", _status("h", 2, 0))
    assert observer.remaining("n", "holder", "h", 5) == pytest.approx(5)


def test_a_fresh_observer_waits_a_whole_lease(clock: Clock) -> None:
    """Whatever wall-clock time the object says, a newcomer starts its own clock now."""
    observer = _kube._Observer(clock)
    status = _status("h", 7, 123)
    status["renewTime"] = "2000-01-01T00:00:00Z"  # ancient, and ignored
    observer.observe("n", status)
    assert observer.remaining("n", "holder", "h", 5) == pytest.approx(5)
    assert observer.remaining("n", "waiter", "w", 5) == pytest.approx(5)
    assert observer.remaining("n", "holder", "never-seen", 5) == 5


def test_waiters_are_judged_by_their_own_renewals(clock: Clock) -> None:
    observer = _kube._Observer(clock)
    observer.observe("n", _status("h", 1, 0))
    clock.now += 3
    observer.observe("n", {**_status("h", 1, 0), "waiters": [
        {"identity": "w", "leaseDurationSeconds": 5, "renewals": 1}]})
    clock.now += 3
    assert observer.remaining("n", "holder", "h", 5) <= 0
    assert observer.remaining("n", "waiter", "w", 5) > 0


def test_namespace_and_client_from_kubeconfig_text_or_path(tmp_path: Path) -> None:
    document = {
        "apiVersion": "v1", "kind": "Config", "current-context": "a",
        "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "a", "context": {"cluster": "c", "user": "u", "namespace": "shop"}},
                     {"name": "b", "context": {"cluster": "c", "user": "u"}}],
    }
    text = json.dumps(document, indent=1)
    path = tmp_path / "config"
    path.write_text(text)
    assert kube.default_namespace(text) == "shop"
    assert kube.default_namespace(str(path)) == "shop"
    assert kube.default_namespace(str(path), context="b") == "default"
    for source in (text, str(path)):
        client = kube.api_client(source)
        assert client.configuration.host == "http://127.0.0.1:1"
        assert client.configuration.retries == 0
    with pytest.raises(ValueError, match="not a kubeconfig document"):
        kube.api_client("just: yaml\nno: clusters\n")


def test_no_credentials_anywhere_is_a_clear_error(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(DistlockError, match="no Kubernetes credentials"):
        kube.from_options(BackendOptions())


def test_a_broken_kubeconfig_text_is_reported_without_its_contents() -> None:
    secret = "token-that-must-not-be-printed"
    text = f"clusters: []\nusers:\n- user: {{token: {secret}\n  bad: [\n"
    with pytest.raises(ValueError, match="not valid YAML at line") as error:
        kube.api_client(text)
    assert secret not in str(error.value)
    assert error.value.__cause__ is None
    assert error.value.__context__ is not None  # suppressed from display by `from None`
    assert error.value.__suppress_context__


def _queued(*identities: str) -> dict[str, object]:
    return {"holder": "h", "fencingToken": 7, "renewals": 3, "leaseDurationSeconds": 5,
            "waiters": [{"identity": i, "leaseDurationSeconds": 4 + n, "renewals": n}
                        for n, i in enumerate(identities)]}


def test_a_release_hands_the_lock_to_the_first_live_waiter() -> None:
    status = _kube._released(_queued("dead", "next", "later"),
                             lambda waiter: waiter["identity"] == "dead", lambda _waiter: True)
    assert status["holder"] == "next"
    assert status["fencingToken"] == 8, "the granting write increments the token"
    assert status["leaseDurationSeconds"] == 5, "the successor's own lease"
    assert status["renewals"] == 0
    assert [w["identity"] for w in status["waiters"]] == ["later"]
    assert "waiterCount" not in status, "a stored count goes stale after an append"


@pytest.mark.parametrize(("expired", "fresh"), [({"a", "b"}, set()), (set(), {"b"})],
                         ids=["all expired", "first one silent lately"])
def test_a_release_with_no_waiter_to_hand_to_leaves_the_lock_free(expired: set[str],
                                                                   fresh: set[str]) -> None:
    """Nobody alive, or the first live waiter has been silent for a while: it may be
    dead, so it is not handed the lock, nor skipped (it claims it itself if alive)."""
    status = _kube._released(_queued("a", "b"), lambda w: w["identity"] in expired,
                             lambda w: w["identity"] in fresh)
    assert "holder" not in status
    assert "renewals" not in status
    assert status["fencingToken"] == 7
    assert [w["identity"] for w in status["waiters"]] == ["a", "b"]


def test_a_session_that_queues_again_is_seen_alive_by_its_new_entry(clock: Clock) -> None:
    """A session queued, granted and queued again faster than it renews used to show the
    same ``renewals`` (0) each time, and observers judged its live entry dead a lease
    after they first saw that value; each entry now carries a new counter value."""
    observer = _kube._Observer(clock)
    free = {"fencingToken": 1, "waiters": []}
    for counter in range(1, 6):
        status = _kube._enqueued(_kube._status(free), "w", 5, set(), counter)
        observer.observe("n", status)
        clock.now += 2  # granted, released, asking again: no renewal in between
    assert observer.remaining("n", "waiter", "w", 5) > 0


def _ops(patch: list[dict[str, object]], op: str) -> list[dict[str, object]]:
    return [each for each in patch if each["op"] == op]


def test_an_enqueue_is_an_append_that_tests_nothing() -> None:
    """It must not conflict with a handoff or another enqueue: the back of the queue is
    the back whatever else changed meanwhile."""
    patch = _kube._enqueue_patch(_queued("a"), "me", 6, 41)
    assert patch == [{"op": "add", "path": "/status/waiters/-", "value": {
        "identity": "me", "leaseDurationSeconds": 6, "renewals": 41,
        "enqueueTime": patch[0]["value"]["enqueueTime"]}}]


def test_a_handoff_patch_tests_holder_token_and_each_entry_it_removes() -> None:
    patch = _kube._release_patch(_queued("dead", "next", "later"),
                                 lambda waiter: waiter["identity"] == "dead",
                                 lambda _waiter: True)
    tests = {str(each["path"]): each["value"] for each in _ops(patch, "test")}
    assert tests == {"/status/holder": "h", "/status/fencingToken": 7,
                     "/status/waiters/0/identity": "dead",
                     "/status/waiters/1/identity": "next"}
    granted = {str(each["path"]): each["value"] for each in _ops(patch, "add")}
    assert granted["/status/holder"] == "next"
    assert granted["/status/fencingToken"] == 8, "holder and token in the same write"
    # Highest index first: removing 0 first would move "next" to 0 and remove "later".
    assert [each["path"] for each in _ops(patch, "remove")] == [
        "/status/waiters/1", "/status/waiters/0"]


def test_a_late_duplicate_entry_is_neither_successor_nor_left_behind() -> None:
    """A retried append whose first try landed after the re-read queues a session twice:
    the handoff removes every entry of the successor, and the releaser's own."""
    status = _queued("next", "h", "later", "next")
    handoff = _kube._handoff(status, lambda _w: False, lambda _w: True)
    assert handoff.successor is not None
    assert handoff.successor["identity"] == "next"
    assert handoff.removed == frozenset({0, 1, 3})
    released = _kube._released(_queued("h", "later"), lambda _w: False, lambda _w: True)
    assert released["holder"] == "later", "the releaser is never its own successor"
    assert released["waiters"] == []


def test_a_patch_removes_a_count_stored_by_an_older_client() -> None:
    old = dict(_queued("a"), waiterCount=1)
    for patch in (_kube._enqueue_patch(old, "me", 6, 1),
                  _kube._waiter_renew_patch(old, "a", 2),
                  _kube._release_patch(old, lambda _w: False, lambda _w: True)):
        assert patch[0] == {"op": "remove", "path": "/status/waiterCount"}
    assert "waiterCount" not in _kube._enqueued(old, "me", 6, set(), 1)


def test_a_holder_renewal_tests_holder_and_token_and_nothing_of_the_queue() -> None:
    """A renewal must not conflict with the appends and waiter renewals of a crowd (as a
    PUT on the resourceVersion it did), yet must never land on someone else's grant."""
    patch = _kube._holder_renew_patch(_queued("a", "b"))
    tests = {str(each["path"]): each["value"] for each in _ops(patch, "test")}
    assert tests == {"/status/holder": "h", "/status/fencingToken": 7}
    written = {str(each["path"]): each["value"] for each in _ops(patch, "add")}
    assert written.keys() == {"/status/renewals", "/status/renewTime"}
    assert written["/status/renewals"] == 4, "a change observers see as the holder alive"
    assert not [each for each in patch if "waiters" in str(each["path"])]
    old = dict(_queued("a"), waiterCount=1)
    assert _kube._holder_renew_patch(old)[0] == {"op": "remove", "path": "/status/waiterCount"}
