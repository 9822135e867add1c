"""EtcdCluster for real: the StatefulSet's exact member command line on a local etcd cluster.

Each "pod" is started from the command, arguments and environment of the StatefulSet
rendered under mocks (:func:`tests.unit.test_etcd_cluster.render`), expanded the way the
kubelet expands ``$(VAR)``, with pod DNS names replaced by 127.0.0.1 ports. etcd is the
image's release (3.5, built by scripts/build-tools.sh), so every flag runs as deployed; only
paths differ from the pod, adapted in exactly one place, :func:`adapt_to_this_machine`:
where the etcd binaries and the busybox the pod copies in live. Membership changes go
through the real provider server (``python -m pulumi.dynamic``), as ``pulumi up`` drives
them, while this test plays the StatefulSet controller: it starts a pod only after the
provider returned, and stops one only after the provider removed it.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import signal
import subprocess
import threading
import urllib.error
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from components.etcd._membership import (
    DESIRED_MEMBERS_KEY,
    EtcdMembershipProvider,
    MembershipError,
    _Gateway,
)
from components.etcd.cluster import (
    CLIENT_TLS_DIR,
    DATA_DIR,
    DATA_MOUNT,
    PEER_TLS_DIR,
    SCRIPTS_DIR,
    SCRIPTS_MOUNT,
    SHELL_MOUNT,
)
from tests.support.etcd import EtcdMember, etcd_binary, etcdctl_binary, gateway, healthy
from tests.support.procs import LOCALHOST, free_ports, require_binary, run, wait_until
from tests.support.provider_server import (
    ProviderError,
    ProviderServer,
    ResourceDriver,
)
from tests.unit.test_etcd_cluster import DYNAMIC, NAMESPACE, Rendered, render

pytestmark = pytest.mark.integration

MAX_MEMBERS = 7
TYPE_NAME = "pulumi-python:dynamic:Resource"
_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def adapt_to_this_machine(command: list[str], env: dict[str, str]) -> list[str]:
    """Every difference between the images (etcd 3.5, busybox) and this machine: paths.

    - The busybox image has ``/bin/busybox``; here Debian's static busybox (same applets,
      also statically linked) is copied by the very same init-container commands.
    - The etcd image has ``/usr/local/bin/etcd[ctl]``; here they are the same release
      built from its Go module (tests/support/tools.py).
    - The pod waits ``MEMBER_RETRY_SECONDS`` (2 s) between membership checks; tests pace
      their polling faster. Waiting is still on a condition: the member list.
    """
    busybox = shutil.which("busybox")
    assert busybox is not None
    etcdctl = etcdctl_binary()
    env.update({"MEMBER_ETCD": etcd_binary(), "MEMBER_ETCDCTL": etcdctl,
                "SNAPSHOT_ETCDCTL": etcdctl, "MEMBER_RETRY_SECONDS": "0.2"})
    return [busybox if word == "/bin/busybox" else word for word in command]


def mount(text: str, volumes: Mapping[str, Path]) -> str:
    """Container paths to the host directories standing in for the pod's volumes."""
    for container_path, host_path in volumes.items():
        text = text.replace(container_path, str(host_path))
    return text


def run_init_containers(pod: Mapping[str, Any], volumes: Mapping[str, Path]) -> None:
    """Run the pod's init containers as the kubelet would: in order, each to completion."""
    for init in pod.get("initContainers", []):
        command = adapt_to_this_machine([mount(w, volumes) for w in init["command"]], {})
        run(command, timeout=30)


