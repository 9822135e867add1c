"""EtcdMembership: change an etcd cluster's membership around the StatefulSet's size.

Why a dynamic provider at all: changing ``replicas`` of an etcd StatefulSet only adds or
deletes pods; etcd's membership is stored in etcd itself. A pod that starts without being
a member cannot join, and a pod that is deleted while still a voting member leaves the
cluster one failure closer to losing quorum. So the StatefulSet depends on this resource:
membership changes first, pods follow.

The constraint that shapes scale-up: etcd (3.4 and 3.5) admits a single learner at a
time ("too many learner members in cluster"), and a learner catches up, and can be
promoted, only once its pod runs, which is only after this resource's update returned.
A provider that added every new member itself would wait for pods that cannot exist
yet. So growing by two or more members in one ``pulumi up`` is split between the two
actors that are there at the right moments:

- **this provider decides and authorizes**: it checks the change, writes the *desired*
  peer URLs into etcd itself (key :data:`DESIRED_MEMBERS_KEY`) and adds the first new
  member as a learner, so that member exists before its pod starts;
- **each further new pod adds itself**: finding itself not a member but desired, it adds
  itself as a learner as soon as the learner slot is free, joins, and promotes itself
  once etcd says it has caught up (``scripts/etcd-member.sh``, which already re-added a
  member after data loss). etcd's one-learner rule serializes them, so members still
  join one at a time, and a learner never counts towards quorum, so no step of a
  scale-up (3 -> 5, 5 -> 7, 1 -> 3) can cost quorum.

Where "added before its pod starts" does not hold: every new ordinal after the first
(its pod starts, waits for the slot, then adds itself), and the first as well when the
slot is taken at update time (a previous scale-up still catching up). Those pods wait
without running etcd; nothing joins unannounced.

Why the desired list lives in etcd: the pods read it with the etcdctl they already use
(they mount no service-account token, so the Kubernetes API is not an option), and
changing it touches no pod template (an environment variable would restart every
member on each scale). Why pods may not add themselves without it: a pod whose member a
scale-down removed stays alive until the StatefulSet shrinks (or forever, if that update
fails); it would add itself back behind ``pulumi up``'s back. So the list is written
*before* any removal, and a pod that is not on it only waits. The key needs no
protection beyond etcd's own: it only lets pods the StatefulSet already runs join, and a
client that can write to etcd can do worse than edit it.

Rejected alternative: a second resource after the StatefulSet that adds the remaining
members. pulumi-kubernetes waits for every StatefulSet pod to be ready, which a pod that
is not yet a member never is, so it would need ``skipAwait`` (losing the rollout check),
and a scale-up interrupted halfway would heal only at the next ``pulumi up``.

What it does, in the order ``pulumi up`` calls it:

- **create**: nothing on the wire. On the first deployment there is no cluster yet (the
  StatefulSet is created after us); the members bootstrap themselves with
  ``initial-cluster-state new``. The bootstrap member list is recorded in the outputs and
  never changes afterwards, so later scaling does not touch the pod template.
- **update**: write the desired peer URLs; then, scaling down, ``member remove`` the
  highest ordinals one at a time, each only if the remaining started voting members
  still form a quorum of the smaller cluster (etcd's strict reconfiguration check, on by
  default, refuses the same from its live view; both refusals name the member and the
  numbers, and the desired list is put back to the members actually left). Then remove
  learners nobody wants (an interrupted run, a pod that added itself while a scale-down
  raced it: they would hold the learner slot forever), promote learners that have
  caught up, and, scaling up, add the lowest new ordinal as a learner if the slot is
  free. Every step is idempotent: re-running an interrupted update continues it.
- **a new pod that never runs** (unschedulable, image pull failure, or dead before its
  promotion): its learner has no vote, so it costs nothing but the slot. The pods
  waiting for the slot log who holds it and why, and once it has not started, or not
  answered, for ``MEMBER_STALE_LEARNER_SECONDS`` (below the start-up probe's budget),
  remove it and take the slot; the stuck pod adds itself back when it does run. A
  learner that answers is catching up and is waited for, however slow: evicting it
  could make two slow learners evict each other forever. ``pulumi up`` itself reports
  the pod that never became ready (the StatefulSet await).
- **lost data dir**: not handled here but by the member's own pod (remove its old ID,
  re-add itself as a learner, promote itself): only the pod can see that its volume is
  empty, and it must not crash-loop until someone runs ``pulumi up``.
- **delete**: nothing. Destroying the component deletes the StatefulSet; removing
  members one by one on the way down would only risk quorum for no benefit.

The provider talks to etcd through its v3 JSON gateway (``/v3/cluster/member/*``,
``/v3/kv/put``) with urllib: no client library, no module-level connections (the
provider object is pickled into state and unpickled in the ``python -m pulumi.dynamic``
process), and every number from the engine is treated as possibly a float.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pulumi
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    Resource,
    ResourceProvider,
    UpdateResult,
)

from components._check import Checker, has_unknowns, is_url

_DEFAULT_TIMEOUT_SECONDS = 120
_MAX_TIMEOUT_SECONDS = 86400
# Where the desired peer URLs live in etcd (comma-separated); the pods read it through
# MEMBER_DESIRED_KEY. Outside any prefix a lock user would pick.
DESIRED_MEMBERS_KEY = "mysql-cluster.io/etcd-membership/desired-peer-urls"
# etcd rejects "member add" until every voter has been connected for 5 s
# ("etcdserver: unhealthy cluster"); right after a restart that is worth waiting out.
_RETRYABLE = ("unhealthy cluster", "not enough started members", "leader changed",
              "no leader", "timed out", "Connection refused")


# etcd's strict reconfiguration check, from its live view of which members are connected.
_QUORUM_REFUSALS = ("unhealthy cluster", "not enough started members")
# A joining pod took etcd's single learner slot between our member list and our add.
_SLOT_TAKEN = "too many learner members"
# The member's own pod added itself between our list and our add (etcd says one or the
# other, depending on the version and on which check sees the racing add first).
_ADDED_BY_POD = ("peerURL exists", "Peer URLs already exists", "member ID already exist")
# Someone (a waiting pod) removed the member between our list and our remove.
_GONE = "member not found"


class MembershipError(RuntimeError):
    """A membership change was refused or failed; the message names member and numbers."""


@dataclass(frozen=True)
class _Member:
    """One entry of etcd's member list."""

    id: str
    name: str
    peer_urls: tuple[str, ...]
    is_learner: bool

    @property
    def started(self) -> bool:
        # etcd fills in the name when the member first publishes itself.
        return bool(self.name)


