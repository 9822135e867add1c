"""Policy: Checkov's Kubernetes checks over every object the program creates, per stack.

The objects are the ones ``pulumi up`` would send, taken from a run of the real program
under mocks with the real ``Pulumi.<stack>.yaml`` (tests/support/objects.py: Kubernetes
resources and manifests handed to dynamic providers, such as the Lock CRD), so a component
change that weakens a pod (root user, writable image, no limits, no probe, an object in
the default namespace) fails here before it reaches a cluster.

Every Checkov finding must be either fixed or listed in :data:`ALLOWED`, each entry with
the reason the check does not fit this workload. The list stays short and honest: an
entry that no longer matches anything fails the run, so it is removed when it stops
being needed. Findings that *should* be fixed but belong to another component's owner
are listed in :data:`TO_FIX` with the exact change; each is a strict xfail, so the run
stays green while the defect is visible in every test summary, and fixing the defect
makes the entry fail until it is deleted.

Checkov evaluates container-level checks per object, so one exempt container (a sidecar)
could hide the same problem in another. Where an allowance covers only some containers,
:data:`_CONTAINER_RULES` re-checks every other container of the object directly.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support import checkov
from tests.support.objects import stack_objects

STACKS = ("dev", "prod", "prod-tls-metrics", "prod-etcd-store")
# Kinds that live outside namespaces; everything else must name its namespace.
CLUSTER_SCOPED = frozenset({
    "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "Namespace",
    "PriorityClass", "StorageClass", "PersistentVolume", "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration", "APIService",
})
WORKLOADS = frozenset({"StatefulSet", "Deployment", "DaemonSet", "ReplicaSet", "Job", "CronJob",
                       "Pod"})

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Allowance:
    """An accepted Checkov finding: which check, on which objects, and why it does not apply."""

    check_id: str
    # Matched against Checkov's resource id "<Kind>.<namespace>.<name>".
    resource: str
    why: str
    # For container-level checks: the only containers the allowance covers (None: all).
    containers: frozenset[str] | None = None

    def matches(self, finding: checkov.Finding) -> bool:
        return finding.check_id == self.check_id and re.fullmatch(self.resource,
                                                                  finding.resource) is not None


@dataclass(frozen=True)
class PendingFix:
    """A finding that should be fixed in another owner's component (see module doc)."""

    check_id: str
    resource: str
    owner: str
    fix: str

    def matches(self, finding: checkov.Finding) -> bool:
        return finding.check_id == self.check_id and re.fullmatch(self.resource,
                                                                  finding.resource) is not None


_ANY_WORKLOAD = r"(StatefulSet|Deployment|DaemonSet|Job|CronJob)\.[^.]+\.[^.]+"

ALLOWED: tuple[Allowance, ...] = (
    Allowance(
        "CKV_K8S_43", _ANY_WORKLOAD,
        why="Default images are exact patch-release tags and config refuses `latest` and "
            "tagless references. A digest differs per registry mirror and platform, so it "
            "belongs in a stack's config (images.server: repo@sha256:...), which config "
            "accepts, not in defaults shared by every user."),
    Allowance(
        "CKV_K8S_15", _ANY_WORKLOAD,
        why="imagePullPolicy Always only matters for re-pushed tags; ours are exact releases. "
            "With exact tags, IfNotPresent (the default) lets a database or etcd pod restart "
            "while the registry is unreachable, which Always would turn into an outage."),
    Allowance(
        "CKV_K8S_11", _ANY_WORKLOAD,
        why="No CPU limit by default: CFS quota throttling stalls MySQL replication threads "
            "and etcd heartbeats (spurious leader elections) even on idle nodes. CPU "
            "requests reserve the share; memory limits are set (CKV_K8S_13 passes). A stack "
            "that wants limits sets resources.limits.cpu, which config accepts."),
    Allowance(
        "CKV_K8S_40", _ANY_WORKLOAD,
        why="The official mysql/mariadb images create their server user as uid/gid 999 and "
            "own their runtime paths with it; the pod runs as that non-root user with "
            "fsGroup, no privilege escalation, all capabilities dropped and a read-only "
            "root filesystem, which is what protects the host; a UID above 10000 would add "
            "a chown of the data volume on every start and nothing else."),
    Allowance(
        "CKV_K8S_9", r"StatefulSet\.[^.]+\.[^.]+",
        containers=frozenset({"backup", "exporter", "tls-reload"}),
        why="The backup sidecar only serves clone streams; the exporter and the TLS watcher "
            "only observe. A pod's readiness is its database's readiness: a readiness probe "
            "on a sidecar would take a healthy primary out of its Service whenever the clone "
            "server, the exporter or the watcher restarts (each has a liveness probe). The "
            "mysql container's readiness probe is re-checked below."),
)

