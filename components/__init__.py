"""mysql-cluster: Pulumi components for a replicated MySQL/MariaDB, etcd and locks.

The public API is what a Pulumi program needs to compose these components itself: the
stack config loader and the components with their argument dataclasses. Everything
else (``components._kube``, names with a leading underscore) is internal.

Exports resolve lazily (PEP 562): the dynamic-provider process imports submodules such
as ``components.mysql.replication`` to unpickle a provider, and importing this package
must not drag in every component (and pulumi_kubernetes) there, nor create an import
cycle with the component that uses that provider.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from components.config import ConfigError, StackConfig, load, parse
    from components.mysql.cluster import MySQLCluster, MySQLClusterArgs

_EXPORTS = {
    "ConfigError": "components.config",
    "StackConfig": "components.config",
    "load": "components.config",
    "parse": "components.config",
    "MySQLCluster": "components.mysql.cluster",
    "MySQLClusterArgs": "components.mysql.cluster",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'components' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "ConfigError",
    "MySQLCluster",
    "MySQLClusterArgs",
    "StackConfig",
    "load",
    "parse",
]