def _quorum(voters: int) -> int:
    return voters // 2 + 1


def _bootstrap_cluster(members: Sequence[Mapping[str, str]]) -> str:
    return ",".join(f"{m['name']}={m['peer_url']}" for m in members)


class _Gateway:
    """etcd's v3 JSON gateway over the first client endpoint that answers."""

    def __init__(self, endpoints: Sequence[str], *, timeout: float,
                 tls: Mapping[str, str | None]) -> None:
        self.endpoints = list(endpoints)
        self.timeout = timeout
        self.context: ssl.SSLContext | None = None
        if any(urlsplit(e).scheme == "https" for e in self.endpoints):
            self.context = ssl.create_default_context(cafile=tls.get("ca_file") or None)
            if tls.get("cert_file"):
                self.context.load_cert_chain(str(tls["cert_file"]), tls.get("key_file") or None)

    def post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        errors: list[str] = []
        for endpoint in self.endpoints:
            # Check() admits only http(s) endpoints.
            request = urllib.request.Request(  # noqa: S310
                f"{endpoint.rstrip('/')}{path}", data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"}, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout,  # noqa: S310
                                            context=self.context) as response:
                    result: dict[str, Any] = json.loads(response.read() or b"{}")
                    return result
            except urllib.error.HTTPError as error:
                # etcd answered: its error is authoritative, another endpoint would agree.
                detail = error.read().decode(errors="replace")
                try:
                    message = str(json.loads(detail).get("error") or detail)
                except json.JSONDecodeError:
                    message = detail
                raise MembershipError(f"etcd refused {path}: {message}") from None
            except (OSError, ValueError) as error:
                errors.append(f"{endpoint}: {error}")
        raise MembershipError(f"no etcd endpoint answered {path}: {'; '.join(errors)}")

    def members(self) -> list[_Member]:
        answer = self.post("/v3/cluster/member/list", {})
        return [_Member(id=str(m["ID"]), name=str(m.get("name", "")),
                        peer_urls=tuple(m.get("peerURLs", ())),
                        is_learner=bool(m.get("isLearner", False)))
                for m in answer.get("members", [])]

    def add_learner(self, peer_url: str) -> None:
        self.post("/v3/cluster/member/add", {"peerURLs": [peer_url], "isLearner": True})

    def remove(self, member_id: str) -> None:
        self.post("/v3/cluster/member/remove", {"ID": member_id})

    def promote(self, member_id: str) -> None:
        self.post("/v3/cluster/member/promote", {"ID": member_id})

    def get(self, key: str) -> str | None:
        answer = self.post("/v3/kv/range", {"key": base64.b64encode(key.encode()).decode()})
        kvs = answer.get("kvs") or []
        return base64.b64decode(kvs[0].get("value", "")).decode() if kvs else None

    def put(self, key: str, value: str) -> None:
        self.post("/v3/kv/put", {"key": base64.b64encode(key.encode()).decode(),
                                 "value": base64.b64encode(value.encode()).decode()})


