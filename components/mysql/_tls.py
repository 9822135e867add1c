"""TLS for MySQL/MariaDB clients and replication: what the deploy can check, and the SQL.

The Secret (``mysql.tls.secret``) is read through the provider at deploy time (a ``get``, as
``credentials.existingSecret`` is: cluster.py), and :func:`secret_data_problems` refuses it
before any object of the cluster is registered, so it must exist before ``pulumi up`` (create
the cert-manager Certificate first and wait for it to be Ready). It is checked once more in the
pod, because it changes after the deploy (rotation): ``tls-reload.sh check`` makes the same
checks with openssl and readiness reports them, so a bad Secret is named, never silently
served. The checks are the same list: a missing or empty key, a file that is not PEM, an
expired certificate, a key that does not match, a certificate its CA did not sign.

Replication verifies the primary's certificate against the Secret's CA on both flavors:
MariaDB ``MASTER_SSL=1, MASTER_SSL_CA, MASTER_SSL_VERIFY_SERVER_CERT=1``; MySQL 8.4
``SOURCE_SSL=1, SOURCE_SSL_CA, SOURCE_SSL_VERIFY_SERVER_CERT=1``. pymysql clients (ReplicationInit)
get :func:`pymysql_ssl` arguments: the CA, verification of the chain and of the host name.

The pod side (:func:`pod_parts`): the Secret is a read-only volume at :data:`TLS_DIR` in the
``mysql`` container (the server reads it, and reads the CA when it replicates) and in the
``tls-reload`` sidecar (``tls-reload.sh watch``: the server image, root through the socket,
reloading without a restart). ``init-config.sh`` copies ``conf/tls/*.cnf`` into conf.d when
``TLS_DIR`` is set. The probes use the pod-local socket under TLS, so ``requireSecureTransport``
never refuses them and no certificate needs 127.0.0.1 as a name.
"""

from __future__ import annotations

import base64
import binascii
import datetime
from collections.abc import Mapping
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

# The clause lives with the rest of the SQL, which the pulumi-free arbiter image ships too.
from components.mysql._replication_sql import replication_tls_clause

REQUIRED_KEYS = ("tls.crt", "tls.key", "ca.crt")
# Where the StatefulSet mounts the Secret; conf/tls/tls.cnf names the same files.
TLS_DIR = "/etc/mysql/tls"


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def tls_secret_problems(secret: str, data: Mapping[str, str | bytes],
                        now: datetime.datetime | None = None) -> list[str]:
    """Every reason ``data`` (the Secret's decoded keys) cannot serve TLS; empty when usable."""
    def raw(key: str) -> bytes:
        value = data[key]
        return value.encode() if isinstance(value, str) else value

    absent = [f"Secret {secret}: missing key {key}" if key not in data
              else f"Secret {secret}: key {key} is empty"
              for key in REQUIRED_KEYS if not data.get(key)]
    if absent:
        return absent
    problems: list[str] = []
    try:
        cert = x509.load_pem_x509_certificate(raw("tls.crt"))
    except ValueError:
        return [f"Secret {secret}: tls.crt is not a PEM certificate"]
    try:
        ca = x509.load_pem_x509_certificate(raw("ca.crt"))
    except ValueError:
        return [f"Secret {secret}: ca.crt is not a PEM certificate"]
    try:
        key = serialization.load_pem_private_key(raw("tls.key"), password=None)
    except (ValueError, TypeError):
        return [f"Secret {secret}: tls.key is not an unencrypted PEM private key"]
    moment = now or datetime.datetime.now(datetime.UTC)
    if cert.not_valid_after_utc <= moment:
        problems.append(f"Secret {secret}: tls.crt expired at "
                        f"{cert.not_valid_after_utc.isoformat()}")
    if cert.not_valid_before_utc > moment:
        problems.append(f"Secret {secret}: tls.crt is not valid before "
                        f"{cert.not_valid_before_utc.isoformat()}")
    pem = serialization.PublicFormat.SubjectPublicKeyInfo
    if (key.public_key().public_bytes(serialization.Encoding.PEM, pem)
            != cert.public_key().public_bytes(serialization.Encoding.PEM, pem)):
        problems.append(f"Secret {secret}: tls.key does not match the certificate in tls.crt")
    if not _signed_by(cert, ca):
        problems.append(f"Secret {secret}: tls.crt is not signed by the CA in ca.crt")
    return problems


