"""Old path of :mod:`components.mysql._replication`; only unpickling uses it.

pulumi.dynamic pickles the provider class by module path into every stack's state, so
stacks deployed before the rename hold ``components.mysql.replication._ReplicationProvider``
and the provider process imports this module to read them. An `up` that changes nothing
keeps a resource's old outputs, pickle included, so only a real update of that resource
rewrites it under the new path: keep this module while any stack may hold the old one.

A package rather than the old file, so that git sees the old file renamed and merges
edits made to it on other branches into the private module.
"""

from components.mysql._replication import _ReplicationProvider as _ReplicationProvider
