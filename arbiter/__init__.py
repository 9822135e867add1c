"""arbiter: automatic failover for a MySQLCluster, elected through distlock.

Why a package of its own, beside ``components``: it runs in the cluster (the arbiter
Deployment and the fencing agent beside each MySQL server), where Pulumi is not
installed and must never be imported. It reuses the switchover engine
(:mod:`components.mysql._switchover`), the primary record (:mod:`components.mysql._record`)
and the SQL dialects, which import neither Pulumi nor the Kubernetes client at module
level, so the rules for moving a primary are written once.

Two programs (``python -m arbiter run`` and ``python -m arbiter agent``):

- the **arbiter** (:mod:`arbiter._failover`): replicas of a Deployment elect one leader
  through a distlock lock; the leader watches the recorded primary, and after
  ``checks`` consecutive failed checks chooses the most advanced replica and promotes
  it under a fresh fencing token of the cluster's replication lock (the same lock
  ``pulumi up`` takes, so the two never act at once), which becomes the record's epoch;
- the **agent** (:mod:`arbiter._agent`): beside each server, it makes its server
  read-only whenever it cannot confirm, within ``ttlSeconds``, that the record still
  names it the primary. The arbiter waits ``ttlSeconds`` after moving the record before
  it opens the new primary, so an old primary that is only cut off (not dead) has
  stopped accepting writes by then: the Patroni rule, a primary runs only while it can
  renew its claim.
"""
