"""A real Kubernetes control plane on 127.0.0.1: etcd 3.5, kube-apiserver, controller-manager,
scheduler and kwok, built from their Go modules (tools/kube, scripts/build-tools.sh).

Why real and not a fake: what the project's objects and the lock backend rely on is the
API server's behaviour (admission, validation, defaulting, RBAC, resourceVersions,
watch semantics, the apiextensions controllers), and a fake only reproduces what its
author read. Only the faults a real server cannot be told to make come from outside it
(tests/support/fault_proxy.py).

How: one control plane per test session (``tests/conftest.py``'s ``control_plane``).
The fixture generates its own PKI (a CA, the server certificate for 127.0.0.1, the
service-account signing key) and a random admin token (``--token-auth-file``; tokens,
unlike client certificates, also pass through the fault proxy), starts each process
with a free port and a temporary directory, waits until ``/readyz`` answers ``ok`` and
the controllers act (the ``default`` ServiceAccount exists), and stops every process by
the PID it started. RBAC is on (``--authorization-mode=Node,RBAC``). There is no
kubelet: kwok (with its own Stage definitions, tests/support/kwok-stages.yaml) plays it
for Nodes created through :meth:`ControlPlane.create_node`, so scheduled pods become
Running and Ready; there is no volume provisioner, so tests create PersistentVolumes
(:meth:`ControlPlane.create_persistent_volume`) for their claims.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import json
import secrets
import ssl
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # PyYAML ships with kubernetes
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kubernetes import client as k8s

from distlock.kube import api_client
from tests.support.etcd import EtcdMember, etcd_binary, etcdctl_binary, gateway, healthy
from tests.support.fault_proxy import FaultProxy
from tests.support.procs import LOCALHOST, ManagedProcess, free_ports, run, wait_until
from tests.support.tools import tool

KWOK_STAGES = Path(__file__).with_name("kwok-stages.yaml")
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"
ISSUER = "https://kubernetes.default.svc.cluster.local"
ADMIN_USER = "mysql-cluster-test-admin"
NODE_LEASE_SECONDS = 40  # a kubelet's --node-lease-duration-seconds default
START_TIMEOUT = 120.0  # the first start on a loaded 2-core machine; never a measured figure


# -- PKI --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    service_account_key: Path
    service_account_pub: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
                 issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool = False,
                 sans: Sequence[x509.GeneralName] = ()) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(issuer).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
    else:
        builder = builder.add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def generate_pki(directory: Path) -> Pki:
    """A throwaway CA, the API server's certificate and the service-account key pair."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mysql-cluster-test-ca")])
    ca = _certificate("mysql-cluster-test-ca", ca_key, ca_name, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    dns = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
           "kubernetes.default.svc.cluster.local"]
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in (LOCALHOST, SERVICE_IP)]
    server = _certificate("kube-apiserver", server_key, ca_name, ca_key, sans=sans)
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pki = Pki(directory / "ca.crt", directory / "ca.key", directory / "apiserver.crt",
              directory / "apiserver.key", directory / "sa.key", directory / "sa.pub")
    pki.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    _write_key(pki.ca_key, ca_key)
    pki.server_cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    _write_key(pki.server_key, server_key)
    _write_key(pki.service_account_key, sa_key)
    pki.service_account_pub.write_bytes(sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return pki


# -- kubeconfigs ------------------------------------------------------------------------

def kubeconfig_document(server: str, ca_file: Path, token: str, *,
                        namespace: str = "default", user: str = "admin") -> dict[str, Any]:
    """A kubeconfig with one context: ``server``, the cluster CA inline, a bearer token."""
    if not token:
        raise ValueError("a kubeconfig needs a non-empty token")
    ca_data = base64.b64encode(ca_file.read_bytes()).decode()
    return {
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": server,
                                                  "certificate-authority-data": ca_data}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": user,
                                                  "namespace": namespace}}],
    }


def write_kubeconfig(path: Path, document: Mapping[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dict(document)))
    path.chmod(0o600)  # it carries a credential
    return path


# -- the control plane ------------------------------------------------------------------

