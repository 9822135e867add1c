"""How a container reaches the object store: mysqlbackup's ``S3_*`` settings and the keys.

Shared by the MySQL backup path (components/mysql/_backup.py) and etcd's snapshot upload and
restore (components/etcd/_store.py), because both run ``python -m mysqlbackup`` against a
store declared by the same fields (config.py's ObjectStoreConfig) and must hand it over the
same way: settings as plain variables (mysqlbackup/store.py, ``StoreConfig.from_env``), the
keys only as files of a Secret volume mounted into the containers that talk to the store,
never an environment variable, argv or output.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pulumi_kubernetes as k8s

from components import _kube
from components.mysql import credentials

if TYPE_CHECKING:
    from components.config import ObjectStoreConfig

STORE_CREDENTIALS_VOLUME = "backup-store-credentials"
STORE_CREDENTIALS_DIR = "/run/secrets/backup-store"
# The keys of the credentialsSecret (config.py's ObjectStoreConfig says so).
STORE_KEYS = {"S3_ACCESS_KEY_FILE": "access-key", "S3_SECRET_KEY_FILE": "secret-key"}
# The backup agent image's Python (deploy/backup/agent.Dockerfile).
AGENT_PYTHON = "/opt/mysqlbackup/bin/python"


def store_environment(store: ObjectStoreConfig, default_prefix: str,
                      key: str) -> list[k8s.core.v1.EnvVarArgsDict]:
    """mysqlbackup's ``S3_*`` settings: paths to the keys, never the keys. ``key`` is the
    stack config object the store is declared under, for the error."""
    if store.endpoint is None or store.bucket is None:
        raise ValueError(f"{key}.endpoint and bucket are required when the store is used")
    return [
        _kube.value_env("S3_ENDPOINT", store.endpoint),
        _kube.value_env("S3_BUCKET", store.bucket),
        _kube.value_env("S3_PREFIX", store.prefix or default_prefix),
        _kube.value_env("S3_REGION", store.region),
        _kube.value_env("S3_PATH_STYLE", "true" if store.path_style else "false"),
        *(_kube.value_env(name, f"{STORE_CREDENTIALS_DIR}/{secret_key}")
          for name, secret_key in STORE_KEYS.items()),
        _kube.value_env("MYSQLBACKUP_PYTHON", AGENT_PYTHON),
    ]


def store_credentials_volume(store: ObjectStoreConfig, key: str) -> k8s.core.v1.VolumeArgsDict:
    if store.credentials_secret is None:
        raise ValueError(f"{key}.credentialsSecret is required when the store is used")
    return {
        "name": STORE_CREDENTIALS_VOLUME,
        "secret": {
            "secret_name": store.credentials_secret,
            "default_mode": credentials.FILE_MODE,
            # A Secret without the keys keeps the pod from starting, naming the Secret.
            "optional": False,
            "items": [{"key": secret_key, "path": secret_key}
                      for secret_key in STORE_KEYS.values()],
        },
    }


def store_credentials_mount() -> k8s.core.v1.VolumeMountArgsDict:
    return _kube.mount(STORE_CREDENTIALS_VOLUME, STORE_CREDENTIALS_DIR, read_only=True)
