"""mysql.backup.enabled in the rendered stack: the archiver sidecar in every pod of the
StatefulSet (binlog-archive.sh decides at each tick whether its pod is the recorded primary),
the agent image pinned by the content that goes into it, and the store's keys reaching the
pod only as files of a Secret volume (under mocks, validated against the official schemas).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from components.mysql import _backup
from tests.support.mocks import ProgramResult, manifests, run_program, stack_with
from tests.support.objects import BACKUP_RESTORE, BACKUP_STORE, tls_secret_object
from tests.support.schemas import VERSIONS, schema_failures

ROOT = Path(__file__).resolve().parents[2]
STORE = BACKUP_STORE
RESTORE = BACKUP_RESTORE


@pytest.fixture(scope="module")
def enabled() -> ProgramResult:
    return run_program(stack_with("dev", backup=STORE))


@pytest.fixture(scope="module")
def restoring() -> ProgramResult:
    """A new cluster restored from the store; the store is read only (backups stay off)."""
    return run_program(stack_with("dev", backup={**STORE, "enabled": False},
                                  restore=RESTORE))


def _statefulset(result: ProgramResult) -> dict[str, Any]:
    """The MySQL cluster's (the stack has etcd's too)."""
    statefulset: dict[str, Any] = next(
        m for m in manifests(result) if m["kind"] == "StatefulSet"
        and "mysql" in [c["name"] for c in m["spec"]["template"]["spec"]["containers"]])
    return statefulset


def _pod(result: ProgramResult) -> dict[str, Any]:
    pod: dict[str, Any] = _statefulset(result)["spec"]["template"]["spec"]
    return pod


def _archiver(pod: dict[str, Any]) -> dict[str, Any]:
    found = [c for c in pod["containers"] if c["name"] == _backup.ARCHIVER_CONTAINER]
    assert len(found) == 1, [c["name"] for c in pod["containers"]]
    archiver: dict[str, Any] = found[0]
    return archiver


def test_no_archiver_while_backups_are_off(dev: ProgramResult) -> None:
    pod = _pod(dev)
    assert _backup.ARCHIVER_CONTAINER not in [c["name"] for c in pod["containers"]]
    assert _backup.STORE_CREDENTIALS_VOLUME not in [v["name"] for v in pod["volumes"]]


def test_the_archiver_runs_binlog_archive_beside_the_server(enabled: ProgramResult) -> None:
    pod = _pod(enabled)
    archiver = _archiver(pod)
    assert archiver["command"] == ["bash", "/mnt/config-map/binlog-archive.sh"]
    env = {e["name"]: e.get("value") for e in archiver["env"]}
    assert env["S3_BUCKET"] == "db-backups"
    assert env["S3_PREFIX"] == _statefulset(enabled)["metadata"]["name"]
    assert env["ARCHIVE_INTERVAL_SECONDS"] == "7"
    mounts = {m["name"]: m for m in archiver["volumeMounts"]}
    # The binary logs (read only), the server's socket, the record it re-reads every tick.
    assert mounts["data"]["readOnly"] is True
    assert mounts["data"]["mountPath"] == env["DATA_DIR"]
    assert {"socket", "record", "run", "config-map", "credentials-backup"} <= set(mounts)
    # The binlog-archive.sh it runs is in the ConfigMap the pod mounts.
    config_map = next(m for m in manifests(enabled) if m["kind"] == "ConfigMap"
                      and "binlog-archive.sh" in m.get("data", {}))
    assert config_map["data"]["binlog-archive.sh"] == (
        ROOT / "components/mysql/scripts/binlog-archive.sh").read_text()


def test_the_archiver_is_probed_by_its_loop_heartbeat(enabled: ProgramResult) -> None:
    """A hung upload keeps every process alive: only the heartbeat shows it, so both probes
    run ``binlog-archive.sh alive`` (exec: it reads a file, never the store or the server)."""
    archiver = _archiver(_pod(enabled))
    for kind in ("startupProbe", "livenessProbe"):
        probe = archiver[kind]
        assert probe["exec"]["command"] == ["bash", "/mnt/config-map/binlog-archive.sh",
                                            "alive"], kind
    # The liveness probe judges only a loop that has started: the startup probe waits out
    # the server's start.
    startup = archiver["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
    assert archiver["livenessProbe"]["failureThreshold"] >= 2


def test_the_agent_image_is_pinned_by_the_content_that_goes_into_it(
        enabled: ProgramResult) -> None:
    digest = hashlib.sha256()
    for path in [ROOT / "deploy/backup/agent.Dockerfile",
                 *sorted((ROOT / "mysqlbackup").glob("*.py")),
                 *sorted((ROOT / "distlock").rglob("*.py"))]:
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes()
                      + b"\0")
    version = _statefulset(enabled)["metadata"]["labels"]["app.kubernetes.io/version"]
    assert _archiver(_pod(enabled))["image"] == (
        f"{_backup.AGENT_REPOSITORY}:{version}-{digest.hexdigest()[:12]}")
    dockerfile = (ROOT / "deploy/backup/agent.Dockerfile").read_text()
    # prometheus-client: the backup gauges archive-serve serves (mysqlbackup/metrics.py).
    pins = [line for requirements in ("requirements.txt", "requirements-dev.txt")
            for line in (ROOT / requirements).read_text().split()
            if line.startswith(("boto3==", "grpcio==", "protobuf==", "prometheus-client=="))]
    assert len(pins) == 4
    for pin in pins:
        name, version = pin.split("==")
        assert f"ARG {name.upper().replace('-', '_')}_VERSION={version}" in dockerfile, (
            f"the image's {name} is requirements.txt's")
    assert "COPY distlock " in dockerfile


def test_store_keys_reach_the_pod_only_as_secret_volume_files(enabled: ProgramResult) -> None:
    pod = _pod(enabled)
    volume = next(v for v in pod["volumes"] if v["name"] == _backup.STORE_CREDENTIALS_VOLUME)
    assert volume["secret"]["secretName"] == "backup-store"
    assert sorted(i["key"] for i in volume["secret"]["items"]) == ["access-key", "secret-key"]
    for container in [*pod["containers"], *pod["initContainers"]]:
        names = {m["name"]: m for m in container.get("volumeMounts", [])}
        for variable in container.get("env", []):
            # No secretKeyRef anywhere: every key is a file.
            assert "secretKeyRef" not in variable.get("valueFrom", {}), (container["name"],
                                                                          variable)
        if container["name"] in (_backup.ARCHIVER_CONTAINER, _backup.AGENT_CONTAINER):
            mount = names[_backup.STORE_CREDENTIALS_VOLUME]
            assert mount["readOnly"] is True
            env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
            for name, key in _backup.STORE_KEYS.items():
                assert env[name] == f"{mount['mountPath']}/{key}"
        else:
            assert _backup.STORE_CREDENTIALS_VOLUME not in names, container["name"]
    # And nowhere in the stack's outputs or other objects is the Secret's content.
    assert not any(m["kind"] == "Secret" and m["metadata"]["name"] == "backup-store"
                   for m in manifests(enabled))


def _backup_cron_jobs(result: ProgramResult) -> list[dict[str, Any]]:
    """The MySQL cluster's (etcd has a snapshot CronJob of its own)."""
    return [m for m in manifests(result) if m["kind"] == "CronJob"
            and m["metadata"]["labels"]["app.kubernetes.io/component"] == "backup-job"]


