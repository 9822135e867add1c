"""Who may use locks: a lock-user ClusterRole, a read-only viewer role, and bindings.

Least privilege follows from how the backend writes (distlock/kube.py): a client only
ever *creates* a Lock object (spec is the lock's name, fixed at creation) and then
changes its *status* with resourceVersion-conditioned writes. So lock users get
``create`` and read verbs on ``locks`` and ``update``/``patch`` on ``locks/status`` only.
They get no ``delete``: deleting a Lock object would restart its fencing counter, and
then a new holder could be handed a token a stale holder already used.

The roles are ClusterRoles so that one definition serves every namespace, but the usual
binding (:func:`lock_user_binding` with a namespace) is a RoleBinding: it grants the
role only in the namespace where this stack's locks live. The viewer role aggregates
into the built-in ``view``/``edit``/``admin`` roles, so anyone who may read a namespace
sees its locks in ``kubectl get locks``.

ClusterRole names include the namespace: they are cluster-scoped, and two stacks (two
namespaces) on one cluster must not fight over one name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from distlock.crd import GROUP, PLURAL

_rbac = k8s.rbac.v1

USER_VERBS = ("get", "list", "watch", "create")
STATUS_VERBS = ("get", "update", "patch")
VIEW_VERBS = ("get", "list", "watch")
_AGGREGATE = {f"rbac.authorization.k8s.io/aggregate-to-{role}": "true"
              for role in ("view", "edit", "admin")}


def user_role_name(namespace: str) -> str:
    return f"mysql-cluster:{namespace}:lock-user"


def viewer_role_name(namespace: str) -> str:
    return f"mysql-cluster:{namespace}:lock-viewer"


def lock_user_rules() -> list[_rbac.PolicyRuleArgsDict]:
    return [
        {"api_groups": [GROUP], "resources": [PLURAL], "verbs": list(USER_VERBS)},
        {"api_groups": [GROUP], "resources": [f"{PLURAL}/status"], "verbs": list(STATUS_VERBS)},
    ]


def lock_user_role(resource_name: str, *, namespace: str, labels: dict[str, str],
                   opts: pulumi.ResourceOptions | None = None) -> _rbac.ClusterRole:
    """The ClusterRole a lock client needs (create Lock objects, write their status)."""
    return _rbac.ClusterRole(
        resource_name,
        metadata={"name": user_role_name(namespace), "labels": labels},
        rules=lock_user_rules(),
        opts=opts)


def lock_viewer_role(resource_name: str, *, namespace: str, labels: dict[str, str],
                     opts: pulumi.ResourceOptions | None = None) -> _rbac.ClusterRole:
    """Read-only access to locks, aggregated into the built-in view/edit/admin roles."""
    return _rbac.ClusterRole(
        resource_name,
        metadata={"name": viewer_role_name(namespace), "labels": {**labels, **_AGGREGATE}},
        rules=[{"api_groups": [GROUP], "resources": [PLURAL, f"{PLURAL}/status"],
                "verbs": list(VIEW_VERBS)}],
        opts=opts)


def _subjects(service_accounts: Sequence[str]) -> list[_rbac.SubjectArgsDict]:
    subjects: list[_rbac.SubjectArgsDict] = []
    for account in service_accounts:
        namespace, _, name = account.partition("/")
        if not namespace or not name:
            raise ValueError(f"service accounts are 'namespace/name', got {account!r}")
        subjects.append({"kind": "ServiceAccount", "name": name, "namespace": namespace})
    return subjects


def lock_user_binding(resource_name: str, *, role_name: pulumi.Input[str],
                      service_accounts: Sequence[str], namespace: str | None,
                      labels: dict[str, str] | None = None,
                      opts: pulumi.ResourceOptions | None = None,
                      ) -> _rbac.RoleBinding | _rbac.ClusterRoleBinding:
    """Bind ServiceAccounts (``"namespace/name"``) to the lock-user role.

    With ``namespace`` (the usual case) a RoleBinding there: the accounts may use locks
    in that namespace only, wherever the accounts themselves live. With ``None`` a
    ClusterRoleBinding: locks in every namespace (for cluster-wide tooling).
    """
    if not service_accounts:
        raise ValueError("lock_user_binding needs at least one service account")
    subjects = _subjects(service_accounts)
    role_ref: _rbac.RoleRefArgsDict = {"api_group": "rbac.authorization.k8s.io",
                                       "kind": "ClusterRole", "name": role_name}
    metadata: dict[str, Any] = {"labels": labels or {}}
    if namespace is None:
        return _rbac.ClusterRoleBinding(resource_name, metadata=metadata, role_ref=role_ref,
                                        subjects=subjects, opts=opts)
    metadata["namespace"] = namespace
    return _rbac.RoleBinding(resource_name, metadata=metadata, role_ref=role_ref,
                             subjects=subjects, opts=opts)


__all__ = [
    "lock_user_binding",
    "lock_user_role",
    "lock_user_rules",
    "lock_viewer_role",
    "user_role_name",
    "viewer_role_name",
]
