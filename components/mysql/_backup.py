"""The backup path's objects in the cluster's pod (issue 14): the binlog archiver sidecar,
the object store's settings and its keys, and the agent image they run in.

Why a sidecar in every pod rather than one on "the primary": the primary moves (the
switchover), and a pod's containers are fixed by the StatefulSet template. So every pod runs
``binlog-archive.sh``, which re-reads the primary record at every tick and archives only while
its own pod is the recorded primary; binary logs are in the pod's data dir, which only a
container of that pod can read (the PVC is ReadWriteOnce).

Why an image of our own (deploy/backup/agent.Dockerfile): the archiver needs the server's
tools (``mariadb-binlog``, the client) and ``python -m mysqlbackup`` with boto3 together, and
no published image has both. Its tag is derived from the content that goes into it, so the
StatefulSet changes exactly when the image must be rebuilt; it must be built and pushed
(docs/backups.md).

Why the restore is an init container (``restore-init.sh``): the restored data must be complete,
binlogs replayed, before the pod's server starts on it, or clients, probes and the replicas'
clones would see a half-restored primary. The replay needs a server, so the init step runs a
private one (no TCP) and shuts it down; only the first primary restores, every other pod
clones from it as usual.

The store's keys come from the Secret ``mysql.backup.credentialsSecret`` as files of a Secret
volume, mounted only into the archiver: never an environment variable, argv or output.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pulumi_kubernetes as k8s

from components import _kube
from components._kube import mount
from components.config import BackupConfig, MySQLConfig
from components.mysql import credentials

REPO_ROOT = Path(__file__).resolve().parents[2]
AGENT_DOCKERFILE = REPO_ROOT / "deploy" / "backup" / "agent.Dockerfile"
AGENT_REPOSITORY = "ghcr.io/mysql-cluster/backup-agent"
ARCHIVER_CONTAINER = "binlog-archive"
RESTORE_CONTAINER = "restore"
# On the pod's /tmp volume: the plan and the archived binlogs, gone once the restore is done.
RESTORE_WORK_DIR = "/tmp/mysql-cluster-restore"  # noqa: S108 (the pod's own emptyDir)
STORE_CREDENTIALS_VOLUME = "backup-store-credentials"
STORE_CREDENTIALS_DIR = "/run/secrets/backup-store"
# The keys of mysql.backup.credentialsSecret (config.py's BackupConfig says so).
STORE_KEYS = {"S3_ACCESS_KEY_FILE": "access-key", "S3_SECRET_KEY_FILE": "secret-key"}
_AGENT_PYTHON = "/opt/mysqlbackup/bin/python"
# The archiver's first heartbeat comes once its server answers (the server's start, crash
# recovery included, may take the StatefulSet's SERVER_START_SECONDS): the startup probe
# allows that, so liveness never judges a loop that has not started.
ARCHIVER_STARTUP_SECONDS = 720


def agent_inputs() -> list[Path]:
    """What goes into the agent image, in a fixed order: the tag is their hash."""
    package = REPO_ROOT / "mysqlbackup"
    return [AGENT_DOCKERFILE, *sorted(package.glob("*.py"))]


def agent_image(version: str) -> str:
    """``AGENT_REPOSITORY:<server version>-<sha256 of agent_inputs()>[:12]``."""
    digest = hashlib.sha256()
    for path in agent_inputs():
        digest.update(path.relative_to(REPO_ROOT).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return f"{AGENT_REPOSITORY}:{version}-{digest.hexdigest()[:12]}"


def store_environment(backup: BackupConfig,
                      cluster_name: str) -> list[k8s.core.v1.EnvVarArgsDict]:
    """mysqlbackup's ``S3_*`` settings (store.py, StoreConfig.from_env): paths, never keys."""
    if backup.endpoint is None or backup.bucket is None:
        raise ValueError("mysql.backup.endpoint and bucket are required when backups are on")
    return [
        _kube.value_env("S3_ENDPOINT", backup.endpoint),
        _kube.value_env("S3_BUCKET", backup.bucket),
        _kube.value_env("S3_PREFIX", backup.prefix or cluster_name),
        _kube.value_env("S3_REGION", backup.region),
        _kube.value_env("S3_PATH_STYLE", "true" if backup.path_style else "false"),
        *(_kube.value_env(name, f"{STORE_CREDENTIALS_DIR}/{key}")
          for name, key in STORE_KEYS.items()),
        _kube.value_env("ARCHIVE_INTERVAL_SECONDS", backup.archive_interval_seconds),
        _kube.value_env("MYSQLBACKUP_PYTHON", _AGENT_PYTHON),
    ]