def secret_data_problems(secret: str, data: Mapping[str, str] | None) -> list[str]:
    """:func:`tls_secret_problems` of a Secret's ``data`` as the API serves it (base64), as
    the program reads it at deploy time; a value that is not base64 is named too."""
    decoded: dict[str, bytes] = {}
    problems = []
    for key, value in (data or {}).items():
        try:
            decoded[key] = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            problems.append(f"Secret {secret}: key {key} is not base64")
    return problems or tls_secret_problems(secret, decoded)


def pymysql_ssl(ca_file: str) -> dict[str, Any]:
    """pymysql.connect arguments that require TLS, verify the chain and the host name."""
    return {"ssl_ca": ca_file, "ssl_verify_cert": True, "ssl_verify_identity": True}


def replication_init_tls(config: Any) -> dict[str, Any]:
    """ReplicationInitArgs' TLS fields for a MySQLConfig: the replicas verify the primary
    against the Secret's CA at :data:`TLS_DIR`; ``replicationInit.caFile`` makes the
    provider's own connections verify the servers (host names only in-cluster: through a
    port-forward the name is 127.0.0.1, which no server certificate carries)."""
    if not config.tls.enabled:
        return {}
    init = config.replication_init
    return {"replication_tls_ca": f"{TLS_DIR}/ca.crt", "tls_ca_file": init.ca_file or "",
            "tls_verify_identity": init.access == "in-cluster"}


# How often the watcher compares the Secret's files (the kubelet's own sync is ~1 minute).
RELOAD_INTERVAL_SECONDS = 10
# Readable by the pod's fsGroup (the images' mysql group), as the credentials are.
_FILE_MODE = 0o440


def tls_environment(require_secure_transport: bool) -> list[Any]:
    """What the scripts read to know TLS is on (CONTRACT.md)."""
    return [{"name": "TLS_DIR", "value": TLS_DIR},
            {"name": "REQUIRE_SECURE_TRANSPORT",
             "value": "on" if require_secure_transport else "off"},
            {"name": "TLS_RELOAD_INTERVAL", "value": str(RELOAD_INTERVAL_SECONDS)}]


def pod_parts(*, secret: str, server_image: str, config_dir: str, env: list[Any],
              mounts: list[Any]) -> tuple[dict[str, Any], dict[str, Any],
                                                      dict[str, Any]]:
    """(the Secret volume, its mount, the ``tls-reload`` sidecar). ``mounts``: the sidecar's
    other mounts (ConfigMap, run dir, socket, its credentials)."""
    # Here, not at the top: ReplicationInit's provider process imports this module for its
    # SQL and client arguments and has no use for pulumi_kubernetes.
    from components import _kube  # noqa: PLC0415
    volume = {"name": "tls", "secret": {
        "secret_name": secret, "default_mode": _FILE_MODE,
        # A missing key keeps the pod from starting instead of serving without TLS.
        "optional": False, "items": [{"key": key, "path": key} for key in REQUIRED_KEYS]}}
    mount = dict(_kube.mount("tls", TLS_DIR, read_only=True))
    command = ["bash", f"{config_dir}/tls-reload.sh"]
    sidecar = {
        "name": "tls-reload",
        "image": server_image,
        "command": [*command, "watch"],
        "env": env,
        "volume_mounts": [*mounts, mount],
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"},
                      "limits": {"memory": "128Mi"}},
        # The loop's heartbeat: a stuck watcher is restarted (no readiness probe: the pod's
        # readiness is its database's, which probe.sh checks with the same TLS checks).
        "liveness_probe": {"exec_": {"command": [*command, "alive"]}, "period_seconds": 30,
                           "timeout_seconds": 5, "failure_threshold": 3},
        "security_context": _kube.container_security_context(),
    }
    return volume, mount, sidecar


__all__ = [
    "REQUIRED_KEYS",
    "TLS_DIR",
    "pod_parts",
    "pymysql_ssl",
    "replication_init_tls",
    "replication_tls_clause",
    "secret_data_problems",
    "tls_environment",
    "tls_secret_problems",
]
