"""Distributed locks on Kubernetes: the Lock CRD, its provider, RBAC and the component.

The lock *client* is the separate ``distlock`` package (it never imports Pulumi); this
package installs what it needs in the cluster. See :mod:`components.locks.locks`.
"""

from components.locks.crd import CRD_NAME, GROUP, KIND, PLURAL, VERSION, lock_crd_manifest
from components.locks.locks import Locks, LocksArgs
from components.locks.provider import LockCRD, LockCRDArgs, LockCRDProvider
from components.locks.rbac import lock_user_binding

__all__ = [
    "CRD_NAME",
    "GROUP",
    "KIND",
    "PLURAL",
    "VERSION",
    "LockCRD",
    "LockCRDArgs",
    "LockCRDProvider",
    "Locks",
    "LocksArgs",
    "lock_crd_manifest",
    "lock_user_binding",
]