def expand(text: str, values: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: defined variables are replaced, others left as is."""
    return _VAR.sub(lambda m: values.get(m.group(1), m.group(0)), text)


def container_env(container: Mapping[str, Any], pod_name: str) -> dict[str, str]:
    """The container's environment as the kubelet builds it (in order, with expansion)."""
    env: dict[str, str] = {}
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = expand(str(entry["value"]), env)
        elif entry.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[entry["name"]] = pod_name
        else:
            raise AssertionError(f"unexpected env source in the pod template: {entry}")
    return env


@dataclass(frozen=True)
class Ports:
    client: int
    peer: int
    metrics: int


class LocalStatefulSet:
    """The StatefulSet controller and cluster DNS for one etcd StatefulSet, on 127.0.0.1."""

    def __init__(self, base: Path, rendered: Rendered, *, tls_dir: Path | None = None) -> None:
        # Debian's busybox-static stands in for the busybox image's static binary.
        etcd_binary()
        etcdctl_binary()
        require_binary("busybox")
        self.base = base
        # The cert-manager Secrets (peer and client) as one directory of tls.crt/key, ca.crt.
        self.tls_dir = tls_dir
        self.scheme = "https" if tls_dir else "http"
        self.rendered = rendered
        self.template_pod = rendered.statefulset["spec"]["template"]["spec"]
        self.template_container = rendered.etcd_container
        ports = free_ports(3 * MAX_MEMBERS)
        self.ports = [Ports(*ports[3 * i:3 * i + 3]) for i in range(MAX_MEMBERS)]
        self.members: dict[int, EtcdMember] = {}

    def pod(self, ordinal: int) -> str:
        return f"etcd-{ordinal}"

    def client_url(self, ordinal: int) -> str:
        return f"{self.scheme}://{LOCALHOST}:{self.ports[ordinal].client}"

    def peer_url(self, ordinal: int) -> str:
        return f"{self.scheme}://{LOCALHOST}:{self.ports[ordinal].peer}"

    def metrics_url(self, ordinal: int) -> str:
        return f"http://{LOCALHOST}:{self.ports[ordinal].metrics}"

    def volumes(self, ordinal: int) -> dict[str, Path]:
        """The pod's volumes: its PVC and emptyDir as directories, the ConfigMap as the
        repository's scripts directory (what the ConfigMap is built from)."""
        root = self.base / self.pod(ordinal)
        volumes = {DATA_MOUNT: root / "volume", SHELL_MOUNT: root / "shell",
                   SCRIPTS_MOUNT: SCRIPTS_DIR}
        if self.tls_dir:
            volumes.update({PEER_TLS_DIR: self.tls_dir, CLIENT_TLS_DIR: self.tls_dir})
        return volumes

    def data_dir(self, ordinal: int) -> Path:
        return Path(mount(DATA_DIR, self.volumes(ordinal)))

    def dns(self, text: str, ordinal: int | None = None) -> str:
        """Pod DNS names to loopback ports; a member's own 0.0.0.0 listeners to its ports."""
        for i in range(MAX_MEMBERS):
            host = f"{self.pod(i)}.etcd-peer.{NAMESPACE}.svc"
            text = text.replace(f"{host}:2380", f"{LOCALHOST}:{self.ports[i].peer}")
            text = text.replace(f"{host}:2379", f"{LOCALHOST}:{self.ports[i].client}")
        if ordinal is not None:
            own = self.ports[ordinal]
            for port, local in ((2379, own.client), (2380, own.peer), (2381, own.metrics)):
                text = text.replace(f"0.0.0.0:{port}", f"{LOCALHOST}:{local}")
            text = mount(text, self.volumes(ordinal))
        return text

    def argv_env(self, ordinal: int) -> tuple[list[str], dict[str, str]]:
        container = self.template_container
        env = container_env(container, self.pod(ordinal))
        argv = [expand(a, env) for a in [*container["command"], *container["args"]]]
        env = {k: self.dns(v, ordinal) for k, v in env.items()}
        argv = [self.dns(a, ordinal) for a in argv]
        return adapt_to_this_machine(argv, env), env

    def start(self, ordinal: int, *, overrides: Mapping[str, str] | None = None) -> EtcdMember:
        """Create the pod: fresh emptyDirs, init containers, then the etcd container.

        ``overrides`` change the environment: a shorter MEMBER_STALE_LEARNER_SECONDS so a
        test of a learner whose pod never runs need not wait two minutes, or a faulty
        MEMBER_ETCDCTL."""
        volumes = self.volumes(ordinal)
        shutil.rmtree(volumes[SHELL_MOUNT], ignore_errors=True)
        for path in (volumes[DATA_MOUNT], volumes[SHELL_MOUNT]):
            path.mkdir(parents=True, exist_ok=True)
        run_init_containers(self.template_pod, volumes)
        argv, env = self.argv_env(ordinal)
        env.update(overrides or {})
        member = EtcdMember(self.pod(ordinal), argv, client_url=self.client_url(ordinal),
                            data_dir=self.data_dir(ordinal), log_dir=self.base, env=env)
        self.members[ordinal] = member.start()
        return member

    def signal(self, ordinal: int, signum: int) -> None:
        """Signal the pod's whole process group: the script and the etcd it started."""
        member = self.members[ordinal]
        if member.running():
            os.killpg(member.process.pid, signum)

    def kill(self, ordinal: int) -> None:
        self.signal(ordinal, signal.SIGKILL)
        self.members[ordinal].process.process.wait()  # type: ignore[union-attr]

    def stop(self, ordinal: int) -> None:
        member = self.members.get(ordinal)
        if member is None or member.process.process is None:
            return
        self.signal(ordinal, signal.SIGTERM)
        try:
            member.process.process.wait(20)
        except subprocess.TimeoutExpired:
            self.kill(ordinal)

    def stop_all(self) -> None:
        """Clean-up: SIGKILL. A graceful stop of the last members would wait seconds each
        for etcd's leadership transfer to peers that are already gone."""
        for ordinal in list(self.members):
            self.kill(ordinal)

    def log(self, ordinal: int) -> str:
        return self.members[ordinal].process.log_tail(1000)

    def wait_healthy(self, *ordinals: int) -> None:
        """Ready as the readiness probe sees it: /health on the plain-HTTP metrics port."""
        for ordinal in ordinals:
            wait_until(lambda o=ordinal: healthy(self.metrics_url(o)), timeout=60,  # type: ignore[misc]
                       what=f"{self.pod(ordinal)} to report healthy\n"
                            f"{self.members[ordinal].process.log_tail()}")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def member_list(endpoint: str) -> list[dict[str, Any]]:
    members: list[dict[str, Any]] = gateway(endpoint, "/v3/cluster/member/list", {})["members"]
    return members


def voters(endpoint: str) -> list[str]:
    return sorted(m.get("name", "") for m in member_list(endpoint) if not m.get("isLearner"))


def listed(endpoint: str, peer_url: str) -> dict[str, Any] | None:
    """The member-list entry with ``peer_url``, or None when it is not a member."""
    return next((m for m in member_list(endpoint) if m["peerURLs"] == [peer_url]), None)


def desired_members(endpoint: str) -> list[str]:
    """The peer URLs EtcdMembership recorded as desired, as the pods read them."""
    answer = gateway(endpoint, "/v3/kv/range", {"key": _b64(DESIRED_MEMBERS_KEY)})
    (kv,) = answer["kvs"]
    return base64.b64decode(kv["value"]).decode().split(",")


def put(endpoint: str, key: str, value: str) -> None:
    gateway(endpoint, "/v3/kv/put", {"key": _b64(key), "value": _b64(value)})


def read_prefix(endpoint: str, prefix: str, *, serializable: bool = False) -> dict[str, str]:
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    answer = gateway(endpoint, "/v3/kv/range", {"key": _b64(prefix), "range_end": _b64(end),
                                               "serializable": serializable}, timeout=10)
    return {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv["value"]).decode()
            for kv in answer.get("kvs", [])}


