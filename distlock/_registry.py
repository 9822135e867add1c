"""Backends by name, imported only when chosen.

The CLI and :func:`open_backend` look a backend up here, so that ``--backend etcd``
never imports the Kubernetes client (and vice versa) and a new backend is one line:
its name and the module that defines ``from_options(BackendOptions) -> LockBackend``,
``check_name`` and ``inspect``.
"""

from __future__ import annotations

import importlib
from typing import Protocol, cast

from distlock._backend import BackendOptions, LockBackend
from distlock._grant import LockState

BACKENDS: dict[str, str] = {
    "etcd": "distlock.etcd",
    "kubernetes": "distlock.kube",
}


class _BackendModule(Protocol):
    def from_options(self, options: BackendOptions) -> LockBackend: ...

    def check_name(self, name: str) -> None: ...

    def inspect(self, options: BackendOptions, name: str) -> LockState: ...


def _module(kind: str) -> _BackendModule:
    try:
        module_name = BACKENDS[kind]
    except KeyError:
        raise ValueError(f"unknown lock backend {kind!r}; known: {', '.join(BACKENDS)}") from None
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise ValueError(f"lock backend {kind!r} is not available: {error}") from error
    return cast(_BackendModule, module)


def open_backend(kind: str, options: BackendOptions) -> LockBackend:
    """Start a client session with the backend called ``kind`` ("etcd", "kubernetes")."""
    return _module(kind).from_options(options)


def check_name(kind: str, name: str) -> None:
    """ValueError naming the problem unless backend ``kind`` can lock ``name``; checked
    without a session, so a bad name is refused before anything is written."""
    _module(kind).check_name(name)


def inspect(kind: str, options: BackendOptions, name: str) -> LockState:
    """Lock ``name``'s holder and queue, read without opening a session that writes (an
    etcd session is a lease): looking must not change what is looked at."""
    return _module(kind).inspect(options, name)
