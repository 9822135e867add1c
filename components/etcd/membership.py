"""EtcdMembership: change an etcd cluster's membership before the StatefulSet changes size.

Why a dynamic provider at all: changing ``replicas`` of an etcd StatefulSet only adds or
deletes pods; etcd's membership is stored in etcd itself. A pod that starts without being
a member cannot join, and a pod that is deleted while still a voting member leaves the
cluster one failure closer to losing quorum. So the StatefulSet depends on this resource:
membership changes first, pods follow.

What it does, in the order ``pulumi up`` calls it:

- **create**: nothing on the wire. On the first deployment there is no cluster yet (the
  StatefulSet is created after us); the members bootstrap themselves with
  ``initial-cluster-state new``. The bootstrap member list is recorded in the outputs and
  never changes afterwards, so later scaling does not touch the pod template.
- **update, scale-up by one**: ``member add`` the next ordinal as a *learner*. A learner
  does not count towards quorum, so a new member that never starts (no node, image pull
  failure) costs nothing; its pod promotes it once etcd says it has caught up
  (``scripts/etcd-member.sh``). etcd allows a single learner at a time, and the learner
  cannot catch up before its pod exists, which exists only after this update returned.
  That is why a change of more than one member upwards is refused in :meth:`check`:
  scale 3 -> 4 -> 5 with one ``pulumi up`` each.
- **update, scale-down**: ``member remove`` of the highest ordinals, one at a time, each
  only if the remaining started voting members still form a quorum of the smaller
  cluster. etcd's own strict reconfiguration check (on by default) refuses the same
  from its live view of which members are connected; both refusals surface as errors
  that name the member and the numbers.
- **lost data dir**: not handled here but by the member's own pod (remove its old ID,
  re-add itself as a learner, promote itself): only the pod can see that its volume is
  empty, and it must not crash-loop until someone runs ``pulumi up``.
- **delete**: nothing. Destroying the component deletes the StatefulSet; removing
  members one by one on the way down would only risk quorum for no benefit.

The provider talks to etcd through its v3 JSON gateway (``/v3/cluster/member/*``) with
urllib: no client library, no module-level connections (the provider object is
pickled into state and unpickled in the ``python -m pulumi.dynamic`` process), and every
number from the engine is treated as possibly a float.
"""

from __future__ import annotations

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

_DEFAULT_TIMEOUT_SECONDS = 120
# etcd rejects "member add" until every voter has been connected for 5 s
# ("etcdserver: unhealthy cluster"); right after a restart that is worth waiting out.
_RETRYABLE = ("unhealthy cluster", "not enough started members", "leader changed",
              "no leader", "timed out", "Connection refused")


# etcd's strict reconfiguration check, from its live view of which members are connected.
_QUORUM_REFUSALS = ("unhealthy cluster", "not enough started members")


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


def _check_members(value: object) -> tuple[list[dict[str, str]], list[CheckFailure]]:
    failures: list[CheckFailure] = []
    members: list[dict[str, str]] = []
    if not isinstance(value, list) or not value:
        return [], [CheckFailure("members", "must be a non-empty list of {name, peer_url}")]
    for index, entry in enumerate(value):
        name = entry.get("name") if isinstance(entry, Mapping) else None
        url = entry.get("peer_url") if isinstance(entry, Mapping) else None
        if not isinstance(name, str) or not name or not isinstance(url, str) or \
                urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).port:
            failures.append(CheckFailure(
                "members", f"entry {index} must have a name and a peer_url such as "
                "http://etcd-0.etcd-peer.ns.svc.cluster.local:2380"))
            continue
        members.append({"name": name, "peer_url": url})
    urls = [m["peer_url"] for m in members]
    if len(set(urls)) != len(urls):
        failures.append(CheckFailure("members", "peer URLs must be unique"))
    return members, failures


