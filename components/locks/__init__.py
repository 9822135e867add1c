"""Distributed locks on Kubernetes: the Lock CRD, its provider, RBAC and the component.

The lock *client* is the separate ``distlock`` package (it never imports Pulumi); this
package installs what it needs in the cluster. See :mod:`components.locks.locks`.

Only the component and its arguments are public here (and, for programs, through
``components``). The CRD's manifest and names (:mod:`components.locks.crd`), the RBAC
helpers and the dynamic provider are internal: the provider class is pickled into each
stack's state under its module path, so it is imported from that path, never from here.
"""

from components.locks.locks import Locks, LocksArgs

__all__ = ["Locks", "LocksArgs"]
