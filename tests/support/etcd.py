"""A real multi-member etcd cluster as local processes on 127.0.0.1.

etcd is the 3.5 release the image ships, built from its Go module by
``scripts/build-tools.sh`` (tools/kube) and found through :mod:`tests.support.tools`, not
Debian's 3.4 from PATH: the etcd component is tested on the major it deploys. The harness
uses only the v3 JSON gateway at /v3/... and /health to decide a member is up or who
leads. Tests that must reproduce the StatefulSet's exact command line build their own
argv and hand it to :class:`EtcdMember`; the rest use :class:`EtcdCluster`.
"""

from __future__ import annotations

import json
import signal
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.support.procs import LOCALHOST, ManagedProcess, free_ports, wait_until
from tests.support.tools import tool


def etcd_binary() -> str:
    """The built etcd 3.5 (skips, or fails under CI=true, when it is not built)."""
    return str(tool("etcd"))


def etcdctl_binary() -> str:
    """The etcdctl built with that etcd."""
    return str(tool("etcdctl"))


def gateway(endpoint: str, path: str, body: Mapping[str, Any], timeout: float = 2.0) -> Any:
    """POST to etcd's v3 JSON gateway and decode the answer."""
    request = urllib.request.Request(  # noqa: S310 - loopback test servers only
        f"{endpoint}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - loopback
        return json.loads(response.read())


def healthy(endpoint: str) -> bool:
    with urllib.request.urlopen(f"{endpoint}/health", timeout=1.0) as response:  # noqa: S310
        return bool(json.loads(response.read()).get("health") == "true")


class EtcdMember:
    """One etcd process; ``argv`` and ``env`` are used exactly as given."""

    def __init__(self, name: str, argv: Sequence[str], *, client_url: str, data_dir: Path,
                 log_dir: Path, env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.client_url = client_url
        self.data_dir = data_dir
        self.process = ManagedProcess(name, argv, log_dir=log_dir, env=env)

    def start(self) -> EtcdMember:
        self.process.start()
        return self

    def stop(self) -> None:
        self.process.stop()

    def kill(self) -> None:
        self.process.kill()

    def freeze(self) -> None:
        self.process.signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.process.signal(signal.SIGCONT)

    def running(self) -> bool:
        return self.process.running()

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = gateway(self.client_url, "/v3/maintenance/status", {})
        return result

    def is_leader(self) -> bool:
        status = self.status()
        return bool(status["leader"] == status["header"]["member_id"])


class EtcdCluster:
    """``size`` members named m0..m{size-1}, bootstrapped together with a fresh token."""

    def __init__(self, base: Path, size: int = 3, *, token: str = "test-cluster",  # noqa: S107
                 extra_args: Sequence[str] = ()) -> None:
        etcd = etcd_binary()
        self.base = base
        ports = free_ports(2 * size)
        self.client_ports = ports[:size]
        self.peer_ports = ports[size:]
        names = [f"m{i}" for i in range(size)]
        initial = ",".join(f"{n}=http://{LOCALHOST}:{p}" for n, p in zip(names, self.peer_ports,
                                                                          strict=True))
        self.members: list[EtcdMember] = []
        for name, client, peer in zip(names, self.client_ports, self.peer_ports, strict=True):
            client_url = f"http://{LOCALHOST}:{client}"
            peer_url = f"http://{LOCALHOST}:{peer}"
            data_dir = base / name
            argv = [etcd, f"--name={name}", f"--data-dir={data_dir}",
                    f"--listen-client-urls={client_url}", f"--advertise-client-urls={client_url}",
                    f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
                    f"--initial-cluster={initial}", f"--initial-cluster-token={token}",
                    "--initial-cluster-state=new", *extra_args]
            self.members.append(EtcdMember(name, argv, client_url=client_url, data_dir=data_dir,
                                           log_dir=base))

    @property
    def endpoints(self) -> list[str]:
        return [m.client_url for m in self.members]

    def start(self, timeout: float = 30) -> EtcdCluster:
        for member in self.members:
            member.start()
        self.wait_healthy(timeout=timeout)
        return self

    def wait_healthy(self, timeout: float = 30) -> None:
        for member in self.members:
            if member.running():
                wait_until(lambda m=member: healthy(m.client_url), timeout=timeout,  # type: ignore[misc]
                           what=f"etcd member {member.name} to report healthy")

    def leader(self, timeout: float = 15) -> EtcdMember:
        def find() -> EtcdMember | None:
            for member in self.members:
                if member.running() and member.is_leader():
                    return member
            return None

        return wait_until(find, timeout=timeout, what="an etcd leader")

    def stop(self) -> None:
        for member in self.members:
            member.stop()
