"""The Kubernetes lock backend's own guarantees, on the real API server, with the faults only
a proxy can inject.

The conformance suite (test_locks.py) holds this backend to the same contract as etcd.
These tests cover what is specific to it: a write applied but its response lost
(retry-safe enqueue and grant; the fault proxy drops the response), a watch whose
history was compacted (``etcdctl compact`` behind an API server with ``--watch-cache=false``,
so the real server answers 410 Gone and the client must re-list), an API server that
goes away (the proxy hangs or cuts every connection: the lost signal), a holder
overtaken while it thinks it holds the lock, a waiter that dies in the queue, names
that are not valid object names, and an identity RBAC refuses. And strict FIFO under
churn: eight contenders that each ask again the moment they release, checked against
the object's whole history as the server's watch reports it (tests/support/
kube_lock_history.py), plainly and through lost responses and cut watches.

Everything runs on the session's control plane (tests/conftest.py); each test gets a
namespace of its own, and clients whose traffic a test inspects or breaks go through
a fresh proxy (tests/support/fault_proxy.py).
"""

from __future__ import annotations

import functools
import hashlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from distlock import DistlockError, Grant, _kube
from distlock._errors import BackendRefused
from distlock._kube import _LockObjects
from distlock.kube import GROUP, PLURAL, VERSION, KubeLockBackend, api_client, object_name
from tests.support.controlplane import ControlPlane
from tests.support.fault_proxy import FaultProxy
from tests.support.kube_lock_history import StateHistory, fifo_violations, grants
from tests.support.lock_backends import bind_lock_user, install_lock_crd
from tests.support.procs import wait_until

pytestmark = pytest.mark.integration

WAIT = 30.0
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def plane(control_plane: ControlPlane) -> ControlPlane:
    install_lock_crd(control_plane, "tests/kube-backend")
    return control_plane


@pytest.fixture
def namespace(plane: ControlPlane, request: pytest.FixtureRequest) -> str:
    """A namespace of this test's own: tests share one API server."""
    digest = hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:10]  # noqa: S324 - a name
    name = f"kb-{digest}"
    plane.create_namespace(name)
    return name


@pytest.fixture
def proxy(plane: ControlPlane) -> Iterator[FaultProxy]:
    with plane.proxy() as running:
        yield running


@pytest.fixture
def kubeconfig(plane: ControlPlane, namespace: str, tmp_path: Path) -> str:
    """Straight to the API server, as admin."""
    return str(plane.write_kubeconfig(tmp_path / "kubeconfig", namespace=namespace))


@pytest.fixture
def proxied(plane: ControlPlane, proxy: FaultProxy, namespace: str, tmp_path: Path) -> str:
    """Through the test's proxy, as admin."""
    return str(plane.write_kubeconfig(tmp_path / "proxied", namespace=namespace,
                                      server=proxy.url))


@pytest.fixture
def sessions(kubeconfig: str, proxied: str,
             namespace: str) -> Iterator[Callable[..., KubeLockBackend]]:
    opened: list[KubeLockBackend] = []

    def open_session(ttl: float = 10.0, *, via_proxy: bool = False) -> KubeLockBackend:
        path = proxied if via_proxy else kubeconfig
        session = KubeLockBackend(api_client(path), namespace, ttl=ttl)
        opened.append(session)
        return session

    yield open_session
    for session in opened:
        session.close()


class Waiter(threading.Thread):
    def __init__(self, session: KubeLockBackend, name: str, timeout: float = WAIT) -> None:
        super().__init__(daemon=True)
        self.session, self.name_, self.timeout = session, name, timeout
        self.grant: Grant | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.grant = self.session.acquire(self.name_, timeout=self.timeout)
        except BaseException as error:  # noqa: BLE001 - re-raised by result()
            self.error = error

    def result(self) -> Grant | None:
        self.join(WAIT)
        assert not self.is_alive(), "acquire did not return"
        if self.error is not None:
            raise self.error
        return self.grant


