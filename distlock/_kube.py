"""The Kubernetes backend: fair, fenced locks stored as Lock custom resources.

One Lock object (``locks.mysql-cluster.io/v1``, installed by components/locks) per
named lock, in one namespace. All lock state lives in its ``status``:

- ``holder``, ``fencingToken``, ``leaseDurationSeconds``, ``renewals``;
- ``waiters``: the FIFO queue, one entry per waiting session, each with its own
  ``renewals`` counter (a waiter that dies must not block the ones behind it). No
  stored count: an append cannot keep one (old objects' ``waiterCount`` is removed).

Why it is built this way
------------------------
*No write lands on a state it did not decide on; independent writes do not conflict.*
A claim of a free lock carries the ``metadata.resourceVersion`` it was computed from
(``409 Conflict`` if anything changed since). The frequent writes are JSON patches
instead, because under churn every whole-object compare-and-swap raced every other
(each handoff against every pending enqueue: ~5.7 writes per grant, 2 useful). The API
server applies a patch to the object as stored, inside the storage update, and its
``test`` operations fail it whole: an enqueue appends and tests nothing, a release
tests holder, token and each entry it removes, a waiter's renewal its own entry (see
``_test``). A 409 or a failed test means somebody else's write landed, which is
progress: the writer decides again on the newer object (a waiter takes it from its
watch, where that write arrives anyway; others re-read). No fixed backoff.

*The releaser hands over.* Releasing is one conditional write that makes the first
*live* waiter in the queue the holder: it increments ``fencingToken``, sets ``holder``
to that waiter's identity and removes its entry. A handoff is therefore one write plus
one watch event, and the order is the queue's, i.e. order of arrival: a releaser that
asks again at once finds the lock held and queues at the back (when waiters granted
themselves after a release that only cleared ``holder``, the releaser raced them for
the free lock and often won). A waiter still claims the lock itself, in the same kind
of write, when it is free with no live waiter ahead (nobody queued at the release, or
the holder expired). The token is a counter incremented in the granting write:
strictly increasing for as long as the object exists (lock users have no ``delete``
permission, and the CRD provider refuses to delete the CRD while a lock is held,
because deleting the object would restart the counter).

*A handed grant's renew deadline starts before the handoff.* The new holder did not
send the granting write, so it times its renew deadline from the moment it sent its
last read or write whose answer still showed someone else holding: the grant was
written after that, so nobody can have started timing it earlier. If that moment is
more than half a renew deadline ago, it renews once before returning the grant.

*One watch per waiter.* A waiter keeps one watch stream of its object open for the
whole wait (a thread reads it into a queue) instead of a new request per change: every
enqueue, renewal and handoff is a change, and a new watch per change was a new TLS
connection for every waiter every time.

*Expiry is judged on the observer's monotonic clock.* Machines' wall clocks disagree,
so nobody compares timestamps. As in client-go's leader election, an observer records
*when it saw* a holder's ``(fencingToken, renewals)`` change, and considers the holder
expired only after that value has stayed the same for ``leaseDurationSeconds`` of its
own ``time.monotonic()``. A newcomer therefore waits a whole lease before taking over
from a silent holder: conservative, never early. Waiters are judged the same way.

*Lease > renew deadline > retry period* (client-go's 15 s / 10 s / 2 s ratios, scaled
to the TTL). The holder renews every retry period; if it has not managed a renewal for
the renew deadline (measured from *before* the last successful write was sent), it
fires the grant's lost signal. Others can only take over a full lease after they
*observed* that write, so a live, connected holder always learns it lost the lock
before anyone else can be granted it. A *paused* holder (SIGSTOP, GC) cannot learn
anything; its stale writes are stopped by the fencing token, nothing else can.

*Retry-safe acquire.* The queue entry and the holder field are the session's identity
(unique per session), so a request whose response was lost is harmless to repeat:
re-reading shows the entry already queued or the grant already made. An append is not
conditional, so one whose answer was lost and that landed only after the re-read would
queue the session twice: its first entry is its place, and its grant removes them all.

*Watches survive 410 Gone.* A waiter watches its object from the resourceVersion it
last saw; when the server has compacted that history it answers 410 and the waiter
re-lists (a list, not a get, because only a list returns the collection
resourceVersion that a new watch may start from) and watches again.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import logging
import math
import os
import queue
import random
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import urllib3
import yaml  # type: ignore[import-untyped]  # PyYAML ships with kubernetes; no stubs pinned
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from distlock._backend import BackendOptions, LockBackend
from distlock._errors import BackendRefused, BackendUnavailable, DistlockError
from distlock._grant import Grant, LockState
from distlock._kube_http import KubeHTTP, path_segment
from distlock.crd import CRD_NAME, GROUP, KIND, PLURAL, VERSION

_log = logging.getLogger("distlock.kube")

JSON = dict[str, Any]

_IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_OBJECT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_TRANSIENT_STATUS = frozenset({0, 408, 429, 500, 502, 503, 504})
_MAX_NAME = 1024
_WATCH_SECONDS = 300  # the server ends a watch after this; the watcher resumes it


# ---------------------------------------------------------------------------------
# Reaching the API server (shared with the Lock CRD provider in components/locks)
# ---------------------------------------------------------------------------------


def _kubeconfig_document(kubeconfig: str) -> Mapping[str, Any] | None:
    """``kubeconfig`` as a parsed document when it is one (not a path), else None."""
    if "\n" not in kubeconfig and not kubeconfig.lstrip().startswith("{"):
        return None
    try:
        document = yaml.safe_load(kubeconfig)
    except yaml.YAMLError as error:
        raise ValueError(f"kubeconfig text is not valid YAML{_where(error)}") from None
    if not isinstance(document, Mapping) or "clusters" not in document:
        raise ValueError("kubeconfig text is not a kubeconfig document (no 'clusters')")
    return document


def _where(error: yaml.YAMLError) -> str:
    """Where a YAML error is; never its text, which quotes the line (maybe a token)."""
    mark = getattr(error, "problem_mark", None)
    return f" at line {mark.line + 1}" if mark is not None else ""


def api_client(kubeconfig: str | None = None, *, context: str | None = None) -> Any:
    """A ``kubernetes.client.ApiClient`` for the cluster, found as kubectl finds it.

    ``kubeconfig`` is a path or a kubeconfig document's text (Pulumi's
    ``kubernetes:kubeconfig`` may be either); without it ``$KUBECONFIG`` (read now, not
    at import), then ``~/.kube/config``, then the pod's service account. urllib3's own
    retries are off: callers retry with their own deadlines and must see failures.
    """
    configuration = k8s_client.Configuration()
    document = _kubeconfig_document(kubeconfig) if kubeconfig else None
    path = None if document is not None else (kubeconfig or _default_kubeconfig_path())
    if document is not None:
        k8s_config.load_kube_config_from_dict(
            dict(document), context=context, client_configuration=configuration,
            persist_config=False)
    elif path is not None:
        if not Path(path).expanduser().is_file():
            raise ValueError(f"kubeconfig {path!r} does not exist")
        try:
            k8s_config.load_kube_config(
                config_file=path, context=context, client_configuration=configuration,
                persist_config=False)
        except yaml.YAMLError as error:
            raise ValueError(f"kubeconfig {path!r} is not valid YAML{_where(error)}") from None
    else:
        k8s_config.load_incluster_config(
            client_configuration=configuration)
    configuration.retries = 0
    return k8s_client.ApiClient(configuration)


def _default_kubeconfig_path() -> str | None:
    for candidate in os.environ.get("KUBECONFIG", "").split(os.pathsep):
        if candidate and Path(candidate).expanduser().exists():
            return candidate
    home = Path("~/.kube/config").expanduser()
    return str(home) if home.exists() else None


def default_namespace(kubeconfig: str | None = None, *, context: str | None = None) -> str:
    """The namespace kubectl would use: the context's, the pod's, else ``default``."""
    document = _kubeconfig_document(kubeconfig) if kubeconfig else None
    path = None if document is not None else (kubeconfig or _default_kubeconfig_path())
    if document is None and path is not None:
        document = yaml.safe_load(Path(path).expanduser().read_text())
    if isinstance(document, Mapping):
        wanted = context or document.get("current-context")
        for entry in document.get("contexts") or []:
            if entry.get("name") == wanted:
                return str((entry.get("context") or {}).get("namespace") or "default")
        return "default"
    if _IN_CLUSTER_NAMESPACE.exists():
        return _IN_CLUSTER_NAMESPACE.read_text().strip()
    return "default"


def check_name(lock_name: str) -> None:
    """ValueError naming the problem unless ``lock_name`` can be stored as a Lock object."""
    object_name(lock_name)


def object_name(lock_name: str) -> str:
    """The Lock object's name for a lock name; ValueError for a name we cannot store.

    Names that are already valid object names are used as they are, so ``kubectl get
    locks`` shows what the program asked for; others (slashes, capitals) become a slug
    plus a hash of the exact name, and the exact name is kept in ``spec.lockName``.
    """
    if not isinstance(lock_name, str) or not lock_name:
        raise ValueError(f"lock name must be a non-empty string, got {lock_name!r}")
    if len(lock_name) > _MAX_NAME or any(ord(c) < 32 or ord(c) == 127 for c in lock_name):
        raise ValueError(f"lock name must be at most {_MAX_NAME} printable characters, "
                         f"got {lock_name[:80]!r}")
    if len(lock_name) <= 200 and _OBJECT_NAME.match(lock_name) and ".." not in lock_name:
        return lock_name
    slug = re.sub(r"[^a-z0-9]+", "-", lock_name.lower()).strip("-")[:180].strip("-")
    digest = hashlib.sha256(lock_name.encode()).hexdigest()[:12]
    return f"{slug}-{digest}" if slug else f"lock-{digest}"


# ---------------------------------------------------------------------------------
# Timing and local observation
# ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """client-go's leader-election ratios (15 s / 10 s / 2 s) scaled to a TTL."""

    lease_seconds: int
    """What the object says; observers wait this long on their monotonic clock."""
    renew_deadline: float
    """The holder declares the grant lost after this long without a renewal."""
    retry_period: float
    """How often the holder renews."""
    waiter_renew_period: float
    """How often a waiter refreshes its queue entry (three times per lease)."""
    request_timeout: float
    """Connect/read timeout of one API call, well inside the renew deadline."""

    @classmethod
    def from_ttl(cls, ttl: float) -> Timing:
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 1 <= ttl <= 86400:
            raise ValueError(f"ttl must be between 1 and 86400 seconds, got {ttl!r}")
        renew_deadline = ttl * 2 / 3
        return cls(lease_seconds=math.ceil(ttl), renew_deadline=renew_deadline,
                   retry_period=ttl * 2 / 15, waiter_renew_period=ttl / 3,
                   request_timeout=min(max(renew_deadline / 2, 0.5), 10.0))