def _cron_job(result: ProgramResult) -> dict[str, Any]:
    found = _backup_cron_jobs(result)
    assert len(found) == 1, [m["metadata"]["name"] for m in found]
    cron_job: dict[str, Any] = found[0]
    return cron_job


def _job_container(pod: dict[str, Any]) -> tuple[dict[str, Any], list[str], list[str]]:
    """A backup-path Job's one container and its command split at ``--`` (distlock's
    arguments, what runs under the lock); its pod never restarts in place and has no token."""
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    command: list[str] = container["command"]
    separator = command.index("--")
    return container, command[:separator], command[separator + 1:]


def test_no_schedule_while_backups_are_off(dev: ProgramResult) -> None:
    assert not _backup_cron_jobs(dev)
    assert _backup.AGENT_CONTAINER not in [c["name"] for c in _pod(dev)["containers"]]


def test_every_pod_runs_a_backup_agent_beside_the_server(enabled: ProgramResult) -> None:
    pod = _pod(enabled)
    (agent,) = [c for c in pod["containers"] if c["name"] == _backup.AGENT_CONTAINER]
    assert agent["command"] == ["bash", "/mnt/config-map/backup-agent.sh"]
    assert agent["ports"] == [{"name": _backup.AGENT_CONTAINER,
                               "containerPort": _backup.AGENT_PORT, "protocol": "TCP"}]
    env = {e["name"]: e.get("value") for e in agent["env"]}
    assert env["BACKUP_AGENT_PORT"] == str(_backup.AGENT_PORT)
    assert env["BACKUP_COMPRESSION"] == "gzip"
    mounts = {m["name"]: m for m in agent["volumeMounts"]}
    # backup.sh reads the data dir and the socket; the backup account's password only.
    assert mounts["data"]["readOnly"] is True
    assert {"socket", "record", "run", "tmp", "config-map", "credentials-backup"} <= set(mounts)
    assert agent["image"] == _archiver(pod)["image"]
    # Checked in /proc by probe.sh, never by connecting: a connection is a backup request.
    assert agent["livenessProbe"]["exec"]["command"] == [
        "bash", "/mnt/config-map/probe.sh", "agent"]