def _objects(plane: ControlPlane) -> Any:
    return k8s.CustomObjectsApi(plane.admin_client())


def _status(plane: ControlPlane, namespace: str, name: str) -> dict[str, object]:
    obj = _objects(plane).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                       object_name(name))
    return dict(obj.get("status") or {})


def test_lost_enqueue_response_does_not_leave_a_second_slot(
        proxy: FaultProxy, sessions: Callable[..., KubeLockBackend]) -> None:
    owner, waiter_session = sessions(), sessions(via_proxy=True)
    held = owner.acquire("orders", timeout=WAIT)
    assert held is not None
    proxy.lose_next_responses(1, methods=("PATCH",))  # the enqueue lands; its answer does not
    waiter = Waiter(waiter_session, "orders")
    waiter.start()
    wait_until(lambda: proxy.pending_lost_responses == 0 and owner.inspect("orders").waiters,
               timeout=WAIT, what="the enqueue applied with its response lost")
    # The retry re-read the object and found its entry: queued exactly once.
    wait_until(lambda: proxy.open_watches() > 0, timeout=WAIT, what="the waiter watching")
    assert owner.inspect("orders").waiters == (waiter_session.identity,)
    owner.release(held)
    grant = waiter.result()
    assert grant is not None
    assert grant.token == held.token + 1
    assert owner.inspect("orders").waiters == ()


def test_lost_grant_response_is_recognised_not_granted_twice(
        plane: ControlPlane, namespace: str, proxy: FaultProxy,
        sessions: Callable[..., KubeLockBackend]) -> None:
    session = sessions(via_proxy=True)
    # The object is created by a POST; the first PUT is the granting status write.
    proxy.lose_next_responses(1, methods=("PUT",))
    grant = session.acquire("orders", timeout=WAIT)
    assert proxy.pending_lost_responses == 0, "the fault was never injected"
    assert grant is not None
    assert grant.token == 1
    status = _status(plane, namespace, "orders")
    assert status["holder"] == session.identity
    assert status["fencingToken"] == 1, "the retry granted the lock a second time"


def test_waiter_survives_410_gone_by_relisting(plane: ControlPlane, namespace: str,
                                               tmp_path: Path) -> None:
    """A second API server on the same etcd with ``--watch-cache=false`` serves watches
    straight from etcd, so after ``etcdctl compact`` a watch from an older
    resourceVersion gets the real server's 410 (an ERROR event in a 200 stream)."""
    with plane.extra_api_server("kube-apiserver-uncached", etcd_prefix="/registry",
                                extra_args=["--watch-cache=false"]) as uncached, \
            plane.proxy(uncached) as proxy:
        path = plane.write_kubeconfig(tmp_path / "uncached", namespace=namespace,
                                      server=proxy.url)
        owner = KubeLockBackend(api_client(str(path)), namespace, ttl=10)
        waiter_session = KubeLockBackend(api_client(str(path)), namespace, ttl=10)
        try:
            held = owner.acquire("orders", timeout=WAIT)
            assert held is not None
            waiter = Waiter(waiter_session, "orders")
            waiter.start()
            wait_until(lambda: len(owner.inspect("orders").waiters) == 1, timeout=WAIT,
                       what="the waiter queued")
            wait_until(lambda: proxy.open_watches() > 0, timeout=WAIT,
                       what="the waiter watching")
            # Another lock's write moves etcd past what the waiter has seen; then the
            # history is compacted and the stream dropped: the waiter's next watch, from
            # the resourceVersion it last saw, gets 410 and must re-list.
            bystander = owner.acquire("bystander", timeout=WAIT)
            assert bystander is not None
            plane.compact_etcd()
            proxy.close_watches()
            wait_until(lambda: proxy.expired_watches > 0, timeout=WAIT,
                       what="a watch answered 410 by the real server")
            owner.release(held)
            grant = waiter.result()
            assert grant is not None
            assert grant.token == held.token + 1
        finally:
            waiter_session.close()
            owner.close()