class ApiServer:
    """One kube-apiserver process on a free port, against ``etcd_url`` under ``prefix``."""

    def __init__(self, base: Path, pki: Pki, token_file: Path, etcd_url: str, *,
                 name: str = "kube-apiserver", etcd_prefix: str = "/registry",
                 extra_args: Sequence[str] = ()) -> None:
        (self.port,) = free_ports(1)
        self.url = f"https://{LOCALHOST}:{self.port}"
        self.name = name
        self.process = ManagedProcess(name, [
            str(tool("kube-apiserver")),
            f"--etcd-servers={etcd_url}", f"--etcd-prefix={etcd_prefix}",
            f"--bind-address={LOCALHOST}", f"--advertise-address={LOCALHOST}",
            f"--secure-port={self.port}", f"--cert-dir={base / name}",
            f"--tls-cert-file={pki.server_cert}", f"--tls-private-key-file={pki.server_key}",
            f"--client-ca-file={pki.ca_cert}", f"--token-auth-file={token_file}",
            f"--service-account-key-file={pki.service_account_pub}",
            f"--service-account-signing-key-file={pki.service_account_key}",
            f"--service-account-issuer={ISSUER}",
            "--authorization-mode=Node,RBAC", f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",
            # The one API server of this "cluster" advertises 127.0.0.1, which the
            # kubernetes Service's endpoints may not hold; nothing here needs them.
            "--endpoint-reconciler-type=none",
            "--profiling=false", *extra_args,
        ], log_dir=base)

    def start(self) -> ApiServer:
        self.process.start()
        return self

    def stop(self) -> None:
        self.process.stop()


