"""The backup tests' view of a bucket and of a cluster restored from it.

Shared by tests/integration/test_backup.py and bench/backup.py, so the benchmark runs the
pod scripts exactly the way the tests prove them (test modules never import each other).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import boto3

from components.mysql import credentials
from tests.support.etcd import EtcdMember, healthy
from tests.support.pods import REPO_ROOT, Pod, PodCluster, _port_block, listening
from tests.support.procs import (
    LOCALHOST,
    ManagedProcess,
    free_ports,
    require_binary,
    wait_until,
)
from tests.support.seaweedfs import SeaweedS3
from tests.support.tools import find_tool


class Store:
    """One bucket of the test server, as the scripts and the test see it."""

    def __init__(self, server: SeaweedS3, bucket: str) -> None:
        self.server = server
        self.bucket = bucket
        self.env = {**server.env(bucket, prefix="orders"), "MYSQLBACKUP_PYTHON": sys.executable,
                    "PYTHONPATH": str(REPO_ROOT)}
        self.client: Any = boto3.session.Session().client(
            "s3", endpoint_url=server.endpoint, region_name="us-east-1",
            aws_access_key_id=server.access_key, aws_secret_access_key=server.secret_key)
        self.client.create_bucket(Bucket=bucket)

    def objects(self, prefix: str = "") -> list[str]:
        answer = self.client.list_objects_v2(Bucket=self.bucket, Prefix=f"orders/{prefix}")
        return sorted(item["Key"][len("orders/"):] for item in answer.get("Contents", []))

    def put(self, key: str, body: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=f"orders/{key}", Body=body)

    def get(self, key: str) -> bytes:
        data: bytes = self.client.get_object(Bucket=self.bucket, Key=f"orders/{key}")["Body"].read()
        return data

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=f"orders/{key}")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mysqlbackup", *args], capture_output=True,
                              text=True, check=False, env={**os.environ, **self.env}, timeout=300)

    def listing(self) -> dict[str, Any]:
        result = self.cli("list")
        assert result.returncode == 0, result.stderr
        listing: dict[str, Any] = json.loads(result.stdout)
        return listing


def backup(pod: Pod, store: Store, **env: str) -> dict[str, Any]:
    result = pod.run_script("backup.sh", container="backup", extra_env={**store.env, **env})
    assert result.returncode == 0, result.stderr
    summary: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return summary


def archive(pod: Pod, store: Store) -> dict[str, Any]:
    result = pod.run_script("binlog-archive.sh", "once", container="backup",
                            extra_env=store.env)
    assert result.returncode == 0, result.stderr
    summary: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return summary


class Archiver:
    """``binlog-archive.sh`` running its loop beside ``pod``, as the sidecar runs it; stopped
    (its whole process group, by PID) on exit."""

    def __init__(self, pod: Pod, store: Store, interval: int,
                 extra_env: dict[str, str] | None = None) -> None:
        env = {**os.environ, **pod.env("backup"), **store.env,
               "ARCHIVE_INTERVAL_SECONDS": str(interval), **(extra_env or {})}
        self.env = env
        self.pod = pod
        self.store = store
        self.process = subprocess.Popen(
            ["bash", str(pod.cluster.config_dir / "binlog-archive.sh")], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            start_new_session=True)
        # Read as it comes, so the log can be polled while the loop runs.
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    def probe(self) -> subprocess.CompletedProcess[str]:
        """``binlog-archive.sh alive`` as the kubelet runs it in the archiver container."""
        return subprocess.run(["bash", str(self.pod.cluster.config_dir / "binlog-archive.sh"),
                               "alive"], env=self.env, capture_output=True, text=True,
                              timeout=60, check=False)

    def logged(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def __enter__(self) -> Archiver:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self) -> str:
        """Stops the loop; returns what it logged."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=30)
        self._reader.join(timeout=30)
        return "".join(self.lines)

    def pythons(self) -> list[int]:
        """PIDs of the Python processes in the loop's process group."""
        found = []
        for status in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = status.read_text().rsplit(")", 1)[1].split()
                command = (status.parent / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue  # gone meanwhile
            if int(fields[2]) == self.process.pid and b"mysqlbackup" in command:
                found.append(int(status.parent.name))
        return sorted(found)

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(self.store.get(key)) for key in self.store.objects("binlogs/")
                if key.endswith(".json")]