@pytest.mark.parametrize("hang", [True, False], ids=["hung", "refusing"])
def test_lost_fires_when_renewals_cannot_reach_the_api_server(
        proxy: FaultProxy, sessions: Callable[..., KubeLockBackend], hang: bool) -> None:
    session = sessions(ttl=2.0, via_proxy=True)
    observer = sessions()
    kept = session.acquire("kept", timeout=WAIT)
    released = session.acquire("released", timeout=WAIT)
    assert kept is not None
    assert released is not None
    session.release(released)
    with proxy.unreachable(hang=hang):  # every renewal now hangs, or is cut off
        assert kept.lost.wait(WAIT), "the lost signal never fired"
    assert kept.lost.reason is not None
    assert "renew deadline" in kept.lost.reason
    assert not released.lost.is_set(), "release must never fire the lost signal"
    # The server is back, but the grant stays lost: the session gave it up.
    assert observer.inspect("kept").holder == session.identity
    assert kept.lost.is_set()


def test_lost_fires_when_another_holder_took_over(
        plane: ControlPlane, namespace: str, sessions: Callable[..., KubeLockBackend]) -> None:
    session = sessions(ttl=2.0)
    grant = session.acquire("orders", timeout=WAIT)
    assert grant is not None
    objects = _objects(plane)

    def take_over() -> bool:
        obj = objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "orders")
        # What a successor's grant looks like after this holder was judged expired.
        obj["status"] = {**obj["status"], "holder": "someone-else", "fencingToken": 2,
                         "renewals": 0}
        try:
            objects.replace_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL,
                                                            "orders", obj)
        except k8s.ApiException as error:
            if error.status == 409:  # the holder renewed in between: read again
                return False
            raise
        return True

    wait_until(take_over, timeout=WAIT, what="the take-over write")
    assert grant.lost.wait(WAIT), "the lost signal never fired"
    assert "taken over by someone-else (token 2)" in str(grant.lost.reason)


def test_a_waiter_that_dies_in_the_queue_stops_blocking(
        kubeconfig: str, sessions: Callable[..., KubeLockBackend], tmp_path: Path) -> None:
    owner, patient_session = sessions(), sessions()
    held = owner.acquire("orders", timeout=WAIT)
    assert held is not None
    env = {**os.environ, "KUBECONFIG": kubeconfig, "PYTHONPATH": str(REPO_ROOT)}
    log = (tmp_path / "doomed.log").open("wb")
    doomed = subprocess.Popen(
        [sys.executable, "-m", "distlock", "run", "--backend", "kubernetes", "--ttl", "2",
         "orders", "--", "true"], env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    log.close()
    try:
        wait_until(lambda: len(owner.inspect("orders").waiters) == 1, timeout=WAIT,
                   what="the doomed waiter queued")
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.wait()
    finally:
        if doomed.poll() is None:
            os.killpg(doomed.pid, signal.SIGKILL)
            doomed.wait()
    patient = Waiter(patient_session, "orders")
    patient.start()
    wait_until(lambda: len(owner.inspect("orders").waiters) == 2, timeout=WAIT,
               what="the patient waiter queued behind the dead one")
    owner.release(held)
    grant = patient.result()
    assert grant is not None
    # The release hands the lock to the dead waiter if it renewed lately as far as the
    # owner saw (token + 1, never used; the patient takes over when it expires), else
    # leaves it free and the patient claims it once the dead entry expired.
    assert grant.token in (held.token + 1, held.token + 2)
    assert owner.inspect("orders").waiters == (), "the dead waiter's entry was left behind"


def test_names_that_are_not_object_names_get_their_own_objects(
        plane: ControlPlane, namespace: str, sessions: Callable[..., KubeLockBackend]) -> None:
    session = sessions()
    for name in ("Shop/Orders v2", "shop-orders-v2", "shop/orders/v2"):
        grant = session.acquire(name, timeout=WAIT)
        assert grant is not None
        assert grant.token == 1, f"{name!r} shared a Lock object with another name"
        obj = _objects(plane).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                           object_name(name))
        assert obj["spec"]["lockName"] == name
        session.release(grant)
    assert object_name("shop-orders-v2") == "shop-orders-v2"


