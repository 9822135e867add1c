"""Locks: everything a stack needs before its programs can take distributed locks.

One component, used from ``__main__.py`` when ``locks.enabled`` is true:

- :class:`~components.locks._provider.LockCRD`: the Lock CRD, installed by a dynamic
  provider that waits until it is Established, shares it with other stacks on the
  same cluster and refuses to delete it while locks are in use (``locks.forceDelete``
  overrides);
- the lock-user and lock-viewer ClusterRoles (:mod:`components.locks.rbac`);
- a RoleBinding in the stack's namespace for the ServiceAccounts in ``locks.users``.

Which cluster: the same one pulumi-kubernetes' default provider uses. The dynamic
provider cannot borrow that provider's connection, so it is handed the stack's
``kubernetes:kubeconfig`` / ``kubernetes:context`` config when set (the kubeconfig as a
secret), and otherwise finds the cluster as kubectl does ($KUBECONFIG, ~/.kube/config,
in-cluster), which is also what pulumi-kubernetes does without that config.

The roles do not depend on the CRD: RBAC rules may name resources that do not exist
yet, and creating them in parallel keeps ``pulumi up`` short.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from components import _kube
from components.config import LocksConfig
from components.locks._provider import LockCRD, LockCRDArgs
from components.locks.crd import lock_crd_manifest
from components.locks.rbac import lock_user_binding, lock_user_role, lock_viewer_role
from distlock.crd import CRD_NAME, VERSION


@dataclass(frozen=True)
class LocksArgs:
    """``owner`` names this stack on the shared CRD ("project/stack")."""

    namespace: str
    config: LocksConfig
    owner: str
    kubeconfig: pulumi.Input[str] | None = None
    """Path or kubeconfig text; None: the stack's ``kubernetes:kubeconfig``, if any."""
    context: str | None = None
    """kubeconfig context; None: the stack's ``kubernetes:context``, if any."""


class Locks(pulumi.ComponentResource):
    """The Lock CRD, the lock-user/viewer roles and the lock users' binding."""

    crd_name: pulumi.Output[str]
    namespace: pulumi.Output[str]
    user_role: pulumi.Output[str]
    viewer_role: pulumi.Output[str]

    def __init__(self, name: str, args: LocksArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mysql-cluster:index:Locks", name, None, opts)
        config = args.config
        child = pulumi.ResourceOptions(parent=self)
        labels = _kube.AppLabels(name="distlock", instance=name, component="locks",
                                 version=VERSION).all()
        stack_kubeconfig, stack_context = _kube.stack_cluster()

        self.crd = LockCRD(
            f"{name}-crd",
            LockCRDArgs(
                manifest=lock_crd_manifest(),
                owner=args.owner,
                force_delete=config.force_delete,
                establish_timeout_seconds=config.establish_timeout_seconds,
                kubeconfig=args.kubeconfig if args.kubeconfig is not None else stack_kubeconfig,
                context=args.context if args.context is not None else stack_context),
            opts=child)
        user_role = lock_user_role(f"{name}-user-role", namespace=args.namespace,
                                   labels=labels, opts=child)
        viewer_role = lock_viewer_role(f"{name}-viewer-role", namespace=args.namespace,
                                       labels=labels, opts=child)
        if config.users:
            lock_user_binding(f"{name}-users", role_name=user_role.metadata.name,
                              service_accounts=config.users, namespace=args.namespace,
                              labels=labels, opts=child)

        self.crd_name = pulumi.Output.from_input(CRD_NAME)
        self.namespace = pulumi.Output.from_input(args.namespace)
        self.user_role = user_role.metadata.name
        self.viewer_role = viewer_role.metadata.name
        self.register_outputs({
            "crd_name": self.crd_name,
            "namespace": self.namespace,
            "user_role": self.user_role,
            "viewer_role": self.viewer_role,
        })


__all__ = ["Locks", "LocksArgs"]