def test_the_cron_job_asks_the_agents_under_the_cluster_lock(enabled: ProgramResult) -> None:
    cron_job = _cron_job(enabled)
    spec = cron_job["spec"]
    assert spec["schedule"] == "0 3 * * *"
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["failedJobsHistoryLimit"] >= 1, "failed Jobs are how a failure shows"
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    job, lock, backup = _job_container(pod)
    assert lock[1:4] == ["-m", "distlock", "run"]
    statefulset = _statefulset(enabled)
    name = statefulset["metadata"]["name"]
    headless = statefulset["spec"]["serviceName"]
    # The lock ReplicationInit and switchovers take: none of them overlaps a backup.
    assert lock[-1] == f"mysql-cluster/{name}-0.{headless}:3306/replication"
    assert lock[lock.index("--endpoints") + 1].startswith("http")
    assert backup[1:4] == ["-m", "mysqlbackup", "scheduled-backup"]
    assert backup[backup.index("--slot") + 1] == "$(BACKUP_SLOT)"
    replicas = int(statefulset["spec"]["replicas"])
    assert backup[backup.index("--peers") + 1].split(",") == [
        f"{name}-{i}.{headless}:{_backup.AGENT_PORT}" for i in range(replicas)]
    assert backup[backup.index("--keep") + 1] == "7"
    env = {e["name"]: e for e in job["env"]}
    assert env["BACKUP_SLOT"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['batch.kubernetes.io/job-name']")
    assert env["S3_BUCKET"]["value"] == "db-backups"
    assert [m["name"] for m in job["volumeMounts"]] == [_backup.STORE_CREDENTIALS_VOLUME]
    assert [v["name"] for v in pod["volumes"]] == [_backup.STORE_CREDENTIALS_VOLUME]
    for variable in job["env"]:
        assert "secretKeyRef" not in variable.get("valueFrom", {})


def test_only_the_backup_jobs_reach_the_agents(enabled: ProgramResult) -> None:
    job_labels = _cron_job(enabled)["spec"]["jobTemplate"]["spec"]["template"]["metadata"][
        "labels"]
    pod_labels = _statefulset(enabled)["spec"]["template"]["metadata"]["labels"]
    policies = [m for m in manifests(enabled) if m["kind"] == "NetworkPolicy"
                and any(p.get("port") == _backup.AGENT_PORT
                        for rule in m["spec"].get("ingress", []) for p in rule.get("ports", []))]
    assert len(policies) == 1
    spec = policies[0]["spec"]
    assert spec["podSelector"]["matchLabels"].items() <= pod_labels.items()
    (rule,) = spec["ingress"]
    (source,) = rule["from"]
    assert source["podSelector"]["matchLabels"].items() <= job_labels.items()
    # The Job's pods are not database pods: no Service selects them.
    assert not spec["podSelector"]["matchLabels"].items() <= job_labels.items()


def test_retention_by_age_reaches_the_job() -> None:
    result = run_program(stack_with("dev", backup={**STORE, "retention": {
        "count": 3, "maxAgeDays": 14}, "schedule": "15 */6 * * *"}))
    spec = _cron_job(result)["spec"]
    assert spec["schedule"] == "15 */6 * * *"
    command = spec["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[command.index("--keep") + 1] == "3"
    assert command[command.index("--max-age-seconds") + 1] == str(14 * 86400)


def test_no_restore_step_unless_mysql_restore_is_set(enabled: ProgramResult) -> None:
    names = [c["name"] for c in _pod(enabled)["initContainers"]]
    assert _backup.RESTORE_CONTAINER not in names


def test_the_restore_step_runs_after_init_config_and_before_the_clone(
        restoring: ProgramResult) -> None:
    pod = _pod(restoring)
    names = [c["name"] for c in pod["initContainers"]]
    # init-config writes the server-id and role config its private server reads; the clone
    # of every other pod copies the restored primary.
    assert names[:3] == ["init-config", _backup.RESTORE_CONTAINER, "clone"], names
    restore = pod["initContainers"][1]
    assert restore["command"] == ["bash", "/mnt/config-map/restore-init.sh"]
    env = {e["name"]: e.get("value") for e in restore["env"]}
    assert env["RESTORE_BACKUP"] == RESTORE["backup"]
    assert env["RESTORE_POINT"] == RESTORE["pointInTime"]
    assert env["RESTORE_WORK_DIR"] == _backup.RESTORE_WORK_DIR  # the pod's /tmp volume
    assert env["S3_BUCKET"] == "db-backups"
    mounts = {m["name"]: m for m in restore["volumeMounts"]}
    # It writes the data dir (never read-only here) and reads the pod's conf.d and the
    # source's root password (the restored accounts are the source's).
    assert mounts["data"].get("readOnly") is not True
    assert mounts["data"]["mountPath"] == env["DATA_DIR"]
    assert mounts["conf"]["mountPath"] == env["CONF_DIR"]
    assert {"record", "tmp", "run", "credentials-backup"} <= set(mounts)
    assert mounts[_backup.STORE_CREDENTIALS_VOLUME]["readOnly"] is True
    assert restore["image"] == _archiver_image(restoring)
    config_map = next(m for m in manifests(restoring) if m["kind"] == "ConfigMap"
                      and "restore-init.sh" in m.get("data", {}))
    for script in ("restore-init.sh", "private-server.sh", "restore.sh"):
        assert config_map["data"][script] == (
            ROOT / "components/mysql/scripts" / script).read_text()
    # The store's keys volume once, though the archiver is off.
    volumes = [v["name"] for v in pod["volumes"]]
    assert volumes.count(_backup.STORE_CREDENTIALS_VOLUME) == 1
    assert _backup.ARCHIVER_CONTAINER not in [c["name"] for c in pod["containers"]]


def test_restore_and_archiving_share_one_store_keys_volume() -> None:
    both = run_program(stack_with("dev", backup=STORE, restore=RESTORE))
    volumes = [v["name"] for v in _pod(both)["volumes"]]
    assert volumes.count(_backup.STORE_CREDENTIALS_VOLUME) == 1
    failures = schema_failures(manifests(both), VERSIONS[-1])
    assert not failures, "\n".join(failures)


def _archiver_image(result: ProgramResult) -> str:
    version = _statefulset(result)["metadata"]["labels"]["app.kubernetes.io/version"]
    return _backup.agent_image(version)


@pytest.mark.parametrize("version", VERSIONS)
def test_the_objects_validate_against_the_official_schemas(enabled: ProgramResult,
                                                           restoring: ProgramResult,
                                                           version: str) -> None:
    failures = schema_failures([*manifests(enabled), *manifests(restoring)], version)
    assert not failures, "\n".join(failures)


def test_with_tls_the_backup_sidecars_mount_the_certificate_their_checks_read() -> None:
    """backup-agent.sh picks a replica by ``probe.sh readiness``, which checks the TLS files
    at TLS_DIR first: unmounted, every replica would refuse and the primary be backed up."""
    config = stack_with("dev", backup=STORE, tls={"enabled": True, "secret": "mysql-tls"})
    pod = _pod(run_program(config, existing=tls_secret_object(
        config["mysql-cluster:namespace"], name="mysql-tls")))
    for container in pod["containers"]:
        if container["name"] in (_backup.AGENT_CONTAINER, _backup.ARCHIVER_CONTAINER):
            env = {e["name"]: e.get("value") for e in container["env"]}
            mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
            assert env["TLS_DIR"] in mounts, container["name"]
            assert mounts[env["TLS_DIR"]]["name"] == "tls"
            assert mounts[env["TLS_DIR"]]["readOnly"] is True


# --- the verification CronJob (mysql.backup.verify) ---------------------------------------------

@pytest.fixture(scope="module")
def verifying() -> ProgramResult:
    return run_program(stack_with("dev", backup={**STORE, "verify": {"enabled": True}}))


def _verify_cron_jobs(result: ProgramResult) -> list[dict[str, Any]]:
    return [m for m in manifests(result) if m["kind"] == "CronJob"
            and m["metadata"]["labels"]["app.kubernetes.io/component"] == "backup-verify"]


def _verify_pod(result: ProgramResult) -> dict[str, Any]:
    (cron_job,) = _verify_cron_jobs(result)
    pod: dict[str, Any] = cron_job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return pod


def test_no_verification_unless_it_is_enabled(enabled: ProgramResult) -> None:
    assert _verify_cron_jobs(enabled) == []


def test_the_verification_runs_verify_sh_under_the_backup_jobs_lock(
        verifying: ProgramResult) -> None:
    (cron_job,) = _verify_cron_jobs(verifying)
    statefulset = _statefulset(verifying)
    name = statefulset["metadata"]["name"]
    assert cron_job["metadata"]["name"] == f"{name}-backup-verify"
    spec = cron_job["spec"]
    # An hour after the default backup; never two at once.
    assert spec["schedule"] == "0 4 * * *"
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] > 0
    assert spec["failedJobsHistoryLimit"] >= 1, "a failed verification is a failed Job"
    job = spec["jobTemplate"]["spec"]
    assert 0 < job["activeDeadlineSeconds"] <= 86400, "a stuck run must free the lock"
    # A failed verification fails the Job at once; only a disrupted pod is run again.
    rules = {rule["action"]: rule for rule in job["podFailurePolicy"]["rules"]}
    assert rules["FailJob"]["onExitCodes"] == {
        "containerName": _backup.VERIFY_CONTAINER, "operator": "NotIn", "values": [0]}
    assert rules["Ignore"]["onPodConditions"] == [{"type": "DisruptionTarget", "status": "True"}]
    pod = _verify_pod(verifying)
    container, lock, verify = _job_container(pod)
    # Exactly the backup Job's lock: retention never deletes what a verification restores.
    _backup_job, backup_lock, _ = _job_container(
        _cron_job(verifying)["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    assert lock == backup_lock
    assert lock[-1] == f"mysql-cluster/{name}-0.{statefulset['spec']['serviceName']}" \
        ":3306/replication"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert verify == ["bash", f"{env['CONFIG_DIR']}/verify.sh"]
    assert container["image"] == _archiver(_pod(verifying))["image"]
    # The verify.sh it runs (and what it sources) is in the ConfigMap it mounts.
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_volume = volumes[mounts[env["CONFIG_DIR"]]["name"]]
    config_map = next(m for m in manifests(verifying) if m["kind"] == "ConfigMap"
                      and m["metadata"]["name"] == config_volume["configMap"]["name"])
    for script in ("verify.sh", "lib.sh", "private-server.sh", "restore.sh"):
        assert config_map["data"][script] == (
            ROOT / "components/mysql/scripts" / script).read_text()
    assert env["MYSQL_FLAVOR"] == "mariadb"
    assert env["MARIADBD"] == "mariadbd"
    assert env["S3_BUCKET"] == "db-backups"
    assert env["S3_PREFIX"] == name, "the prefix the backups are written under"


def test_the_verification_scratch_and_secrets_are_volumes(verifying: ProgramResult) -> None:
    pod = _verify_pod(verifying)
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}

    def volume_at(path: str) -> dict[str, Any]:
        directory = path.rsplit("/", 1)[0] if path not in mounts else path
        volume: dict[str, Any] = volumes[mounts[directory]["name"]]
        return volume

    # The scratch data dir: disk, bounded by twice the data PVC (data + binlogs, twice).
    scratch = volume_at(env["VERIFY_WORK_DIR"])
    storage = _statefulset(verifying)["spec"]["volumeClaimTemplates"][0]["spec"][
        "resources"]["requests"]["storage"]
    assert storage == "2Gi"
    assert scratch["emptyDir"] == {"sizeLimit": "4096Mi"}
    assert volume_at(env["TMPDIR"]) is scratch
    # The socket and the root option file (a password): memory, never the node's disk.
    assert volume_at(env["VERIFY_RUN_DIR"])["emptyDir"]["medium"] == "Memory"
    # Root's password (the restored accounts are the source's): one key of the cluster
    # Secret as a file; the store's keys likewise.
    root = volume_at(env["ROOT_PASSWORD_FILE"])["secret"]
    assert root["secretName"] == next(
        m["metadata"]["name"] for m in manifests(verifying) if m["kind"] == "Secret"
        and "root-password" in m.get("data", m.get("stringData", {})))
    assert root["items"] == [{"key": "root-password", "path": "root-password"}]
    for name, key in _backup.STORE_KEYS.items():
        store = volume_at(env[name])["secret"]
        assert store["secretName"] == "backup-store"
        assert env[name].endswith(f"/{key}")
    for mount in container["volumeMounts"]:
        if "secret" in volumes[mount["name"]] or "configMap" in volumes[mount["name"]]:
            assert mount["readOnly"] is True, mount
    for variable in container["env"]:
        assert "valueFrom" not in variable, variable
    assert not [v for v in env if v.endswith("PASSWORD") or v.startswith("AWS_")]


@pytest.mark.parametrize("version", VERSIONS)
def test_the_verification_validates_against_the_official_schemas(verifying: ProgramResult,
                                                                 version: str) -> None:
    failures = schema_failures(manifests(verifying), version)
    assert not failures, "\n".join(failures)
