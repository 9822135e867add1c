"""etcd snapshots in the object store: the CronJob's upload step and the members' restore.

Why two images in one pod: the etcd image is distroless (no Python), and the store client is
``python -m mysqlbackup`` (boto3, the manifest rule, the sha256 check: mysqlbackup/catalog.py
and store.py, the same code the MySQL backups use, so the two cannot drift). So every step
that needs etcd's own tools runs in the etcd image under the copied busybox, and every step
that talks to the store runs in the backup agent image (deploy/backup/agent.Dockerfile),
handing files over on a volume both mount:

- the snapshot Job: the save (``etcd-snapshot.sh``, verified by etcdctl) becomes an init
  container writing to the PVC as before and naming the file it saved; the Job's container
  uploads exactly that file (``etcd-snapshot.sh upload``), manifest last.
- a restored member (``etcd.restore.snapshot``): ``restore-plan`` (etcd image: it asks the
  cluster with etcdctl whether this member is an initial one that never ran),
  ``restore-fetch`` (agent image: the verified download), ``restore`` (etcd image:
  ``etcdutl snapshot restore``, which the etcd 3.5 image ships beside etcdctl). The
  decisions are etcd-member.sh's; see its header.

The store's keys reach only the containers that talk to the store, as Secret volume files
(components/_object_store.py): never an environment variable, argv or output.

Why the agent image is passed in, not derived here: its tag is the hash of what goes into it
and its base the MySQL server image (components/mysql/_backup.py, agent_image); the program
passes the image its MySQL cluster uses, so one image serves both, unless
``etcd.snapshot.store.image`` names another.
"""

from __future__ import annotations

from typing import Any

import pulumi_kubernetes as k8s

from components import _kube, _object_store
from components._kube import mount
from components.config import EtcdConfig

STORE_KEY = "etcd.snapshot.store"
UPLOAD_CONTAINER = "upload"
SAVE_CONTAINER = "snapshot"
HANDOFF_VOLUME = "handoff"
HANDOFF_MOUNT = "/handoff"
SAVED_RECORD = f"{HANDOFF_MOUNT}/saved"
RESTORE_CONTAINERS = ("restore-plan", "restore-fetch", "restore")
AGENT_SHELL = "/bin/sh"


def store_image(config: EtcdConfig, agent_image: str) -> str:
    """The image that runs mysqlbackup: the configured one, else the program's agent image."""
    image = config.snapshot.store.image or agent_image
    if not image:
        raise ValueError(f"{STORE_KEY}: the upload and the restore's fetch need an image with "
                         f"`python -m mysqlbackup`: set {STORE_KEY}.image, or pass "
                         "EtcdClusterArgs.agent_image")
    return image


def store_environment(config: EtcdConfig) -> list[k8s.core.v1.EnvVarArgsDict]:
    """mysqlbackup's store settings; the prefix defaults to the StatefulSet's name."""
    return _object_store.store_environment(config.snapshot.store, config.name, STORE_KEY)


def credentials_volume(config: EtcdConfig) -> k8s.core.v1.VolumeArgsDict:
    return _object_store.store_credentials_volume(config.snapshot.store, STORE_KEY)


def upload_container(config: EtcdConfig, *, image: str, namespace: str, script: str,
                     scripts_mount: str, snapshots_mount: str
                     ) -> k8s.core.v1.ContainerArgsDict:
    """The snapshot Job's container: uploads the file the save init container named."""
    return {
        "name": UPLOAD_CONTAINER,
        "image": image,
        "command": [AGENT_SHELL, f"{scripts_mount}/{script}", "upload"],
        "env": [_kube.value_env("SNAPSHOT_SAVED_RECORD", SAVED_RECORD),
                _kube.value_env("SNAPSHOT_SOURCE", f"{namespace}/{config.name}"),
                # The store keeps as many complete snapshots as the PVC.
                _kube.value_env("SNAPSHOT_RETAIN", config.snapshot.retain),
                *store_environment(config)],
        # boto3 and one 16 MiB part at a time (mysqlbackup/store.py).
        "resources": {"requests": {"cpu": "20m", "memory": "64Mi"},
                      "limits": {"memory": "256Mi"}},
        "security_context": _kube.container_security_context(),
        "volume_mounts": [
            mount("snapshots", snapshots_mount, read_only=True),
            mount("scripts", scripts_mount, read_only=True),
            mount(HANDOFF_VOLUME, HANDOFF_MOUNT, read_only=True),
            _object_store.store_credentials_mount(),
        ],
    }


def handoff_volume() -> k8s.core.v1.VolumeArgsDict:
    return _kube.empty_dir(HANDOFF_VOLUME, size_limit="1Mi")


def handoff_mount() -> k8s.core.v1.VolumeMountArgsDict:
    return mount(HANDOFF_VOLUME, HANDOFF_MOUNT)


def restore_env(config: EtcdConfig, data_mount: str) -> list[k8s.core.v1.EnvVarArgsDict]:
    """Where the restore works and what it restores (etcd-member.sh's header)."""
    snapshot = config.restore.snapshot
    if snapshot is None:
        raise ValueError("etcd.restore.snapshot is unset: no restore to wire")
    return [_kube.value_env("RESTORE_SNAPSHOT", snapshot),
            _kube.value_env("RESTORE_DIR", f"{data_mount}/restore"),
            _kube.value_env("RESTORE_DONE", f"{data_mount}/restore.done")]


def restore_init_containers(config: EtcdConfig, *, image: str, etcd_step: dict[str, Any],
                            member_script: str, scripts_mount: str, data_mount: str,
                            token: str) -> list[k8s.core.v1.ContainerArgsDict]:
    """``restore-plan``, ``restore-fetch``, ``restore``. ``etcd_step`` is the etcd image's
    side (image, the busybox command, member env, mounts, security context) that the two
    etcd-image steps share with the member's own container; the mode is appended."""
    env = [*etcd_step["env"], _kube.value_env("MEMBER_CLUSTER_TOKEN", token),
           *restore_env(config, data_mount)]
    resources = {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}}

    def etcd_image_step(name: str) -> k8s.core.v1.ContainerArgsDict:
        return {**etcd_step, "name": name, "env": env, "resources": resources,
                "command": [*etcd_step["command"], name]}

    fetch: k8s.core.v1.ContainerArgsDict = {
        "name": "restore-fetch",
        "image": image,
        "command": [AGENT_SHELL, f"{scripts_mount}/{member_script}", "restore-fetch"],
        "env": [*restore_env(config, data_mount), *store_environment(config)],
        "resources": {"requests": {"cpu": "20m", "memory": "64Mi"},
                      "limits": {"memory": "256Mi"}},
        "security_context": _kube.container_security_context(),
        "volume_mounts": [mount("data", data_mount),
                          mount("scripts", scripts_mount, read_only=True),
                          _object_store.store_credentials_mount()],
    }
    return [etcd_image_step("restore-plan"), fetch, etcd_image_step("restore")]