def _retrying(action: str, deadline: float, step: Any) -> Any:
    """Run ``step`` until it succeeds, retrying only etcd's transient refusals."""
    while True:
        try:
            return step()
        except MembershipError as error:
            if time.monotonic() >= deadline or not any(r in str(error) for r in _RETRYABLE):
                raise MembershipError(f"{action}: {error}") from None
        time.sleep(0.5)


def _find(members: Sequence[_Member], peer_url: str) -> _Member | None:
    return next((m for m in members if peer_url in m.peer_urls), None)


def _try_promote_learners(gateway: _Gateway, members: Sequence[_Member]) -> None:
    for member in members:
        if member.is_learner and member.started:
            # Refused while it is not caught up: its pod keeps trying, so does the next update.
            with contextlib.suppress(MembershipError):
                gateway.promote(member.id)


def _check_members(check: Checker, value: object) -> list[dict[str, str]]:
    members: list[dict[str, str]] = []
    entries = check.sequence("members", value, "{name, peer_url}", non_empty=True)
    for index, entry in enumerate(entries):
        name = entry.get("name") if isinstance(entry, Mapping) else None
        url = entry.get("peer_url") if isinstance(entry, Mapping) else None
        if has_unknowns(entry):
            check.unknown = True
            continue
        if not isinstance(name, str) or not name or not isinstance(url, str) or \
                not is_url(url, port=True):
            check.fail("members", f"entry {index} must have a name and a peer_url such as "
                       "http://etcd-0.etcd-peer.ns.svc.cluster.local:2380")
            continue
        members.append({"name": name, "peer_url": url})
    urls = [m["peer_url"] for m in members]
    if len(set(urls)) != len(urls):
        check.fail("members", "peer URLs must be unique")
    return members


