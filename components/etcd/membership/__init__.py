"""Old path of :mod:`components.etcd._membership`; only unpickling uses it.

pulumi.dynamic pickles the provider class by module path into every stack's state, so
stacks deployed before the rename hold ``components.etcd.membership.EtcdMembershipProvider``
and the provider process imports this module to read them. An `up` that changes nothing
keeps a resource's old outputs, pickle included, so only a real update of that resource
rewrites it under the new path: keep this module while any stack may hold the old one.

A package rather than the old file, so that git sees the old file renamed and merges
edits made to it on other branches into the private module.
"""

from components.etcd._membership import EtcdMembershipProvider as EtcdMembershipProvider
