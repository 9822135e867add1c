"""distlock's Kubernetes backend: the names a user of it needs, and nothing else.

Public face over :mod:`distlock._kube` (status transitions, the observer's monotonic
expiry, the conditional writes and watches; its docstring says why it is built so), in
the way kr8s keeps ``objects.py`` over ``_objects.py``: what is importable from here is
what we promise to keep. ``api_client`` and ``default_namespace`` are public because the
Lock CRD provider (components/locks) reaches the cluster exactly as the lock client does;
the CRD's names come from the import-free :mod:`distlock.crd`, re-exported for callers
that already hold this module. :func:`distlock.open_backend` finds the backend through
``from_options``, ``check_name`` and ``inspect``.
"""

from __future__ import annotations

from distlock._kube import (
    KubeLockBackend,
    Timing,
    api_client,
    check_name,
    default_namespace,
    from_options,
    inspect,
    object_name,
)
from distlock.crd import CRD_NAME, GROUP, KIND, PLURAL, VERSION

__all__ = [
    "CRD_NAME",
    "GROUP",
    "KIND",
    "PLURAL",
    "VERSION",
    "KubeLockBackend",
    "Timing",
    "api_client",
    "check_name",
    "default_namespace",
    "from_options",
    "inspect",
    "object_name",
]
