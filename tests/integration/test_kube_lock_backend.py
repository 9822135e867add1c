"""The Kubernetes lock backend's own guarantees, with faults only the fake API server can inject.

The conformance suite (test_locks.py) holds this backend to the same contract as etcd.
These tests cover what is specific to it and needs the fake's fault hooks: a write
applied but its response lost (retry-safe enqueue and grant), a watch whose history
was compacted (410 Gone, re-list), an API server that goes away (the lost signal),
a holder overtaken while it thinks it holds the lock, a waiter that dies in the
queue, and names that are not valid object names.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from components.locks.crd import apply_crd, lock_crd_manifest
from distlock import DistlockError, Grant
from distlock._kube import _LockObjects
from distlock.kube import GROUP, PLURAL, KubeLockBackend, api_client, object_name
from tests.support.fake_kube import FakeKubeServer
from tests.support.procs import wait_until

pytestmark = pytest.mark.integration

WAIT = 30.0
NAMESPACE = "locks"
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fake() -> Iterator[FakeKubeServer]:
    with FakeKubeServer() as kube:
        kube.create_namespace(NAMESPACE)
        yield kube


@pytest.fixture
def kubeconfig(fake: FakeKubeServer, tmp_path: Path) -> str:
    path = str(fake.write_kubeconfig(tmp_path / "kubeconfig", namespace=NAMESPACE))
    apply_crd(api_client(path), lock_crd_manifest(), owner="tests/kube-backend")
    return path


@pytest.fixture
def sessions(kubeconfig: str) -> Iterator[Callable[..., KubeLockBackend]]:
    opened: list[KubeLockBackend] = []

    def open_session(ttl: float = 10.0) -> KubeLockBackend:
        session = KubeLockBackend(api_client(kubeconfig), NAMESPACE, ttl=ttl)
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


def _status(fake: FakeKubeServer, name: str) -> dict[str, object]:
    obj = fake.get_object(GROUP, PLURAL, NAMESPACE, object_name(name))
    assert obj is not None
    return dict(obj.get("status") or {})


def test_lost_enqueue_response_does_not_leave_a_second_slot(
        fake: FakeKubeServer, sessions: Callable[..., KubeLockBackend]) -> None:
    owner, waiter_session = sessions(), sessions()
    held = owner.acquire("orders", timeout=WAIT)
    assert held is not None
    fake.lose_next_responses(1, methods=("PUT",))  # the enqueue lands; its answer does not
    waiter = Waiter(waiter_session, "orders")
    waiter.start()
    wait_until(lambda: fake.pending_lost_responses == 0 and owner.inspect("orders").waiters,
               timeout=WAIT, what="the enqueue applied with its response lost")
    # The retry re-read the object and found its entry: queued exactly once.
    wait_until(lambda: fake.open_watches() > 0, timeout=WAIT, what="the waiter watching")
    assert owner.inspect("orders").waiters == (waiter_session.identity,)
    owner.release(held)
    grant = waiter.result()
    assert grant is not None
    assert grant.token == held.token + 1
    assert owner.inspect("orders").waiters == ()


def test_lost_grant_response_is_recognised_not_granted_twice(
        fake: FakeKubeServer, sessions: Callable[..., KubeLockBackend]) -> None:
    session = sessions()
    # The object is created by a POST; the first PUT is the granting status write.
    fake.lose_next_responses(1, methods=("PUT",))
    grant = session.acquire("orders", timeout=WAIT)
    assert fake.pending_lost_responses == 0, "the fault was never injected"
    assert grant is not None
    assert grant.token == 1
    status = _status(fake, "orders")
    assert status["holder"] == session.identity
    assert status["fencingToken"] == 1, "the retry granted the lock a second time"


def test_waiter_survives_410_gone_by_relisting(
        fake: FakeKubeServer, sessions: Callable[..., KubeLockBackend]) -> None:
    owner, waiter_session = sessions(), sessions()
    held = owner.acquire("orders", timeout=WAIT)
    assert held is not None
    waiter = Waiter(waiter_session, "orders")
    waiter.start()
    wait_until(lambda: len(owner.inspect("orders").waiters) == 1, timeout=WAIT,
               what="the waiter queued")
    wait_until(lambda: fake.open_watches() > 0, timeout=WAIT, what="the waiter watching")
    # Another lock's write moves the store past what the waiter has seen; then the
    # history is compacted and the stream dropped: the waiter's next watch, from the
    # resourceVersion it last saw, gets 410 Expired and must re-list.
    bystander = owner.acquire("bystander", timeout=WAIT)
    assert bystander is not None
    fake.compact()
    fake.close_watches()
    wait_until(lambda: fake.expired_watches > 0, timeout=WAIT, what="a watch answered 410")
    owner.release(held)
    grant = waiter.result()
    assert grant is not None
    assert grant.token == held.token + 1


@pytest.mark.parametrize("hang", [True, False], ids=["hung", "refusing"])
def test_lost_fires_when_renewals_cannot_reach_the_api_server(
        fake: FakeKubeServer, sessions: Callable[..., KubeLockBackend], hang: bool) -> None:
    session = sessions(ttl=2.0)
    kept = session.acquire("kept", timeout=WAIT)
    released = session.acquire("released", timeout=WAIT)
    assert kept is not None
    assert released is not None
    session.release(released)
    with fake.unreachable(hang=hang):  # every renewal now hangs, or is cut off
        assert kept.lost.wait(WAIT), "the lost signal never fired"
    assert kept.lost.reason is not None
    assert "renew deadline" in kept.lost.reason
    assert not released.lost.is_set(), "release must never fire the lost signal"
    # The server is back, but the grant stays lost: the session gave it up.
    assert session.inspect("kept").holder == session.identity
    assert kept.lost.is_set()


def test_lost_fires_when_another_holder_took_over(
        fake: FakeKubeServer, sessions: Callable[..., KubeLockBackend]) -> None:
    session = sessions(ttl=2.0)
    grant = session.acquire("orders", timeout=WAIT)
    assert grant is not None
    obj = fake.get_object(GROUP, PLURAL, NAMESPACE, "orders")
    assert obj is not None
    # What a successor's grant looks like after this holder was judged expired.
    obj["status"] = {**obj["status"], "holder": "someone-else", "fencingToken": 2,
                     "renewals": 0}
    fake.put_object(GROUP, PLURAL, NAMESPACE, obj)
    assert grant.lost.wait(WAIT), "the lost signal never fired"
    assert "taken over by someone-else (token 2)" in str(grant.lost.reason)


def test_a_waiter_that_dies_in_the_queue_stops_blocking(
        fake: FakeKubeServer, kubeconfig: str, sessions: Callable[..., KubeLockBackend],
        tmp_path: Path) -> None:
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
    assert grant.token == held.token + 1
    assert owner.inspect("orders").waiters == (), "the dead waiter's entry was left behind"


def test_names_that_are_not_object_names_get_their_own_objects(
        fake: FakeKubeServer, sessions: Callable[..., KubeLockBackend]) -> None:
    session = sessions()
    for name in ("Shop/Orders v2", "shop-orders-v2", "shop/orders/v2"):
        grant = session.acquire(name, timeout=WAIT)
        assert grant is not None
        assert grant.token == 1, f"{name!r} shared a Lock object with another name"
        obj = fake.get_object(GROUP, PLURAL, NAMESPACE, object_name(name))
        assert obj is not None
        assert obj["spec"]["lockName"] == name
        session.release(grant)
    assert object_name("shop-orders-v2") == "shop-orders-v2"


def test_bad_names_are_refused_before_anything_is_written(
        fake: FakeKubeServer, sessions: Callable[..., KubeLockBackend]) -> None:
    session = sessions()
    before = fake.resource_version
    for bad in ("", "x" * 2000, "tab\there"):
        with pytest.raises(ValueError, match="lock name"):
            session.acquire(bad, timeout=0)
    assert fake.resource_version == before


def test_a_missing_crd_is_a_clear_error(tmp_path: Path) -> None:
    with FakeKubeServer() as bare:
        path = str(bare.write_kubeconfig(tmp_path / "bare"))
        with KubeLockBackend(api_client(path), "default", ttl=5) as session:
            with pytest.raises(DistlockError, match="is the Lock CRD installed"):
                session.acquire("orders", timeout=1)
            assert bare.resource_version == 3  # two namespaces; nothing else was written


def test_a_release_racing_a_renewal_is_not_a_loss(
        fake: FakeKubeServer, sessions: Callable[..., KubeLockBackend],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The renewer reads the lock, the release lands, then the renewer writes: that
    write conflicts and the re-read shows the lock free, which is the release itself."""
    session = sessions(ttl=1.0)
    grant = session.acquire("busy", timeout=WAIT)
    assert grant is not None
    real_write = _LockObjects.write_status
    raced = threading.Event()
    renewed_after_race: list[str] = []

    def write_status(self: _LockObjects, obj: dict[str, Any], status: dict[str, Any], *,
                     timeout: float | None = None) -> dict[str, Any]:
        if threading.current_thread().name.startswith("distlock-renew"):
            if raced.is_set():
                renewed_after_race.append(obj["metadata"]["name"])
            elif obj["metadata"]["name"] == "busy":
                # Between the renewer's read and its write: release, to completion.
                releaser = threading.Thread(target=session.release, args=(grant,))
                releaser.start()
                releaser.join()
                raced.set()
        return real_write(self, obj, status, timeout=timeout)

    monkeypatch.setattr(_LockObjects, "write_status", write_status)
    other = session.acquire("other", timeout=WAIT)
    assert other is not None
    # The renewer handles one entry at a time: once it renewed "other" after the race,
    # it has finished with "busy" (conflict, re-read, verdict).
    wait_until(lambda: raced.is_set() and "other" in renewed_after_race, timeout=WAIT,
               what="the renewer to race the release and move on")
    assert session.inspect("busy").holder is None
    assert not grant.lost.is_set(), f"release fired the lost signal: {grant.lost.reason}"


def test_an_uncontended_holder_renews_with_one_write_and_no_reads(
        fake: FakeKubeServer, sessions: Callable[..., KubeLockBackend]) -> None:
    session = sessions(ttl=1.0)
    grant = session.acquire("quiet", timeout=WAIT)
    assert grant is not None
    start = len(fake.requests)
    status_path = f"/namespaces/{NAMESPACE}/{PLURAL}/quiet/status"

    def renewals() -> list[tuple[str, str]]:
        return [r for r in fake.requests[start:] if r[1].endswith(status_path)]

    wait_until(lambda: len(renewals()) >= 3, timeout=WAIT, what="three renewals")
    during = fake.requests[start:]
    assert {method for method, _ in renewals()} == {"PUT"}
    assert [r for r in during if r[0] == "GET"] == [], "renewals re-read the object"
    assert int(str(_status(fake, "quiet")["renewals"])) >= 3
    assert not grant.lost.is_set()


def test_closing_a_session_ends_its_waiting_acquires_without_a_slot(
        fake: FakeKubeServer, sessions: Callable[..., KubeLockBackend]) -> None:
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