TO_FIX: tuple[PendingFix, ...] = ()


def _containers(manifest: Mapping[str, Any]) -> list[dict[str, Any]]:
    spec = manifest.get("spec") or {}
    if manifest["kind"] == "CronJob":
        spec = ((spec.get("jobTemplate") or {}).get("spec") or {})
    pod = spec if manifest["kind"] == "Pod" else ((spec.get("template") or {}).get("spec") or {})
    return list(pod.get("containers") or [])


# Container-level re-checks for allowances that exempt only some containers.
_CONTAINER_RULES: dict[str, Callable[[dict[str, Any]], bool]] = {
    "CKV_K8S_8": lambda c: bool(c.get("livenessProbe")),
    "CKV_K8S_9": lambda c: bool(c.get("readinessProbe")),
}


@pytest.fixture(scope="module")
def stack_manifests() -> dict[str, list[Manifest]]:
    return {stack: stack_objects(stack) for stack in STACKS}


@pytest.fixture(scope="module")
def all_reports(stack_manifests: dict[str, list[Manifest]],
                tmp_path_factory: pytest.TempPathFactory) -> dict[str, checkov.Report]:
    """Both stacks and the careless pod below, in one Checkov run."""
    return checkov.scan_groups({**stack_manifests, _CARELESS: [_BAD_POD]},
                                tmp_path_factory.mktemp("checkov"))


@pytest.fixture(scope="module")
def reports(all_reports: dict[str, checkov.Report]) -> dict[str, checkov.Report]:
    return {stack: all_reports[stack] for stack in STACKS}


def _all_findings(reports: Mapping[str, checkov.Report]) -> Iterator[checkov.Finding]:
    for report in reports.values():
        yield from report.failed


@pytest.mark.parametrize("stack", STACKS)
def test_checkov_evaluated_every_object(stack: str, stack_manifests: dict[str, list[Manifest]],
                                        reports: dict[str, checkov.Report]) -> None:
    """Nothing was skipped: every workload and RBAC object was checked, nothing failed to parse."""
    report = reports[stack]
    assert report.parsing_errors == ()
    checked = {checkov.resource_id(m) for m in stack_manifests[stack]
               if m["kind"] in WORKLOADS or m["kind"].endswith(("Role", "RoleBinding"))}
    assert checked, f"stack {stack} creates no workloads: the program did not run"
    assert checked <= report.resources, sorted(checked - report.resources)


@pytest.mark.parametrize("stack", STACKS)
def test_every_finding_is_fixed_or_allowed(stack: str, reports: dict[str, checkov.Report]
                                           ) -> None:
    unexplained = [
        f"{f.check_id} {f.resource}: {f.check_name}" for f in reports[stack].failed
        if not any(a.matches(f) for a in ALLOWED) and not any(p.matches(f) for p in TO_FIX)
    ]
    assert unexplained == []