class EtcdMembershipProvider(ResourceProvider):
    """See the module docstring; stateless, so it pickles by reference."""

    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        check = Checker()
        members = _check_members(check, news.get("members"))
        for endpoint in check.sequence("endpoints", news.get("endpoints"), "client URLs",
                                       non_empty=True):
            # Named as a whole: the value in the message says which one.
            check.url("endpoints", endpoint,
                      what="a client URL such as http://etcd-client.ns.svc:2379")
        timeout = check.integer("timeout_seconds",
                                news.get("timeout_seconds", _DEFAULT_TIMEOUT_SECONDS),
                                minimum=1, maximum=_MAX_TIMEOUT_SECONDS)
        old_members = olds.get("members") if olds else None
        if isinstance(old_members, list) and members and not check.failures:
            check.failures.extend(_check_transition(old_members, members))
        if check.failures or check.unknown:
            return CheckResult(news, check.failures)
        return CheckResult({**news, "members": members, "timeout_seconds": timeout}, [])

    def create(self, props: dict[str, Any]) -> CreateResult:
        # Recorded from the members, whatever the program suggested: this *is* the bootstrap.
        bootstrap = _bootstrap_cluster(props["members"])
        resource_id = "etcd-" + hashlib.sha256(bootstrap.encode()).hexdigest()[:16]
        return CreateResult(resource_id, {**props, "bootstrap_cluster": bootstrap})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        keys = ("members", "endpoints", "timeout_seconds", "tls")
        changed = [k for k in keys if olds.get(k) != news.get(k)]
        # A refresh that found the live membership differing (a member removed by hand, a
        # learner stuck) recorded it in ``drift``: the next up must repair it.
        return DiffResult(changes=bool(changed or olds.get("drift")), replaces=[],
                          delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        old_members: list[dict[str, str]] = list(olds.get("members", []))
        new_members: list[dict[str, str]] = list(news["members"])
        problems = _check_transition(old_members, new_members)
        if problems:
            raise MembershipError("; ".join(p.reason for p in problems))
        timeout = float(news.get("timeout_seconds", _DEFAULT_TIMEOUT_SECONDS))
        deadline = time.monotonic() + timeout
        gateway = _Gateway(news["endpoints"], timeout=min(timeout, 10.0),
                           tls=news.get("tls") or {})
        desired = [m["peer_url"] for m in new_members]
        if len(new_members) < len(old_members):
            # Every refusal the member list can tell, before the first write.
            _check_scale_down(gateway.members(), old_members, new_members)
        # Before any removal: a removed member's pod must never find itself wanted.
        _publish_desired(gateway, desired, deadline)
        if len(new_members) < len(old_members):
            _scale_down(gateway, old_members, new_members, deadline)
        _drop_unwanted_learners(gateway, desired, deadline)
        _try_promote_learners(gateway, gateway.members())
        _add_first_missing(gateway, new_members, deadline)
        # Members whose pods already run must end as started voting members (a member
        # removed by hand is re-added above and its pod rejoins); the new ones join after
        # this returns, and the StatefulSet await waits for them (a learner is not Ready).
        running = new_members[:min(len(old_members), len(new_members))]
        observed = _wait_converged(gateway, running, new_members, deadline)
        bootstrap = olds.get("bootstrap_cluster") or _bootstrap_cluster(old_members or new_members)
        return UpdateResult({**news, "bootstrap_cluster": bootstrap, **observed})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        timeout = float(props.get("timeout_seconds", _DEFAULT_TIMEOUT_SECONDS))
        gateway = _Gateway(props.get("endpoints") or [], timeout=min(timeout, 10.0),
                           tls=props.get("tls") or {})
        members: list[dict[str, str]] = list(props.get("members") or [])
        # A leader change right after a member left is transient: retried within the
        # gateway's timeout like every other step, so refresh does not miss real drift.
        deadline = time.monotonic() + min(timeout, 10.0)
        try:
            observed = _retrying("reading the member list", deadline,
                                 lambda: _observe(gateway, members, members))
        except MembershipError as error:
            # Not drift: an up must still be able to fix the pods that make etcd
            # unreachable (the StatefulSet depends on this resource), and the
            # StatefulSet await reports them. Recorded so refresh shows it.
            observed = {"live_members": None, "drift": [], "pending": [],
                        "observation_error": str(error)}
        return ReadResult(id_, {**props, **observed})

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        return None


def _check_transition(old: Sequence[Mapping[str, str]],
                      new: Sequence[Mapping[str, str]]) -> list[CheckFailure]:
    # Any number of members up or down is fine: etcd's one-learner rule and the per-member
    # quorum checks keep each step safe (module docstring). Only identities are fixed.
    failures: list[CheckFailure] = []
    for ordinal in range(min(len(old), len(new))):
        if old[ordinal].get("peer_url") != new[ordinal].get("peer_url"):
            failures.append(CheckFailure(
                "members", f"member {ordinal} would change its peer URL from "
                f"{old[ordinal].get('peer_url')} to {new[ordinal].get('peer_url')}; a running "
                "member cannot move (keep the name and namespace, or build a new cluster)"))
    return failures


def _describe(members: Sequence[_Member]) -> list[dict[str, Any]]:
    return [{"id": m.id, "name": m.name, "peer_urls": list(m.peer_urls),
             "is_learner": m.is_learner, "started": m.started} for m in members]


def _member_drift(listed: Sequence[_Member], member: Mapping[str, str]) -> str | None:
    """What keeps ``member`` from being a started voting member, or None."""
    found = _find(listed, member["peer_url"])
    label = f"{member['name']} ({member['peer_url']})"
    if found is None:
        return f"{label} is not a member of the cluster"
    if not found.started:
        return f"{label} was added ({found.id}) but has not started"
    if found.is_learner:
        return f"{label} is a learner ({found.id}), not a voting member"
    return None


def _observe(gateway: _Gateway, verified: Sequence[Mapping[str, str]],
             desired: Sequence[Mapping[str, str]]) -> dict[str, Any]:
    """The live membership against the desired one: ``drift`` for what must already hold
    (``verified``), ``pending`` for new members still joining, never both."""
    listed = gateway.members()
    urls = [m["peer_url"] for m in desired]
    drift: list[str] = []
    pending: list[str] = []
    for member in desired:
        problem = _member_drift(listed, member)
        if problem:
            (drift if member in verified else pending).append(problem)
    for entry in listed:
        if not set(entry.peer_urls) & set(urls):
            drift.append(f"{entry.name or 'unstarted member'} ({','.join(entry.peer_urls)}, "
                         f"{entry.id}) is a member but not a desired one")
    recorded = gateway.get(DESIRED_MEMBERS_KEY)
    if recorded != ",".join(urls):
        drift.append(f"{DESIRED_MEMBERS_KEY} holds {recorded!r}, not the desired peer URLs")
    return {"live_members": _describe(listed), "drift": drift, "pending": pending,
            "observation_error": None}


def _wait_converged(gateway: _Gateway, running: Sequence[Mapping[str, str]],
                    desired: Sequence[Mapping[str, str]], deadline: float) -> dict[str, Any]:
    """Wait until the observation shows no drift, promoting caught-up learners and taking
    a freed learner slot meanwhile; fail at the deadline naming what is not converged."""
    while True:
        observed: dict[str, Any] = _retrying("reading the member list", deadline,
                                             lambda: _observe(gateway, running, desired))
        if not observed["drift"]:
            return observed
        if time.monotonic() >= deadline:
            raise MembershipError("etcd membership did not converge within the timeout: "
                                  + "; ".join(observed["drift"]))
        members = gateway.members()
        _try_promote_learners(gateway, members)
        _add_first_missing(gateway, desired, deadline)
        time.sleep(0.5)


def _publish_desired(gateway: _Gateway, peer_urls: Sequence[str], deadline: float) -> None:
    _retrying("recording the desired members in etcd", deadline,
              lambda: gateway.put(DESIRED_MEMBERS_KEY, ",".join(peer_urls)))


def _scale_down(gateway: _Gateway, old: Sequence[Mapping[str, str]],
                new: Sequence[Mapping[str, str]], deadline: float) -> None:
    try:
        for ordinal in reversed(range(len(new), len(old))):
            _remove(gateway, old[ordinal], deadline)
    except MembershipError:
        # The members a refusal left in place are still voting members: each must stay
        # wanted, or its pod would not re-add itself after losing its data dir.
        with contextlib.suppress(MembershipError):
            listed = gateway.members()
            kept = [m["peer_url"] for m in old[len(new):] if _find(listed, m["peer_url"])]
            _publish_desired(gateway, [m["peer_url"] for m in new] + kept, deadline)
        raise


def _removal_refusal(members: Sequence[_Member], member: _Member, name: str) -> str | None:
    """Why removing ``member`` from ``members`` would lose quorum, or None."""
    voters = [m for m in members if not m.is_learner]
    remaining_voters = [m for m in voters if m.id != member.id]
    started_remaining = [m for m in remaining_voters if m.started]
    if not remaining_voters:
        return f"refusing to remove {name}: it is the last voting member"
    needed = _quorum(len(remaining_voters))
    if len(started_remaining) < needed:
        return (f"refusing to remove {name}: {len(remaining_voters)} voting members would "
                f"remain, which need {needed} for quorum, but only {len(started_remaining)} "
                "of them have started")
    return None


def _check_scale_down(members: Sequence[_Member], old: Sequence[Mapping[str, str]],
                      new: Sequence[Mapping[str, str]]) -> None:
    """Play every removal of the scale-down on the member list, highest first, and refuse
    before anything is written if one of them would lose quorum."""
    left = list(members)
    for ordinal in reversed(range(len(new), len(old))):
        member = _find(left, old[ordinal]["peer_url"])
        if member is None:
            continue
        refusal = _removal_refusal(left, member, old[ordinal]["name"])
        if refusal:
            raise MembershipError(f"{refusal}; nothing was changed")
        left.remove(member)


def _remove(gateway: _Gateway, target: Mapping[str, str], deadline: float) -> None:
    members = gateway.members()
    member = _find(members, target["peer_url"])
    if member is None:
        return  # already removed by an earlier, interrupted run
    refusal = _removal_refusal(members, member, target["name"])
    if refusal:
        raise MembershipError(refusal)
    try:
        _retrying(f"removing member {target['name']} ({member.id})", deadline,
                  lambda: gateway.remove(member.id))
    except MembershipError as error:
        if not any(r in str(error) for r in _QUORUM_REFUSALS):
            raise
        raise MembershipError(
            f"refusing to remove {target['name']}: etcd reports that the members left would "
            "not keep a quorum (some voting members are down or not connected); bring them "
            f"back first. {error}") from None


def _drop_unwanted_learners(gateway: _Gateway, desired: Sequence[str],
                            deadline: float) -> None:
    """Remove learners that are not desired: they would hold etcd's single learner slot
    forever. A learner has no vote, so this never costs quorum."""
    for member in gateway.members():
        if member.is_learner and not set(member.peer_urls) & set(desired):
            try:
                _retrying(f"removing unwanted learner {member.name or member.peer_urls[0]}",
                          deadline, lambda m=member: gateway.remove(m.id))
            except MembershipError as error:
                if _GONE not in str(error):
                    raise


def _add_first_missing(gateway: _Gateway, desired: Sequence[Mapping[str, str]],
                       deadline: float) -> None:
    """Add the lowest desired member that is not a member (a new ordinal, or one removed by
    hand) as a learner, if the learner slot is free; the others add themselves, one
    learner at a time."""
    members = gateway.members()
    missing = [m for m in desired if _find(members, m["peer_url"]) is None]
    if not missing or any(m.is_learner for m in members):
        return
    target = missing[0]
    try:
        _retrying(f"adding member {target['name']} as a learner", deadline,
                  lambda: gateway.add_learner(target["peer_url"]))
    except MembershipError as error:
        if not any(r in str(error) for r in (_SLOT_TAKEN, *_ADDED_BY_POD)):
            raise


@dataclass(frozen=True)
class EtcdMembershipArgs:
    """``members``: name and peer URL of every ordinal, lowest first. ``endpoints``: client
    URLs reachable from where ``pulumi up`` runs. ``tls``: file paths on that machine."""

    members: pulumi.Input[Sequence[Mapping[str, str]]]
    endpoints: pulumi.Input[Sequence[str]]
    timeout_seconds: int = _DEFAULT_TIMEOUT_SECONDS
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None


class EtcdMembership(Resource):
    """The dynamic resource; its ``bootstrap_cluster`` output feeds the pods' environment."""

    bootstrap_cluster: pulumi.Output[str]
    members: pulumi.Output[list[dict[str, str]]]

    def __init__(self, name: str, args: EtcdMembershipArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        tls = {"ca_file": args.tls_ca_file, "cert_file": args.tls_cert_file,
               "key_file": args.tls_key_file}
        super().__init__(
            EtcdMembershipProvider(), name,
            {"members": args.members, "endpoints": args.endpoints,
             "timeout_seconds": args.timeout_seconds,
             "tls": {k: v for k, v in tls.items() if v} or None,
             # What create() will record; later updates keep the recorded one. Passing it
             # also gives mocks (which echo inputs) the value a first deployment gets.
             "bootstrap_cluster": pulumi.Output.from_input(args.members).apply(
                 _bootstrap_cluster)},
            opts)


__all__ = ["EtcdMembership", "EtcdMembershipArgs", "EtcdMembershipProvider", "MembershipError"]
