"""distlock's etcd backend: the names a user of it needs, and nothing else.

Public face over :mod:`distlock._etcd` (the Mutex algorithm, the session lease, the
predecessor watch) and :mod:`distlock._etcd_grpc` (the gRPC transport), in
the way kr8s keeps ``objects.py`` over ``_objects.py``: what is importable from here is
what we promise to keep; the machinery behind it may change with any release (the
handoff path has changed three times for speed). :func:`distlock.open_backend` finds
the backend through this module's ``from_options``, ``check_name`` and ``inspect``.

    from distlock.etcd import EtcdBackend, EtcdFencedStore, TLSFiles
"""

from __future__ import annotations

from distlock._etcd import (
    EtcdBackend,
    EtcdFencedStore,
    check_name,
    from_options,
    inspect,
)
from distlock._etcd_wire import TLSFiles

__all__ = ["EtcdBackend", "EtcdFencedStore", "TLSFiles", "check_name", "from_options",
           "inspect"]
