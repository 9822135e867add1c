"""A StatefulSet of etcd members as local processes, run from the rendered objects.

Each "pod" runs the EtcdCluster StatefulSet's exact command line and scripts on 127.0.0.1
(paths and DNS names mapped to this machine), and the tests play the StatefulSet controller
and the kubelet; EtcdMembership runs in the real provider server (``deployed``). Shared by
the etcd cluster and membership fault tests.
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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.etcd._membership import (
    DESIRED_MEMBERS_KEY,
    EtcdMembershipProvider,
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
from tests.support.etcd_stack import DYNAMIC, NAMESPACE, Rendered, render
from tests.support.procs import LOCALHOST, free_ports, require_binary, run, wait_until
from tests.support.provider_server import (
    ProviderServer,
    ResourceDriver,
)

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
    # - The etcd image has etcdutl too; the build here has no etcdutl, and etcdctl 3.5's
    #   ``snapshot restore`` (deprecated in favour of etcdutl's) takes the same flags.
    env.update({"MEMBER_ETCD": etcd_binary(), "MEMBER_ETCDCTL": etcdctl,
                "MEMBER_ETCDUTL": etcdctl, "SNAPSHOT_ETCDCTL": etcdctl,
                "MEMBER_RETRY_SECONDS": "0.2"})
    return [busybox if word == "/bin/busybox" else word for word in command]


def mount(text: str, volumes: Mapping[str, Path]) -> str:
    """Container paths to the host directories standing in for the pod's volumes."""
    for container_path, host_path in volumes.items():
        text = text.replace(container_path, str(host_path))
    return text


def run_containers(containers: list[Mapping[str, Any]], volumes: Mapping[str, Path], *,
                   pod_name: str = "", translate: Callable[[str], str] | None = None,
                   overrides: Mapping[str, str] | None = None) -> str:
    """Run containers as the kubelet runs init containers: in order, each to completion,
    each with its own environment (``translate`` maps its values to this machine, e.g. pod
    DNS names; ``overrides`` replace variables, e.g. the test store's settings). Returns
    what they wrote to stderr; a failure raises, carrying the container's output."""
    logs = []
    for container in containers:
        env = {k: mount(translate(v) if translate else v, volumes)
               for k, v in container_env(container, pod_name).items()}
        command = adapt_to_this_machine([mount(w, volumes) for w in container["command"]], env)
        env.update(overrides or {})
        logs.append(run(command, env=env, timeout=120).stderr)
    return "".join(logs)


def run_init_containers(pod: Mapping[str, Any], volumes: Mapping[str, Path], *,
                        pod_name: str = "", translate: Callable[[str], str] | None = None,
                        overrides: Mapping[str, str] | None = None) -> str:
    """Run the pod's init containers as the kubelet would (:func:`run_containers`)."""
    return run_containers(pod.get("initContainers", []), volumes, pod_name=pod_name,
                   translate=translate, overrides=overrides)


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

    def __init__(self, base: Path, rendered: Rendered, *, tls_dir: Path | None = None,
                 init_overrides: Mapping[str, str] | None = None) -> None:
        # Debian's busybox-static stands in for the busybox image's static binary.
        etcd_binary()
        etcdctl_binary()
        require_binary("busybox")
        self.base = base
        # The cert-manager Secrets (peer and client) as one directory of tls.crt/key, ca.crt.
        self.tls_dir = tls_dir
        self.scheme = "https" if tls_dir else "http"
        self.rendered = rendered
        # The init containers' environment changes (the test store, for the restore steps).
        self.init_overrides = dict(init_overrides or {})
        self.init_logs: dict[int, str] = {}
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
        self.run_init(ordinal)
        argv, env = self.argv_env(ordinal)
        env.update(overrides or {})
        member = EtcdMember(self.pod(ordinal), argv, client_url=self.client_url(ordinal),
                            data_dir=self.data_dir(ordinal), log_dir=self.base, env=env)
        self.members[ordinal] = member.start()
        return member

    def run_init(self, ordinal: int) -> None:
        """The pod's init containers, in its environment (raises when one fails); what
        they logged is kept in ``init_logs``."""
        self.init_logs[ordinal] = run_init_containers(
            self.template_pod, self.volumes(ordinal), pod_name=self.pod(ordinal),
            translate=lambda text: self.dns(text, ordinal), overrides=self.init_overrides)

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


def etcdctl_that_never_promotes(directory: Path) -> str:
    """An etcdctl for a pod that dies before it could promote its learner: every other
    command is the real one."""
    wrapper = directory / "etcdctl-never-promotes"
    wrapper.write_text('#!/bin/sh\ncase " $* " in *" member promote "*) exit 1 ;; esac\n'
                       f'exec {etcdctl_binary()} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


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