class Writer(threading.Thread):
    """Writes w/000000, w/000001... round-robin over endpoints; records acknowledged keys."""

    def __init__(self, endpoints: list[str]) -> None:
        super().__init__(daemon=True)
        self.endpoints = endpoints
        self.acknowledged: list[str] = []
        self.failures = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        sequence = 0
        while not self.stopping.is_set():
            key = f"w/{sequence:06d}"
            try:
                put(self.endpoints[sequence % len(self.endpoints)], key, str(sequence))
            except OSError:
                # Unacknowledged: the key may or may not exist; it is never asserted on.
                self.failures += 1
                self.stopping.wait(0.02)
            else:
                self.acknowledged.append(key)
            sequence += 1

    def count(self) -> int:
        return len(self.acknowledged)

    def stop(self) -> None:
        self.stopping.set()
        self.join(30)


@pytest.fixture
def statefulset(tmp_path: Path) -> Iterator[LocalStatefulSet]:
    pods = LocalStatefulSet(tmp_path, render(replicas=3))
    try:
        yield pods
    finally:
        pods.stop_all()


def start_initial(pods: LocalStatefulSet,
                  list_voters: Callable[[], list[str]] | None = None) -> None:
    """Start the initial three pods and wait until all three are voting members.

    Healthy is not enough: etcd 3.5 reports a learner healthy before it is promoted,
    and a learner refuses client requests (the gateway answers 503). ``list_voters``
    reads the voting members (default: plain HTTP to etcd-0)."""
    for ordinal in range(3):
        pods.start(ordinal)
    pods.wait_healthy(0, 1, 2)
    wait_until(lambda: (list_voters or (lambda: voters(pods.client_url(0))))() == [
        "etcd-0", "etcd-1", "etcd-2"], timeout=60,
        what="the initial three members to be voting members")


