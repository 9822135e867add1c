"""The Pulumi program: stack config in, components out, then what clients need exported.

Thin on purpose. All checking happens in :func:`components.load`, which raises
before the first resource is registered, so a bad stack file changes nothing. Every
component is one block below (build it, export its outputs); adding a component means
adding a block, never touching another's.

Passwords are exported only as secrets: ``pulumi stack output --show-secrets`` reveals
them to whoever holds the stack's encryption key, and nothing else prints them.
"""

import pulumi

from components import (
    EtcdCluster,
    EtcdClusterArgs,
    Locks,
    LocksArgs,
    MySQLCluster,
    MySQLClusterArgs,
    agent_image,
    load,
)

config = load()
pulumi.export("namespace", config.namespace)

# etcd: the lock store. Membership changes (EtcdMembership) happen before the StatefulSet
# changes size: one `pulumi up` scales up or down any step, one member at a time inside it.
# Snapshot uploads and restores (etcd.snapshot.store, etcd.restore) run mysqlbackup in the
# backup agent image the MySQL cluster uses, so one image serves both.
etcd = EtcdCluster(config.etcd.name,
                   EtcdClusterArgs(namespace=config.namespace, config=config.etcd,
                                   metrics=config.metrics,
                                   agent_image=agent_image(config.mysql.version)))
pulumi.export("etcdClientUrl", etcd.client_url)
pulumi.export("etcdMemberClientUrls", etcd.member_client_urls)

# MySQL / MariaDB: ordinal 0 is the primary, every other pod a replica of it. With
# metrics.enabled each pod runs an exporter, and the PrometheusRule (metrics.prometheusRule)
# covers replication, backups, etcd and locks, the etcd rules naming etcd's metrics Service.
# ReplicationInit converges under a per-cluster lock in this stack's etcd, so two
# `pulumi up` runs never reconfigure the same replica at once.
mysql = MySQLCluster(
    config.mysql.name,
    MySQLClusterArgs(namespace=config.namespace, config=config.mysql,
                     lock_endpoints=etcd.lock_endpoints, lock_service=etcd,
                     metrics=config.metrics, etcd_metrics_job=etcd.metrics_job),
)
pulumi.export("mysqlPrimaryHost", mysql.primary_host)
pulumi.export("mysqlReadHost", mysql.read_host)
pulumi.export("mysqlPort", mysql.port)
pulumi.export("mysqlSecretName", mysql.secret_name)
pulumi.export("mysqlServerIdBase", mysql.server_id_base)
pulumi.export("mysqlAdminPassword", mysql.admin_password)
pulumi.export("mysqlRootPassword", mysql.root_password)

# Distributed locks on Kubernetes (locks.enabled): the Lock CRD, installed by a provider
# that waits until it is Established and will not delete it while a lock is in use, and
# the roles (plus a binding for locks.users) that lock clients need.
if config.locks.enabled:
    locks = Locks("locks", LocksArgs(namespace=config.namespace, config=config.locks,
                                     owner=f"{pulumi.get_project()}/{pulumi.get_stack()}"))
    pulumi.export("lockCrdName", locks.crd_name)
    pulumi.export("lockUserRole", locks.user_role)
