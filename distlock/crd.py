"""Where Lock objects live in the Kubernetes API: group, version, kind, plural.

Kept apart from :mod:`distlock.kube` and free of imports because the Pulumi program
needs these names to declare the CustomResourceDefinition and its roles, while only the
lock client and the CRD provider talk to the API. Importing the Kubernetes client costs
the program about 0.7 s on every ``pulumi up`` and preview for nothing it uses.
"""

from __future__ import annotations

GROUP = "locks.mysql-cluster.io"
VERSION = "v1"
KIND = "Lock"
PLURAL = "locks"
CRD_NAME = f"{PLURAL}.{GROUP}"

__all__ = ["CRD_NAME", "GROUP", "KIND", "PLURAL", "VERSION"]