def test_members_bootstrap_from_the_statefulset_command_line_and_survive_a_kill(
        statefulset: LocalStatefulSet, tmp_path: Path) -> None:
    pods = statefulset
    argv, env = pods.argv_env(1)
    assert f"--name={pods.pod(1)}" in argv
    assert f"--initial-advertise-peer-urls={pods.peer_url(1)}" in argv
    assert env["MEMBER_BOOTSTRAP_CLUSTER"].count(f"http://{LOCALHOST}:") == 3
    start_initial(pods)
    endpoint = pods.client_url(0)
    assert voters(endpoint) == ["etcd-0", "etcd-1", "etcd-2"]
    for i in range(20):
        put(pods.client_url(i % 3), f"k/{i:03d}", str(i))

    leader = next(o for o in range(3) if pods.members[o].is_leader())
    ids_before = {m["name"]: m["ID"] for m in member_list(endpoint)}
    pods.kill(leader)
    survivors = [o for o in range(3) if o != leader]
    # Two of three keep a quorum: writes resume once they elect a new leader.
    def write_after_kill() -> bool:
        put(pods.client_url(survivors[0]), "k/after-kill", "x")
        return True

    wait_until(write_after_kill, timeout=30, what="a write after the leader was killed")
    for i in range(20, 40):
        put(pods.client_url(survivors[i % 2]), f"k/{i:03d}", str(i))

    # Restarted on its data dir, the member rejoins under the same ID and catches up.
    pods.start(leader)
    pods.wait_healthy(leader)
    wait_until(lambda: len(read_prefix(pods.client_url(leader), "k/", serializable=True)) == 41,
               timeout=30, what="the restarted member to serve every key")
    assert {m["name"]: m["ID"] for m in member_list(endpoint)} == ids_before
    assert "restarting on the existing data dir" in pods.members[leader].process.log_tail(200)

    # The snapshot CronJob's script against the same cluster: three runs, two retained.
    job = render(replicas=3, snapshot={"retain": 2}).one("kubernetes:batch/v1:CronJob")
    job_pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    snapshots = tmp_path / "snapshots"
    volumes = {"/snapshots": snapshots, SHELL_MOUNT: tmp_path / "job-shell",
               SCRIPTS_MOUNT: SCRIPTS_DIR}
    for path in (snapshots, volumes[SHELL_MOUNT]):
        path.mkdir()
    run_init_containers(job_pod, volumes)
    (container,) = job_pod["containers"]
    job_env = {k: mount(v, volumes) for k, v in container_env(container, "snap-1").items()}
    # The client Service: any member.
    job_env["SNAPSHOT_ENDPOINT"] = endpoint
    command = adapt_to_this_machine([mount(w, volumes) for w in container["command"]], job_env)
    for _ in range(3):
        run(command, env=job_env, timeout=60)
    kept = sorted(p.name for p in snapshots.iterdir())
    assert len(kept) == 2, kept
    assert all(re.fullmatch(r"etcd-\d{8}T\d{6}Z-\d{2}\.db", name) for name in kept), kept
    status = run([etcdctl_binary(), "snapshot", "status", str(snapshots / kept[-1]), "-w", "json"])
    assert '"totalKey"' in status.stdout


