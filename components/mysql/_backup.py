"""The backup path's objects (issue 14): in the cluster's pod the binlog archiver and backup
agent sidecars and the restore init step; the scheduled-backup CronJob; the object store's
settings and its keys, and the agent image they all run in.

Why a sidecar in every pod rather than one on "the primary": the primary moves (the
switchover), and a pod's containers are fixed by the StatefulSet template. So every pod runs
``binlog-archive.sh``, which re-reads the primary record at every tick and archives only while
its own pod is the recorded primary; binary logs are in the pod's data dir, which only a
container of that pod can read (the PVC is ReadWriteOnce).

Why the archiver serves the backup gauges (with metrics on, port ``backup-metrics``): its
coprocess is the one long-lived process of the backup path, in every pod, with a store client
and the only one that knows when an archive pass last succeeded; the alert rules read what it
serves (mysqlbackup/metrics.py). The interval gauge is derived here, from the schedule the
config declares, so the sidecar never parses cron.

Why an image of our own (deploy/backup/agent.Dockerfile): the archiver needs the server's
tools (``mariadb-binlog``, the client) and ``python -m mysqlbackup`` with boto3 together, and
no published image has both. Its tag is derived from the content that goes into it, so the
StatefulSet changes exactly when the image must be rebuilt; it must be built and pushed
(docs/backups.md).

Why a scheduled backup is a CronJob that asks a pod (mysqlbackup/schedule.py): the backup
needs a server's data dir, which only that server's pod can mount, so the CronJob's Job cannot
take it itself. It takes the cluster's FIFO lock (the one ReplicationInit and switchovers
take, so none of them overlap) and asks each pod's ``backup-agent`` sidecar in turn; an agent
accepts only for a healthy replica (the primary only when no replica accepts), runs
``backup.sh`` and answers. Kubernetes does the scheduling, and a failure is the Job's status.
One backup per slot (the Job's name) however many Jobs race: each checks, under the lock, for
the slot's manifest; a holder whose lock lapsed is fenced by its token.

Why the restore is an init container (``restore-init.sh``): the restored data must be complete,
binlogs replayed, before the pod's server starts on it, or clients, probes and the replicas'
clones would see a half-restored primary. The replay needs a server, so the init step runs a
private one (no TCP) and shuts it down; only the first primary restores, every other pod
clones from it as usual.

The store's keys come from the Secret ``mysql.backup.credentialsSecret`` as files of a Secret
volume, mounted only into the containers that talk to the store: never an environment
variable, argv or output.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components import _kube, _object_store, _validate
from components._kube import mount
from components._object_store import AGENT_PYTHON as _AGENT_PYTHON
from components.config import BackupConfig, MySQLConfig

# The store's hand-over, shared with etcd's snapshot steps (components/_object_store.py).
STORE_CREDENTIALS_VOLUME = _object_store.STORE_CREDENTIALS_VOLUME
STORE_CREDENTIALS_DIR = _object_store.STORE_CREDENTIALS_DIR
STORE_KEYS = _object_store.STORE_KEYS
REPO_ROOT = Path(__file__).resolve().parents[2]
AGENT_DOCKERFILE = REPO_ROOT / "deploy" / "backup" / "agent.Dockerfile"
AGENT_REPOSITORY = "ghcr.io/mysql-cluster/backup-agent"
ARCHIVER_CONTAINER = "binlog-archive"
AGENT_CONTAINER = "backup-agent"
AGENT_PORT = 3308
# The archiver's backup gauges (mysqlbackup/metrics.py), with backups and metrics both on.
ARCHIVER_METRICS_PORT = 9106
ARCHIVER_METRICS_PORT_NAME = "backup-metrics"
JOB_CONTAINER = "backup-job"
# The lock lease distlock keeps alive while the Job runs; a Job that dies frees it this soon.
JOB_LOCK_TTL_SECONDS = 30
RESTORE_CONTAINER = "restore"
# On the pod's /tmp volume: the plan and the archived binlogs, gone once the restore is done.
RESTORE_WORK_DIR = "/tmp/mysql-cluster-restore"  # noqa: S108 (the pod's own emptyDir)
# The archiver's first heartbeat comes once its server answers (the server's start, crash
# recovery included, may take the StatefulSet's SERVER_START_SECONDS): the startup probe
# allows that, so liveness never judges a loop that has not started.
ARCHIVER_STARTUP_SECONDS = 720


def agent_inputs() -> list[Path]:
    """What goes into the agent image, in a fixed order: the tag is their hash. distlock is
    in it for the backup Job, which runs under ``python -m distlock run``."""
    return [AGENT_DOCKERFILE, *sorted((REPO_ROOT / "mysqlbackup").glob("*.py")),
            *sorted((REPO_ROOT / "distlock").rglob("*.py"))]


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
    return [*_object_store.store_environment(backup, cluster_name, "mysql.backup"),
            _kube.value_env("ARCHIVE_INTERVAL_SECONDS", backup.archive_interval_seconds)]


def store_credentials_volume(backup: BackupConfig) -> k8s.core.v1.VolumeArgsDict:
    return _object_store.store_credentials_volume(backup, "mysql.backup")


def archiver_probe(command: list[str], *, failures: int) -> k8s.core.v1.ProbeArgsDict:
    """``binlog-archive.sh alive``: the loop's heartbeat is recent. A hung upload keeps every
    process alive, so only the heartbeat the loop writes at each tick shows it."""
    return {"exec_": {"command": [*command, "alive"]}, "period_seconds": 10,
            "timeout_seconds": 5, "failure_threshold": failures}


def metrics_ports(config: MySQLConfig, *, metrics: bool) -> list[tuple[str, int]]:
    """The pod's backup metrics ports (name, port) the metrics Service, ServiceMonitor and
    NetworkPolicy add to the exporter's: the archiver's, when backups and metrics are on."""
    if config.backup.enabled and metrics:
        return [(ARCHIVER_METRICS_PORT_NAME, ARCHIVER_METRICS_PORT)]
    return []


def archiver_metrics_env(config: MySQLConfig, *,
                         metrics: bool) -> list[k8s.core.v1.EnvVarArgsDict]:
    """``archive-serve``'s gauge settings (mysqlbackup/metrics.py): its port and the
    interval MySQLBackupTooOld compares with, the schedule's longest gap between runs."""
    if not metrics_ports(config, metrics=metrics):
        return []
    return [_kube.value_env("ARCHIVE_METRICS_PORT", ARCHIVER_METRICS_PORT),
            _kube.value_env("BACKUP_INTERVAL_SECONDS",
                            _validate.cron_interval_seconds(config.backup.schedule))]