def store_credentials_volume(backup: BackupConfig) -> k8s.core.v1.VolumeArgsDict:
    if backup.credentials_secret is None:
        raise ValueError("mysql.backup.credentialsSecret is required when backups are on")
    return {
        "name": STORE_CREDENTIALS_VOLUME,
        "secret": {
            "secret_name": backup.credentials_secret,
            "default_mode": credentials.FILE_MODE,
            # A Secret without the keys keeps the pod from starting, naming the Secret.
            "optional": False,
            "items": [{"key": key, "path": key} for key in STORE_KEYS.values()],
        },
    }


def archiver_probe(command: list[str], *, failures: int) -> k8s.core.v1.ProbeArgsDict:
    """``binlog-archive.sh alive``: the loop's heartbeat is recent. A hung upload keeps every
    process alive, so only the heartbeat the loop writes at each tick shows it."""
    return {"exec_": {"command": [*command, "alive"]}, "period_seconds": 10,
            "timeout_seconds": 5, "failure_threshold": failures}


def add_archiver(spec: dict[str, Any], config: MySQLConfig,
                 env: list[k8s.core.v1.EnvVarArgsDict], command: list[str],
                 mounts: list[k8s.core.v1.VolumeMountArgsDict]) -> None:
    """When ``mysql.backup.enabled``: the archiver sidecar (``command`` runs
    binlog-archive.sh with the pod's ``mounts``: data dir, socket, record, the backup
    account's password) and the store's keys as a volume, added to the pod ``spec``."""
    backup = config.backup
    if not backup.enabled:
        return
    spec["containers"].append({
        "name": ARCHIVER_CONTAINER,
        "image": agent_image(config.version),
        "command": command,
        "env": [*env, *store_environment(backup, config.name)],
        "volume_mounts": [*mounts, mount(STORE_CREDENTIALS_VOLUME, STORE_CREDENTIALS_DIR,
                                         read_only=True)],
        # mariadb-binlog over one binlog and a multipart upload: small, bounded memory.
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"},
                      "limits": {"memory": "512Mi"}},
        "startup_probe": archiver_probe(command, failures=ARCHIVER_STARTUP_SECONDS // 10),
        "liveness_probe": archiver_probe(command, failures=3),
        "security_context": _kube.container_security_context(),
    })
    spec["volumes"].append(store_credentials_volume(backup))


def add_restore(spec: dict[str, Any], config: MySQLConfig,
                env: list[k8s.core.v1.EnvVarArgsDict], command: list[str],
                mounts: list[k8s.core.v1.VolumeMountArgsDict]) -> None:
    """When ``mysql.restore.backup`` is set: the ``restore`` init container (``command`` runs
    restore-init.sh with ``mounts``: the data dir, conf.d, the record, root's password),
    right after init-config, whose server-id and role config its private server reads, and
    before clone, so the replicas clone from the restored primary."""
    restore = config.restore
    if restore.backup is None:
        return
    spec["init_containers"].insert(1, {
        "name": RESTORE_CONTAINER,
        "image": agent_image(config.version),
        "command": command,
        "env": [*env, *store_environment(config.backup, config.name),
                _kube.value_env("RESTORE_BACKUP", restore.backup),
                _kube.value_env("RESTORE_POINT", restore.point_in_time or ""),
                _kube.value_env("RESTORE_WORK_DIR", RESTORE_WORK_DIR)],
        "volume_mounts": [*mounts, mount(STORE_CREDENTIALS_VOLUME, STORE_CREDENTIALS_DIR,
                                         read_only=True)],
        # A private mariadbd replays the binlogs: the server's own request, the tools' limit.
        "resources": {"requests": {"cpu": "100m", "memory": "512Mi"},
                      "limits": {"memory": "2Gi"}},
        "security_context": _kube.container_security_context(),
    })
    if STORE_CREDENTIALS_VOLUME not in [volume["name"] for volume in spec["volumes"]]:
        spec["volumes"].append(store_credentials_volume(config.backup))