def membership_inputs(pods: LocalStatefulSet, replicas: int, *,
                      tls_files: Mapping[str, str] | None = None,
                      **etcd: Any) -> dict[str, Any]:
    """The EtcdMembership inputs the component renders for ``replicas``, DNS replaced."""
    inputs = render(replicas=replicas, **etcd).one(DYNAMIC)
    return {
        "members": [{"name": m["name"], "peer_url": pods.dns(m["peer_url"])}
                    for m in inputs["members"]],
        # The client Service: any member; the initial ones are always members.
        "endpoints": [pods.client_url(o) for o in range(3)],
        "timeout_seconds": 60,
        # Files on the machine running `pulumi up` (membership.caFile/certFile/keyFile).
        "tls": dict(tls_files) if tls_files else inputs.get("tls"),
    }


def wait_voter(pods: LocalStatefulSet, ordinal: int) -> None:
    name = pods.pod(ordinal)
    wait_until(lambda: name in voters(pods.client_url(0)), timeout=60,
               what=f"{name} to be promoted to a voting member\n"
                    f"{pods.members[ordinal].process.log_tail()}")


def test_scale_3_to_5_to_3_in_one_up_each_loses_no_acknowledged_write(
        statefulset: LocalStatefulSet, tmp_path: Path) -> None:
    pods = statefulset
    start_initial(pods)
    endpoint = pods.client_url(0)
    writer = Writer([pods.client_url(o) for o in range(3)])
    with ProviderServer(log_path=tmp_path / "provider.log") as server:
        server.configure()
        driver = ResourceDriver(server, EtcdMembershipProvider(), type_name=TYPE_NAME,
                                name="locks-membership")
        created = driver.up(membership_inputs(pods, 3))
        assert created.operation == "create"
        bootstrap = created.outputs["bootstrap_cluster"]
        assert bootstrap == pods.argv_env(0)[1]["MEMBER_BOOTSTRAP_CLUSTER"]
        writer.start()

        # 3 -> 5 in one `pulumi up`. Before the StatefulSet grows, the provider has
        # recorded the five desired members and added etcd-3 as a learner; etcd-4 cannot
        # be added yet (etcd admits one learner at a time).
        before = writer.count()
        assert driver.up(membership_inputs(pods, 5)).operation == "update"
        assert desired_members(endpoint) == [pods.peer_url(o) for o in range(5)]
        learner = listed(endpoint, pods.peer_url(3))
        assert learner is not None
        assert learner.get("isLearner")
        assert listed(endpoint, pods.peer_url(4)) is None
        # The StatefulSet grows only after the provider returned, both pods at once
        # (Parallel): etcd-4 adds itself as soon as etcd-3 is promoted.
        pods.start(3)
        pods.start(4)
        wait_voter(pods, 3)
        wait_voter(pods, 4)
        assert voters(endpoint) == [f"etcd-{i}" for i in range(5)]
        assert "added this member as a learner" in pods.log(4)
        assert "added this member as a learner" not in pods.log(3)
        wait_until(lambda: writer.count() > before + 50, timeout=30,
                   what="writes to continue while two members joined")
        # The bootstrap list is recorded once: scaling never changes the pod template.
        assert driver.state is not None
        assert driver.state.outputs["bootstrap_cluster"] == bootstrap

        # 5 -> 3 in one `pulumi up`: highest ordinals removed before the StatefulSet shrinks.
        before = writer.count()
        assert driver.up(membership_inputs(pods, 3)).operation == "update"
        assert voters(endpoint) == ["etcd-0", "etcd-1", "etcd-2"]
        assert desired_members(endpoint) == [pods.peer_url(o) for o in range(3)]
        # Until the StatefulSet deletes it, the kubelet restarts a removed member's
        # container: on its old data, no longer desired, it waits instead of adding
        # itself back.
        pods.stop(4)
        pods.start(4)
        wait_until(lambda: "is not a desired member: waiting" in pods.log(4), timeout=30,
                   what=f"removed etcd-4 to wait\n{pods.log(4)}")
        assert listed(endpoint, pods.peer_url(4)) is None
        pods.stop(4)
        pods.stop(3)
        wait_until(lambda: writer.count() > before + 50, timeout=30,
                   what="writes to continue after the scale-down")

        # 3 -> 5 again with both old volumes still there (PVC retention "Retain", or a
        # cluster older than the retention policy): their data belongs to removed IDs.
        # etcd-3, added again by the provider, and etcd-4, adding itself, both keep the
        # old data aside (nothing is deleted) and join as new members.
        assert driver.up(membership_inputs(pods, 5)).operation == "update"
        pods.start(3)
        pods.start(4)
        wait_voter(pods, 3)
        wait_voter(pods, 4)
        assert "belongs to a removed incarnation" in pods.log(3)
        assert "is wanted again" in pods.log(4)
        for ordinal in (3, 4):
            assert list(pods.data_dir(ordinal).parent.glob("data.removed-*"))
        assert driver.up(membership_inputs(pods, 3)).operation == "update"
        pods.stop(4)
        pods.stop(3)
    writer.stop()
    assert writer.is_alive() is False

    stored = read_prefix(endpoint, "w/")
    lost = [key for key in writer.acknowledged if key not in stored]
    assert not lost, f"{len(lost)} acknowledged writes lost, first {lost[:5]}"
    assert len(writer.acknowledged) > 150


