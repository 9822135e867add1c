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

Why the verification is a CronJob of its own (``verify.sh``, with
``mysql.backup.verify.enabled``): a backup is proven only by restoring it. Its Job restores the
newest backup plus every archived binlog into a scratch server in its own pod (an emptyDir, no
network, stopped by its PID), so it needs no pod of the cluster and touches none; it compares
the GTID reached with what the archive promises and records the outcome, a failure too, next
to the backup; a failed verification is a failed Job. It holds the same cluster lock as the
backup Job, so retention (run by a backup Job under that lock) never deletes what it is
restoring, and it never restores a backup still being written.

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
from components.mysql import credentials
from components.mysql.flavor import FLAVORS

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
VERIFY_CONTAINER = "backup-verify"
# The verification's scratch server: its data dir, the restore's work dir and tmpdir on disk;
# its socket and the root client option file (a password) on a memory volume.
VERIFY_SCRATCH_VOLUME = "verify-scratch"
VERIFY_SCRATCH_DIR = "/var/lib/mysql-verify"
VERIFY_RUN_VOLUME = "verify-run"
VERIFY_RUN_DIR = "/run/mysql-verify"
# The cluster Secret's root password only: the restored accounts are the source's.
VERIFY_CREDENTIALS_VOLUME = "credentials-verify"
# A whole verification (the lock wait behind a running backup included) ends by then, so a
# stuck one never holds the cluster lock into the next day's backup.
VERIFY_DEADLINE_SECONDS = 6 * 3600
# The lock lease distlock keeps alive while the Job runs; a Job that dies frees it this soon.
JOB_LOCK_TTL_SECONDS = 30
RESTORE_CONTAINER = "restore"
# On the pod's /tmp volume: the plan and the archived binlogs, gone once the restore is done.
RESTORE_WORK_DIR = "/tmp/mysql-cluster-restore"  # noqa: S108 (the pod's own emptyDir)
# The archiver's first heartbeat comes once its server answers (the server's start, crash
# recovery included, may take the StatefulSet's SERVER_START_SECONDS): the startup probe
# allows that, so liveness never judges a loop that has not started.
ARCHIVER_STARTUP_SECONDS = 720
# A private mariadbd replaying binlogs (the restore init step, the verification): the
# server's own request, the backup tools' limit for the prepare.
SCRATCH_SERVER_RESOURCES: k8s.core.v1.ResourceRequirementsArgsDict = {
    "requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}}


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
        # In /proc, never by connecting: a connection is a backup request (probe.sh agent).
        # The listener starts at once, so no startup probe is needed before this one.
        "liveness_probe": {"exec_": {"command": [*script("probe.sh"), "agent"]},
                           "period_seconds": 10, "timeout_seconds": 5,
                           "failure_threshold": 3},
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
    config_map: str                  # the pod scripts' ConfigMap (verify.sh and its helpers)
    config_dir: str                  # where the pods mount it (CONFIG_DIR)
    secret: str                      # the cluster Secret (root's password, for verify.sh)


def job_labels(config: MySQLConfig) -> _kube.AppLabels:
    return _kube.AppLabels(name="mysql-backup", instance=config.name, component="backup-job",
                           version=config.version)


def verify_labels(config: MySQLConfig) -> _kube.AppLabels:
    """Not the backup Job's: the agents' NetworkPolicy admits only that one."""
    return _kube.AppLabels(name="mysql-backup", instance=config.name,
                           component="backup-verify", version=config.version)


def locked(plan: SchedulePlan, what: str) -> list[str]:
    """``distlock run ... <the cluster lock> --``: what follows runs only while the Job
    holds the cluster's FIFO lock (``what`` names the Job in the error)."""
    if not plan.lock_endpoints:
        raise ValueError(f"mysql.backup: the {what} takes the cluster's etcd lock, and this "
                         "cluster was given no etcd endpoints")
    return [_AGENT_PYTHON, "-m", "distlock", "run", "--backend", "etcd",
            "--endpoints", ",".join(plan.lock_endpoints),
            "--ttl", str(JOB_LOCK_TTL_SECONDS), plan.lock_name, "--"]


def job_command(plan: SchedulePlan) -> list[str]:
    """``distlock run`` holding the cluster lock around ``mysqlbackup scheduled-backup``,
    then retention; ``$(BACKUP_SLOT)`` is the Job's name (Kubernetes expands it)."""
    backup = plan.config.backup
    retention = ["--keep", str(backup.retention.count)]
    if backup.retention.max_age_days is not None:
        retention += ["--max-age-seconds", str(backup.retention.max_age_days * 86400)]
    return [*locked(plan, "scheduled backup"),
            _AGENT_PYTHON, "-m", "mysqlbackup", "scheduled-backup", "--slot", "$(BACKUP_SLOT)",
            "--peers", ",".join(f"{host}:{AGENT_PORT}" for host in plan.peer_hosts),
            *retention]


def _job_pod(plan: SchedulePlan, container: k8s.core.v1.ContainerArgsDict,
             volumes: list[k8s.core.v1.VolumeArgsDict]) -> k8s.core.v1.PodSpecArgsDict:
    """A backup-path Job's pod: one container in the agent image, the store's keys as
    files, no API token, no Service links, the hardened security contexts."""
    return {
        "restart_policy": "Never",
        "automount_service_account_token": False,
        "enable_service_links": False,
        "security_context": _kube.pod_security_context(user=plan.uid, group=plan.uid),
        "containers": [{
            **container,
            "image": agent_image(plan.config.version),
            "env": [*container.get("env", []),
                    *store_environment(plan.config.backup, plan.config.name)],
            "volume_mounts": [*container.get("volume_mounts", []),
                              mount(STORE_CREDENTIALS_VOLUME, STORE_CREDENTIALS_DIR,
                                    read_only=True)],
            "security_context": _kube.container_security_context(),
        }],
        "volumes": [*volumes, store_credentials_volume(plan.config.backup)],
    }


def _cron_job(schedule: str, labels: _kube.AppLabels, pod: k8s.core.v1.PodSpecArgsDict,
              **job: Any) -> k8s.batch.v1.CronJobSpecArgsDict:
    """The CronJob around ``pod``; ``job``: the Job spec's own settings."""
    return {
        "schedule": schedule,
        "time_zone": "Etc/UTC",
        # The lock serialises racing Jobs anyway; Forbid keeps a slow run from queueing
        # the next slot's Job behind it.
        "concurrency_policy": "Forbid",
        # A slot missed while the controller was down still runs within the hour.
        "starting_deadline_seconds": 3600,
        "successful_jobs_history_limit": 3,
        # Failed Jobs (and their logs, naming what went wrong) stay for inspection.
        "failed_jobs_history_limit": 5,
        "job_template": {
            "metadata": {"labels": labels.all()},
            "spec": {**job, "template": {"metadata": {"labels": labels.all()}, "spec": pod}},
        },
    }


def cron_job_spec(plan: SchedulePlan) -> k8s.batch.v1.CronJobSpecArgsDict:
    pod = _job_pod(plan, {
        "name": JOB_CONTAINER,
        "command": job_command(plan),
        "env": [
            # Retries of one Job share its name, which the CronJob derives from the
            # scheduled time: the slot that gets exactly one backup.
            _kube.field_env("BACKUP_SLOT", "metadata.labels['batch.kubernetes.io/job-name']")],
        "resources": {"requests": {"cpu": "10m", "memory": "64Mi"},
                      "limits": {"memory": "256Mi"}},
    }, [])
    return _cron_job(plan.config.backup.schedule, job_labels(plan.config), pod, backoff_limit=2)


def verify_command(plan: SchedulePlan) -> list[str]:
    """``verify.sh`` from the ConfigMap, under the cluster lock: no backup's retention
    deletes what it restores, and it never restores a backup still being written."""
    return [*locked(plan, "backup verification"), "bash", f"{plan.config_dir}/verify.sh"]


def verify_scratch_limit(config: MySQLConfig) -> str:
    """Twice the data PVC: the restored data dir fits in what the source's PVC holds, and
    so do the binlogs written since the newest backup (they are on that PVC too before the
    archiver uploads them); the scratch holds them twice, downloaded and replayed into the
    scratch server's own binary log."""
    return f"{int(2 * _validate.quantity_value(config.storage)) // 2**20}Mi"


def verify_cron_job_spec(plan: SchedulePlan) -> k8s.batch.v1.CronJobSpecArgsDict:
    config = plan.config
    flavor = FLAVORS[config.flavor]
    root_file = f"{credentials.CREDENTIALS_DIR}/{credentials.secret_key('root')}"
    pod = _job_pod(plan, {
        "name": VERIFY_CONTAINER,
        "command": verify_command(plan),
        "env": [
            _kube.value_env("MYSQL_FLAVOR", config.flavor),
            *(_kube.value_env(name, value) for name, value in flavor.pod_environment().items()),
            _kube.value_env("CONFIG_DIR", plan.config_dir),
            _kube.value_env(credentials.file_variable("root"), root_file),
            _kube.value_env("MARIADBD", "mariadbd"),
            _kube.value_env("VERIFY_BACKUP", "latest"),
            _kube.value_env("VERIFY_WORK_DIR", VERIFY_SCRATCH_DIR),
            _kube.value_env("VERIFY_RUN_DIR", VERIFY_RUN_DIR),
            # The scratch server's and the prepare's temporary files: the root file system
            # is read-only.
            _kube.value_env("TMPDIR", VERIFY_SCRATCH_DIR),
        ],
        "volume_mounts": [
            mount("config-map", plan.config_dir, read_only=True),
            mount(VERIFY_CREDENTIALS_VOLUME, credentials.CREDENTIALS_DIR, read_only=True),
            mount(VERIFY_SCRATCH_VOLUME, VERIFY_SCRATCH_DIR),
            mount(VERIFY_RUN_VOLUME, VERIFY_RUN_DIR),
        ],
        "resources": SCRATCH_SERVER_RESOURCES,
    }, [
        {"name": "config-map", "config_map": {"name": plan.config_map, "default_mode": 0o444}},
        {"name": VERIFY_CREDENTIALS_VOLUME, "secret": {
            "secret_name": plan.secret, "default_mode": credentials.FILE_MODE,
            "optional": False,
            "items": [{"key": credentials.secret_key("root"),
                       "path": credentials.secret_key("root")}]}},
        _kube.empty_dir(VERIFY_SCRATCH_VOLUME, size_limit=verify_scratch_limit(config)),
        _kube.empty_dir(VERIFY_RUN_VOLUME, memory=True, size_limit="16Mi"),
    ])
    return _cron_job(
        config.backup.verify.schedule, verify_labels(config), pod,
        active_deadline_seconds=VERIFY_DEADLINE_SECONDS,
        # A failed verification is a finding, not a fault to retry: verify.sh has recorded
        # it, and the Job fails at once. Only a pod the node took away (drain, eviction)
        # is run again.
        backoff_limit=2,
        pod_failure_policy={"rules": [
            {"action": "Ignore",
             "on_pod_conditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {"action": "FailJob", "on_exit_codes": {
                "container_name": VERIFY_CONTAINER, "operator": "NotIn", "values": [0]}},
        ]})


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
    """When ``mysql.backup.enabled``: the CronJob and the agents' NetworkPolicy; with
    ``mysql.backup.verify.enabled`` the verification CronJob too."""
    if not plan.config.backup.enabled:
        return
    meta = _kube.metadata(f"{plan.config.name}-backup", plan.namespace, job_labels(plan.config))
    k8s.batch.v1.CronJob(f"{name}-backup", metadata=meta, spec=cron_job_spec(plan), opts=opts)
    k8s.networking.v1.NetworkPolicy(f"{name}-backup-agent", metadata=meta,
                                    spec=agent_network_policy_spec(plan), opts=opts)
    if plan.config.backup.verify.enabled:
        k8s.batch.v1.CronJob(
            f"{name}-backup-verify", spec=verify_cron_job_spec(plan), opts=opts,
            metadata=_kube.metadata(f"{plan.config.name}-backup-verify", plan.namespace,
                                    verify_labels(plan.config)))


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
        "resources": SCRATCH_SERVER_RESOURCES,
        "security_context": _kube.container_security_context(),
    })
    if STORE_CREDENTIALS_VOLUME not in [volume["name"] for volume in spec["volumes"]]:
        spec["volumes"].append(store_credentials_volume(config.backup))
