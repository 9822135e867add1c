"""Every Kubernetes object a stack's program creates, as plain manifests.

Two sources, because the program creates objects two ways: Kubernetes provider
resources (``tests.support.mocks.manifests``), and manifests handed to a dynamic provider
that applies them itself (the Lock CRD, applied by the locks provider so that stacks can
share it). Policy and RBAC checks must see both, or an object would escape them.
"""

from __future__ import annotations

import base64
import functools
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.support import certs
from tests.support.mocks import ProgramResult, load_stack_file, manifests, run_program, run_stack

DYNAMIC = "pulumi-python:dynamic:Resource"


TLS_SECRET = "mysql-tls"


@functools.cache
def tls_secret_data(subject: str = "mysql") -> dict[str, str]:
    """A usable TLS Secret's ``data`` (base64, as the API serves it): a CA made with openssl
    and a certificate for ``subject`` it signs, what cert-manager would have written; each
    subject gets a CA and key of its own."""
    with tempfile.TemporaryDirectory() as directory:
        ca = certs.make_ca(Path(directory), "ca")
        leaf = certs.issue(ca, Path(directory), subject)
        files = {"tls.crt": leaf.cert, "tls.key": leaf.key, "ca.crt": ca.cert}
        return {key: base64.b64encode(path.read_bytes()).decode() for key, path in files.items()}


def tls_secret_object(namespace: str, data: Mapping[str, str] | None = None,
                      name: str = TLS_SECRET) -> dict[str, dict[str, Any]]:
    """The ``existing`` argument of run_program for a TLS Secret in ``namespace`` (a usable
    one unless ``data`` is given): what the program's ``get`` of mysql.tls.secret reads."""
    return {f"{namespace}/{name}": {
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "data": dict(tls_secret_data() if data is None else data),
        "metadata": {"name": name, "namespace": namespace}}}


def run_with_tls_and_metrics(config: dict[str, Any], *, stack: str) -> ProgramResult:
    """The program with every TLS and metrics switch on, the TLS Secret present and usable."""
    return run_program(with_tls_and_metrics(config), stack=stack,
                       existing=tls_secret_object(config["mysql-cluster:namespace"]))


def with_tls_and_metrics(config: dict[str, Any]) -> dict[str, Any]:
    """A stack config with every TLS and metrics switch on: what the schema, policy and
    wiring tests see of the objects those switches add."""
    mysql = {**config["mysql-cluster:mysql"],
             "tls": {"enabled": True, "secret": TLS_SECRET, "requireSecureTransport": "on"}}
    return {**config, "mysql-cluster:mysql": mysql, "mysql-cluster:metrics": {
        "enabled": True, "scrapeNamespaces": ["monitoring"],
        "serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}}


def program_objects(result: ProgramResult) -> list[dict[str, Any]]:
    objects = manifests(result)
    for resource in result.of_type(DYNAMIC):
        manifest = resource.inputs.get("manifest")
        if isinstance(manifest, dict) and isinstance(manifest.get("kind"), str):
            objects.append(manifest)
    return objects


# An S3-compatible store as a stack names it (the keys' Secret is never read at deploy).
BACKUP_STORE = {"enabled": True, "endpoint": "https://s3.eu-west-1.amazonaws.com",
                "bucket": "db-backups", "credentialsSecret": "backup-store",
                "archiveIntervalSeconds": 7}
BACKUP_RESTORE = {"backup": "20261203T030000Z-abc123", "pointInTime": "2026-12-03T08:00:00Z"}


def with_backups(config: dict[str, Any]) -> dict[str, Any]:
    """A stack config with every backup switch on: scheduled backups and their verification,
    a restore (a new cluster restored from the store that then backs itself up), and etcd's
    snapshots to a store and its members restored from one (the CronJob's upload container,
    the members' restore init containers)."""
    mysql = {**config["mysql-cluster:mysql"],
             "backup": {**BACKUP_STORE, "verify": {"enabled": True}},
             "restore": BACKUP_RESTORE}
    etcd = dict(config.get("mysql-cluster:etcd") or {})
    snapshot = {**(etcd.get("snapshot") or {}), "store": {
        "enabled": True, "endpoint": "https://s3.eu-west-1.amazonaws.com",
        "bucket": "etcd-snapshots", "credentialsSecret": "etcd-store"}}
    return {**config, "mysql-cluster:mysql": mysql, "mysql-cluster:etcd": {
        **etcd, "snapshot": snapshot, "restore": {"snapshot": "latest"}}}


# Variants of a stack file, checked like the stacks themselves: <stack>-tls-metrics,
# <stack>-backups.
_TLS_METRICS = "-tls-metrics"
_BACKUPS = "-backups"


def stack_objects(stack: str) -> list[dict[str, Any]]:
    """The objects of ``Pulumi.<stack>.yaml``'s run under mocks (``<stack>-tls-metrics``: with
    every TLS and metrics switch on; ``<stack>-backups``: with every backup switch on)."""
    if stack.endswith(_TLS_METRICS):
        base = stack.removesuffix(_TLS_METRICS)
        return program_objects(run_with_tls_and_metrics(load_stack_file(base), stack=base))
    if stack.endswith(_BACKUPS):
        base = stack.removesuffix(_BACKUPS)
        return program_objects(run_program(with_backups(load_stack_file(base)), stack=base))
    return program_objects(run_stack(stack))
