"""MySQL cluster pods as local processes: the pod scripts run unmodified against real MariaDB.

A Kubernetes pod of the cluster is, for the scripts, nothing but an environment (CONTRACT.md),
a few directories and a sequence of containers. This module provides exactly that, on one
machine: each :class:`Pod` gets its own data dir (the PVC), conf.d and run dirs (emptyDirs), a
copy of the scripts and flavor config as the ConfigMap mount, the cluster Secret as files laid
out the way the kubelet writes a secret volume (``<key>`` -> ``..data/<key>``, mode 0440), one
volume per container holding only the keys that container mounts
(``components/mysql/credentials.py``), the contract's environment (``*_PASSWORD_FILE`` paths,
never a password) with ``POD_NAME`` injected as the downward API would, and ports
``PORT + ordinal * PORT_STRIDE`` on 127.0.0.1 (``PEER_HOST_TEMPLATE=127.0.0.1``). Each script
runs with the environment of the container that runs it in a cluster, so a script that reads
a password its container does not mount fails here as it would there. The container sequence
is emulated in order:
``init-config.sh``, ``clone.sh``, the server (mariadbd reading conf.d through ``!includedir``),
then the ``backup-server.sh`` sidecar. For the primary, the image entrypoint's first
initialisation is emulated: mariadb-install-db, the root password (read from the mysql
container's credentials file, as the image reads ``MARIADB_ROOT_PASSWORD_FILE``), then
``bootstrap-users.sh`` against the server's unix socket.

Every process is started here, in its own process group, and stopped by that group's id: a
"container" killed with SIGKILL takes the backup tool it was running with it, as a container's
cgroup would.

Both MariaDB versions run (``PodCluster(version=...)``, tests/support/mariadb.py): the scripts
get that version's client first on PATH and its server reads their conf.d. 11.4 has no backup
tool here, so an 11.4 replica is not cloned: :meth:`Pod.seed_without_backup` stands in for
``clone.sh`` and leaves what a clone of the primary's first state would (a fresh install, the
11.1+ binlog info naming an empty position, the clone-complete marker); the sidecar then
configures replication from it unmodified and the replica applies the primary's whole binary
log. The clone path itself is tested on 10.11 only.

The module is importable outside pytest (the issue-7 benchmark seeds a large replica through
:meth:`Pod.clone`); it only needs the Debian MariaDB tools and ncat or socat on PATH::

    with PodCluster(Path(tempfile.mkdtemp())) as cluster:
        primary = cluster.start_pod(0)          # install, bootstrap-users.sh, sidecar
        ...                                     # load data through primary.server.connect()
        replica = cluster.pod(1)
        replica.init_config()
        started = time.monotonic()
        assert replica.clone() == 0             # stream + extract + prepare + verify
        seconds = time.monotonic() - started
        replica.start_server(); replica.start_sidecar(); replica.wait_serving()
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from components.mysql import credentials
from components.mysql._record import EPOCH_LABEL, ROLE_LABEL
from components.mysql.flavor import FLAVORS
from tests.support.mariadb import DEBIAN, MariaDBServer, distribution
from tests.support.procs import LOCALHOST, ManagedProcess, require_binary, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPTS_DIR = REPO_ROOT / "components" / "mysql" / "scripts"
CONF_ROOT = REPO_ROOT / "components" / "mysql" / "conf"

Transport = Literal["ncat", "socat"]
Container = Literal["init-config", "clone", "mysql", "backup", "exporter-config", "tls-reload"]

# The container each script runs in (CONTRACT.md); `probe.sh backup` is the backup container's.
_SCRIPT_CONTAINERS: dict[str, Container] = {
    "init-config.sh": "init-config", "clone.sh": "clone", "backup-server.sh": "backup",
    "backup.sh": "backup", "binlog-archive.sh": "backup", "restore.sh": "backup",
    "verify.sh": "backup",
    "bootstrap-users.sh": "mysql", "probe.sh": "mysql", "exporter-config.sh": "exporter-config",
    "tls-reload.sh": "tls-reload",
}
_ACCOUNT_USERS = {"ADMIN_USER": "admin", "REPLICATION_USER": "repl", "MONITOR_USER": "monitor",
                  "BACKUP_USER": "backup", "TOPOLOGY_USER": "topology",
                  "EXPORTER_USER": "exporter"}

# Markers the scripts keep in DATA_DIR (lib.sh).
CLONE_IN_PROGRESS = ".clone-in-progress"
CLONE_COMPLETE = ".clone-complete"
REPLICATION_CONFIGURED = ".replication-configured"
REPLICATION_STARTED = ".replication-started"


def _password() -> str:
    # Characters that break naive quoting in option files (#, ", \) and SQL (', \), so every
    # test run proves the credentials survive both.
    return secrets.token_urlsafe(12) + "#'\" \\x"


@dataclass(frozen=True)
class ClusterSecrets:
    """The cluster Secret's passwords, by account (``credentials.PASSWORD_VARIABLES``)."""

    root: str = field(default_factory=_password)
    admin: str = field(default_factory=_password)
    replication: str = field(default_factory=_password)
    monitor: str = field(default_factory=_password)
    backup: str = field(default_factory=_password)
    topology: str = field(default_factory=_password)
    # Read by the exporter from a backquoted go-ini value: no backquote, no newline.
    exporter: str = field(default_factory=lambda: secrets.token_urlsafe(12) + "#'\" \\x")

    def password(self, account: str) -> str:
        credentials.secret_key(account)  # an unknown account is an error, not an attribute
        value: str = getattr(self, account)
        return value

    def passwords(self) -> list[str]:
        return [self.password(account) for account in credentials.PASSWORD_VARIABLES]

    def write_volume(self, directory: Path, accounts: tuple[str, ...]) -> None:
        """``accounts``' keys as the kubelet writes a secret volume: the files in a
        timestamped directory, ``..data`` pointing at it, each key a symlink through
        ``..data``, files created read-only (mode 0440) so no password is ever readable
        by others, not even while being written."""
        payload = directory / "..2026_01_01_00_00_00.000000001"
        payload.mkdir(parents=True, mode=0o750)
        for account in accounts:
            key = credentials.secret_key(account)
            descriptor = os.open(payload / key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                file.write(self.password(account))
            (payload / key).chmod(credentials.FILE_MODE)
            (directory / key).symlink_to(Path("..data") / key)
        (directory / "..data").symlink_to(payload.name)


# clone.sh run unmodified under a DEBUG trap that counts its steps (simple commands). -T makes
# the trap run in functions, command substitutions and subshells too, so every step of clone.sh
# and lib.sh counts; a subshell counts on from its parent's count at the fork. So a step number
# names one instant of a run, the same in every run over the same input. The trap runs just
# before its command: killing at step N leaves exactly what steps 1..N-1 did.
_KILL_AT_STEP = ("__kill_at=$1; __step=0; "
                 "trap '((++__step != __kill_at)) || kill -KILL 0' DEBUG; "
                 'source "$0"')
_TRACE_STEPS = ("__trace=$1; __step=0; "
                """trap 'printf "%d %s\\n" "$((++__step))" "$BASH_COMMAND" >>"$__trace"' DEBUG; """
                'source "$0"')


def _port_block(count: int) -> int:
    """The first of ``count`` consecutive ports free on every address, below the ephemeral range.

    Consecutive because the contract derives a pod's ports as ``PORT + ordinal * PORT_STRIDE``;
    below 32768 so that outgoing connections (which take ephemeral ports) never grab one.
    """
    for _ in range(200):
        base = random.randrange(20000, 32000 - count)  # noqa: S311 - not security relevant
        held: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                held.append(sock)
                sock.bind(("", port))
            return base
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
    raise RuntimeError(f"no block of {count} consecutive free ports found")


def _process_group(pgid: int) -> list[tuple[int, str]]:
    """(pid, command name) of every live process in process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # comm is parenthesised and may contain spaces; the fields after it are fixed.
        comm = stat[stat.index("(") + 1: stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append((int(entry.name), comm))
    return members


def _signal_group(process: ManagedProcess, signum: int) -> None:
    """Signal the process group we started, only while its leader (our child) is alive."""
    if process.running():
        os.killpg(process.pid, signum)


def listening(port: int) -> bool:
    """A TCP socket listens on ``port``, read from /proc: connecting would start a backup."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


def directory_bytes(path: Path) -> int:
    """Bytes of regular files under ``path``: what a recipient has received so far."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += (Path(root) / name).lstat().st_size
            except OSError:
                continue
    return total


class ByteLimitRelay:
    """A donor stand-in on ``listen_port`` relaying the backup stream served on
    ``upstream_port``, one connection at a time as the real listener. With ``limit`` set it
    passes on exactly that many bytes of a stream, sets ``held`` and keeps both connections
    open until :meth:`release`: a recipient killed while held has received exactly ``limit``
    bytes, whatever the machine's speed. ``relayed`` lists the bytes each finished stream
    carried."""

    def __init__(self, listen_port: int, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.limit: int | None = None
        self.held = threading.Event()
        self.relayed: list[int] = []
        self._release = threading.Event()
        self._server = socket.create_server((LOCALHOST, listen_port))
        self._thread = threading.Thread(target=self._serve, name="relay", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                client, _address = self._server.accept()
            except OSError:
                return  # closed
            with client, socket.create_connection((LOCALHOST, self.upstream_port)) as upstream:
                self.relayed.append(self._relay(client, upstream, self.limit))

    def _relay(self, client: socket.socket, upstream: socket.socket, limit: int | None) -> int:
        sent = 0
        try:
            while limit is None or sent < limit:
                chunk = upstream.recv(65536 if limit is None else min(65536, limit - sent))
                if not chunk:
                    return sent
                client.sendall(chunk)
                sent += len(chunk)
        except OSError:
            return sent  # the recipient was killed mid-stream
        self._release.clear()
        self.held.set()
        self._release.wait()
        return sent

    def release(self) -> None:
        """Let a held stream end (both connections close: the donor's backup stops); a no-op
        when no stream is held, so that it never ends the next one early."""
        if self.held.is_set():
            self.held.clear()
            self._release.set()

    def close(self) -> None:
        self._server.close()
        self._release.set()
        self._thread.join(timeout=60)


class PodCluster:
    """The pods of one StatefulSet, sharing a ConfigMap, a Secret and a port block."""

    def __init__(self, base: Path, *, name: str = "orders-mysql", max_pods: int = 6,
                 server_id_base: int = 7000, transport: Transport = "ncat",
                 max_replica_lag_seconds: int = 30, version: str = DEBIAN,
                 tls_dir: Path | None = None, require_secure_transport: bool = False,
                 port_base: int | None = None, peer_host_template: str = LOCALHOST) -> None:
        self.version = version
        self.distribution = distribution(version)
        require_binary("bash", transport)
        self.base = base
        self.name = name
        self.max_pods = max_pods
        self.server_id_base = server_id_base
        self.transport: Transport = transport
        self.max_replica_lag_seconds = max_replica_lag_seconds
        # mysql.tls: the Secret volume every pod mounts (one certificate for all of them here,
        # as a wildcard for the headless Service would be in a cluster).
        self.tls_dir = tls_dir
        self.require_secure_transport = require_secure_transport
        self.secrets = ClusterSecrets()
        # A fixed base (tests/e2e: the primary on 3306, where replicas look for it by pod
        # DNS name, resolved to 127.0.0.1 by a hosts file) or a free block.
        self.mysql_port = port_base if port_base is not None else _port_block(2 * max_pods)
        self.peer_host_template = peer_host_template
        self.backup_port = self.mysql_port + 1
        self.port_stride = 2
        self.config_dir = base / "config-map"
        self._write_config_map()
        self.credentials_root = base / "credentials"
        for container, accounts in credentials.CONTAINER_PASSWORDS.items():
            self.secrets.write_volume(self.credentials_dir(container), accounts)
        self.script_path = self.distribution.path(self._script_path())
        self.pods: dict[int, Pod] = {}

    def _write_config_map(self) -> None:
        """The ConfigMap mount: every script and the flavor's .cnf files under their own names."""
        self.config_dir.mkdir(parents=True, exist_ok=True)
        sources = [*SCRIPTS_DIR.glob("*.sh"), *(CONF_ROOT / "mariadb").glob("*.cnf"),
                   *((CONF_ROOT / "tls").glob("*.cnf") if self.tls_dir else ())]
        for source in sources:
            shutil.copyfile(source, self.config_dir / source.name)
            (self.config_dir / source.name).chmod(0o444)

    def _script_path(self) -> str:
        """PATH for the scripts: the real one, or with ncat hidden to exercise the socat path."""
        path = os.environ.get("PATH", "/usr/bin:/bin")
        if self.transport == "ncat":
            return path
        shadow = self.base / "bin-without-ncat"
        shadow.mkdir(exist_ok=True)
        seen: set[str] = set()
        for directory in path.split(os.pathsep):
            if not directory or not Path(directory).is_dir():
                continue
            for entry in Path(directory).iterdir():
                if entry.name in seen or entry.name == "ncat":
                    continue
                seen.add(entry.name)
                (shadow / entry.name).symlink_to(entry)
        return str(shadow)

    def credentials_dir(self, container: str) -> Path:
        """The container's credentials mount; it does not exist for containers without one."""
        return self.credentials_root / container

    def pod(self, ordinal: int) -> Pod:
        if ordinal not in self.pods:
            if ordinal >= self.max_pods:
                raise ValueError(f"ordinal {ordinal} is beyond max_pods={self.max_pods}")
            self.pods[ordinal] = Pod(self, ordinal)
        return self.pods[ordinal]

    def start_pod(self, ordinal: int) -> Pod:
        return self.pod(ordinal).start()

    @property
    def primary(self) -> Pod:
        return self.pod(0)

    def close(self) -> None:
        errors: list[BaseException] = []
        for pod in reversed(list(self.pods.values())):
            try:
                pod.stop()
            except BaseException as error:  # noqa: BLE001 - stop every pod, report the first failure
                errors.append(error)
        if errors:
            raise errors[0]

    def __enter__(self) -> PodCluster:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class Pod:
    """One StatefulSet pod: its volumes, its environment and its containers as processes."""

    def __init__(self, cluster: PodCluster, ordinal: int) -> None:
        self.cluster = cluster
        self.ordinal = ordinal
        self.name = f"{cluster.name}-{ordinal}"
        self.dir = cluster.base / self.name
        self.data_dir = self.dir / "data"  # the PVC: survives pod restarts
        self.logs = self.dir / "logs"
        self.mysql_port = cluster.mysql_port + ordinal * cluster.port_stride
        self.backup_port = cluster.backup_port + ordinal * cluster.port_stride
        self.generation = 0
        self._new_pod_volumes()
        # A private tmpdir: servers of other tests must never see (or clean) our temp tables.
        (self.dir / "tmp").mkdir()
        self.server = MariaDBServer(self.dir / "server", name=f"{self.name}-mysqld",
                                    port=self.mysql_port, include_dir=self.conf_dir,
                                    data_dir=self.data_dir,
                                    extra_config=f"tmpdir={self.dir / 'tmp'}",
                                    version=cluster.version)
        # As the image's entrypoint reads MARIADB_ROOT_PASSWORD_FILE. Replicas inherit the
        # primary's root account through their clone.
        self.server.root_password = (cluster.credentials_dir("mysql")
                                     / credentials.secret_key("root")).read_text()
        self.sidecar: ManagedProcess | None = None
        self.clone_process: ManagedProcess | None = None

    def _new_pod_volumes(self) -> None:
        """emptyDirs live as long as the pod: a pod restart gets fresh ones, the PVC stays."""
        self.generation += 1
        self.conf_dir = self.dir / "conf.d"
        self.run_dir = self.dir / "run"
        self.scratch_dir = self.dir / "scratch"  # the pod's /tmp volume
        for empty_dir in (self.conf_dir, self.run_dir, self.scratch_dir):
            if empty_dir.exists():
                shutil.rmtree(empty_dir)
        self.conf_dir.mkdir(parents=True)
        self.run_dir.mkdir(mode=0o700)
        self.scratch_dir.mkdir()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)

    def env(self, container: Container = "mysql") -> dict[str, str]:
        """The contract's environment, as ``container`` gets it in the StatefulSet."""
        c = self.cluster
        return {
            "POD_NAME": self.name,
            "MYSQL_FLAVOR": "mariadb",
            **FLAVORS["mariadb"].pod_environment(),
            "SERVER_ID_BASE": str(c.server_id_base),
            "PEER_HOST_TEMPLATE": c.peer_host_template,
            "MYSQL_PORT": str(c.mysql_port),
            "BACKUP_PORT": str(c.backup_port),
            "PORT_STRIDE": str(c.port_stride),
            "DATA_DIR": str(self.data_dir),
            "CONF_DIR": str(self.conf_dir),
            "CONFIG_DIR": str(c.config_dir),
            "RUN_DIR": str(self.run_dir),
            "MYSQL_SOCKET": str(self.server.socket),
            "MAX_REPLICA_LAG_SECONDS": str(c.max_replica_lag_seconds),
            "SERVER_WAIT_SECONDS": "600",
            "PATH": c.script_path,
            "TMPDIR": str(self.scratch_dir),
            # No record volume: the record is absent, as before the first `pulumi up`.
            "RECORD_DIR": str(self.dir / "record"),
            "ROLE_LABEL": ROLE_LABEL,
            "EPOCH_LABEL": EPOCH_LABEL,
            "ROLE_LABELS_FILE": str(self.scratch_dir / "role-labels.json"),
            **_ACCOUNT_USERS,
            **credentials.file_variables(str(c.credentials_dir(container))),
            **({"TLS_DIR": str(c.tls_dir), "REQUIRE_SECURE_TRANSPORT":
                "on" if c.require_secure_transport else "off"} if c.tls_dir else {}),
        }

    def _script(self, name: str, *args: str) -> list[str]:
        return ["bash", str(self.cluster.config_dir / name), *args]

    def run_script(self, name: str, *args: str, extra_env: dict[str, str] | None = None,
                   timeout: float = 300, container: Container | None = None
                   ) -> subprocess.CompletedProcess[str]:
        """Run a script to completion (an init container or a probe) in the environment of
        the container that runs it (``container`` overrides); never raises on failure."""
        if container is None:
            container = "backup" if (name, args[:1]) == ("probe.sh", ("backup",)) else (
                _SCRIPT_CONTAINERS[name])
        env = {**os.environ, **self.env(container), **(extra_env or {})}
        return subprocess.run(self._script(name, *args), env=env, capture_output=True, text=True,
                              timeout=timeout, check=False)

    def probe(self, kind: str) -> subprocess.CompletedProcess[str]:
        """``probe.sh KIND`` as the kubelet runs it (``backup``: in the backup container)."""
        return self.run_script("probe.sh", kind, timeout=60)

    def _checked(self, name: str, *args: str, extra_env: dict[str, str] | None = None
                 ) -> subprocess.CompletedProcess[str]:
        result = self.run_script(name, *args, extra_env=extra_env)
        self._append_log(name, result)
        if result.returncode != 0:
            raise RuntimeError(f"{self.name}: {name} exited {result.returncode}:\n{result.stderr}")
        return result

    def _append_log(self, name: str, result: subprocess.CompletedProcess[str]) -> None:
        with (self.logs / f"{Path(name).stem}.log").open("a") as log:
            log.write(result.stdout + result.stderr)

    # --- containers ---------------------------------------------------------------------------

    def init_config(self) -> None:
        self._checked("init-config.sh")

    def start_clone(self, *, kill_at_step: int | None = None,
                    trace_steps_to: Path | None = None) -> ManagedProcess:
        """The clone init container, in the background (to interrupt it on purpose).

        ``kill_at_step``: the container SIGKILLs its whole process group just before its
        Nth step (see _KILL_AT_STEP). ``trace_steps_to``: each step's number and command are
        appended to that file (``N command`` lines), to choose where to kill."""
        argv = self._script("clone.sh")
        if kill_at_step is not None:
            argv = ["bash", "-T", "-c", _KILL_AT_STEP, argv[1], str(kill_at_step)]
        elif trace_steps_to is not None:
            argv = ["bash", "-T", "-c", _TRACE_STEPS, argv[1], str(trace_steps_to)]
        self.clone_process = ManagedProcess(
            f"clone-{self.generation}", argv, log_dir=self.logs, env=self.env("clone")).start()
        return self.clone_process

    def wait_clone_group_gone(self, timeout: float = 60) -> int:
        """Wait until the clone container and every process of its group have ended (a
        SIGKILLed group's members die on their own schedule); returns its exit code."""
        process = self.clone_process
        assert process is not None
        assert process.process is not None
        code = process.process.wait(timeout)
        wait_until(lambda: not _process_group(process.pid), timeout=timeout,
                   what=f"{self.name}: every process of the clone container to end")
        return code

    def clone(self, timeout: float = 600) -> int:
        """Run the clone init container to completion; returns its exit code."""
        process = self.start_clone()
        assert process.process is not None
        try:
            return process.process.wait(timeout)
        finally:
            process.stop()

    def clone_log(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.logs.glob("clone-*.log")))

    def initialize_primary(self) -> None:
        """The image entrypoint's first start: install, root password, then the initdb.d script."""
        self.server.initialize()
        self._checked("bootstrap-users.sh", extra_env={"SOCKET": str(self.server.socket)})
        # MARIADB_ROOT_HOST=localhost: root is reachable through the socket only.
        self.query("DROP USER IF EXISTS 'root'@'127.0.0.1'")

    def seed_without_backup(self) -> None:
        """The clone init container for a version without a backup tool: a fresh install whose
        only change (root's password, which backup-server.sh logs in with) stays out of the
        binary log, so the replica's GTID history is empty and strict mode accepts the primary's
        from its first transaction on. A data dir already seeded is kept, as clone.sh keeps a
        completed clone."""
        if (self.data_dir / CLONE_COMPLETE).exists():
            return
        self.server.install().start(password="")
        try:
            with self.server.cursor(password="", host=None) as cursor:
                cursor.execute("SET SESSION sql_log_bin = 0")
                cursor.execute("ALTER USER 'root'@'localhost' IDENTIFIED BY %s",
                               (self.server.root_password,))
        finally:
            self.server.stop()
        # What mariadb-backup 11.1+ records, for a primary that has written nothing yet.
        (self.data_dir / "mariadb_backup_binlog_info").write_text("mysql-bin.000001\t4\t\n")
        (self.data_dir / CLONE_COMPLETE).write_text(
            "donor=none (seeded without a backup tool)\ngtid=\n")

    def start_server(self) -> None:
        self.server.start()

    def start_sidecar(self) -> ManagedProcess:
        self.sidecar = ManagedProcess(f"backup-{self.generation}", self._script("backup-server.sh"),
                                      log_dir=self.logs, env=self.env("backup")).start()
        return self.sidecar

    def open_primary(self) -> None:
        """What ReplicationInit's first `pulumi up` does to the recorded primary, which
        starts read-only like every server: the topology account makes it writable.
        Under requireSecureTransport TCP needs TLS, which these harness connections leave
        off (ReplicationInit's own TLS path is tested in test_tls.py): the socket then."""
        host = None if self.cluster.require_secure_transport else LOCALHOST
        self.server.query("SET GLOBAL read_only = OFF", user="topology",
                          password=self.cluster.secrets.topology, host=host)

    def start(self, *, wait: bool = True, open_primary: bool = True) -> Pod:
        """The whole pod: init-config, clone (replicas), server, sidecar; waits until serving.

        ``open_primary``: ordinal 0 (the primary while there is no record) is then made
        writable as ReplicationInit would (every server starts read-only)."""
        self.init_config()
        if self.ordinal > 0 and not self.cluster.distribution.has_backup_tool:
            self.seed_without_backup()
        else:
            # Every pod runs the clone init container; the script decides (the record's
            # authority, or a data dir that is already complete, clones nothing).
            code = self.clone()
            if code != 0:
                raise RuntimeError(f"{self.name}: clone.sh exited {code}:\n{self.clone_log()}")
        if not (self.data_dir / "mysql").exists():
            # The image entrypoint on an empty data dir: install, bootstrap-users.sh.
            self.initialize_primary()
        else:
            self.start_server()
        self.start_sidecar()
        if wait:
            self.wait_serving()
        if open_primary and self.ordinal == 0:
            self.open_primary()
        return self

    def wait_serving(self, timeout: float = 120) -> None:
        """The sidecar has configured replication (replicas) and listens for backups."""
        def serving() -> str | None:
            if self.sidecar is None or not self.sidecar.running():
                return "exited"
            if self.ordinal > 0 and not (self.data_dir / REPLICATION_STARTED).exists():
                return None
            return "serving" if listening(self.backup_port) else None

        state = wait_until(serving, timeout=timeout, what=f"{self.name} backup sidecar to serve")
        if state == "exited":
            tail = self.sidecar.log_tail() if self.sidecar else ""
            raise RuntimeError(f"{self.name}: backup sidecar exited:\n{tail}")

    def kill_sidecar(self) -> None:
        """SIGKILL the sidecar container: the listener and any backup it is streaming."""
        if self.sidecar is not None:
            _signal_group(self.sidecar, signal.SIGKILL)
            self.sidecar.kill()

    def sidecar_group(self) -> list[tuple[int, str]]:
        return _process_group(self.sidecar.pid) if self.sidecar and self.sidecar.running() else []

    def kill(self) -> None:
        """The node dies: every container of the pod is SIGKILLed."""
        self.kill_sidecar()
        if self.clone_process is not None:
            _signal_group(self.clone_process, signal.SIGKILL)
            self.clone_process.kill()
        self.server.kill()

    def replace_volume(self) -> None:
        """The pod is killed and its PVC replaced by an empty one (fresh emptyDirs too)."""
        self.kill()
        shutil.rmtree(self.data_dir)
        self._new_pod_volumes()

    def restart(self, *, wait: bool = True, open_primary: bool = True) -> Pod:
        """A new pod with the same name and PVC: fresh emptyDirs, every container again."""
        self.kill()
        self._new_pod_volumes()
        return self.start(wait=wait, open_primary=open_primary)

    def stop(self) -> None:
        if self.sidecar is not None:
            _signal_group(self.sidecar, signal.SIGTERM)
            self.sidecar.stop()
        if self.clone_process is not None:
            _signal_group(self.clone_process, signal.SIGCONT)
            _signal_group(self.clone_process, signal.SIGKILL)
            self.clone_process.stop()
        self.server.stop()

    # --- SQL ------------------------------------------------------------------------------------

    def query(self, sql: str, args: Any = None, **connect: Any) -> list[dict[str, Any]]:
        """As root through the socket by default (root@localhost only, as in the image)."""
        connect.setdefault("host", None)
        return self.server.query(sql, args, **connect)

    def query_as(self, user: str, sql: str, args: Any = None) -> list[dict[str, Any]]:
        """As a cluster account over TCP, the way applications and operators connect."""
        password = {"admin": self.cluster.secrets.admin,
                    "monitor": self.cluster.secrets.monitor}[user]
        return self.server.query(sql, args, user=user, password=password, host=LOCALHOST)

    def gtid_binlog_pos(self) -> str:
        return str(self.query("SELECT @@GLOBAL.gtid_binlog_pos AS g")[0]["g"])

    def wait_for_gtid(self, gtid: str, timeout: float = 120) -> None:
        """MASTER_GTID_WAIT until this replica has applied ``gtid``.

        Waits in one-second slices so that a stopped SQL thread fails at once with its error
        instead of after the whole timeout.
        """
        deadline = time.monotonic() + timeout
        while True:
            if self.query("SELECT MASTER_GTID_WAIT(%s, 1) AS r", (gtid,))[0]["r"] == 0:
                return
            status = self.query("SHOW REPLICA STATUS")
            if status and status[0]["Last_SQL_Errno"]:
                raise AssertionError(f"{self.name} stopped applying before {gtid}: "
                                     f"{status[0]['Last_SQL_Error']}")
            if time.monotonic() >= deadline:
                raise AssertionError(f"{self.name} did not reach {gtid} in {timeout}s: {status}")

    def wait_caught_up(self, timeout: float = 120) -> None:
        """Until the SQL thread says it has applied all it received (Seconds_Behind_Master 0).

        After MASTER_GTID_WAIT returns, MariaDB may still count lag from the backlog's event
        timestamps until its SQL thread finds the relay log exhausted: a readiness probe
        asked at that moment says "lag 48s" for a replica that holds everything. This is
        what a readiness check after catching up must wait for.
        """
        def caught_up() -> bool:
            status = self.query("SHOW REPLICA STATUS")
            if status and status[0]["Last_SQL_Errno"]:
                raise AssertionError(f"{self.name} stopped applying: "
                                     f"{status[0]['Last_SQL_Error']}")
            return bool(status) and status[0]["Seconds_Behind_Master"] == 0

        wait_until(caught_up, timeout=timeout, what=f"{self.name} to report no lag")

    def checksum(self, table: str) -> int:
        return int(self.query(f"CHECKSUM TABLE {table}")[0]["Checksum"])

    def markers(self) -> Iterator[str]:
        for marker in (CLONE_IN_PROGRESS, CLONE_COMPLETE, REPLICATION_CONFIGURED,
                       REPLICATION_STARTED):
            if (self.data_dir / marker).exists():
                yield marker