def add_sidecars(spec: dict[str, Any], config: MySQLConfig,
                 env: list[k8s.core.v1.EnvVarArgsDict], script: Callable[[str], list[str]],
                 mounts: list[k8s.core.v1.VolumeMountArgsDict], *, metrics: bool) -> None:
    """When ``mysql.backup.enabled``: the archiver and the backup agent sidecars
    (``script(NAME)`` is how the pod runs a pod script; ``mounts``: the data dir read-only,
    socket, record, the backup account's password) and the store's keys as a volume, added
    to the pod ``spec``; with ``metrics`` the archiver serves the backup gauges."""
    backup = config.backup
    if not backup.enabled:
        return
    archiver = script("binlog-archive.sh")
    common = {
        "image": agent_image(config.version),
        "env": [*env, *store_environment(backup, config.name)],
        "volume_mounts": [*mounts, mount(STORE_CREDENTIALS_VOLUME, STORE_CREDENTIALS_DIR,
                                         read_only=True)],
        "security_context": _kube.container_security_context(),
    }
    spec["containers"].append({
        "name": ARCHIVER_CONTAINER,
        "command": archiver,
        **common,
        "env": [*common["env"], *archiver_metrics_env(config, metrics=metrics)],
        "ports": [{"name": name, "container_port": port, "protocol": "TCP"}
                  for name, port in metrics_ports(config, metrics=metrics)],
        # mariadb-binlog over one binlog and a multipart upload: small, bounded memory.
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"},
                      "limits": {"memory": "512Mi"}},
        "startup_probe": archiver_probe(archiver, failures=ARCHIVER_STARTUP_SECONDS // 10),
        "liveness_probe": archiver_probe(archiver, failures=3),
    })
    spec["containers"].append({
        "name": AGENT_CONTAINER,
        "command": script("backup-agent.sh"),
        **common,
        "env": [*common["env"], _kube.value_env("BACKUP_AGENT_PORT", AGENT_PORT),
                _kube.value_env("BACKUP_COMPRESSION", backup.compression)],
        "ports": [{"name": AGENT_CONTAINER, "container_port": AGENT_PORT, "protocol": "TCP"}],
        # Idle but for the Job's request; then the backup tool and a multipart upload.
        "resources": {"requests": {"cpu": "20m", "memory": "64Mi"},
                      "limits": {"memory": "1Gi"}},
    })
    spec["volumes"].append(store_credentials_volume(backup))


@dataclass(frozen=True)
class SchedulePlan:
    """What the scheduled-backup CronJob needs from the cluster component."""

    config: MySQLConfig
    namespace: str
    peer_hosts: tuple[str, ...]      # every pod's DNS name, ordinal order
    lock_endpoints: tuple[str, ...]  # etcd client URLs
    lock_name: str                   # the cluster's FIFO lock (ReplicationInit's)
    pod_selector: dict[str, str]     # the MySQL pods (the agents' NetworkPolicy)
    uid: int                         # the agent image's user