class EtcdMembershipProvider(ResourceProvider):
    """See the module docstring; stateless, so it pickles by reference."""

    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        members, failures = _check_members(news.get("members"))
        endpoints = news.get("endpoints")
        if not isinstance(endpoints, list) or not endpoints or not all(
                isinstance(e, str) and urlsplit(e).scheme in ("http", "https") for e in endpoints):
            failures.append(CheckFailure("endpoints", "must be a non-empty list of client URLs "
                                         "such as http://etcd-client.ns.svc:2379"))
        timeout = news.get("timeout_seconds", _DEFAULT_TIMEOUT_SECONDS)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 1:
            failures.append(CheckFailure("timeout_seconds", "must be a positive number"))
            timeout = _DEFAULT_TIMEOUT_SECONDS
        old_members = olds.get("members") if olds else None
        if isinstance(old_members, list) and members and not failures:
            failures.extend(_check_transition(old_members, members))
        inputs = {**news, "members": members, "timeout_seconds": int(timeout)}
        return CheckResult(inputs, failures)

    def create(self, props: dict[str, Any]) -> CreateResult:
        # Recorded from the members, whatever the program suggested: this *is* the bootstrap.
        bootstrap = _bootstrap_cluster(props["members"])
        resource_id = "etcd-" + hashlib.sha256(bootstrap.encode()).hexdigest()[:16]
        return CreateResult(resource_id, {**props, "bootstrap_cluster": bootstrap})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        keys = ("members", "endpoints", "timeout_seconds", "tls")
        changed = [k for k in keys if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=[], delete_before_replace=False)

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
        if len(new_members) < len(old_members):
            for ordinal in reversed(range(len(new_members), len(old_members))):
                _remove(gateway, old_members[ordinal], deadline)
        elif len(new_members) > len(old_members):
            _add(gateway, new_members[-1], deadline)
        else:
            _try_promote_learners(gateway, gateway.members())
        bootstrap = olds.get("bootstrap_cluster") or _bootstrap_cluster(old_members or new_members)
        return UpdateResult({**news, "bootstrap_cluster": bootstrap})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_, props)

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        return None


def _check_transition(old: Sequence[Mapping[str, str]],
                      new: Sequence[Mapping[str, str]]) -> list[CheckFailure]:
    failures: list[CheckFailure] = []
    if len(new) > len(old) + 1:
        failures.append(CheckFailure(
            "members", f"scaling etcd from {len(old)} to {len(new)} members adds "
            f"{len(new) - len(old)} at once; etcd adds one member at a time (a single "
            f"learner must catch up before the next is added): set replicas to "
            f"{len(old) + 1}, run pulumi up, then continue"))
    for ordinal in range(min(len(old), len(new))):
        if old[ordinal].get("peer_url") != new[ordinal].get("peer_url"):
            failures.append(CheckFailure(
                "members", f"member {ordinal} would change its peer URL from "
                f"{old[ordinal].get('peer_url')} to {new[ordinal].get('peer_url')}; a running "
                "member cannot move (keep the name and namespace, or build a new cluster)"))
    return failures


def _remove(gateway: _Gateway, target: Mapping[str, str], deadline: float) -> None:
    members = gateway.members()
    member = _find(members, target["peer_url"])
    if member is None:
        return  # already removed by an earlier, interrupted run
    voters = [m for m in members if not m.is_learner]
    remaining_voters = [m for m in voters if m.id != member.id]
    started_remaining = [m for m in remaining_voters if m.started]
    if not remaining_voters:
        raise MembershipError(f"refusing to remove {target['name']}: it is the last voting "
                              "member")
    needed = _quorum(len(remaining_voters))
    if len(started_remaining) < needed:
        raise MembershipError(
            f"refusing to remove {target['name']}: {len(remaining_voters)} voting members would "
            f"remain, which need {needed} for quorum, but only {len(started_remaining)} of them "
            "have started")
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


def _add(gateway: _Gateway, target: Mapping[str, str], deadline: float) -> None:
    members = gateway.members()
    if _find(members, target["peer_url"]) is not None:
        return  # added by an earlier, interrupted run; its pod joins with it
    _try_promote_learners(gateway, members)
    members = gateway.members()
    learners = [m for m in members if m.is_learner]
    if learners:
        names = ", ".join(m.name or m.peer_urls[0] for m in learners)
        raise MembershipError(
            f"refusing to add {target['name']}: learner {names} has not caught up and been "
            "promoted yet (etcd allows one learner at a time); run pulumi up again shortly")
    unstarted = [m for m in members if not m.started]
    if unstarted:
        raise MembershipError(
            f"refusing to add {target['name']}: member {unstarted[0].peer_urls[0]} was added "
            "but has never started; fix or remove it first")
    _retrying(f"adding member {target['name']} as a learner", deadline,
              lambda: gateway.add_learner(target["peer_url"]))


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
