"""deploy/operator: the Pulumi Kubernetes Operator manifests, checked without a cluster.

What a cluster would reject, or accept and then fail on, is checked here:

- built-in objects against the official Kubernetes schemas (kubernetes-validate, strict:
  unknown fields are errors);
- ``Stack`` objects against the fields of the operator's v2 CRD (``pulumi.com/v1`` Stack,
  ``auto.pulumi.com/v1alpha1`` WorkspaceSpec), read from the operator's own
  operator/config/crd/bases/pulumi.com_stacks.yaml and api/auto/v1alpha1/workspace_types.go;
  the embedded pod template against the PodTemplate schema;
- what the operator needs to run this program: a ServiceAccount bound to
  ``system:auth-delegator`` in the Stack's namespace, a RoleBinding in the stack's own
  namespace, RBAC covering every object the program creates *for that stack* (taken
  from a run of the real program under mocks), including every permission the program
  itself grants in Roles (RBAC lets a subject grant only what it holds), and network
  access to MySQL from the workspace pod where ReplicationInit runs in-cluster;
- the namespaces enforce the restricted Pod Security Standard, so every pod the program
  creates must meet it;
- Checkov's Kubernetes checks pass on the manifests with no exceptions at all.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML ships with kubernetes; no stubs pinned

from components.config import StackConfig, parse
from tests.support import checkov
from tests.support.mocks import PROJECT, load_stack_file
from tests.support.objects import stack_objects
from tests.support.trees import walk

ROOT = Path(__file__).resolve().parents[2]
OPERATOR = ROOT / "deploy" / "operator"
KUBERNETES_VERSION = "1.30"
STACKS = ("dev", "prod")
RBAC_GROUP = "rbac.authorization.k8s.io"
# Every field of the v2 Stack spec (pulumi.com_stacks.yaml, operator v2.x).
STACK_SPEC_FIELDS = frozenset({
    "accessTokenSecret", "backend", "branch", "commit", "config", "configRef",
    "continueResyncOnCommitMatch", "destroyOnFinalize", "driftDetection", "envRefs",
    "envSecrets", "environment", "envs", "expectNoRefreshChanges", "fluxSource", "gitAuth",
    "gitAuthSecret", "prerequisites", "preview", "programRef", "projectRepo", "refresh",
    "repoDir", "resyncFrequencySeconds", "retryMaxBackoffDurationSeconds",
    "retryOnUpdateConflict", "secrets", "secretsProvider", "secretsRef", "serviceAccountName",
    "shallow", "stack", "targetDependents", "targets", "updateTemplate", "useLocalStackOnly",
    "workspaceReclaimPolicy", "workspaceTemplate",
})
DEPRECATED_STACK_FIELDS = frozenset({"accessTokenSecret", "envSecrets", "envs", "gitAuthSecret",
                                     "secrets"})
WORKSPACE_SPEC_FIELDS = frozenset({"serviceAccountName", "securityProfile", "image",
                                   "imagePullPolicy", "git", "flux", "envFrom", "env",
                                   "resources", "podTemplate", "stacks"})
RESOURCE_REF_TYPES = {"Env": "env", "FS": "filesystem", "Secret": "secret", "Literal": "literal"}
# kind -> (API group, resource), for every kind the program may create.
KIND_RESOURCES = {
    "ConfigMap": ("", "configmaps"), "Secret": ("", "secrets"), "Service": ("", "services"),
    "ServiceAccount": ("", "serviceaccounts"),
    "PersistentVolumeClaim": ("", "persistentvolumeclaims"),
    "StatefulSet": ("apps", "statefulsets"), "Deployment": ("apps", "deployments"),
    "CronJob": ("batch", "cronjobs"), "Job": ("batch", "jobs"),
    "PodDisruptionBudget": ("policy", "poddisruptionbudgets"),
    "NetworkPolicy": ("networking.k8s.io", "networkpolicies"),
    "Role": (RBAC_GROUP, "roles"), "RoleBinding": (RBAC_GROUP, "rolebindings"),
    "ClusterRole": (RBAC_GROUP, "clusterroles"),
    "ClusterRoleBinding": (RBAC_GROUP, "clusterrolebindings"),
    "CustomResourceDefinition": ("apiextensions.k8s.io", "customresourcedefinitions"),
}
CLUSTER_SCOPED = frozenset({"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                            "Namespace"})
# What the Kubernetes provider does to an object it manages (server-side apply is a patch).
MANAGE_VERBS = ("get", "create", "patch", "delete")
# The locks provider replaces the CRD (update) when its schema changes.
CRD_VERBS = ("get", "create", "update", "patch", "delete")

_CREDENTIAL = re.compile(r"(?i)(password|passphrase|token|secret|private_key|credential)")

Manifest = dict[str, Any]


def _documents() -> list[tuple[str, Manifest]]:
    found = []
    for path in sorted(OPERATOR.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            if document is not None:
                found.append((path.name, document))
    return found


@pytest.fixture(scope="module")
def documents() -> list[tuple[str, Manifest]]:
    return _documents()


def _of_kind(documents: list[tuple[str, Manifest]], kind: str) -> list[Manifest]:
    return [d for _, d in documents if d["kind"] == kind]


def _stack_object(documents: list[tuple[str, Manifest]], stack: str) -> Manifest:
    found = [d for d in _of_kind(documents, "Stack") if d["spec"]["stack"].split("/")[-1] == stack]
    assert len(found) == 1, f"expected one Stack for {stack}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def stack_configs() -> dict[str, StackConfig]:
    return {stack: parse(load_stack_file(stack), stack=stack, project=PROJECT)
            for stack in STACKS}


@pytest.fixture(scope="module")
def program_objects() -> dict[str, list[Manifest]]:
    return {stack: stack_objects(stack) for stack in STACKS}


# ------------------------------------------------------------------------------ structure


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((OPERATOR / "kustomization.yaml").read_text())
    files = {p.name for p in OPERATOR.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)


def test_builtin_objects_match_the_kubernetes_schema(documents: list[tuple[str, Manifest]]
                                                     ) -> None:
    for file, document in documents:
        if document["kind"] == "Stack":
            continue
        try:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{file}: {document['kind']} {document['metadata'].get('name')}: "
                        f"{error.message}")


def test_no_secret_values_in_the_manifests(documents: list[tuple[str, Manifest]]) -> None:
    """Secrets are created in the cluster (docs/gitops.md); here they are only referenced."""
    assert _of_kind(documents, "Secret") == []
    for file, document in documents:
        for path, node in walk(document):
            # An env var {name, value} whose name says it is a credential.
            if (isinstance(node, dict) and isinstance(node.get("name"), str)
                    and "value" in node and _CREDENTIAL.search(node["name"])):
                pytest.fail(f"{file}: {node['name']} has a literal value at {path}")
        for name, reference in (document.get("spec", {}).get("envRefs") or {}).items():
            assert not (reference["type"] == "Literal" and _CREDENTIAL.search(name)), (
                f"{file}: envRefs.{name} is a literal")


@pytest.mark.parametrize("stack", STACKS)
def test_stack_uses_only_fields_the_operator_knows(stack: str,
                                                   documents: list[tuple[str, Manifest]]
                                                   ) -> None:
    document = _stack_object(documents, stack)
    assert document["apiVersion"] == "pulumi.com/v1"
    spec = document["spec"]
    assert set(spec) <= STACK_SPEC_FIELDS, sorted(set(spec) - STACK_SPEC_FIELDS)
    assert not set(spec) & DEPRECATED_STACK_FIELDS, "use envRefs/gitAuth, not deprecated fields"
    workspace = spec["workspaceTemplate"]["spec"]
    assert set(workspace) <= WORKSPACE_SPEC_FIELDS, sorted(set(workspace) - WORKSPACE_SPEC_FIELDS)
    assert workspace["securityProfile"] in ("restricted", "baseline")
    assert spec.get("workspaceReclaimPolicy", "Retain") in ("Retain", "Delete")
    for reference in [*spec.get("envRefs", {}).values(), spec["gitAuth"]["accessToken"]]:
        field = RESOURCE_REF_TYPES[reference["type"]]
        assert set(reference) == {"type", field}, reference
        if field == "secret":
            assert set(reference["secret"]) == {"name", "key"}, "no cross-namespace secrets"
    for schedule in spec.get("driftDetection", {}).get("schedules", []):
        assert len(schedule["cron"].split()) == 5
    pod_template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "workspace"},
                    "template": workspace["podTemplate"]}
    kubernetes_validate.validate(pod_template, KUBERNETES_VERSION, strict=True)
    assert [c["name"] for c in workspace["podTemplate"]["spec"]["containers"]] == ["pulumi"], (
        "the operator merges the template into its container named `pulumi`")


@pytest.mark.parametrize("stack", STACKS)
def test_stack_source_and_state(stack: str, documents: list[tuple[str, Manifest]]) -> None:
    spec = _stack_object(documents, stack)["spec"]
    assert (ROOT / f"Pulumi.{spec['stack'].split('/')[-1]}.yaml").is_file()
    # Python programs come from Git; a Program object holds Pulumi YAML only.
    assert "programRef" not in spec
    assert "fluxSource" not in spec
    assert spec["projectRepo"].startswith("https://")
    assert ("branch" in spec) != ("commit" in spec), "exactly one of branch and commit"
    # A workspace pod's disk is an emptyDir: file:// state would vanish with the pod.
    assert not spec["backend"].startswith("file:")
    assert "PULUMI_CONFIG_PASSPHRASE" in spec["envRefs"]
    assert spec["destroyOnFinalize"] is False, "deleting the Stack must not delete databases"
    assert spec["refresh"] is True


def test_workspace_image_matches_the_pinned_cli(documents: list[tuple[str, Manifest]]) -> None:
    pins = dict(line.split("==", 1) for line in (ROOT / "requirements.txt").read_text().split()
                if "==" in line)
    dockerfile = (OPERATOR / "workspace.Dockerfile").read_text()
    assert f"ARG PULUMI_VERSION={pins['pulumi']}" in dockerfile
    for plugin, package in (("kubernetes", "pulumi-kubernetes"), ("random", "pulumi-random")):
        assert f"pulumi plugin install resource {plugin} v{pins[package]}" in dockerfile
    # The tag workspace-image.yml pushes: a new set of pins is a new tag, never a
    # re-pushed one, so nodes cannot keep running a stale cached image.
    pins_digest = hashlib.sha256((ROOT / "requirements.txt").read_bytes()).hexdigest()[:12]
    want = f"{pins['pulumi']}-{pins_digest}"
    for document in _of_kind(documents, "Stack"):
        image = document["spec"]["workspaceTemplate"]["spec"]["image"]
        assert image.rpartition(":")[2] == want, (
            f"{document['metadata']['name']}: requirements.txt changed; point the image at "
            f"the tag the workspace-image workflow builds for it, {want}")


def test_prod_waits_for_dev_and_never_auto_corrects(documents: list[tuple[str, Manifest]]
                                                    ) -> None:
    dev = _stack_object(documents, "dev")
    prod = _stack_object(documents, "prod")
    assert prod["metadata"]["namespace"] == dev["metadata"]["namespace"]
    assert [p["name"] for p in prod["spec"]["prerequisites"]] == [dev["metadata"]["name"]]
    assert prod["spec"]["branch"] != dev["spec"]["branch"], "prod is promoted, not pushed"
    schedules = prod["spec"]["driftDetection"]["schedules"]
    assert all(s["autoRemediate"] is False for s in schedules)


# ----------------------------------------------------------------------------------- RBAC


def _service_account(documents: list[tuple[str, Manifest]], stack: Manifest) -> Manifest:
    name = stack["spec"]["serviceAccountName"]
    found = [d for d in _of_kind(documents, "ServiceAccount")
             if d["metadata"]["name"] == name
             and d["metadata"]["namespace"] == stack["metadata"]["namespace"]]
    assert len(found) == 1, f"ServiceAccount {name} must be in the Stack's namespace"
    return found[0]


def _bound_roles(documents: list[tuple[str, Manifest]], account: Manifest, *, kind: str,
                 namespace: str | None) -> list[Manifest]:
    """ClusterRoles bound to ``account`` by bindings of ``kind`` (in ``namespace``)."""
    roles = {d["metadata"]["name"]: d for d in _of_kind(documents, "ClusterRole")}
    bound = []
    for binding in _of_kind(documents, kind):
        if namespace is not None and binding["metadata"].get("namespace") != namespace:
            continue
        subject = {"kind": "ServiceAccount", "name": account["metadata"]["name"],
                   "namespace": account["metadata"]["namespace"]}
        if subject in binding["subjects"] and binding["roleRef"]["kind"] == "ClusterRole":
            name = binding["roleRef"]["name"]
            bound.append(roles.get(name, {"metadata": {"name": name}, "rules": []}))
    return bound


def _allows(roles: list[Manifest], group: str, resource: str, verb: str,
            name: str | None = None) -> bool:
    for role in roles:
        for rule in role.get("rules", []):
            if (group in rule.get("apiGroups", []) and resource in rule.get("resources", [])
                    and verb in rule.get("verbs", [])
                    and (not rule.get("resourceNames") or name in rule["resourceNames"])):
                return True
    return False


@pytest.mark.parametrize("stack", STACKS)
def test_workspace_identity_is_authorised_for_the_operator(
        stack: str, documents: list[tuple[str, Manifest]]) -> None:
    account = _service_account(documents, _stack_object(documents, stack))
    delegators = [r["metadata"]["name"] for r in
                  _bound_roles(documents, account, kind="ClusterRoleBinding", namespace=None)]
    assert "system:auth-delegator" in delegators


@pytest.mark.parametrize("stack", STACKS)
def test_rbac_covers_every_object_the_program_creates(
        stack: str, documents: list[tuple[str, Manifest]],
        stack_configs: dict[str, StackConfig],
        program_objects: dict[str, list[Manifest]]) -> None:
    stack_object = _stack_object(documents, stack)
    account = _service_account(documents, stack_object)
    target = stack_configs[stack].namespace
    assert stack_object["metadata"]["namespace"] != target, "deploy credentials stay apart"
    in_namespace = _bound_roles(documents, account, kind="RoleBinding", namespace=target)
    cluster_wide = _bound_roles(documents, account, kind="ClusterRoleBinding", namespace=None)
    missing = []
    for obj in program_objects[stack]:
        kind, name = obj["kind"], obj["metadata"]["name"]
        assert kind in KIND_RESOURCES, f"add {kind} to KIND_RESOURCES and to the RBAC"
        group, resource = KIND_RESOURCES[kind]
        if kind in CLUSTER_SCOPED:
            roles = cluster_wide
        else:
            assert obj["metadata"]["namespace"] == target, f"{kind} {name} outside {target}"
            roles = in_namespace
        verbs = CRD_VERBS if kind == "CustomResourceDefinition" else MANAGE_VERBS
        # `create` cannot be restricted by name; every other verb may be.
        missing += [f"{verb} {kind} {name}" for verb in verbs if not _allows(
            roles, group, resource, verb, None if verb == "create" else name)]
    assert missing == []


@pytest.mark.parametrize("stack", STACKS)
def test_rbac_holds_what_the_program_grants(
        stack: str, documents: list[tuple[str, Manifest]],
        stack_configs: dict[str, StackConfig],
        program_objects: dict[str, list[Manifest]]) -> None:
    """Kubernetes refuses to create a Role granting more than its creator holds."""
    account = _service_account(documents, _stack_object(documents, stack))
    target = stack_configs[stack].namespace
    in_namespace = _bound_roles(documents, account, kind="RoleBinding", namespace=target)
    cluster_wide = _bound_roles(documents, account, kind="ClusterRoleBinding", namespace=None)
    missing = []
    for obj in program_objects[stack]:
        if obj["kind"] not in ("Role", "ClusterRole"):
            continue
        held = cluster_wide if obj["kind"] == "ClusterRole" else in_namespace + cluster_wide
        for rule in obj.get("rules", []):
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        names = rule.get("resourceNames") or [None]
                        missing += [f"{obj['kind']} {obj['metadata']['name']}: {verb} "
                                    f"{group}/{resource} {name or ''}" for name in names
                                    if not _allows(held, group, resource, verb, name)]
    assert missing == []


def test_rbac_has_no_wildcards_or_escalation(documents: list[tuple[str, Manifest]]) -> None:
    for role in _of_kind(documents, "ClusterRole") + _of_kind(documents, "Role"):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule.get(field, []), f"{role['metadata']['name']}: {field}"
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])


# ------------------------------------------------------------------------ runtime access


def _admits(policy: Manifest, namespace: str, port: int) -> bool:
    for rule in policy["spec"].get("ingress", []):
        ports = {int(p["port"]) for p in rule.get("ports", []) if "port" in p}
        if ports and port not in ports:
            continue
        peers = rule.get("from")
        if not peers:
            return True
        for peer in peers:
            selector = peer.get("namespaceSelector")
            if selector is not None and "podSelector" not in peer and (
                    selector == {} or selector.get("matchLabels") ==
                    {"kubernetes.io/metadata.name": namespace}):
                return True
    return False


@pytest.mark.parametrize("stack", STACKS)
def test_workspace_can_reach_the_servers_its_providers_use(
        stack: str, documents: list[tuple[str, Manifest]],
        stack_configs: dict[str, StackConfig],
        program_objects: dict[str, list[Manifest]]) -> None:
    """In-cluster access: the providers dial pod DNS names from the workspace pod."""
    workspace_namespace = _stack_object(documents, stack)["metadata"]["namespace"]
    config = stack_configs[stack]
    needed = []
    if config.mysql.replication_init.enabled and config.mysql.replication_init.access == (
            "in-cluster"):
        needed.append(3306)
    if config.etcd.membership.enabled and config.etcd.membership.access == "in-cluster":
        needed.append(2379)
    blocked = [
        f"NetworkPolicy {policy['metadata']['name']} blocks port {port}"
        for policy in program_objects[stack] if policy["kind"] == "NetworkPolicy"
        for port in needed
        if any(int(p.get("port", 0)) == port for rule in policy["spec"].get("ingress", [])
               for p in rule.get("ports", []))
        and not _admits(policy, workspace_namespace, port)
    ]
    assert blocked == []


# -------------------------------------------------------------------------------- policy


_RESTRICTED_CAPABILITIES = {"NET_BIND_SERVICE"}
_RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                       "persistentVolumeClaim", "projected", "secret"}


def _pod_specs(objects: list[Manifest]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for obj in objects:
        spec = obj.get("spec") or {}
        if obj["kind"] == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        if "template" in spec:
            yield f"{obj['kind']} {obj['metadata']['name']}", spec["template"]["spec"]


def _restricted_violations(where: str, pod: Mapping[str, Any]) -> list[str]:
    """The restricted Pod Security Standard (v1.30), as the namespaces enforce it."""
    problems = []
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            problems.append(f"{where}: {flag}")
    for volume in pod.get("volumes", []):
        if not set(volume) - {"name"} <= _RESTRICTED_VOLUMES:
            problems.append(f"{where}: volume {volume['name']} type {set(volume) - {'name'}}")
    for container in [*pod.get("initContainers", []), *pod.get("containers", [])]:
        problems += _restricted_container_violations(
            f"{where} container {container['name']}", container,
            pod.get("securityContext") or {})
    return problems


def _restricted_container_violations(name: str, container: Mapping[str, Any],
                                     pod_context: Mapping[str, Any]) -> list[str]:
    problems = []
    context = container.get("securityContext") or {}
    if context.get("privileged"):
        problems.append(f"{name}: privileged")
    if context.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{name}: allowPrivilegeEscalation is not false")
    capabilities = context.get("capabilities") or {}
    if "ALL" not in capabilities.get("drop", []):
        problems.append(f"{name}: capabilities do not drop ALL")
    if set(capabilities.get("add", [])) - _RESTRICTED_CAPABILITIES:
        problems.append(f"{name}: adds {capabilities['add']}")
    if not context.get("runAsNonRoot", pod_context.get("runAsNonRoot")):
        problems.append(f"{name}: runAsNonRoot not set")
    if context.get("runAsUser", pod_context.get("runAsUser")) == 0:
        problems.append(f"{name}: runs as uid 0")
    seccomp = context.get("seccompProfile") or pod_context.get("seccompProfile") or {}
    if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
        problems.append(f"{name}: seccompProfile is not RuntimeDefault")
    if any(p.get("hostPort") for p in container.get("ports", [])):
        problems.append(f"{name}: hostPort")
    return problems


@pytest.mark.parametrize("stack", STACKS)
def test_program_pods_meet_the_namespaces_pod_security(
        stack: str, documents: list[tuple[str, Manifest]],
        stack_configs: dict[str, StackConfig],
        program_objects: dict[str, list[Manifest]]) -> None:
    namespace = [d for d in _of_kind(documents, "Namespace")
                 if d["metadata"]["name"] == stack_configs[stack].namespace]
    assert len(namespace) == 1, f"the manifests create namespace {stack_configs[stack].namespace}"
    assert namespace[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    pods = list(_pod_specs(program_objects[stack]))
    assert pods, "the program creates no pods: did it run?"
    problems = [p for where, pod in pods for p in _restricted_violations(where, pod)]
    assert problems == []


def test_restricted_check_catches_a_root_pod() -> None:
    pod = {"containers": [{"name": "app", "securityContext": {"runAsUser": 0}}],
           "volumes": [{"name": "host", "hostPath": {"path": "/"}}]}
    problems = _restricted_violations("Pod careless", pod)
    for expected in ("hostPath", "allowPrivilegeEscalation", "drop ALL", "runAsNonRoot",
                     "uid 0", "seccompProfile"):
        assert any(expected in p for p in problems), (expected, problems)


def test_checkov_passes_the_operator_manifests(documents: list[tuple[str, Manifest]],
                                               tmp_path: Path) -> None:
    """Kubernetes checks on every manifest, Dockerfile checks on the workspace image."""
    report = checkov.scan([d for _, d in documents], tmp_path / "operator",
                           dockerfile=OPERATOR / "workspace.Dockerfile")
    assert report.parsing_errors == ()
    rbac = {checkov.resource_id(d) for _, d in documents if d["kind"].endswith("Role")}
    assert rbac <= report.resources
    assert any(f.check_id.startswith("CKV_DOCKER_") for f in report.passed), (
        "the Dockerfile was not checked")
    assert [f"{f.check_id} {f.resource}: {f.check_name}" for f in report.failed] == []