def job_labels(config: MySQLConfig) -> _kube.AppLabels:
    return _kube.AppLabels(name="mysql-backup", instance=config.name, component="backup-job",
                           version=config.version)


def job_command(plan: SchedulePlan) -> list[str]:
    """``distlock run`` holding the cluster lock around ``mysqlbackup scheduled-backup``,
    then retention; ``$(BACKUP_SLOT)`` is the Job's name (Kubernetes expands it)."""
    backup = plan.config.backup
    if not plan.lock_endpoints:
        raise ValueError("mysql.backup.enabled: the scheduled backup takes the cluster's etcd "
                         "lock, and this cluster was given no etcd endpoints")
    retention = ["--keep", str(backup.retention.count)]
    if backup.retention.max_age_days is not None:
        retention += ["--max-age-seconds", str(backup.retention.max_age_days * 86400)]
    return [_AGENT_PYTHON, "-m", "distlock", "run", "--backend", "etcd",
            "--endpoints", ",".join(plan.lock_endpoints),
            "--ttl", str(JOB_LOCK_TTL_SECONDS), plan.lock_name, "--",
            _AGENT_PYTHON, "-m", "mysqlbackup", "scheduled-backup", "--slot", "$(BACKUP_SLOT)",
            "--peers", ",".join(f"{host}:{AGENT_PORT}" for host in plan.peer_hosts),
            *retention]


def cron_job_spec(plan: SchedulePlan) -> k8s.batch.v1.CronJobSpecArgsDict:
    config, backup = plan.config, plan.config.backup
    labels = job_labels(config)
    pod: k8s.core.v1.PodSpecArgsDict = {
        "restart_policy": "Never",
        "automount_service_account_token": False,
        "enable_service_links": False,
        "security_context": _kube.pod_security_context(user=plan.uid, group=plan.uid),
        "containers": [{
            "name": JOB_CONTAINER,
            "image": agent_image(config.version),
            "command": job_command(plan),
            "env": [
                # Retries of one Job share its name, which the CronJob derives from the
                # scheduled time: the slot that gets exactly one backup.
                _kube.field_env("BACKUP_SLOT", "metadata.labels['batch.kubernetes.io/job-name']"),
                *store_environment(backup, config.name)],
            "volume_mounts": [mount(STORE_CREDENTIALS_VOLUME, STORE_CREDENTIALS_DIR,
                                    read_only=True)],
            "resources": {"requests": {"cpu": "10m", "memory": "64Mi"},
                          "limits": {"memory": "256Mi"}},
            "security_context": _kube.container_security_context(),
        }],
        "volumes": [store_credentials_volume(backup)],
    }
    return {
        "schedule": backup.schedule,
        "time_zone": "Etc/UTC",
        # The lock serialises racing Jobs anyway; Forbid keeps a slow backup from queueing
        # the next slot's Job behind it.
        "concurrency_policy": "Forbid",
        # A slot missed while the controller was down still runs within the hour.
        "starting_deadline_seconds": 3600,
        "successful_jobs_history_limit": 3,
        # Failed Jobs (and their logs, naming each pod's answer) stay for inspection.
        "failed_jobs_history_limit": 5,
        "job_template": {
            "metadata": {"labels": labels.all()},
            "spec": {"backoff_limit": 2,
                     "template": {"metadata": {"labels": labels.all()}, "spec": pod}},
        },
    }


def agent_network_policy_spec(plan: SchedulePlan) -> k8s.networking.v1.NetworkPolicySpecArgsDict:
    """The agents' port, from the backup Job's pods only. Policies add up, so this one
    allows what the cluster's own policy does not mention, and nothing else."""
    return {
        "pod_selector": {"match_labels": plan.pod_selector},
        "policy_types": ["Ingress"],
        "ingress": [{"ports": [{"port": AGENT_PORT, "protocol": "TCP"}],
                     "from_": [{"pod_selector": {
                         "match_labels": job_labels(plan.config).selector()}}]}],
    }


def add_schedule(name: str, plan: SchedulePlan, opts: pulumi.ResourceOptions) -> None:
    """When ``mysql.backup.enabled``: the CronJob and the agents' NetworkPolicy."""
    if not plan.config.backup.enabled:
        return
    meta = _kube.metadata(f"{plan.config.name}-backup", plan.namespace, job_labels(plan.config))
    k8s.batch.v1.CronJob(f"{name}-backup", metadata=meta, spec=cron_job_spec(plan), opts=opts)
    k8s.networking.v1.NetworkPolicy(f"{name}-backup-agent", metadata=meta,
                                    spec=agent_network_policy_spec(plan), opts=opts)


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