def test_scale_1_to_3_in_one_up_from_the_dev_stack_size(tmp_path: Path) -> None:
    pods = LocalStatefulSet(tmp_path / "pods", render(replicas=1))
    try:
        pods.start(0)
        pods.wait_healthy(0)
        endpoint = pods.client_url(0)
        for i in range(20):
            put(endpoint, f"s/{i:03d}", str(i))
        with ProviderServer(log_path=tmp_path / "provider.log") as server:
            server.configure()
            driver = ResourceDriver(server, EtcdMembershipProvider(), type_name=TYPE_NAME,
                                    name="locks-membership")
            driver.up({**membership_inputs(pods, 1), "endpoints": [endpoint]})
            driver.up({**membership_inputs(pods, 3), "endpoints": [endpoint]})
        # etcd-1 was added by the provider; etcd-2 adds itself once etcd-1 is promoted
        # (which needs both of the then two voters: the single member alone never was
        # fault tolerant).
        pods.start(1)
        pods.start(2)
        wait_voter(pods, 1)
        wait_voter(pods, 2)
        assert voters(endpoint) == ["etcd-0", "etcd-1", "etcd-2"]
        assert "added this member as a learner" in pods.log(2)
        for ordinal in (1, 2):
            wait_until(lambda o=ordinal: len(read_prefix(pods.client_url(o), "s/",  # type: ignore[misc]
                                                         serializable=True)) == 20,
                       timeout=30, what=f"etcd-{ordinal} to hold every key")
    finally:
        pods.stop_all()