def test_bad_names_are_refused_before_anything_is_written(
        proxy: FaultProxy, sessions: Callable[..., KubeLockBackend]) -> None:
    session = sessions(via_proxy=True)
    for bad in ("", "x" * 2000, "tab\there"):
        with pytest.raises(ValueError, match="lock name"):
            session.acquire(bad, timeout=0)
    assert proxy.requests == [], "a refused name reached the API server"


def test_a_missing_crd_is_a_clear_error(plane: ControlPlane, tmp_path: Path) -> None:
    """An API server on another etcd prefix is a cluster without the Lock CRD."""
    with plane.extra_api_server("kube-apiserver-bare", etcd_prefix="/bare-registry") as bare, \
            plane.proxy(bare) as proxy:
        path = str(plane.write_kubeconfig(tmp_path / "bare", server=proxy.url))
        with KubeLockBackend(api_client(path), "default", ttl=5) as session, \
                pytest.raises(DistlockError, match="is the Lock CRD installed"):
            session.acquire("orders", timeout=1)
        written = [a for a in proxy.answered if a[0] != "GET" and a[2] < 300]
        assert written == [], "something was written to a cluster without the CRD"


def test_an_identity_without_the_lock_user_role_gets_a_clear_403(
        plane: ControlPlane, namespace: str, tmp_path: Path) -> None:
    """RBAC for real: the role the project installs is what makes locks usable."""
    bound = bind_lock_user(plane, namespace, "allowed")
    unbound = plane.service_account_token(namespace, "not-allowed")
    for token, allowed in ((bound, True), (unbound, False)):
        path = str(plane.write_kubeconfig(tmp_path / f"sa-{allowed}", namespace=namespace,
                                          token=token))
        with KubeLockBackend(api_client(path), namespace, ttl=5) as session:
            if allowed:
                grant = session.acquire("orders", timeout=WAIT)
                assert grant is not None
                session.release(grant)
                continue
            with pytest.raises(DistlockError) as refused:
                session.acquire("orders", timeout=5)
    message = str(refused.value)
    assert "bind the lock-user ClusterRole" in message
    assert "403" in message
    assert f"system:serviceaccount:{namespace}:not-allowed" in message