class Restore:
    """A new cluster whose ordinal 0 is restored from the store.

    It gets the source cluster's Secret: the accounts live in the restored data, so the
    new pods must log in with the passwords the backup holds.
    """

    def __init__(self, source: Pod, store: Store) -> None:
        # Its own short temp dir: a unix socket path must stay under 108 bytes.
        base = Path(tempfile.mkdtemp(prefix="restore-"))
        self.base = base
        self.cluster = PodCluster(base, name="restored-mysql")
        # The Secret is the source's (see the class docstring): rewrite every volume.
        shutil.rmtree(self.cluster.credentials_root)
        object.__setattr__(self.cluster, "secrets", source.cluster.secrets)
        for container, accounts in credentials.CONTAINER_PASSWORDS.items():
            self.cluster.secrets.write_volume(self.cluster.credentials_dir(container), accounts)
        self.pod = self.cluster.pod(0)
        self.store = store
        self.work = base / "restore-work"

    def env(self, backup_id: str, point: str) -> dict[str, str]:
        return {**self.store.env, "RESTORE_BACKUP": backup_id, "RESTORE_POINT": point,
                "RESTORE_WORK_DIR": str(self.work)}

    def fetch(self, backup_id: str = "latest", point: str = "") -> subprocess.CompletedProcess[str]:
        self.pod.init_config()
        return self.pod.run_script("restore.sh", "fetch", container="backup",
                                   extra_env=self.env(backup_id, point), timeout=600)

    def init_step(self, backup_id: str = "latest", point: str = "",
                  pod: Pod | None = None) -> subprocess.CompletedProcess[str]:
        """The ``restore`` init container of ``pod`` (default ordinal 0), after init-config,
        before the pod's server starts: restore-init.sh as the StatefulSet runs it (its work
        dir on the pod's /tmp volume), its private server reading the pod's own config."""
        pod = pod or self.pod
        pod.init_config()
        return pod.run_script("restore-init.sh", container="backup", timeout=600, extra_env={
            **self.store.env, "RESTORE_BACKUP": backup_id, "RESTORE_POINT": point,
            "MARIADBD": pod.server.distribution.tool("mariadbd"),
            "MARIADBD_DEFAULTS_FILE": str(pod.server.defaults_file)})

    def run(self, backup_id: str = "latest", point: str = "") -> str:
        fetched = self.fetch(backup_id, point)
        assert fetched.returncode == 0, fetched.stderr
        self.pod.start_server()
        applied = self.pod.run_script("restore.sh", "apply", container="backup",
                                      extra_env=self.env(backup_id, point), timeout=600)
        assert applied.returncode == 0, applied.stderr
        return applied.stdout.strip().splitlines()[-1]

    def close(self) -> None:
        try:
            self.cluster.close()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


def etcd_binaries() -> tuple[str, str]:
    """etcd + etcdctl 3.5 when built (tools/kube), else Debian's 3.4 pair."""
    built, built_ctl = find_tool("etcd"), find_tool("etcdctl")
    if built and built_ctl:
        return str(built), str(built_ctl)
    require_binary("etcd", "etcdctl")
    etcd, etcdctl = shutil.which("etcd"), shutil.which("etcdctl")
    assert etcd is not None
    assert etcdctl is not None
    return etcd, etcdctl


def lock_etcd(base: Path, data_dir: Path | None = None, name: str = "lock") -> EtcdMember:
    """One etcd member on free ports; ``data_dir`` may hold a restored snapshot."""
    etcd, _ = etcd_binaries()
    client, peer = free_ports(2)
    url, peer_url = f"http://{LOCALHOST}:{client}", f"http://{LOCALHOST}:{peer}"
    data = data_dir or base / "data"
    argv = [etcd, f"--name={name}", f"--data-dir={data}", f"--listen-client-urls={url}",
            f"--advertise-client-urls={url}", f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}", f"--initial-cluster={name}={peer_url}"]
    member = EtcdMember(name, argv, client_url=url, data_dir=data, log_dir=base)
    member.start()
    wait_until(lambda: healthy(url), timeout=30, what=f"etcd {name} to be healthy")
    return member


# The per-cluster lock (components/mysql/_replication.py, cluster_lock_name), as the Job's
# distlock takes it.
CLUSTER_LOCK = "mysql-cluster/orders-mysql-0.orders-mysql-headless:3306/replication"


class Agents:
    """``backup-agent.sh`` beside each pod, as the ``backup-agent`` sidecar runs it: the backup
    container's environment plus the store's, on ``BACKUP_AGENT_PORT + ordinal *
    PORT_STRIDE``; each stopped with its whole process group (the listener, a request being
    answered, the backup it runs)."""

    def __init__(self, pods: list[Pod], store: Store,
                 extra_env: dict[str, str] | None = None) -> None:
        self.store = store
        self.extra_env = extra_env or {}
        cluster = pods[0].cluster
        self.stride = cluster.port_stride
        self.base = _port_block(cluster.max_pods * self.stride)
        self.pods = pods
        self.processes: dict[int, ManagedProcess] = {}
        for pod in pods:
            self.start(pod)

    def port(self, pod: Pod) -> int:
        return self.base + pod.ordinal * self.stride

    def start(self, pod: Pod) -> None:
        env = {**pod.env("backup"), **self.store.env, "BACKUP_AGENT_PORT": str(self.base),
               **self.extra_env}
        argv = ["bash", str(pod.cluster.config_dir / "backup-agent.sh")]
        self.processes[pod.ordinal] = ManagedProcess(
            f"backup-agent-{pod.ordinal}", argv, log_dir=pod.logs, env=env).start()
        wait_until(lambda: listening(self.port(pod)), timeout=30,
                   what=f"{pod.name}'s backup agent to listen")

    def peers(self) -> str:
        return ",".join(f"{LOCALHOST}:{self.port(pod)}" for pod in self.pods)

    def log(self, pod: Pod) -> str:
        return self.processes[pod.ordinal].log_tail(400)

    def stop(self, pod: Pod) -> None:
        process = self.processes.pop(pod.ordinal, None)
        if process is not None and process.running():
            os.killpg(process.pid, signal.SIGTERM)
        if process is not None:
            process.stop()

    def close(self) -> None:
        for pod in self.pods:
            self.stop(pod)

    def __enter__(self) -> Agents:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def scheduled_job(etcd_url: str, agents: Agents, slot: str, *extra: str
                  ) -> subprocess.Popen[str]:
    """The CronJob's Job, started: its command (components/mysql/_backup.py, job_command)
    with the test's etcd, agents and store; only the store's settings in its environment."""
    argv = [sys.executable, "-m", "distlock", "run", "--backend", "etcd", "--endpoints",
            etcd_url, "--ttl", "10", CLUSTER_LOCK, "--",
            sys.executable, "-m", "mysqlbackup", "scheduled-backup", "--slot", slot,
            "--peers", agents.peers(), "--keep", "7", *extra]
    return subprocess.Popen(argv, env={**os.environ, **agents.store.env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