def etcdctl_that_never_promotes(directory: Path) -> str:
    """An etcdctl for a pod that dies before it could promote its learner: every other
    command is the real one."""
    wrapper = directory / "etcdctl-never-promotes"
    wrapper.write_text('#!/bin/sh\ncase " $* " in *" member promote "*) exit 1 ;; esac\n'
                       f'exec {etcdctl_binary()} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def test_new_members_whose_pods_never_run_do_not_block_the_next_ones(
        statefulset: LocalStatefulSet, tmp_path: Path) -> None:
    pods = statefulset
    start_initial(pods)
    endpoint = pods.client_url(0)
    stale = {"MEMBER_STALE_LEARNER_SECONDS": "3"}
    with ProviderServer(log_path=tmp_path / "provider.log") as server:
        server.configure()
        driver = ResourceDriver(server, EtcdMembershipProvider(), type_name=TYPE_NAME,
                                name="locks-membership")
        driver.up(membership_inputs(pods, 3))

        # 3 -> 5, and etcd-3's pod never starts (unschedulable, say): its learner holds
        # etcd's single slot. etcd-4 waits, says for whom, then removes the never-started
        # learner (no vote, no data: quorum is unaffected) and joins in its place.
        driver.up(membership_inputs(pods, 5))
        stuck = listed(endpoint, pods.peer_url(3))
        assert stuck is not None
        pods.start(4, overrides=stale)
        wait_voter(pods, 4)
        log = pods.log(4)
        stuck_id = format(int(stuck["ID"]), "x")  # etcdctl's spelling; the gateway's: decimal
        waiting = log.index(f"learner {pods.peer_url(3)} ({stuck_id}) was added but has not "
                            "started; it is removed if that lasts 3s")
        removing = log.index("was added but has not started for 3s: removing it")
        assert waiting < removing, log
        # When etcd-3's pod does start, it is desired but no longer a member: it adds itself.
        pods.start(3)
        wait_voter(pods, 3)
        assert "added this member as a learner" in pods.log(3)
        assert voters(endpoint) == [f"etcd-{i}" for i in range(5)]

        # 5 -> 7, and etcd-5's pod starts as a learner but dies before its promotion: a
        # started learner that no longer answers. etcd-6 waits, then takes the slot.
        driver.up(membership_inputs(pods, 7))
        pods.start(5, overrides={"MEMBER_ETCDCTL": etcdctl_that_never_promotes(tmp_path)})
        wait_until(lambda: (listed(endpoint, pods.peer_url(5)) or {}).get("name") == "etcd-5",
                   timeout=30, what=f"etcd-5 to start as a learner\n{pods.log(5)}")
        pods.kill(5)
        pods.start(6, overrides=stale)
        wait_voter(pods, 6)
        assert "has started before but does not answer for 3s: removing it" in pods.log(6)
        # Restarted, etcd-5 finds its data belongs to the removed ID: it keeps it aside
        # and adds itself back.
        pods.start(5)
        wait_voter(pods, 5)
        assert "is wanted again" in pods.log(5)
    assert voters(endpoint) == [f"etcd-{i}" for i in range(7)]
    pods.wait_healthy(*range(7))


def test_a_member_whose_data_dir_was_lost_is_removed_and_re_added(
        statefulset: LocalStatefulSet) -> None:
    pods = statefulset
    start_initial(pods)
    for i in range(30):
        put(pods.client_url(i % 3), f"d/{i:03d}", str(i))
    old_id = next(m["ID"] for m in member_list(pods.client_url(0)) if m.get("name") == "etcd-2")

    pods.stop(2)
    shutil.rmtree(pods.data_dir(2))
    pods.start(2)  # the same pod, the same command line, an empty volume

    def rejoined() -> bool:
        entry = next((m for m in member_list(pods.client_url(0))
                      if m["peerURLs"] == [pods.peer_url(2)]), None)
        return bool(entry and entry.get("name") == "etcd-2" and entry["ID"] != old_id
                    and not entry.get("isLearner"))

    wait_until(rejoined, timeout=60,
               what=f"etcd-2 to be re-added under a new ID\n{pods.members[2].process.log_tail()}")
    pods.wait_healthy(2)
    wait_until(lambda: len(read_prefix(pods.client_url(2), "d/", serializable=True)) == 30,
               timeout=30, what="the re-added member to hold every key")
    log = pods.members[2].process.log_tail(400)
    assert "removing it to re-add it" in log
    assert "promoted from learner to voting member" in log
    assert voters(pods.client_url(0)) == ["etcd-0", "etcd-1", "etcd-2"]


@contextlib.contextmanager
def deployed(pods: LocalStatefulSet, tmp_path: Path) -> Iterator[ResourceDriver]:
    """Three running members and the EtcdMembership resource created for them."""
    start_initial(pods)
    with ProviderServer(log_path=tmp_path / "provider.log") as server:
        server.configure()
        driver = ResourceDriver(server, EtcdMembershipProvider(), type_name=TYPE_NAME,
                                name="locks-membership")
        driver.up(membership_inputs(pods, 3))
        yield driver