def test_a_release_racing_a_renewal_is_not_a_loss(
        sessions: Callable[..., KubeLockBackend],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The renewer reads the lock, the release lands, then the renewer writes: that
    write conflicts and the re-read shows the lock free, which is the release itself."""
    session = sessions(ttl=1.0)
    grant = session.acquire("busy", timeout=WAIT)
    assert grant is not None
    real_patch = _LockObjects.patch_status
    raced = threading.Event()
    renewed_after_race: list[str] = []

    def patch_status(self: _LockObjects, obj: dict[str, Any], ops: list[dict[str, Any]], *,
                     timeout: float | None = None, label: str) -> dict[str, Any]:
        if threading.current_thread().name.startswith("distlock-renew"):
            if raced.is_set():
                renewed_after_race.append(obj["metadata"]["name"])
            elif obj["metadata"]["name"] == "busy":
                # Between the renewer's read and its write: release, to completion.
                releaser = threading.Thread(target=session.release, args=(grant,))
                releaser.start()
                releaser.join()
                raced.set()
        return real_patch(self, obj, ops, timeout=timeout, label=label)

    monkeypatch.setattr(_LockObjects, "patch_status", patch_status)
    other = session.acquire("other", timeout=WAIT)
    assert other is not None
    # The renewer handles one entry at a time: once it renewed "other" after the race,
    # it has finished with "busy" (conflict, re-read, verdict).
    wait_until(lambda: raced.is_set() and "other" in renewed_after_race, timeout=WAIT,
               what="the renewer to race the release and move on")
    assert session.inspect("busy").holder is None
    assert not grant.lost.is_set(), f"release fired the lost signal: {grant.lost.reason}"


def test_an_uncontended_holder_renews_with_one_write_and_no_reads(
        plane: ControlPlane, namespace: str, proxy: FaultProxy,
        sessions: Callable[..., KubeLockBackend]) -> None:
    session = sessions(ttl=1.0, via_proxy=True)
    grant = session.acquire("quiet", timeout=WAIT)
    assert grant is not None
    start = len(proxy.requests)
    status_path = f"/namespaces/{namespace}/{PLURAL}/quiet/status"

    def renewals() -> list[tuple[str, str]]:
        return [r for r in proxy.requests[start:] if r[1].endswith(status_path)]

    wait_until(lambda: len(renewals()) >= 3, timeout=WAIT, what="three renewals")
    during = proxy.requests[start:]
    assert {method for method, _ in renewals()} == {"PATCH"}
    assert [r for r in during if r[0] == "GET"] == [], "renewals re-read the object"
    assert int(str(_status(plane, namespace, "quiet")["renewals"])) >= 3
    assert not grant.lost.is_set()


def test_closing_a_session_ends_its_waiting_acquires_without_a_slot(
        sessions: Callable[..., KubeLockBackend]) -> None:
    owner, closing = sessions(), sessions()
    held = owner.acquire("orders", timeout=WAIT)
    assert held is not None
    waiter = Waiter(closing, "orders", timeout=10 * WAIT)  # would outwait result()'s join
    waiter.start()
    wait_until(lambda: len(owner.inspect("orders").waiters) == 1, timeout=WAIT,
               what="the waiter queued")
    closing.close()
    assert waiter.result() is None
    assert owner.inspect("orders").waiters == (), "a closed session left its queue slot"
    with pytest.raises(DistlockError, match="closed"):
        closing.acquire("orders", timeout=0)


def test_a_session_taking_turns_keeps_one_watch(sessions: Callable[..., KubeLockBackend]) -> None:
    """Two sessions that each ask again the moment they release: each waits for the
    other every round, through the watch its last holding had open, not a new one
    per round (a new TLS connection and a new watch on the server each time)."""
    turns = [sessions(), sessions()]
    rounds = 20
    errors: list[BaseException] = []

    def take_turns(session: KubeLockBackend) -> None:
        try:
            for _ in range(rounds):
                grant = session.acquire("turns", timeout=WAIT)
                assert grant is not None
                session.release(grant)
        except BaseException as error:  # noqa: BLE001 - re-raised below
            errors.append(error)

    threads = [threading.Thread(target=take_turns, args=(s,), daemon=True) for s in turns]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 2)
    assert not errors, errors
    assert not any(thread.is_alive() for thread in threads)
    watches = [session.request_counts().get("WATCH", 0) for session in turns]
    queued = [session.request_counts().get("PATCH enqueue", 0) for session in turns]
    # Each waited several times (a new watch each time would be as many watches), yet
    # opened at most one more after a reconnect.
    assert min(queued) >= 3, f"the sessions hardly waited for each other: {queued}"
    assert max(watches) <= 2, f"watches per session over {queued} waits: {watches}"


# -- strict FIFO under churn: every state the object goes through, checked -------------

CONTENDERS = 8
ROUNDS = 30  # per contender: 240 grants
CHURN_TTL = 5  # a few leases long, yet one slow request on a loaded machine is no death


def assert_strict_fifo(first: dict[str, Any], states: list[dict[str, Any]],
                       records: list[tuple[int, str]]) -> None:
    """Strict FIFO over the object's whole history, and what the contenders were
    granted is exactly what the object recorded."""
    violations = fifo_violations(first, states)
    assert not violations, f"{len(violations)} FIFO violations, first: {violations[:5]}"
    assert sorted(records) == grants(first, states), "grants differ from the object's"
    assert len(records) == CONTENDERS * ROUNDS


def _churn(plane: ControlPlane, namespace: str, kubeconfig: str,
           during: Callable[[StateHistory], None] = lambda _: None) -> None:
    """CONTENDERS sessions that each acquire, release and at once ask again, ROUNDS times."""
    name = "churn"
    starter = KubeLockBackend(api_client(kubeconfig), namespace, ttl=CHURN_TTL)
    with starter:
        grant = starter.acquire(name, timeout=WAIT)  # creates the object
        assert grant is not None
        starter.release(grant)
    first = _objects(plane).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                         name)
    history = StateHistory(plane.admin_client(), namespace, name,
                           first["metadata"]["resourceVersion"])
    history.start()
    records: list[tuple[int, str]] = []
    failures: list[BaseException] = []
    start = threading.Barrier(CONTENDERS)

    def contend() -> None:
        try:
            with KubeLockBackend(api_client(kubeconfig), namespace, ttl=CHURN_TTL) as session:
                start.wait(WAIT)
                for _ in range(ROUNDS):
                    held = session.acquire(name, timeout=WAIT)
                    assert held is not None, "acquire timed out"
                    records.append((held.token, session.identity))
                    session.release(held)  # and at once, the next round asks again
        except BaseException as error:  # noqa: BLE001 - re-raised below
            failures.append(error)

    threads = [threading.Thread(target=contend, daemon=True) for _ in range(CONTENDERS)]
    for thread in threads:
        thread.start()
    try:
        during(history)
    finally:
        for thread in threads:
            thread.join(10 * WAIT)
    assert not any(thread.is_alive() for thread in threads), "a contender never finished"
    assert not failures, failures
    last = int(first["status"]["fencingToken"]) + CONTENDERS * ROUNDS
    wait_until(lambda: history.token() >= last, timeout=WAIT, what="the history to catch up")
    assert_strict_fifo(dict(first["status"]), history.stop(), records)


def test_a_releaser_that_asks_again_queues_behind_the_waiters(
        plane: ControlPlane, namespace: str, kubeconfig: str) -> None:
    """Eight contenders, each asking again the moment it releases, for 240 grants: every
    grant goes to the first waiter in the queue, never back to the releaser while anyone
    waits, with the token one up each time."""
    _churn(plane, namespace, kubeconfig)


def test_fifo_and_fencing_hold_through_lost_responses_and_cut_watches(
        plane: ControlPlane, namespace: str, proxy: FaultProxy, proxied: str) -> None:
    """The same churn through the fault proxy: every so often a write's response is
    lost (it was applied; the writer retries and must find what it did) and every open
    watch is cut (waiters resume or re-list). Still strictly FIFO, tokens one up."""
    injected = {"lost": 0, "cut": 0}

    def faults(history: StateHistory) -> None:
        for step in range(1, 10):
            target = history.token() + 20
            wait_until(functools.partial(lambda t: history.token() >= t, target),
                       timeout=WAIT, what=f"20 more grants (fault round {step})")
            if step % 2:
                proxy.lose_next_responses(1, methods=("PUT", "PATCH"))
                injected["lost"] += 1
            else:
                injected["cut"] += proxy.close_watches()

    _churn(plane, namespace, proxied, faults)
    assert injected["lost"] >= 4
    assert injected["cut"] >= 1


# -- JSON patches on the real API server ----------------------------------------------


def test_a_failed_patch_test_is_a_conflict_and_a_schema_violation_an_error(
        sessions: Callable[..., KubeLockBackend]) -> None:
    """A ``test`` that finds another value fails the whole patch (nothing is written)
    and is a conflict to decide again on, like a 409; a value the schema refuses is a
    422 too, but an error: treating it as a conflict would retry it for ever."""
    session = sessions()
    grant = session.acquire("patched", timeout=WAIT)
    assert grant is not None
    objects = session._objects
    obj = objects.read("patched").obj
    assert obj is not None
    with pytest.raises(_kube._Conflict):
        objects.patch_status(obj, [
            {"op": "test", "path": "/status/fencingToken", "value": grant.token + 5},
            {"op": "replace", "path": "/status/holder", "value": "thief"}], label="t")
    with pytest.raises(_kube._Conflict):  # an index that is not there (queue moved)
        objects.patch_status(obj, [
            {"op": "test", "path": "/status/waiters/3/identity", "value": "gone"},
            {"op": "remove", "path": "/status/waiters/3"}], label="t")
    assert session.inspect("patched").holder == session.identity
    with pytest.raises(BackendRefused, match="422"):
        objects.patch_status(obj, [
            {"op": "replace", "path": "/status/fencingToken", "value": -1}], label="t")
    session.release(grant)


def test_a_holder_renewal_lands_beside_appends_and_never_on_another_grant(
        plane: ControlPlane, namespace: str, sessions: Callable[..., KubeLockBackend]) -> None:
    """The renewal patch tests holder and token only: computed before a waiter queued,
    it still lands (a PUT on the resourceVersion would have been a 409); computed
    before another holder was granted (or the same holder re-granted with a new token),
    it is a conflict and writes nothing."""
    owner, waiter_session = sessions(), sessions()
    grant = owner.acquire("renewed", timeout=WAIT)
    assert grant is not None
    objects = owner._objects
    before = objects.read("renewed").obj
    assert before is not None
    waiter = Waiter(waiter_session, "renewed")
    waiter.start()
    wait_until(lambda: owner.inspect("renewed").waiters == (waiter_session.identity,),
               timeout=WAIT, what="the waiter queued")
    renewed = objects.patch_status(before, _kube._holder_renew_patch(_kube._status(before)),
                                   label="t")
    assert renewed["status"]["renewals"] == int(before["status"].get("renewals", 0)) + 1
    assert [w["identity"] for w in renewed["status"]["waiters"]] == [waiter_session.identity]
    api = _objects(plane)
    for taken_over in ({"holder": "someone-else"}, {"fencingToken": grant.token + 1}):
        # The take-over's own answer: from here on no renewal of ours may land.
        current = api.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, "renewed",
            [{"op": "replace", "path": f"/status/{key}", "value": value}
             for key, value in taken_over.items()],
            _content_type="application/json-patch+json")
        with pytest.raises(_kube._Conflict):
            objects.patch_status(renewed, _kube._holder_renew_patch(_kube._status(renewed)),
                                 label="t")
        after = _status(plane, namespace, "renewed")
        assert after["renewals"] == current["status"]["renewals"], "a stale renewal landed"
        api.patch_namespaced_custom_object_status(  # put the grant back for the next case
            GROUP, VERSION, namespace, PLURAL, "renewed",
            [{"op": "replace", "path": "/status/holder", "value": owner.identity},
             {"op": "replace", "path": "/status/fencingToken", "value": grant.token}],
            _content_type="application/json-patch+json")
    owner.release(grant)
    assert waiter.result() is not None


def test_an_object_with_a_stored_waiter_count_still_works_and_loses_it(
        plane: ControlPlane, namespace: str, sessions: Callable[..., KubeLockBackend]) -> None:
    """Objects written before the queue became append-only carry ``waiterCount``; the
    schema still accepts it, and the next write removes it rather than leave it stale."""
    owner, waiter_session = sessions(), sessions()
    held = owner.acquire("legacy", timeout=WAIT)
    assert held is not None
    api = _objects(plane)
    api.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "legacy",
        [{"op": "add", "path": "/status/waiterCount", "value": 3}],
        _content_type="application/json-patch+json")
    assert _status(plane, namespace, "legacy")["waiterCount"] == 3
    waiter = Waiter(waiter_session, "legacy")
    waiter.start()
    wait_until(lambda: owner.inspect("legacy").waiters == (waiter_session.identity,),
               timeout=WAIT, what="the waiter queued")
    assert "waiterCount" not in _status(plane, namespace, "legacy")
    owner.release(held)
    grant = waiter.result()
    assert grant is not None
    assert grant.token == held.token + 1
