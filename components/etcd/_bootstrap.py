"""EtcdBootstrap: the etcd cluster's first member list, recorded once, without membership.

Why it exists: ``--initial-cluster`` (``MEMBER_BOOTSTRAP_CLUSTER``) tells a pod with an
empty data dir whether it may *bootstrap* a cluster when no member answers. With
EtcdMembership that list is recorded in its state at creation; with
``etcd.membership.enabled: false`` it used to be rebuilt from the current ``replicas``.
Scaling 1 -> 3 then (a) changed the pod template, restarting etcd-0, and (b) put etcd-1
and etcd-2 into the bootstrap list: if etcd-0 did not answer at that moment (it was
restarting because of (a)), the two new pods, a quorum of the new list, bootstrapped a
*second* cluster behind the same client Service. Split brain.

The design: the bootstrap list is fixed at first creation in both modes. Without
membership this resource records it (nothing on the wire, ever: it only keeps state), so
a ``replicas`` change touches nothing in the pod template but ``replicas``, and a new
pod, never being in the first bootstrap, never bootstraps; it waits until it is a member
or desired (``scripts/etcd-member.sh``), which is the manual scaling docs/etcd.md
describes. Scaling stays possible rather than refused, because the hand-driven path is
documented and safe once the list no longer moves.

Rejected: refusing a ``replicas`` change. The program cannot see the previous size
without state anyway, so the state is needed either way, and refusing would break the
documented manual scale-up. Rejected: a script-only guard (never bootstrap while another
initial member might run): a pod cannot tell a first three-member bootstrap, where all
three start empty at once, from a scale-up, unless the list itself is stable.

A stack deployed before this resource existed records, at its first ``up``, the list its
pods already have (the one computed from the current ``replicas``), so upgrading changes
no pod template.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.dynamic import (
    CheckResult,
    CreateResult,
    DiffResult,
    Resource,
    ResourceProvider,
    UpdateResult,
)

from components._check import Checker
from components.etcd._membership import _bootstrap_cluster as bootstrap_cluster
from components.etcd._membership import _check_members as check_members
from components.etcd._membership import _check_transition as check_transition


class EtcdBootstrapProvider(ResourceProvider):
    """Stateless (pickles by reference); the resource's state is the recorded list."""

    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        check = Checker()
        members = check_members(check, news.get("members"))
        old_members = olds.get("members") if olds else None
        if isinstance(old_members, list) and members and not check.failures:
            # An ordinal keeps its peer URL: the recorded list names them.
            check.failures.extend(check_transition(old_members, members))
        if check.failures or check.unknown:
            return CheckResult(news, check.failures)
        return CheckResult({**news, "members": members}, [])

    def create(self, props: dict[str, Any]) -> CreateResult:
        recorded = bootstrap_cluster(props["members"])
        return CreateResult("etcd-bootstrap-" + str(len(props["members"])),
                            {**props, "bootstrap_cluster": recorded})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        # Never a replacement: a new resource would record the current size as the bootstrap.
        return DiffResult(changes=olds.get("members") != news.get("members"), replaces=[],
                          delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        # The current members are kept for the record; the bootstrap list never moves.
        recorded = olds.get("bootstrap_cluster") or bootstrap_cluster(olds["members"])
        return UpdateResult({**news, "bootstrap_cluster": recorded})


@dataclass(frozen=True)
class EtcdBootstrapArgs:
    """``members``: name and peer URL of every ordinal, lowest first."""

    members: pulumi.Input[Sequence[Mapping[str, str]]]


class EtcdBootstrap(Resource):
    """The dynamic resource; its ``bootstrap_cluster`` output feeds the pods' environment."""

    bootstrap_cluster: pulumi.Output[str]

    def __init__(self, name: str, args: EtcdBootstrapArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(
            EtcdBootstrapProvider(), name,
            {"members": args.members,
             # What create() records; updates keep it. Mocks (which echo inputs) see it too.
             "bootstrap_cluster": pulumi.Output.from_input(args.members).apply(
                 bootstrap_cluster)},
            opts)


__all__ = ["EtcdBootstrap", "EtcdBootstrapArgs", "EtcdBootstrapProvider"]