class _Observer:
    """When this process first saw each holder's/waiter's current renewal value.

    Liveness is a change of value, timed locally; a value that has not changed for a
    lease means its owner stopped renewing. A value never seen before starts its clock
    now, so a fresh observer is never early.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._seen: dict[tuple[str, str, str], tuple[object, float]] = {}
        self._mutex = threading.Lock()

    def observe(self, name: str, status: Mapping[str, Any]) -> None:
        now = self._clock()
        with self._mutex:
            holder = status.get("holder")
            if holder:
                self._see((name, "holder", holder),
                          (status.get("fencingToken", 0), status.get("renewals", 0)), now)
            for waiter in status.get("waiters") or []:
                self._see((name, "waiter", waiter["identity"]), waiter.get("renewals", 0), now)

    def _see(self, key: tuple[str, str, str], value: object, now: float) -> None:
        previous = self._seen.get(key)
        if previous is None or previous[0] != value:
            self._seen[key] = (value, now)

    def remaining(self, name: str, role: str, identity: str, lease: float) -> float:
        """Seconds until ``identity`` counts as expired here (<= 0: expired)."""
        with self._mutex:
            seen = self._seen.get((name, role, identity))
        if seen is None:
            return lease
        return seen[1] + lease - self._clock()


# ---------------------------------------------------------------------------------
# Status transitions: pure functions from one status to the next
# ---------------------------------------------------------------------------------


def _now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(obj: Mapping[str, Any] | None) -> JSON:
    status = dict((obj or {}).get("status") or {})
    status.setdefault("fencingToken", 0)
    status["waiters"] = [dict(w) for w in status.get("waiters") or []]
    return status


def _with_waiters(status: JSON, waiters: list[JSON]) -> JSON:
    status["waiters"] = waiters
    # A count stored beside the queue (objects written before the queue became
    # append-only have one) would go stale after the first append: whole-status
    # writes drop it, patches remove it (``_unstored_count``).
    status.pop("waiterCount", None)
    return status


# ---------------------------------------------------------------------------------
# JSON patches: writes that only conflict with the writes they must not miss
# ---------------------------------------------------------------------------------
#
# A whole-status PUT carries the resourceVersion it was computed from, so every two
# writes conflict, and under churn each handoff raced the new holder's release against
# every pending enqueue on the same version, one of which could win (~5.7 writes per
# grant, 2 of them useful). A JSON patch is applied by the API server to the object as
# it is stored at that moment, inside the same storage transaction (it re-applies the
# patch when the stored object moved under it), and its ``test`` operations fail the
# whole patch (422) when what they name changed. So each write below tests exactly
# what its decision was based on, and nothing else: an append tests nothing (the back
# of the queue is the back whatever else changed), a handoff tests holder, token and
# the identity of every entry it removes (by index: a removal elsewhere moves the
# indices, and the test then fails rather than remove the wrong entry).


def _test(path: str, value: object) -> JSON:
    return {"op": "test", "path": path, "value": value}


def _unstored_count(status: Mapping[str, Any]) -> list[JSON]:
    return [{"op": "remove", "path": "/status/waiterCount"}] if "waiterCount" in status else []


def _first_index(waiters: list[JSON], identity: str) -> int | None:
    """Where ``identity`` first stands in the queue. A retried append whose first try
    landed (its answer lost after the re-read) leaves a second entry of the same
    session; the first is its place, later ones are removed with it when granted."""
    return next((i for i, w in enumerate(waiters) if w["identity"] == identity), None)


def _enqueue_patch(status: Mapping[str, Any], me: str, lease: int, renewals: int) -> list[JSON]:
    """``me`` appended at the back of the queue, conflicting with nobody.

    Entries expired ahead are left for the claim or handoff that passes them (which
    removes them under a ``test``); the entry's ``renewals`` is the next value of the
    session-wide counter (see ``_enqueued``), so a duplicate is recognisable."""
    entry = {"identity": me, "leaseDurationSeconds": lease, "renewals": renewals,
             "enqueueTime": _now_text()}
    return [*_unstored_count(status), {"op": "add", "path": "/status/waiters/-", "value": entry}]


def _waiter_renew_patch(status: Mapping[str, Any], me: str, renewals: int) -> list[JSON]:
    index = _first_index(status["waiters"], me)
    assert index is not None
    return [*_unstored_count(status), _test(f"/status/waiters/{index}/identity", me),
            {"op": "replace", "path": f"/status/waiters/{index}/renewals", "value": renewals}]


def _holder_fields(status: Mapping[str, Any]) -> list[JSON]:
    """Tests that the grant ``status`` shows is still the current one."""
    return [_test("/status/holder", status["holder"]),
            _test("/status/fencingToken", int(status["fencingToken"]))]


def _removals(waiters: list[JSON], indices: frozenset[int]) -> list[JSON]:
    """Remove these entries, each tested to be the one we decided on. Highest index
    first, so earlier removals do not move the later ones."""
    ops: list[JSON] = []
    for i in sorted(indices, reverse=True):
        ops += [_test(f"/status/waiters/{i}/identity", waiters[i]["identity"]),
                {"op": "remove", "path": f"/status/waiters/{i}"}]
    return ops


def _granted_fields(status: Mapping[str, Any], holder: str, lease: int) -> JSON:
    """What every grant writes: ``holder``, the next token, a fresh lease."""
    now = _now_text()
    return {"holder": holder, "fencingToken": int(status.get("fencingToken", 0)) + 1,
            "leaseDurationSeconds": lease, "renewals": 0, "acquireTime": now,
            "renewTime": now}


def _claimed(status: JSON, holder: str, lease: int, dropped: set[str]) -> JSON:
    """The granting write: token + 1, ``holder`` holds, out of the queue (with the dead).

    Written by a waiter claiming a free lock, or by a releaser handing it to the first
    live waiter (then ``holder`` and ``lease`` are that waiter's)."""
    result = dict(status)
    result.update(_granted_fields(status, holder, lease))
    waiters = [w for w in status["waiters"] if w["identity"] != holder and
               w["identity"] not in dropped]
    return _with_waiters(result, waiters)


def _enqueued(status: JSON, me: str, lease: int, dropped: set[str], renewals: int) -> JSON:
    """``me`` at the back of the queue, with ``renewals`` from the session's counter.

    A waiter's liveness is a change of its ``renewals``, keyed by its identity, which
    stays the same for the whole session. Had every new entry started again at 0, a
    session that queues, is granted and queues again faster than it renews would show
    others the same value (0) over and over, and a lease after they first saw it they
    would judge the live entry dead and drop it from the queue: under contention the
    queue lost its order. Every entry and renewal of a session takes the next number of
    one session-wide counter, so each one is a change an observer notices."""
    waiters = [w for w in status["waiters"] if w["identity"] not in dropped]
    waiters.append({"identity": me, "leaseDurationSeconds": lease, "renewals": renewals,
                    "enqueueTime": _now_text()})
    return _with_waiters(dict(status), waiters)


def _waiter_renewed(status: JSON, me: str, renewals: int) -> JSON:
    waiters = [dict(w, renewals=renewals) if w["identity"] == me else w
               for w in status["waiters"]]
    return _with_waiters(dict(status), waiters)


def _dequeued(status: JSON, me: str) -> JSON:
    return _with_waiters(dict(status), [w for w in status["waiters"] if w["identity"] != me])


def _holder_renew_patch(status: Mapping[str, Any]) -> list[JSON]:
    """The holder's renewal: the next ``renewals`` and a fresh ``renewTime``, only while
    ``holder`` and ``fencingToken`` are still the grant's.

    As a whole-status PUT on the resourceVersion a renewal raced every enqueue and
    waiter renewal under a crowd (a 409 and a re-read each time, inside the renew
    deadline). Nobody but the holder writes ``renewals`` while its grant stands (every
    grant changes the token, which the test catches), so the value computed from our
    last answer is the one to write, whatever else the queue did meanwhile."""
    renewed = _holder_renewed(status)
    return [*_unstored_count(status), *_holder_fields(status),
            *({"op": "add", "path": f"/status/{key}", "value": renewed[key]}
              for key in ("renewals", "renewTime"))]


def _holder_renewed(status: Mapping[str, Any]) -> JSON:
    return dict(status, renewals=int(status.get("renewals", 0)) + 1, renewTime=_now_text())


_HOLDING = ("holder", "leaseDurationSeconds", "renewals", "acquireTime", "renewTime")


@dataclass(frozen=True)
class _Handoff:
    """What a release decides: who is granted next (None: nobody) and which queue
    entries (by index) leave the queue with that write."""

    successor: JSON | None
    removed: frozenset[int]


def _handoff(status: JSON, expired: Callable[[JSON], bool],
             fresh: Callable[[JSON], bool]) -> _Handoff:
    """The holder steps down: straight to the first waiter not ``expired``, if that one
    is ``fresh`` (seen renewing lately), else to nobody.

    Handing over in the releasing write is what makes the queue a queue: the next
    holder is decided by order of arrival, in the one write a handoff needs, and a
    releaser that asks again at once finds the lock held and queues behind everyone
    (when the waiters granted themselves after a release that only cleared the holder,
    the releaser raced them for the free lock). Expired waiters ahead of the successor
    are dropped, as a claim drops them. A first waiter that has been silent for a while
    but not a whole lease may have died: it is not handed a lock it might never renew;
    the lock is left free, and that waiter claims it itself if it is alive, or the next
    one does once it has expired. The token stays with nobody holding, so the next grant
    is greater either way. The releaser's own entries (a late duplicate of
    an append) are never its successor and leave with the release."""
    waiters = status["waiters"]
    me = status.get("holder")
    first = next((i for i, w in enumerate(waiters)
                  if w["identity"] != me and not expired(w)), None)
    if first is not None and fresh(waiters[first]):
        successor = waiters[first]
        return _Handoff(successor, frozenset(
            i for i, w in enumerate(waiters)
            if i < first or w["identity"] in (successor["identity"], me)))
    return _Handoff(None, frozenset(i for i, w in enumerate(waiters) if w["identity"] == me))


def _released(status: JSON, expired: Callable[[JSON], bool],
              fresh: Callable[[JSON], bool]) -> JSON:
    """The status a release writes (``_handoff``'s decision, applied)."""
    handoff = _handoff(status, expired, fresh)
    waiters = [w for i, w in enumerate(status["waiters"]) if i not in handoff.removed]
    result = {k: v for k, v in status.items() if k not in _HOLDING}
    if handoff.successor is not None:
        result.update(_granted_fields(status, handoff.successor["identity"],
                                      int(handoff.successor["leaseDurationSeconds"])))
    return _with_waiters(result, waiters)


def _release_patch(status: JSON, expired: Callable[[JSON], bool],
                   fresh: Callable[[JSON], bool]) -> list[JSON]:
    """``_handoff``'s decision as a patch guarded by holder, token and the removed entries.

    The handoff is still one atomic write that sets holder and token together (the
    patch applies whole or not at all), and the token test makes it apply only on the
    grant it releases, so the next token is exactly one more: strictly increasing."""
    handoff = _handoff(status, expired, fresh)
    ops = [*_unstored_count(status), *_holder_fields(status)]
    if handoff.successor is not None:
        ops += [{"op": "add", "path": f"/status/{key}", "value": value} for key, value in
                _granted_fields(status, handoff.successor["identity"],
                                int(handoff.successor["leaseDurationSeconds"])).items()]
    else:
        ops += [{"op": "remove", "path": f"/status/{key}"} for key in _HOLDING if key in status]
    return ops + _removals(status["waiters"], handoff.removed)


# ---------------------------------------------------------------------------------
# The API calls, with errors sorted into what the algorithm reacts to
# ---------------------------------------------------------------------------------


class _Conflict(Exception):
    """The object changed since it was read (409, or gone): re-read and decide again."""


class _Transient(Exception):
    """The API server could not be reached or was overloaded: back off and retry."""


class _Gone(Exception):
    """The watch's resourceVersion was compacted away (410): re-list."""


def _reason(error: ApiException) -> str:
    with contextlib.suppress(ValueError, TypeError):
        return str(json.loads(error.body or "").get("message") or error.reason)
    return str(error.reason)


def _test_failed(error: ApiException) -> bool:
    """A JSON patch did not apply to the object as stored: a ``test`` found another value,
    or an index it names is no longer there. What it was computed from changed, which
    is a conflict like a 409 (the writer decides again on the newer object). The API
    server answers that with a bare 422 ``Invalid`` (the patch library's error is not
    passed on); a schema violation is a 422 ``Invalid`` too, but names the object and
    its fields in ``details``, and stays an error."""
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        body = json.loads(error.body or "")
        return body.get("reason") == "Invalid" and not body.get("details")
    return False


@dataclass
class _Read:
    obj: JSON | None
    watch_from: str
    """A resourceVersion a watch may start from (the collection's, after a list)."""


class _LockObjects:
    """Lock objects of one namespace, as JSON over the official client's connection
    pool and credentials (:mod:`distlock._kube_http`: the generated client's CPU per
    request was most of a handoff's client-side cost)."""

    def __init__(self, api: Any, namespace: str, timing: Timing) -> None:
        self._http = KubeHTTP(api)
        self._namespace = namespace
        self._collection = (f"/apis/{GROUP}/{VERSION}/namespaces/{path_segment(namespace)}"
                            f"/{PLURAL}")
        self._timeout = timing.request_timeout
        self._counting = threading.Lock()
        self.requests: collections.Counter[str] = collections.Counter()
        """Requests sent, by kind, and refusals by kind and status ("PUT", "PUT 409",
        "LIST", "WATCH"): where a handoff's cost goes (bench/kube_locks.py reports it)."""

    def count(self, kind: str, status: int | None = None) -> None:
        with self._counting:
            self.requests[kind if status is None else f"{kind} {status}"] += 1

    def _status_path(self, obj_name: str) -> str:
        return f"{self._collection}/{path_segment(obj_name)}/status"

    def _call(self, kind: str, method: str, path: str, *, timeout: float | None = None,
              label: str | None = None, query: Mapping[str, object] | None = None,
              body: object = None, content_type: str = "application/json") -> JSON:
        """One request of ``kind`` (LIST, POST, PUT, PATCH: the ``requests`` key, with
        ``label``), its errors sorted into what the algorithm reacts to."""
        counted = kind + (f" {label}" if label else "")
        self.count(counted)
        try:
            return self._http.request(method, path, timeout=timeout or self._timeout,
                                      query=query, body=body, content_type=content_type)
        except ApiException as error:
            self.count(counted, error.status)
            if error.status in _TRANSIENT_STATUS:
                raise _Transient(f"{error.status} {_reason(error)}") from error
            if error.status == 409 or (error.status == 422 and _test_failed(error)):
                raise _Conflict(_reason(error)) from error
            if error.status == 404 and kind != "LIST":
                raise _Conflict("the Lock object was deleted") from error
            raise self._fatal(error) from error
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise _Transient(str(error)) from error

    def _fatal(self, error: ApiException) -> BackendRefused:
        where = f"Lock objects ({CRD_NAME}) in namespace {self._namespace!r}"
        if error.status == 404:
            return BackendRefused(f"{where} are not served: is the Lock CRD installed "
                                  "(locks.enabled) and does the namespace exist? "
                                  f"({_reason(error)})")
        if error.status in (401, 403):
            return BackendRefused(f"not allowed to use {where}: bind the lock-user "
                                  f"ClusterRole to this identity ({error.status} "
                                  f"{_reason(error)})")
        return BackendRefused(f"the API server rejected a write to {where}: "
                              f"{error.status} {_reason(error)}")

    def read(self, obj_name: str, *, timeout: float | None = None) -> _Read:
        listing = self._call("LIST", "GET", self._collection, timeout=timeout,
                             query={"fieldSelector": f"metadata.name={obj_name}"})
        items = listing.get("items") or []
        return _Read(items[0] if items else None, listing["metadata"]["resourceVersion"])

    def create(self, obj_name: str, lock_name: str, *, timeout: float | None = None) -> None:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
                "metadata": {"name": obj_name,
                             "labels": {"app.kubernetes.io/managed-by": "distlock"}},
                "spec": {"lockName": lock_name}}
        # AlreadyExists: another client created it first, which is as good.
        with contextlib.suppress(_Conflict):
            self._call("POST", "POST", self._collection, body=body, timeout=timeout)

    def write_status(self, obj: JSON, status: JSON, *, timeout: float | None = None,
                     label: str) -> JSON:
        """A conditional write of ``status``; ``label`` names it in ``requests``."""
        return self._call("PUT", "PUT", self._status_path(obj["metadata"]["name"]),
                          body=dict(obj, status=status), timeout=timeout, label=label)

    def patch_status(self, obj: JSON, ops: list[JSON], *, timeout: float | None = None,
                     label: str) -> JSON:
        """A JSON patch of the status: applied to the object as stored, whole or not at
        all, conditional only on its ``test`` operations (see ``_test``)."""
        return self._call("PATCH", "PATCH", self._status_path(obj["metadata"]["name"]),
                          body=ops, timeout=timeout, label=label,
                          content_type="application/json-patch+json")

    def open_watch(self, obj_name: str, since: str, *, connect_timeout: float | None) -> Any:
        """A streaming watch of one object from ``since``; the server ends it after
        ``_WATCH_SECONDS`` (then the watcher resumes from the last event it saw)."""
        self.count("WATCH")
        try:
            return self._http.stream(
                self._collection,
                query={"watch": True, "resourceVersion": since,
                       "fieldSelector": f"metadata.name={obj_name}",
                       "allowWatchBookmarks": True, "timeoutSeconds": _WATCH_SECONDS},
                connect_timeout=connect_timeout or self._timeout,
                read_timeout=_WATCH_SECONDS + self._timeout)
        except ApiException as error:
            if error.status == 410:
                raise _Gone(_reason(error)) from error
            if error.status in _TRANSIENT_STATUS:
                raise _Transient(f"{error.status} {_reason(error)}") from error
            raise self._fatal(error) from error
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise _Transient(str(error)) from error

    def close(self) -> None:
        self._http.close()