def test_every_allowance_is_still_needed(reports: dict[str, checkov.Report]) -> None:
    findings = list(_all_findings(reports))
    stale = [f"{a.check_id} {a.resource}" for a in ALLOWED
             if not any(a.matches(f) for f in findings)]
    assert stale == [], "remove allowances that match nothing"


def test_allowances_say_why() -> None:
    reasons = [(a.check_id, a.why) for a in ALLOWED] + [(p.check_id, p.fix) for p in TO_FIX]
    for check_id, reason in reasons:
        assert len(reason) > 40, f"{check_id}: explain the exception"


@pytest.mark.parametrize("stack", STACKS)
def test_partial_allowances_hold_for_every_other_container(
        stack: str, stack_manifests: dict[str, list[Manifest]]) -> None:
    for allowance in ALLOWED:
        if allowance.containers is None:
            continue
        rule = _CONTAINER_RULES[allowance.check_id]
        for manifest in stack_manifests[stack]:
            if re.fullmatch(allowance.resource, checkov.resource_id(manifest)) is None:
                continue
            offenders = [c["name"] for c in _containers(manifest)
                         if c["name"] not in allowance.containers and not rule(c)]
            assert offenders == [], (f"{allowance.check_id} {checkov.resource_id(manifest)}: "
                                     f"containers {offenders} are not covered by the allowance")


@pytest.mark.parametrize("pending", TO_FIX, ids=lambda p: f"{p.check_id}-{p.resource}")
@pytest.mark.xfail(strict=True, reason="known defect in another component; see TO_FIX")
def test_pending_fix(pending: PendingFix, reports: dict[str, checkov.Report]) -> None:
    checked = {r for report in reports.values() for r in report.resources}
    if not any(re.fullmatch(pending.resource, r) for r in checked):
        pytest.skip(f"the program does not create {pending.resource} (yet)")
    still_failing = [f for f in _all_findings(reports) if pending.matches(f)]
    assert still_failing == [], f"{pending.owner}: {pending.fix}"


@pytest.mark.parametrize("stack", STACKS)
def test_nothing_in_the_default_namespace(stack: str,
                                          stack_manifests: dict[str, list[Manifest]]) -> None:
    """Checkov's CKV_K8S_21 covers some kinds; this covers every namespaced object."""
    misplaced = [
        checkov.resource_id(m) for m in stack_manifests[stack]
        if m["kind"] not in CLUSTER_SCOPED
        and (m.get("metadata") or {}).get("namespace") in (None, "", "default")
    ]
    assert misplaced == []


_CARELESS = "careless"
# A pod that breaks every rule this suite exists for: proves Checkov runs, checks what we
# rely on, and that its findings reach the assertions above.
_BAD_POD: Manifest = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "careless"},
    "spec": {
        "selector": {"matchLabels": {"app": "careless"}},
        "template": {
            "metadata": {"labels": {"app": "careless"}},
            "spec": {"containers": [{
                "name": "app", "image": "nginx:latest",
                "securityContext": {"privileged": True, "runAsUser": 0,
                                    "allowPrivilegeEscalation": True},
            }]},
        },
    },
}
_RULES_WE_RELY_ON = {
    "CKV_K8S_8": "liveness probe", "CKV_K8S_9": "readiness probe",
    "CKV_K8S_10": "CPU requests", "CKV_K8S_12": "memory requests",
    "CKV_K8S_13": "memory limits", "CKV_K8S_16": "privileged",
    "CKV_K8S_20": "privilege escalation", "CKV_K8S_21": "default namespace",
    "CKV_K8S_22": "read-only root filesystem", "CKV_K8S_23": "non-root",
}


def test_checkov_catches_a_careless_pod(all_reports: dict[str, checkov.Report]) -> None:
    report = all_reports[_CARELESS]
    failed = {f.check_id for f in report.failed if f.resource == "Deployment.default.careless"}
    missing = {rule: what for rule, what in _RULES_WE_RELY_ON.items() if rule not in failed}
    assert missing == {}