def test_a_removal_that_would_lose_quorum_is_refused_by_the_provider(
        statefulset: LocalStatefulSet, tmp_path: Path) -> None:
    pods = statefulset
    with deployed(pods, tmp_path) as driver:
        pods.kill(1)
        # 3 -> 1 starts by removing etcd-2, which leaves etcd-0 and the dead etcd-1: two
        # voters, whose quorum of two only etcd-0 could vote in. etcd refuses from its live
        # view; the provider says why.
        with pytest.raises(ProviderError, match=r"refusing to remove etcd-2: .* would not keep "
                                                r"a quorum"):
            driver.up({**membership_inputs(pods, 1), "timeout_seconds": 3})
    assert voters(pods.client_url(0)) == ["etcd-0", "etcd-1", "etcd-2"]
    assert driver.state is not None
    assert len(driver.state.outputs["members"]) == 3  # a failed update changes no state
    # Every member left in place stays desired (a lost data dir is still re-added).
    assert desired_members(pods.client_url(0)) == [pods.peer_url(o) for o in range(3)]
    put(pods.client_url(2), "still", "writable")


def make_certificates(directory: Path) -> dict[str, str]:
    """A CA and one certificate, laid out as a cert-manager Secret (tls.crt, tls.key,
    ca.crt): SAN 127.0.0.1 (the pod DNS names' stand-in), server and client auth."""
    require_binary("openssl")
    directory.mkdir()
    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    key, csr, crt = directory / "tls.key", directory / "tls.csr", directory / "tls.crt"
    extensions = directory / "ext.cnf"
    extensions.write_text("subjectAltName=IP:127.0.0.1\n"
                          "extendedKeyUsage=serverAuth,clientAuth\n"
                          "keyUsage=critical,digitalSignature,keyEncipherment\n")
    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run(["openssl", "req", "-x509", *curve, "-keyout", str(ca_key), "-out", str(ca_crt),
         "-days", "1", "-subj", "/CN=test-etcd-ca"])
    run(["openssl", "req", *curve, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=etcd"])
    run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
         "-CAcreateserial", "-out", str(crt), "-days", "1", "-extfile", str(extensions)])
    return {"ca_file": str(ca_crt), "cert_file": str(crt), "key_file": str(key)}


def test_tls_for_peers_clients_the_start_up_script_and_the_provider(tmp_path: Path) -> None:
    tls_files = make_certificates(tmp_path / "tls")
    config = {"tls": {"enabled": True, "peerSecret": "etcd-peer-tls",
                      "clientSecret": "etcd-client-tls"}}
    pods = LocalStatefulSet(tmp_path / "pods", render(replicas=3, **config),
                            tls_dir=tmp_path / "tls")
    try:
        client = _Gateway([pods.client_url(0)], timeout=5, tls=tls_files)
        start_initial(pods, lambda: sorted(m.name for m in client.members()
                                           if not m.is_learner))
        assert sorted(m.name for m in client.members()) == ["etcd-0", "etcd-1", "etcd-2"]
        # Client-certificate auth: plain HTTP and HTTPS without a certificate are refused.
        with pytest.raises((urllib.error.HTTPError, ConnectionError)):
            member_list(pods.client_url(0).replace("https://", "http://"))
        with pytest.raises(MembershipError, match="no etcd endpoint answered"):
            _Gateway([pods.client_url(0)], timeout=5,
                     tls={"ca_file": tls_files["ca_file"]}).members()

        with ProviderServer(log_path=tmp_path / "provider.log") as server:
            server.configure()
            driver = ResourceDriver(server, EtcdMembershipProvider(), type_name=TYPE_NAME,
                                    name="locks-membership")
            driver.up(membership_inputs(pods, 3, tls_files=tls_files, **config))
            driver.up(membership_inputs(pods, 5, tls_files=tls_files, **config))
        # Both join over TLS with the script's etcdctl (etcd-4 reads the desired members
        # and adds itself), then promote themselves.
        pods.start(3)
        pods.start(4)

        def promoted() -> bool:
            return sorted(m.name for m in client.members() if not m.is_learner) == [
                f"etcd-{i}" for i in range(5)]

        wait_until(promoted, timeout=60,
                   what=f"etcd-3 and etcd-4 to join over TLS\n{pods.log(3)}\n{pods.log(4)}")
        pods.wait_healthy(3, 4)
    finally:
        pods.stop_all()