def _lines(response: Any) -> Iterator[str]:
    """Watch lines until the stream ends, is cut, or is shut down by ``_Watcher.stop``."""
    try:
        yield from iter_resp_lines(response)
    except (urllib3.exceptions.HTTPError, OSError, ValueError):
        return  # a closed or cut stream: the watcher resumes (or was told to stop)


def _revision(obj: Mapping[str, Any]) -> int | None:
    """The object's resourceVersion as a number, when it is one (etcd's revision).

    resourceVersions are opaque to clients in general; here they only decide whether a
    watch event is older than what we already hold (an optimisation: every write is
    still a compare-and-swap, so a wrong guess costs a 409, never a wrong grant)."""
    with contextlib.suppress(KeyError, TypeError, ValueError):
        return int(obj["metadata"]["resourceVersion"])
    return None


def _newer(obj: Mapping[str, Any], than: Mapping[str, Any] | None) -> bool:
    if than is None:
        return True
    mine, theirs = _revision(obj), _revision(than)
    return mine is None or theirs is None or mine > theirs


class _Watcher:
    """One long-lived watch of a Lock object, read by a thread into a queue.

    A waiter used to open a new watch (a new TLS connection) for every change it waited
    for, and every enqueue, renewal or grant is a change: with eight waiters that was
    most of a handoff's cost. One stream per acquisition delivers every change once, in
    order, as the server sends it; the acquisition decides on each event as it would on
    a fresh read. The thread resumes the stream from the last resourceVersion it saw
    when the server ends it; a 410, a watch ERROR, a deletion or an unreachable server
    is handed to the acquisition as its exception (it re-reads and starts a new one).
    """

    def __init__(self, objects: _LockObjects, obj_name: str, since: str, *,
                 connect_timeout: float | None) -> None:
        self._objects = objects
        self._obj_name = obj_name
        self._since = since
        self._connect_timeout = connect_timeout
        self.events: queue.SimpleQueue[JSON | Exception] = queue.SimpleQueue()
        self._stopped = threading.Event()
        self._mutex = threading.Lock()
        self._response: Any = None
        self.broken = False
        """An error ended the stream and was consumed by ``newer_than``."""
        self._thread = threading.Thread(target=self._run, name=f"distlock-watch-{obj_name}",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stopped.is_set():
                self._stream()
        except (_Gone, _Transient, _Conflict, DistlockError) as error:
            if not self._stopped.is_set():
                self.events.put(error)
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            # An event we cannot read must end the stream loudly: a reader that died
            # silently would leave its acquisition waiting on a queue nobody fills
            # (for longer now that a session keeps its watch between acquires).
            if not self._stopped.is_set():
                self.events.put(_Transient(f"unreadable watch event: {error!r}"))

    def _stream(self) -> None:
        response = self._objects.open_watch(self._obj_name, self._since,
                                            connect_timeout=self._connect_timeout)
        with self._mutex:
            self._response = response
        try:
            if self._stopped.is_set():
                return
            for line in _lines(response):
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise _Gone(str(obj.get("message")))
                    raise _Transient(f"watch error: {obj.get('message')}")
                if kind == "DELETED":
                    raise _Conflict("the Lock object was deleted")
                self._since = obj["metadata"]["resourceVersion"]
                if kind in ("ADDED", "MODIFIED"):
                    self.events.put(obj)
        finally:
            with self._mutex:
                self._response = None
            with contextlib.suppress(Exception):
                response.close()
                response.release_conn()

    def stop(self) -> None:
        """End the stream now: shut its socket down, which wakes the blocked reader."""
        self._stopped.set()
        with self._mutex:
            response = self._response
        connection = getattr(response, "connection", None)
        sock = getattr(connection, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def newer_than(self, obj: JSON, timeout: float) -> JSON | None:
        """The first event newer than ``obj`` within ``timeout``, else None.

        After a 409, whoever wrote first changed the object after ``obj``, so that
        change is on its way down this watch: waiting for it costs no request, where a
        re-read would be one more for the API server while a crowd retries. None (also
        when the watch broke: see ``broken``) means re-read."""
        until = time.monotonic() + timeout
        while (left := until - time.monotonic()) > 0:
            item = self.next(left)
            if item is None:
                return None
            if isinstance(item, Exception):
                self.broken = True
                return None
            if _newer(item, obj):
                return item
        return None

    def next(self, timeout: float) -> JSON | Exception | None:
        """The newest queued event (older ones are superseded), or None after ``timeout``."""
        try:
            item = self.events.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return None
        while not isinstance(item, Exception):
            try:
                item = self.events.get_nowait()
            except queue.Empty:
                break
        return item


# ---------------------------------------------------------------------------------
# The backend
# ---------------------------------------------------------------------------------


@dataclass
class _Held:
    grant: Grant
    obj_name: str
    last_renewed: float
    """Monotonic time *before* the last successful renewal (or grant) was sent."""
    last_written: JSON | None = None
    """The object as our last write left it (or a later watch event): the next renewal
    or the release is a CAS on it, so an uncontended one is one request; a 409 means
    someone wrote since, so re-read."""
    watcher: _Watcher | None = None
    """The watch the acquisition had open, kept while the lock is held: what others
    wrote meanwhile (the previous holder queueing again, a waiter renewing) arrives
    there, so the release writes on the current object instead of a 409 and a re-read."""

    def newest(self) -> JSON | None:
        """``last_written``, or a newer object from the watch (which then replaces it)."""
        if self.watcher is not None:
            item = self.watcher.next(0)
            if isinstance(item, Exception):
                self.drop_watcher()
            elif item is not None and _newer(item, self.last_written):
                self.last_written = item
        return self.last_written

    def drop_watcher(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None


class KubeLockBackend(LockBackend):
    """A client session: one identity holding and waiting for Lock objects."""

    def __init__(self, api: Any, namespace: str, *, ttl: float = 10.0,
                 identity: str | None = None) -> None:
        self._timing = Timing.from_ttl(ttl)
        base = identity or f"{socket.gethostname()}-{os.getpid()}"
        # Unique per session: retry safety relies on no other session sharing it.
        self._identity = f"{base[:200]}-{uuid.uuid4().hex[:12]}"
        self._api = api
        self._namespace = namespace
        self._objects = _LockObjects(api, namespace, self._timing)
        self._observer = _Observer()
        self._mutex = threading.Lock()
        self._held: dict[str, _Held] = {}
        self._released: dict[str, tuple[JSON, float]] = {}
        """Per object: our last release's answer and when it was sent, so an acquire
        that follows at once decides on it instead of reading the object again."""
        self._parked: dict[str, tuple[_Watcher, float]] = {}
        """Per object: the watch our last holding had open, kept after the release
        for a lease, and when it was parked (see ``_park``)."""
        self._waiter_renewals = 0
        self._busy: set[str] = set()
        self._closed = threading.Event()
        self._renewer: threading.Thread | None = None

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def namespace(self) -> str:
        return self._namespace

    @property
    def timing(self) -> Timing:
        return self._timing

    def request_counts(self) -> dict[str, int]:
        """Requests this session sent to the API server, by kind and refusal status."""
        return dict(self._objects.requests)

    # -- acquire ---------------------------------------------------------------------

    def acquire(self, name: str, *, timeout: float | None,
                cancel: threading.Event | None = None) -> Grant | None:
        obj_name = object_name(name)
        with self._mutex:
            if self._closed.is_set():
                raise DistlockError("this lock session is closed")
            if name in self._held or name in self._busy:
                raise RuntimeError(f"lock {name!r} is already held or being acquired by this "
                                   "session (one holding per name per session)")
            self._busy.add(name)
        try:
            once = timeout is not None and timeout <= 0
            deadline = None if timeout is None or once else time.monotonic() + timeout
            return _Acquisition(self, name, obj_name, once=once, deadline=deadline,
                                cancel=cancel).run()
        finally:
            with self._mutex:
                self._busy.discard(name)

    def _read_or_create(self, name: str, obj_name: str, *,
                        timeout: float | None = None) -> _Read:
        read = self._objects.read(obj_name, timeout=timeout)
        if read.obj is None:
            self._objects.create(obj_name, name, timeout=timeout)
            read = self._objects.read(obj_name, timeout=timeout)
            if read.obj is None:
                raise _Conflict("the Lock object vanished right after it was created")
        lock_name = (read.obj.get("spec") or {}).get("lockName")
        if lock_name not in (None, name):
            raise BackendRefused(f"lock {name!r} maps to Lock object {obj_name!r}, which "
                                 f"belongs to lock {lock_name!r}; rename one of them")
        self._observer.observe(name, _status(read.obj))
        return read

    def _next_renewal(self) -> int:
        """The next value of this session's waiter counter (see ``_enqueued``)."""
        with self._mutex:
            self._waiter_renewals += 1
            return self._waiter_renewals

    def _recent(self, obj_name: str) -> tuple[_Read, float] | None:
        with self._mutex:
            obj, sent_at = self._released.pop(obj_name, (None, 0.0))
        if obj is None or time.monotonic() - sent_at > self._timing.retry_period:
            return None  # old news: a read is cheaper than the conflicts it would cause
        return _Read(obj, obj["metadata"]["resourceVersion"]), sent_at

    def _grant(self, name: str, obj_name: str, obj: JSON, sent_at: float,
               watcher: _Watcher | None = None) -> Grant:
        grant = Grant(name=name, token=int(_status(obj)["fencingToken"]), holder=self._identity)
        with self._mutex:
            closed = self._closed.is_set()
            if not closed:
                self._held[name] = _Held(grant, obj_name, sent_at, obj, watcher)
        if closed:
            if watcher is not None:
                watcher.stop()
            # Granted as the session closed: give it back; its holder must not rely on it.
            grant.lost.fire(f"lock {name!r}: the session was closed while acquiring it")
            self.release(grant)
            return grant
        with self._mutex:
            if self._renewer is None and not self._closed.is_set():
                self._renewer = threading.Thread(target=self._renew_loop,
                                                 name=f"distlock-renew-{self._identity}",
                                                 daemon=True)
                self._renewer.start()
        return grant

    # -- renewal ---------------------------------------------------------------------

    def _renew_loop(self) -> None:
        timing = self._timing
        pause = timing.retry_period
        while not self._closed.wait(pause):
            with self._mutex:
                held = list(self._held.values())
            for entry in held:
                self._renew(entry)
            self._stop_parked(idle_for=timing.lease_seconds)
            # Wake no later than the earliest renew deadline, so a lost grant is
            # signalled when its deadline passes, not up to a retry period later.
            with self._mutex:
                deadlines = [e.last_renewed + timing.renew_deadline for e in self._held.values()]
            pause = min([timing.retry_period,
                         *(d - time.monotonic() + 0.001 for d in deadlines)])
            pause = max(pause, 0.001)

    def _renew(self, entry: _Held) -> None:
        grant = entry.grant
        for _ in range(3):
            started = time.monotonic()
            # No request may outlast the renew deadline: a hung API server must not
            # keep the holder believing it holds the lock past it.
            left = entry.last_renewed + self._timing.renew_deadline - started
            if left <= 0:
                break
            budget = min(left, self._timing.request_timeout)
            try:
                current, entry.last_written = entry.newest(), None
                if current is None:
                    current = self._objects.read(entry.obj_name, timeout=budget).obj
                status = _status(current)
                # What the renewal shows of the queue is what a release will judge by.
                self._observer.observe(grant.name, status)
                if current is None or status.get("holder") != self._identity or int(
                        status["fencingToken"]) != grant.token:
                    self._lose(entry, "the Lock object was deleted" if current is None else
                               f"taken over by {status.get('holder') or 'nobody'} "
                               f"(token {status['fencingToken']})")
                    return
                budget = entry.last_renewed + self._timing.renew_deadline - time.monotonic()
                if budget <= 0:
                    break
                entry.last_written = self._objects.patch_status(
                    current, _holder_renew_patch(status),
                    timeout=min(budget, self._timing.request_timeout), label="renew")
                entry.last_renewed = started
                return
            except _Conflict:
                continue
            except (_Transient, DistlockError) as error:
                _log.warning("renewing lock %r failed: %s", grant.name, error)
                break
        silent = time.monotonic() - entry.last_renewed
        if silent > self._timing.renew_deadline:
            self._lose(entry, f"no successful renewal for {silent:.1f}s "
                       f"(renew deadline {self._timing.renew_deadline:.1f}s)")

    def _lose(self, entry: _Held, reason: str) -> None:
        with self._mutex:
            if self._held.get(entry.grant.name) is not entry:
                # Released meanwhile: a renewal racing the release saw the lock go
                # free, which is the release itself, never a loss.
                return
            del self._held[entry.grant.name]
        entry.drop_watcher()
        entry.grant.lost.fire(f"lock {entry.grant.name!r}: {reason}")

    # -- release, inspect, close ---------------------------------------------------------

    def release(self, grant: Grant) -> None:
        cached: JSON | None = None
        with self._mutex:
            entry = self._held.get(grant.name)
            if entry is not None and entry.grant is grant:
                del self._held[grant.name]
            else:
                entry = None
            obj_name = object_name(grant.name)
        watcher: _Watcher | None = None
        if entry is not None:
            cached = entry.newest()  # a CAS on it first: one request if uncontended
            watcher, entry.watcher = entry.watcher, None
        try:
            self._release(grant, obj_name, cached, watcher)
        finally:
            if watcher is not None:
                self._park(obj_name, watcher)

    def _park(self, obj_name: str, watcher: _Watcher) -> None:
        """Keep the watch of a lock just released for this session's next acquire of it.

        A session that asks again soon (a worker taking turns) would otherwise open a
        new watch per grant: a new TLS connection and a new watch on the API server,
        on both sides the dearest part of a handoff after the two writes. The stream
        is live, so nothing it carries goes stale (an acquire decides on the newest
        event, or re-reads when the stream broke); one left unused for a lease is
        stopped by the renewal loop, and ``close`` stops them all."""
        with self._mutex:
            keep = not self._closed.is_set() and not watcher.broken
            previous = self._parked.pop(obj_name, None)
            if keep:
                self._parked[obj_name] = (watcher, time.monotonic())
        if previous is not None:
            previous[0].stop()
        if not keep:
            watcher.stop()

    def _unpark(self, obj_name: str) -> _Watcher | None:
        with self._mutex:
            parked = self._parked.pop(obj_name, None)
        return None if parked is None else parked[0]

    def _stop_parked(self, *, idle_for: float) -> None:
        """Stop the parked watches nobody took up for ``idle_for`` seconds."""
        now = time.monotonic()
        with self._mutex:
            idle = [name for name, (_, at) in self._parked.items() if now - at >= idle_for]
            stopping = [self._parked.pop(name)[0] for name in idle]
        for watcher in stopping:
            watcher.stop()

    def _release(self, grant: Grant, obj_name: str, cached: JSON | None,
                 watcher: _Watcher | None) -> None:
        deadline = time.monotonic() + self._timing.lease_seconds
        delay = 0.01

        def silent(waiter: JSON) -> float:
            """How long this session has seen the waiter's entry unchanged."""
            lease = float(waiter["leaseDurationSeconds"])
            return lease - self._observer.remaining(grant.name, "waiter", waiter["identity"],
                                                    lease)

        def expired(waiter: JSON) -> bool:
            return silent(waiter) >= float(waiter["leaseDurationSeconds"])

        def fresh(waiter: JSON) -> bool:
            # A live waiter renews every waiter_renew_period; give its write a request
            # timeout to land.
            return silent(waiter) < self._timing.waiter_renew_period + \
                self._timing.request_timeout

        while True:
            try:
                current, cached = cached, None
                if current is None:
                    current = self._objects.read(obj_name).obj
                status = _status(current)
                if current is None or status.get("holder") != grant.holder or int(
                        status["fencingToken"]) != grant.token:
                    return  # already released, taken over, or gone: nothing of ours left
                self._observer.observe(grant.name, status)
                sent = time.monotonic()
                written = self._objects.patch_status(
                    current, _release_patch(status, expired, fresh), label="release") \
                    if "waiters" in (current.get("status") or {}) else \
                    self._objects.write_status(current, _released(status, expired, fresh),
                                               label="release")
                with self._mutex:
                    self._released[obj_name] = (written, sent)
                return
            except _Conflict:
                # Changed since: decide again on the change, from the watch if we have
                # one (the write that beat ours is on its way there), else re-read.
                if watcher is not None and not watcher.broken and current is not None:
                    cached = watcher.newer_than(current, self._timing.request_timeout)
                continue
            except DistlockError as error:
                # The CRD or the object is gone, or we may no longer write: nothing
                # left to give back (or nothing we can), and a release must not raise.
                _log.warning("could not release lock %r: %s", grant.name, error)
                return
            except _Transient as error:
                if time.monotonic() >= deadline:
                    _log.warning("could not release lock %r (%s); it expires after %ss",
                                 grant.name, error, self._timing.lease_seconds)
                    return
                delay = min(delay * 2, self._timing.retry_period)
            time.sleep(delay * random.uniform(0.5, 1.5))  # noqa: S311 - jitter, not crypto

    def inspect(self, name: str) -> LockState:
        obj_name = object_name(name)
        try:
            read = self._objects.read(obj_name)
        except _Transient as error:
            raise BackendUnavailable(f"Kubernetes API unreachable: {error}") from error
        status = _status(read.obj)
        holder = status.get("holder") or None
        return LockState(name=name, holder=holder,
                         token=int(status["fencingToken"]) if holder else None,
                         waiters=tuple(w["identity"] for w in status["waiters"]))

    def close(self) -> None:
        with self._mutex:
            if self._closed.is_set():
                return
            # Closed first: an acquire still running in another thread now gives up
            # (or hands back what it is granted) instead of adding an unrenewed grant.
            self._closed.set()
            held = [entry.grant for entry in self._held.values()]
        for grant in held:
            self.release(grant)
        renewer = self._renewer
        if renewer is not None and renewer is not threading.current_thread():
            renewer.join()
        self._stop_parked(idle_for=0)
        with contextlib.suppress(Exception):
            self._api.close()


class _Acquisition:
    """One ``acquire`` call: read, decide, write or wait, until granted or given up."""

    def __init__(self, backend: KubeLockBackend, name: str, obj_name: str, *, once: bool,
                 deadline: float | None, cancel: threading.Event | None) -> None:
        self.backend = backend
        self.me = backend.identity
        self.name = name
        self.obj_name = obj_name
        self.once = once
        self.deadline = deadline
        self.cancel = cancel
        self.timing = backend.timing
        self.claim_sent_at: float | None = None
        self.last_waiter_renewal = 0.0
        self.fresh_at: float | None = None
        """When the latest read or write was sent whose answer had someone else (or
        nobody) holding the lock. A grant found later (a releaser handed it to us) was
        written after that moment, so it is a safe start for our renew deadline: nobody
        can have started timing the grant earlier."""
        self.watcher: _Watcher | None = backend._unpark(obj_name)
        """The stream of the object's changes; this session's last holding's, if it
        released a moment ago (``KubeLockBackend._park``), else opened on the first
        read this acquisition decides on."""

    def giving_up(self) -> bool:
        # A closed session gives up too: nobody would renew what it was granted.
        return self.once or self.backend._closed.is_set() or (
            self.cancel is not None and self.cancel.is_set()) or (
            self.deadline is not None and time.monotonic() >= self.deadline)

    def request_timeout(self) -> float | None:
        """One request's timeout: never past the deadline, so the timeout bounds the
        whole acquire even when the API server accepts connections and never answers."""
        if self.deadline is None:
            return None
        return min(self.timing.request_timeout, max(self.deadline - time.monotonic(), 0.05))

    def expired(self, role: str, identity: str, lease: float) -> bool:
        return self.backend._observer.remaining(self.name, role, identity, lease) <= 0

    def run(self) -> Grant | None:
        try:
            return self._run()
        finally:
            self.drop_watcher()

    def _run(self) -> Grant | None:
        unreachable_since: float | None = None
        delay = 0.01
        read: _Read | None = None
        recent = self.backend._recent(self.obj_name)
        if recent is not None:  # our own release's answer, a moment ago: no read needed
            read, self.fresh_at = recent
        while True:
            try:
                if read is None:
                    sent = time.monotonic()
                    read = self.backend._read_or_create(self.name, self.obj_name,
                                                        timeout=self.request_timeout())
                    self.saw(read.obj, sent)
                unreachable_since = None
                outcome = self.step(read)
                if isinstance(outcome, Grant) or outcome is None:
                    return outcome
                read = outcome
                delay = 0.01
                continue
            except _Conflict:
                read = self.after_conflict(read)
                continue
            except _Gone:
                self.drop_watcher()
                read = None  # re-list: the next read is a list with a fresh resourceVersion
                continue
            except _Transient as error:
                self.drop_watcher()  # it may hang on the same fault: a new one follows the re-read
                now = time.monotonic()
                unreachable_since = unreachable_since or now
                if self.backend._closed.is_set():
                    return None  # our queue entry, if any, expires unrenewed
                if self.once or (self.deadline is not None and now >= self.deadline) or (
                        now - unreachable_since > self.timing.lease_seconds):
                    raise BackendUnavailable(
                        f"Kubernetes API unreachable while acquiring {self.name!r}: {error}"
                    ) from error
                read = None
                delay = min(max(delay * 2, 0.05), self.timing.retry_period)
            pause = delay * random.uniform(0.5, 1.5)  # noqa: S311 - jitter, not crypto
            if self.deadline is not None:
                pause = min(pause, max(self.deadline - time.monotonic(), 0.0))
            time.sleep(pause)

    def saw(self, obj: JSON | None, sent: float) -> None:
        if obj is None or _status(obj).get("holder") != self.me:
            self.fresh_at = sent

    def write(self, read: _Read, status: JSON, label: str) -> _Read:
        """A conditional status write on ``read``; its answer is the next read."""
        sent = time.monotonic()
        assert read.obj is not None
        obj = self.backend._objects.write_status(read.obj, status,
                                                 timeout=self.request_timeout(), label=label)
        self.saw(obj, sent)
        return self._observed(obj)

    def patch(self, read: _Read, ops: list[JSON], label: str) -> _Read:
        """``write``, as a JSON patch (conditional only on its ``test`` operations)."""
        sent = time.monotonic()
        assert read.obj is not None
        obj = self.backend._objects.patch_status(read.obj, ops,
                                                 timeout=self.request_timeout(), label=label)
        self.saw(obj, sent)
        return self._observed(obj)

    def after_conflict(self, read: _Read | None) -> _Read | None:
        """What to decide on after a 409: the write that beat ours, from the watch
        (``_Watcher.newer_than``); without a watch, re-read (None)."""
        if self.watcher is None or read is None or read.obj is None:
            return None
        newer = self.watcher.newer_than(read.obj, self.timing.request_timeout)
        if newer is None:
            if self.watcher.broken:
                self.drop_watcher()
            return None
        return self._observed(newer)

    def ensure_watcher(self, read: _Read) -> None:
        if self.watcher is None:
            self.watcher = _Watcher(self.backend._objects, self.obj_name, read.watch_from,
                                    connect_timeout=self.request_timeout())

    def drop_watcher(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None

    def step(self, read: _Read) -> Grant | _Read | None:  # noqa: PLR0911 - one per outcome
        """One decision on a fresh read: a grant, None (gave up), or the next read."""
        assert read.obj is not None
        status = _status(read.obj)
        holder = status.get("holder")
        if holder == self.me and (self.claim_sent_at is not None or self.fresh_at is not None):
            # Our claim landed (even if its response was lost), or the releaser handed
            # the lock to us as the first live waiter in the queue.
            return self.granted(read, status)
        waiters = status["waiters"]
        dead = {w["identity"] for w in waiters if w["identity"] != self.me and
                self.expired("waiter", w["identity"], w["leaseDurationSeconds"])}
        mine = next((i for i, w in enumerate(waiters) if w["identity"] == self.me), None)
        ahead = [w for w in waiters[:mine] if w["identity"] not in dead]
        free = not holder or holder == self.me or self.expired(
            "holder", holder, int(status.get("leaseDurationSeconds") or 1))
        if free and not ahead and not self.backend._closed.is_set():
            self.claim_sent_at = time.monotonic()
            obj = self.backend._objects.write_status(
                read.obj, _claimed(status, self.me, self.timing.lease_seconds, dead),
                timeout=self.request_timeout(), label="claim")
            return self.backend._grant(self.name, self.obj_name, obj, self.claim_sent_at,
                                       self.keep_watcher())
        if self.giving_up():
            if mine is None:
                return None
            # Leave no queue slot behind (a conflict re-reads and comes back here).
            self.backend._objects.write_status(read.obj, _dequeued(status, self.me),
                                               timeout=self.request_timeout(), label="dequeue")
            return None
        # Watch from the read we decide on, before writing: no change after it is missed,
        # and a 409 on the write below is answered by the watch, not by a re-read.
        self.ensure_watcher(read)
        now = time.monotonic()
        stored = "waiters" in (read.obj.get("status") or {})
        if mine is None:
            renewals = self.backend._next_renewal()
            written = self.patch(read, _enqueue_patch(
                status, self.me, self.timing.lease_seconds, renewals), "enqueue") if stored \
                else self.write(read, _enqueued(status, self.me, self.timing.lease_seconds,
                                                dead, renewals), "enqueue")
            self.last_waiter_renewal = now
            return written
        if now - self.last_waiter_renewal >= self.timing.waiter_renew_period:
            renewals = self.backend._next_renewal()
            written = self.patch(read, _waiter_renew_patch(status, self.me, renewals),
                                 "waiter-renew") if stored else self.write(
                read, _waiter_renewed(status, self.me, renewals), "waiter-renew")
            self.last_waiter_renewal = now
            return written
        return self.wait(read, status, holder, ahead)

    def granted(self, read: _Read, status: JSON) -> Grant:
        assert read.obj is not None
        sent_at = min(t for t in (self.claim_sent_at, self.fresh_at) if t is not None)
        if time.monotonic() - sent_at > self.timing.renew_deadline / 2:
            # Handed to us long after our last fresh look: renew once before relying on
            # it, so the renew deadline starts from a write of our own.
            sent = time.monotonic()
            obj = self.backend._objects.patch_status(read.obj, _holder_renew_patch(status),
                                                     timeout=self.request_timeout(),
                                                     label="confirm")
            return self.backend._grant(self.name, self.obj_name, obj, sent, self.keep_watcher())
        return self.backend._grant(self.name, self.obj_name, read.obj, sent_at,
                                   self.keep_watcher())

    def keep_watcher(self) -> _Watcher | None:
        """The open watch, handed over to the holding (see ``_Held.watcher``)."""
        watcher, self.watcher = self.watcher, None
        return watcher

    def _observed(self, obj: JSON) -> _Read:
        self.backend._observer.observe(self.name, _status(obj))
        return _Read(obj, obj["metadata"]["resourceVersion"])

    def wait(self, read: _Read, status: JSON, holder: str | None,
             ahead: list[JSON]) -> _Read:
        """The next change from the watch, or ``read`` again once the next thing we must
        do is due (renew our entry, judge an expiry, the deadline, a cancel check)."""
        assert read.obj is not None
        assert self.watcher is not None
        now = time.monotonic()
        horizons = [self.last_waiter_renewal + self.timing.waiter_renew_period - now, 0.5]
        if self.deadline is not None:
            horizons.append(self.deadline - now)
        observer = self.backend._observer
        if holder:
            horizons.append(observer.remaining(self.name, "holder", holder,
                                               int(status.get("leaseDurationSeconds") or 1)))
        horizons += [observer.remaining(self.name, "waiter", w["identity"],
                                        w["leaseDurationSeconds"]) for w in ahead]
        until = now + max(min(horizons), 0.01)
        while (left := until - time.monotonic()) > 0:
            item = self.watcher.next(left)
            if item is None:
                break
            if isinstance(item, Exception):
                self.drop_watcher()
                raise item
            if _newer(item, read.obj):
                return self._observed(item)
        return read  # nothing new: decide again on what we have (an expiry may be due)


def from_options(options: BackendOptions) -> KubeLockBackend:
    """Build a session from CLI/``open_backend`` options (kubeconfig, namespace, ttl).

    Opening contacts no server (the first request is the first acquire or inspect), so
    ``open_timeout`` has nothing to bound here."""
    Timing.from_ttl(options.ttl)  # a bad ttl is named before credentials are looked for
    try:
        api = api_client(options.kubeconfig, context=options.context)
    except k8s_config.ConfigException as error:
        raise DistlockError(f"no Kubernetes credentials: pass --kubeconfig, set $KUBECONFIG, "
                            f"create ~/.kube/config or run in a pod ({error})") from error
    namespace = options.namespace or default_namespace(options.kubeconfig,
                                                       context=options.context)
    return KubeLockBackend(api, namespace, ttl=options.ttl, identity=options.identity)


def inspect(options: BackendOptions, name: str) -> LockState:
    """``name``'s holder and queue. A session here writes nothing until it acquires, so
    reading through one is already read-only."""
    with from_options(options) as backend:
        return backend.inspect(name)