@dataclass
class ControlPlane:
    """What tests get: how to reach the running control plane, and helpers."""

    base: Path
    pki: Pki
    token: str
    etcd: EtcdMember
    etcd_url: str
    api_server: ApiServer
    processes: list[ManagedProcess]
    kubeconfig: Path
    """Admin kubeconfig (token of a ``system:masters`` user), namespace ``default``."""

    @property
    def server_url(self) -> str:
        return self.api_server.url

    def admin_client(self) -> Any:
        """A new official-client ApiClient with the admin kubeconfig (distlock's loader:
        no urllib3 retries, so faults are seen)."""
        return api_client(str(self.kubeconfig))

    def kubeconfig_document(self, *, namespace: str = "default", token: str | None = None,
                            server: str | None = None) -> dict[str, Any]:
        return kubeconfig_document(server or self.server_url, self.pki.ca_cert,
                                   token or self.token, namespace=namespace)

    def write_kubeconfig(self, path: Path, *, namespace: str = "default",
                         token: str | None = None, server: str | None = None) -> Path:
        """A kubeconfig for ``server`` (default: the API server; pass a proxy's URL to go
        through it) with ``token`` (default: the admin token)."""
        return write_kubeconfig(path, self.kubeconfig_document(
            namespace=namespace, token=token, server=server))

    # -- objects tests need -------------------------------------------------------

    def create_namespace(self, name: str) -> None:
        """Create ``name`` unless it exists (tests share one control plane)."""
        core: Any = k8s.CoreV1Api(self.admin_client())
        with contextlib.suppress(k8s.ApiException):
            core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
        wait_until(lambda: core.read_namespace(name).status.phase == "Active", timeout=30,
                   what=f"namespace {name} to be Active")

    def create_node(self, name: str, *, labels: Mapping[str, str] | None = None,
                    cpu: str = "32", memory: str = "256Gi", pods: str = "110") -> None:
        """A Node kwok plays the kubelet for; waits until it is Ready and kwok holds its
        Lease (the heartbeat: without it every pod on the Node goes NotReady for good once
        the node lifecycle controller's grace period has passed, whatever test is running
        by then)."""
        core: Any = k8s.CoreV1Api(self.admin_client())
        capacity = {"cpu": cpu, "memory": memory, "pods": pods}
        node = {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "annotations": {KWOK_NODE_ANNOTATION: "fake"},
                         "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                    "kubernetes.io/arch": "amd64", "type": "kwok",
                                    **(labels or {})}},
            "status": {"capacity": capacity, "allocatable": capacity},
        }
        core.create_node(node)

        def ready() -> bool:
            conditions = core.read_node(name).status.conditions or []
            return any(c.type == "Ready" and c.status == "True" for c in conditions)

        wait_until(ready, timeout=60, what=f"node {name} to be Ready (kwok)")
        wait_until(lambda: self.node_lease(name) is not None, timeout=60,
                   what=f"kwok to hold node {name}'s Lease (kwok --node-lease-duration-seconds)")

    def node_lease(self, name: str) -> Any:
        """Node ``name``'s Lease in ``kube-node-lease``, or None."""
        coordination: Any = k8s.CoordinationV1Api(self.admin_client())
        try:
            return coordination.read_namespaced_lease(name, "kube-node-lease")
        except k8s.ApiException as error:
            if error.status == 404:
                return None
            raise

    def create_persistent_volume(self, name: str, *, capacity: str = "10Gi",
                                 storage_class: str = "",
                                 access_modes: Sequence[str] = ("ReadWriteOnce",)) -> None:
        """A PersistentVolume a claim of that class and size can bind (no provisioner)."""
        core: Any = k8s.CoreV1Api(self.admin_client())
        core.create_persistent_volume({
            "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
            "spec": {"capacity": {"storage": capacity}, "accessModes": list(access_modes),
                     "persistentVolumeReclaimPolicy": "Retain",
                     "storageClassName": storage_class,
                     "hostPath": {"path": f"/var/lib/kwok-volumes/{name}"}},
        })

    def service_account_token(self, namespace: str, name: str, *, seconds: int = 3600) -> str:
        """A token for ServiceAccount ``namespace/name`` (created if missing), via the
        TokenRequest API, as a pod would get one."""
        core: Any = k8s.CoreV1Api(self.admin_client())
        with contextlib.suppress(k8s.ApiException):
            core.create_namespaced_service_account(namespace, k8s.V1ServiceAccount(
                metadata=k8s.V1ObjectMeta(name=name)))
        request = k8s.AuthenticationV1TokenRequest(
            spec=k8s.V1TokenRequestSpec(audiences=[ISSUER], expiration_seconds=seconds))
        response = core.create_namespaced_service_account_token(name, namespace, request)
        token: str = response.status.token
        assert token, "TokenRequest returned an empty token"
        return token

    @contextlib.contextmanager
    def proxy(self, server: ApiServer | None = None) -> Iterator[FaultProxy]:
        """A fault-injecting proxy in front of ``server`` (default: the main API server;
        tests/support/fault_proxy.py); give clients ``write_kubeconfig(..., server=proxy.url)``."""
        target = server or self.api_server
        with FaultProxy((LOCALHOST, target.port), certificate=self.pki.server_cert,
                        key=self.pki.server_key, ca_file=self.pki.ca_cert) as running:
            yield running

    @contextlib.contextmanager
    def extra_api_server(self, name: str, *, etcd_prefix: str,
                         extra_args: Sequence[str] = ()) -> Iterator[ApiServer]:
        """A second API server on the same etcd: another ``etcd_prefix`` is an empty
        cluster (no CRDs), ``--watch-cache=false`` serves watches straight from etcd."""
        server = ApiServer(self.base, self.pki, self.base / "tokens.csv", self.etcd_url,
                           name=name, etcd_prefix=etcd_prefix, extra_args=extra_args).start()
        try:
            wait_ready(server.url, self.pki.ca_cert, self.token, server.process)
            yield server
        finally:
            server.stop()

    def etcd_revision(self) -> int:
        """etcd's current revision (every resourceVersion is one)."""
        status = gateway(self.etcd_url, "/v3/maintenance/status", {})
        return int(status["header"]["revision"])

    def compact_etcd(self) -> int:
        """``etcdctl compact`` at the current revision: history before it is gone, so a
        watch from an older resourceVersion that etcd serves gets 410 Gone."""
        revision = self.etcd_revision()
        run([etcdctl_binary(), f"--endpoints={self.etcd_url}", "compact", str(revision)])
        return revision

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()


def _get(url: str, ca_file: Path, token: str, timeout: float = 5.0) -> tuple[int, bytes]:
    context = ssl.create_default_context(cafile=str(ca_file))
    request = urllib.request.Request(url,  # noqa: S310 - https to the test server
                                      headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=timeout,  # noqa: S310 - loopback
                                context=context) as response:
        return int(response.status), bytes(response.read())


def wait_ready(url: str, ca_file: Path, token: str, process: ManagedProcess) -> None:
    def ready() -> bool:
        if not process.running():
            raise RuntimeError(f"{process.name} exited:\n{process.log_tail()}")
        status, body = _get(f"{url}/readyz", ca_file, token)
        return status == 200 and body.strip() == b"ok"

    try:
        wait_until(ready, timeout=START_TIMEOUT, what=f"{process.name} /readyz to be ok",
                   interval=0.2)
    except (TimeoutError, RuntimeError) as error:
        raise RuntimeError(f"{error}\n--- {process.name} log ---\n{process.log_tail()}") from None


