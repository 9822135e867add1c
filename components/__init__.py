"""mysql-cluster: Pulumi components for a replicated MySQL/MariaDB, etcd and locks.

This package is the one entry point: what a Pulumi program needs to compose these
components itself (``__main__.py`` imports from here alone). That is the stack config
loader and its error, the three components (MySQLCluster, EtcdCluster, Locks) with their
argument dataclasses, and the config dataclasses a program builds in Python instead of
reading YAML. Everything else (submodules such as ``components._kube``, the
dynamic providers, names with a leading underscore) is internal and may move.

Exports resolve lazily (PEP 562): the dynamic-provider process imports submodules such
as ``components.mysql._replication`` to unpickle a provider, and importing this package
must not drag in every component (and pulumi_kubernetes) there, nor create an import
cycle with the component that uses that provider.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from components.config import (
        ConfigError,
        Endpoint,
        EtcdConfig,
        EtcdMembershipConfig,
        EtcdRestoreConfig,
        EtcdSnapshotConfig,
        EtcdSnapshotStoreConfig,
        EtcdTLSConfig,
        LocksConfig,
        MySQLConfig,
        ReplicationInitConfig,
        Resources,
        StackConfig,
        load,
        parse,
    )
    from components.etcd.cluster import EtcdCluster, EtcdClusterArgs
    from components.locks.locks import Locks, LocksArgs
    from components.mysql._backup import agent_image
    from components.mysql.cluster import MySQLCluster, MySQLClusterArgs

_EXPORTS = {
    "ConfigError": "components.config",
    "Endpoint": "components.config",
    "EtcdConfig": "components.config",
    "EtcdMembershipConfig": "components.config",
    "EtcdRestoreConfig": "components.config",
    "EtcdSnapshotConfig": "components.config",
    "EtcdSnapshotStoreConfig": "components.config",
    "EtcdTLSConfig": "components.config",
    "LocksConfig": "components.config",
    "MySQLConfig": "components.config",
    "ReplicationInitConfig": "components.config",
    "Resources": "components.config",
    "StackConfig": "components.config",
    "load": "components.config",
    "parse": "components.config",
    "EtcdCluster": "components.etcd.cluster",
    "EtcdClusterArgs": "components.etcd.cluster",
    "Locks": "components.locks.locks",
    "LocksArgs": "components.locks.locks",
    "MySQLCluster": "components.mysql.cluster",
    "MySQLClusterArgs": "components.mysql.cluster",
    # The backup agent image of a MySQL version: etcd's store steps run in it too.
    "agent_image": "components.mysql._backup",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'components' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "ConfigError",
    "Endpoint",
    "EtcdCluster",
    "EtcdClusterArgs",
    "EtcdConfig",
    "EtcdMembershipConfig",
    "EtcdRestoreConfig",
    "EtcdSnapshotConfig",
    "EtcdSnapshotStoreConfig",
    "EtcdTLSConfig",
    "Locks",
    "LocksArgs",
    "LocksConfig",
    "MySQLCluster",
    "MySQLClusterArgs",
    "MySQLConfig",
    "ReplicationInitConfig",
    "Resources",
    "StackConfig",
    "agent_image",
    "load",
    "parse",
]