def _kwok_stages(base: Path) -> Path:
    """kwok's stages as a --config file. The options go on the command line: an options
    document in the config file replaces kwok's defaults (its parallelism becomes 0)."""
    path = base / "kwok-stages.yaml"
    path.write_text(KWOK_STAGES.read_text())
    return path


def start_control_plane(base: Path) -> ControlPlane:
    """Start everything under ``base``; the caller stops it with :meth:`ControlPlane.stop`."""
    for binary in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"):
        tool(binary)
    base.mkdir(parents=True, exist_ok=True)
    pki = generate_pki(base / "pki")
    token = secrets.token_urlsafe(32)
    token_file = base / "tokens.csv"
    token_file.write_text(f'{token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n')
    token_file.chmod(0o600)

    client_port, peer_port = free_ports(2)
    etcd_url, peer_url = f"http://{LOCALHOST}:{client_port}", f"http://{LOCALHOST}:{peer_port}"
    etcd = EtcdMember("etcd", [
        etcd_binary(), "--name=etcd", f"--data-dir={base / 'etcd'}",
        f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
        f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=etcd={peer_url}",
    ], client_url=etcd_url, data_dir=base / "etcd", log_dir=base)
    processes: list[ManagedProcess] = [etcd.process]
    api_server = ApiServer(base, pki, token_file, etcd_url)
    plane = ControlPlane(base, pki, token, etcd, etcd_url, api_server, processes,
                         base / "admin.kubeconfig")
    try:
        etcd.start()
        wait_until(lambda: healthy(etcd_url), timeout=START_TIMEOUT, what="etcd healthy")
        processes.append(api_server.start().process)
        wait_ready(api_server.url, pki.ca_cert, token, api_server.process)
        plane.write_kubeconfig(plane.kubeconfig)
        kubeconfig = str(plane.kubeconfig)
        # Each controller runs with the admin credential: the subject here is the API
        # server's behaviour, not the controllers' own RBAC bootstrap.
        for name, argv in (
            ("kube-controller-manager", [
                str(tool("kube-controller-manager")), f"--kubeconfig={kubeconfig}",
                "--secure-port=0", "--leader-elect=false",
                f"--service-account-private-key-file={pki.service_account_key}",
                f"--root-ca-file={pki.ca_cert}", f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--use-service-account-credentials=false",
                # Pods of kwok Nodes never really stop; collect them as kubelets would.
                "--terminated-pod-gc-threshold=100"]),
            ("kube-scheduler", [
                str(tool("kube-scheduler")), f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                f"--bind-address={LOCALHOST}", f"--secure-port={free_ports(1)[0]}",
                "--leader-elect=false"]),
            ("kwok", [
                str(tool("kwok")), f"--kubeconfig={kubeconfig}",
                f"--config={_kwok_stages(base)}",
                f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
                "--cidr=10.244.0.0/16", "--node-ip=10.0.0.1",
                # The Nodes' heartbeat, as a kubelet's (and kwokctl's) 40 s Lease renewed
                # every 10 s. Without it standalone kwok keeps no Lease and refreshes Node
                # status only every 10-20 min, so the node lifecycle controller finds every
                # Node stale ~50 s after its last heartbeat and marks its pods not Ready;
                # kwok makes only Pending pods Ready, so they stay not Ready: Services then
                # list them as notReadyAddresses and StatefulSets lose readyReplicas
                # (pulumi-kubernetes' awaits hang, refresh records init errors). Only while
                # every Node is stale at once (all made together) does the controller's
                # full-disruption mode spare the pods, which is why it looked like test order.
                f"--node-lease-duration-seconds={NODE_LEASE_SECONDS}",
                f"--server-address={LOCALHOST}:{free_ports(1)[0]}"]),
        ):
            processes.append(ManagedProcess(name, argv, log_dir=base).start())
        core: Any = k8s.CoreV1Api(plane.admin_client())

        def controllers_act() -> bool:
            for process in processes:
                if not process.running():
                    raise RuntimeError(f"{process.name} exited:\n{process.log_tail()}")
            return bool(core.read_namespaced_service_account("default", "default"))

        wait_until(controllers_act, timeout=START_TIMEOUT,
                   what="the controller-manager to create the default ServiceAccount")
    except BaseException:
        plane.stop()
        raise
    return plane


def api_json(plane: ControlPlane, path: str) -> Any:
    """GET ``path`` from the API server as admin and decode it (discovery, /version)."""
    _, body = _get(f"{plane.server_url}{path}", plane.pki.ca_cert, plane.token)
    return json.loads(body)
