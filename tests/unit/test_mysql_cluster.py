"""MySQLCluster under mocks: every object and property the issue and the pod contract name,
for both stack files (through the real config path) and both flavors."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pytest

from components import _kube
from components.config import parse
from components.mysql import cluster
from components.mysql._record import EPOCH_LABEL, ROLE_LABEL
from components.mysql.cluster import (
    BACKUP_PORT,
    CONF_ROOT,
    MYSQL_PORT,
    RECORD_DIR,
    ROLE_LABELS_FILE,
    SCRIPTS_DIR,
    MySQLCluster,
    MySQLClusterArgs,
    server_id_base,
)
from components.mysql.flavor import FLAVORS
from tests.support.mocks import ProgramResult, Recorded, load_stack_file, stack_with
from tests.support.mocks import run_program as run_whole_program

CONTRACT_ENV = {
    "POD_NAME", "MYSQL_FLAVOR", "SERVER_ID_BASE", "PEER_HOST_TEMPLATE", "MYSQL_PORT",
    "BACKUP_PORT", "PORT_STRIDE", "DATA_DIR", "CONF_DIR", "CONFIG_DIR", "RUN_DIR",
    "MAX_REPLICA_LAG_SECONDS", "SERVER_WAIT_SECONDS", "ROOT_PASSWORD_FILE",
    "ADMIN_PASSWORD_FILE", "REPLICATION_PASSWORD_FILE", "MONITOR_PASSWORD_FILE",
    "BACKUP_PASSWORD_FILE", "ADMIN_USER", "REPLICATION_USER", "MONITOR_USER", "BACKUP_USER",
    "TOPOLOGY_PASSWORD_FILE", "TOPOLOGY_USER", "RECORD_DIR", "ROLE_LABEL", "EPOCH_LABEL",
    "ROLE_LABELS_FILE",
}
CREDENTIALS_DIR = "/run/secrets/mysql-cluster"
# The keys each container mounts: what its scripts (and the image entrypoint) read, no more.
MOUNTED_KEYS = {
    "mysql": ["root-password", "admin-password", "replication-password", "monitor-password",
              "backup-password", "topology-password"],
    "backup": ["root-password", "replication-password", "backup-password"],
}
PASSWORD_KEYS = {"root-password", "admin-password", "replication-password", "monitor-password",
                 "backup-password", "topology-password"}
SCRIPT_CONTAINERS = {"init-config": "init-config.sh", "clone": "clone.sh",
                     "backup": "backup-server.sh"}


# ---------------------------------------------------------------- helpers

COMPONENT = "mysql-cluster:index:MySQLCluster"


def run_program(*args: Any, **kwargs: Any) -> ProgramResult:
    """The program's run, seen through the MySQLCluster: other components are not ours."""
    return run_whole_program(*args, **kwargs).component(COMPONENT)


# The shared stack runs (tests/unit/conftest.py), narrowed the same way.
@pytest.fixture(scope="session")
def dev(dev: ProgramResult) -> ProgramResult:
    return dev.component(COMPONENT)


@pytest.fixture(scope="session")
def prod(prod: ProgramResult) -> ProgramResult:
    return prod.component(COMPONENT)


@pytest.fixture(scope="session")
def prod_mysql(prod_mysql: ProgramResult) -> ProgramResult:
    return prod_mysql.component(COMPONENT)


@pytest.fixture(scope="session")
def any_stack(any_stack: ProgramResult) -> ProgramResult:
    return any_stack.component(COMPONENT)


def statefulset(result: ProgramResult) -> dict[str, Any]:
    return result.one("StatefulSet").inputs


def pod_spec(result: ProgramResult) -> dict[str, Any]:
    spec: dict[str, Any] = statefulset(result)["spec"]["template"]["spec"]
    return spec


def containers(result: ProgramResult) -> dict[str, dict[str, Any]]:
    spec = pod_spec(result)
    return {c["name"]: c for c in [*spec["initContainers"], *spec["containers"]]}


def env_of(container: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def mounts_of(container: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["mountPath"]: m for m in container.get("volumeMounts", [])}


def volumes(result: ProgramResult) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in pod_spec(result)["volumes"]}


def mysql_config(result: ProgramResult) -> dict[str, Any]:
    return dict(statefulset(result)["metadata"])


def selector_matches(selector: str, labels: Mapping[str, str]) -> bool:
    """kubectl's label selector grammar, for the forms used here: k=v, k!=v, k (exists)."""
    for requirement in selector.split(","):
        if "!=" in requirement:
            key, value = requirement.split("!=")
            if labels.get(key) == value:
                return False
        elif "=" in requirement:
            key, value = requirement.split("=")
            if labels.get(key) != value:
                return False
        elif requirement not in labels:
            return False
    return True


def flag(args: list[str], name: str) -> str:
    values = [a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")]
    assert len(values) == 1, (name, args)
    return values[0]


# ---------------------------------------------------------------- the whole program

def test_program_runs_for_both_stacks_and_registers_every_object(any_stack: ProgramResult) -> None:
    kinds = sorted(r.kind or r.type for r in any_stack.resources if r.type.startswith("kub"))
    for kind in ("Secret", "ConfigMap", "StatefulSet", "PodDisruptionBudget", "NetworkPolicy",
                 "ServiceAccount", "Role", "RoleBinding"):
        assert kind in kinds, kind
    assert kinds.count("Service") == 3
    assert len(any_stack.of_type("random:index/randomPassword:RandomPassword")) == 6


def test_every_child_is_parented_to_the_component() -> None:
    """Over the whole program: every resource named after the cluster is its child."""
    result = run_whole_program(load_stack_file("prod"), stack="prod")
    (component,) = result.of_type(COMPONENT)
    children = [r for r in result.resources
                if r is not component and r.name.startswith(f"{component.name}-")]
    assert len(children) >= 17
    for child in children:
        assert child.parent == component.urn, child.name


def test_namespace_and_names_come_from_config(dev: ProgramResult, prod: ProgramResult) -> None:
    for result, namespace in ((dev, "mysql-dev"), (prod, "mysql-prod")):
        for resource in result.resources:
            if resource.type.startswith("kubernetes:"):
                assert resource.inputs["metadata"]["namespace"] == namespace
    assert dev.one("StatefulSet").metadata_name == "mysql"


def test_replica_counts_follow_the_stack_files(dev: ProgramResult, prod: ProgramResult) -> None:
    assert statefulset(dev)["spec"]["replicas"] == 2
    assert statefulset(prod)["spec"]["replicas"] == 3


# ---------------------------------------------------------------- secrets

def test_secret_holds_six_nonempty_passwords_marked_secret(any_stack: ProgramResult) -> None:
    secret = any_stack.one("Secret")
    data = secret.inputs["stringData"]
    assert set(data) == PASSWORD_KEYS
    assert all(isinstance(v, str) and len(v) == 32 for v in data.values())
    assert len(set(data.values())) == len(PASSWORD_KEYS)
    assert secret.is_secret("stringData")


def test_passwords_come_from_pulumi_random_without_quoting_hazards(dev: ProgramResult) -> None:
    for password in dev.of_type("random:index/randomPassword:RandomPassword"):
        assert password.inputs["length"] == 32
        assert password.inputs["special"] is False


def test_no_container_has_a_password_in_its_environment(any_stack: ProgramResult) -> None:
    """CKV_K8S_35: not as a literal, not through secretKeyRef or envFrom; only file paths."""
    for name, container in containers(any_stack).items():
        assert "envFrom" not in container, name
        for var, entry in env_of(container).items():
            assert "ALLOW_EMPTY" not in var, (name, var)
            assert "RANDOM_ROOT" not in var, (name, var)
            assert "secretKeyRef" not in entry.get("valueFrom", {}), (name, var)
            if "PASSWORD" in var:
                assert var.endswith("_PASSWORD_FILE"), (name, var)
                directory, key = entry["value"].rsplit("/", 1)
                assert (directory, key) == (CREDENTIALS_DIR, key), (name, var)
                assert key in PASSWORD_KEYS, (name, var)


def test_credentials_are_read_only_files_each_container_gets_only_its_own(
        any_stack: ProgramResult) -> None:
    secret = any_stack.one("Secret")
    pod = pod_spec(any_stack)
    vols = volumes(any_stack)
    by_name = containers(any_stack)
    for name, container in by_name.items():
        mount = mounts_of(container).get(CREDENTIALS_DIR)
        if name not in MOUNTED_KEYS:
            assert mount is None, f"{name} needs no password and must not mount any"
            assert not any(m["name"].startswith("credentials") for m in
                           container.get("volumeMounts", [])), name
            continue
        assert mount is not None, name
        assert mount["readOnly"] is True
        source = vols[mount["name"]]["secret"]
        assert source["secretName"] == secret.metadata_name
        assert source["defaultMode"] == 0o440  # owner root, group fsGroup, nothing for others
        assert source["optional"] is False
        assert [(i["key"], i["path"]) for i in source["items"]] == [
            (key, key) for key in MOUNTED_KEYS[name]]
        assert set(MOUNTED_KEYS[name]) <= set(secret.inputs["stringData"])
        # What a script of this container reads is a path to a file the container mounts.
        env = env_of(container)
        for key in MOUNTED_KEYS[name]:
            variable = key.replace("-password", "").upper() + "_PASSWORD_FILE"
            assert env[variable]["value"] == f"{CREDENTIALS_DIR}/{key}", (name, variable)
    # The images' user (999) reads the root-owned 0440 files through the pod's fsGroup.
    assert pod["securityContext"]["runAsUser"] == 999
    assert pod["securityContext"]["fsGroup"] == 999
    assert "admin-password" not in [i["key"] for i in vols["credentials-backup"]["secret"]["items"]]


def test_no_plaintext_secret_anywhere_but_secret_paths(any_stack: ProgramResult) -> None:
    passwords = set(any_stack.one("Secret").inputs["stringData"].values())

    def walk(value: Any, path: str, resource: Recorded) -> None:
        if isinstance(value, dict):
            for key, child in value.items():
                walk(child, f"{path}.{key}" if path else key, resource)
        elif isinstance(value, list):
            for i, child in enumerate(value):
                walk(child, f"{path}[{i}]", resource)
        elif isinstance(value, str) and any(p in value for p in passwords):
            assert resource.is_secret(path), f"{resource.name}: plaintext password at {path}"

    for resource in any_stack.resources:
        walk(resource.inputs, "", resource)
    for name, output in any_stack.outputs.items():
        if any(p in repr(output.value) for p in passwords):
            assert output.secret, f"stack output {name} holds a password in plaintext"


def test_password_outputs_are_secret(any_stack: ProgramResult) -> None:
    assert any_stack.outputs["mysqlAdminPassword"].secret
    assert any_stack.outputs["mysqlRootPassword"].secret
    assert not any_stack.outputs["mysqlPrimaryHost"].secret


def test_root_is_reachable_only_inside_the_pod(any_stack: ProgramResult) -> None:
    flavor = FLAVORS[statefulset(any_stack)["metadata"]["labels"]["app.kubernetes.io/name"]]
    env = env_of(containers(any_stack)["mysql"])
    # The entrypoint's own _FILE variant; setting the plain variable too is an error there.
    assert env[f"{flavor.env_prefix}_ROOT_PASSWORD_FILE"]["value"] == (
        f"{CREDENTIALS_DIR}/root-password")
    assert f"{flavor.env_prefix}_ROOT_PASSWORD" not in env
    assert env[f"{flavor.env_prefix}_ROOT_HOST"]["value"] == "localhost"


# ---------------------------------------------------------------- ConfigMap

@pytest.mark.parametrize("flavor", ["mariadb", "mysql"])
def test_config_map_ships_every_script_and_the_flavors_configs(flavor: str) -> None:
    result = run_program(stack_with("dev", flavor=flavor,
                                    version=FLAVORS[flavor].default_version))  # type: ignore[index]
    data = result.one("ConfigMap").inputs["data"]
    expected = {p.name: p.read_text() for p in SCRIPTS_DIR.glob("*.sh")}
    expected |= {p.name: p.read_text() for p in (CONF_ROOT / flavor).iterdir() if p.is_file()}
    assert data == expected
    for required in (*cluster.REQUIRED_SCRIPTS, *cluster.REQUIRED_CONF):
        assert required in data


def test_config_map_is_mounted_read_only_where_the_contract_says(any_stack: ProgramResult) -> None:
    config_map = any_stack.one("ConfigMap").metadata_name
    assert volumes(any_stack)["config-map"]["configMap"]["name"] == config_map
    for name in ("init-config", "clone", "mysql", "backup"):
        mount = mounts_of(containers(any_stack)[name])["/mnt/config-map"]
        assert mount["name"] == "config-map"
        assert mount["readOnly"] is True


def test_config_change_rolls_the_pods(dev: ProgramResult) -> None:
    annotations = statefulset(dev)["spec"]["template"]["metadata"]["annotations"]
    data = dev.one("ConfigMap").inputs["data"]
    assert annotations[cluster.CONFIG_HASH_ANNOTATION] == _kube.files_hash(data)


def test_missing_pod_files_stop_the_program(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Any) -> None:
    monkeypatch.setattr(cluster, "SCRIPTS_DIR", tmp_path)
    with pytest.raises(cluster.MissingPodFilesError, match=r"init-config\.sh"):
        run_program(load_stack_file("dev"))


# ---------------------------------------------------------------- Services and roles

def test_headless_service_publishes_not_ready_addresses(any_stack: ProgramResult) -> None:
    sts = statefulset(any_stack)
    headless = any_stack.one("Service", sts["spec"]["serviceName"]).inputs["spec"]
    assert headless["clusterIP"] == "None"
    assert headless["publishNotReadyAddresses"] is True
    assert headless["selector"] == sts["spec"]["selector"]["matchLabels"]


def test_read_service_selects_replicas_and_never_the_primary(any_stack: ProgramResult) -> None:
    sts = statefulset(any_stack)
    template_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert ROLE_LABEL not in template_labels  # a shared template cannot carry a per-pod role
    read = any_stack.one("Service", "mysql-read").inputs["spec"]["selector"]
    primary = any_stack.one("Service", "mysql-primary").inputs["spec"]["selector"]
    pod = {"primary": {**template_labels, ROLE_LABEL: "primary"},
           "replica": {**template_labels, ROLE_LABEL: "replica"}}
    assert selector_matches(",".join(f"{k}={v}" for k, v in read.items()), pod["replica"])
    assert not selector_matches(",".join(f"{k}={v}" for k, v in read.items()), pod["primary"])
    assert selector_matches(",".join(f"{k}={v}" for k, v in primary.items()), pod["primary"])
    assert not selector_matches(",".join(f"{k}={v}" for k, v in primary.items()),
                                pod["replica"])
    assert not selector_matches(",".join(f"{k}={v}" for k, v in read.items()), template_labels)


def test_each_pod_labels_itself_from_the_record(prod: ProgramResult) -> None:
    """init-config.sh derives the role labels from the primary record (tests/unit/
    test_pod_record.py) into a patch file; the `label` step, after it, applies that file to
    its own pod. No step derives a role from the ordinal."""
    spec = pod_spec(prod)
    names = [c["name"] for c in spec["initContainers"]]
    assert names.index("init-config") < names.index("label")
    label = containers(prod)["label"]
    assert label["args"] == ["patch", "pod", "$(POD_NAME)", "--namespace=$(POD_NAMESPACE)",
                             "--type=merge", f"--patch-file={ROLE_LABELS_FILE}"]
    init = containers(prod)["init-config"]
    env = {name: var["value"] for name, var in env_of(init).items() if "value" in var}
    assert env["ROLE_LABELS_FILE"] == ROLE_LABELS_FILE
    assert (env["ROLE_LABEL"], env["EPOCH_LABEL"]) == (ROLE_LABEL, EPOCH_LABEL)
    # The file is written and read on the same volume.
    tmp = ROLE_LABELS_FILE.rsplit("/", 1)[0]
    assert mounts_of(init)[tmp]["name"] == mounts_of(label)[tmp]["name"]
    assert not any("pod-index" in arg for c in containers(prod).values()
                   for arg in c.get("args", []))


def test_the_record_reaches_the_pods_as_an_optional_read_only_volume(
        prod: ProgramResult) -> None:
    record = volumes(prod)["record"]["configMap"]
    # Optional: ReplicationInit writes it after the StatefulSet is ready.
    assert (record["name"], record["optional"]) == ("mysql-primary-record", True)
    for name, container in containers(prod).items():
        mount = mounts_of(container).get(RECORD_DIR)
        if name in ("init-config", "clone", "backup"):
            assert mount is not None, name
            assert mount["readOnly"] is True, name
        else:
            # The server and its probes never decide anything from a copy the kubelet
            # refreshes late.
            assert mount is None, name
    # Pulumi never manages the record: only ReplicationInit writes it, with CAS.
    assert not [r for r in prod.of_type("kubernetes:core/v1:ConfigMap")
                if r.metadata_name == "mysql-primary-record"]


def test_label_steps_are_scoped_to_this_sets_pods(prod: ProgramResult) -> None:
    role = prod.one("Role").inputs
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"],
                              "verbs": ["get", "patch"],
                              "resourceNames": ["mysql-0", "mysql-1", "mysql-2"]}]
    binding = prod.one("RoleBinding").inputs
    account = prod.one("ServiceAccount")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account.metadata_name,
                                    "namespace": "mysql-prod"}]
    assert account.inputs["automountServiceAccountToken"] is False
    spec = pod_spec(prod)
    assert spec["serviceAccountName"] == account.metadata_name
    assert spec["automountServiceAccountToken"] is False


def test_only_the_label_steps_hold_an_api_token(any_stack: ProgramResult) -> None:
    token_path = "/var/run/secrets/kubernetes.io/serviceaccount"
    for name, container in containers(any_stack).items():
        has_token = token_path in mounts_of(container)
        assert has_token == (name == "label"), name
    sources = volumes(any_stack)["kube-api-access"]["projected"]["sources"]
    assert sources[0]["serviceAccountToken"]["expirationSeconds"] == 3600


# ---------------------------------------------------------------- StatefulSet

def test_statefulset_invokes_every_script_as_the_contract_says(any_stack: ProgramResult) -> None:
    by_name = containers(any_stack)
    init_names = [c["name"] for c in pod_spec(any_stack)["initContainers"]]
    assert init_names == ["init-config", "clone", "label"]
    assert [c["name"] for c in pod_spec(any_stack)["containers"]] == ["mysql", "backup"]
    for name, script in SCRIPT_CONTAINERS.items():
        assert by_name[name]["command"] == ["bash", f"/mnt/config-map/{script}"]
    for probe, kind in (("startupProbe", "startup"), ("livenessProbe", "liveness"),
                        ("readinessProbe", "readiness")):
        assert by_name["mysql"][probe]["exec"]["command"] == [
            "bash", "/mnt/config-map/probe.sh", kind]
    backup = by_name["backup"]
    for probe in ("startupProbe", "livenessProbe"):
        # exec only: a TCP connection to the backup port would start a backup stream.
        assert set(backup[probe]) >= {"exec"}, probe
        assert not {"tcpSocket", "httpGet", "grpc"} & set(backup[probe]), probe
        assert backup[probe]["exec"]["command"] == ["bash", "/mnt/config-map/probe.sh", "backup"]
    # The listener starts only after the server is up and replication configured: the startup
    # probe outlasts the server's own start budget, which the sidecar waits for.
    server_wait = int(env_of(backup)["SERVER_WAIT_SECONDS"]["value"])
    mysql_startup = by_name["mysql"]["startupProbe"]
    assert server_wait == mysql_startup["periodSeconds"] * mysql_startup["failureThreshold"]
    backup_startup = backup["startupProbe"]
    assert backup_startup["periodSeconds"] * backup_startup["failureThreshold"] > server_wait
    assert backup["livenessProbe"]["failureThreshold"] >= 2
    assert "readinessProbe" not in backup  # a pod's readiness is its database's (policy test)
    initdb = volumes(any_stack)["initdb"]["configMap"]
    assert initdb["items"] == [{"key": "bootstrap-users.sh", "path": "bootstrap-users.sh"}]
    assert mounts_of(by_name["mysql"])["/docker-entrypoint-initdb.d"]["name"] == "initdb"


def test_every_contract_container_gets_the_contract_environment(any_stack: ProgramResult) -> None:
    sts = statefulset(any_stack)
    flavor = sts["metadata"]["labels"]["app.kubernetes.io/name"]
    for name in ("init-config", "clone", "mysql", "backup"):
        env = env_of(containers(any_stack)[name])
        assert set(env) >= CONTRACT_ENV, (name, CONTRACT_ENV - set(env))
        assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        values = {k: v.get("value") for k, v in env.items()}
        assert values["MYSQL_FLAVOR"] == flavor
        assert values["PEER_HOST_TEMPLATE"] == "mysql-{ordinal}.mysql-headless"
        assert values["MYSQL_PORT"] == "3306"
        assert values["BACKUP_PORT"] == "3307"
        assert values["PORT_STRIDE"] == "0"
        assert values["DATA_DIR"] == "/var/lib/mysql"
        assert values["CONF_DIR"] == "/etc/mysql/conf.d"
        assert values["CONFIG_DIR"] == "/mnt/config-map"
        assert values["RUN_DIR"] == "/run/mysql-cluster"
        assert values["MAX_REPLICA_LAG_SECONDS"] == "30"
        assert values["SERVER_WAIT_SECONDS"] == "600"
        assert (values["ADMIN_USER"], values["REPLICATION_USER"], values["MONITOR_USER"],
                values["BACKUP_USER"]) == ("admin", "repl", "monitor", "backup")


def test_every_container_gets_the_flavors_tools_and_socket(any_stack: ProgramResult) -> None:
    """The scripts no longer decide tools and socket by flavor: the component hands them."""
    flavor = statefulset(any_stack)["metadata"]["labels"]["app.kubernetes.io/name"]
    expected = {
        "mysql": {"MYSQL_SOCKET": "/var/run/mysqld/mysqld.sock", "MYSQL_CLIENT": "mysql",
                  "MYSQL_ADMIN_TOOL": "mysqladmin", "BACKUP_TOOL": "xtrabackup",
                  "BACKUP_STREAM_TOOL": "xbstream", "BACKUP_PREPARED_TYPE": "full-prepared"},
        "mariadb": {"MYSQL_SOCKET": "/run/mysqld/mysqld.sock", "MYSQL_CLIENT": "mariadb",
                    "MYSQL_ADMIN_TOOL": "mariadb-admin", "BACKUP_TOOL": "mariadb-backup",
                    "BACKUP_STREAM_TOOL": "mbstream", "BACKUP_PREPARED_TYPE": "log-applied"},
    }[flavor]
    for name in ("init-config", "clone", "mysql", "backup"):
        env = env_of(containers(any_stack)[name])
        assert {k: env[k]["value"] for k in expected} == expected, name
    # The socket is in the directory both containers that talk to the server share.
    socket_dir = expected["MYSQL_SOCKET"].rsplit("/", 1)[0]
    for name in ("mysql", "backup"):
        assert mounts_of(containers(any_stack)[name])[socket_dir]["name"] == "socket"


def test_headless_service_name_resolves_the_peer_template(any_stack: ProgramResult) -> None:
    template = env_of(containers(any_stack)["mysql"])["PEER_HOST_TEMPLATE"]["value"]
    sts = statefulset(any_stack)
    pod, service = template.format(ordinal=1).split(".")
    assert pod == f"{sts['metadata']['name']}-1"
    assert service == sts["spec"]["serviceName"]


def test_mounts_follow_the_contract(any_stack: ProgramResult) -> None:
    by_name = containers(any_stack)
    for name in ("clone", "mysql", "backup"):
        data = mounts_of(by_name[name])["/var/lib/mysql"]
        assert (data["name"], data["subPath"]) == ("data", "mysql")
        assert mounts_of(by_name[name])["/run/mysql-cluster"]["name"] == "run"
    assert mounts_of(by_name["init-config"])["/etc/mysql/conf.d"]["readOnly"] is False
    assert mounts_of(by_name["mysql"])["/etc/mysql/conf.d"]["readOnly"] is True
    vols = volumes(any_stack)
    assert vols["run"]["emptyDir"]["medium"] == "Memory"
    assert "emptyDir" in vols["conf"]


def test_ports_are_named_and_exposed(any_stack: ProgramResult) -> None:
    by_name = containers(any_stack)
    assert by_name["mysql"]["ports"] == [{"name": "mysql", "containerPort": MYSQL_PORT,
                                          "protocol": "TCP"}]
    assert by_name["backup"]["ports"] == [{"name": "backup", "containerPort": BACKUP_PORT,
                                           "protocol": "TCP"}]


def test_volume_claims_and_retention_follow_config(prod: ProgramResult) -> None:
    spec = statefulset(prod)["spec"]
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert "app.kubernetes.io/version" not in claim["metadata"]["labels"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "100Gi"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert "storageClassName" not in claim["spec"]
    assert spec["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain",
                                                            "whenScaled": "Retain"}
    assert spec["podManagementPolicy"] == "OrderedReady"


def test_storage_class_and_retention_overrides() -> None:
    result = run_program(stack_with("dev", storageClass="fast-ssd",
                                    pvcRetention={"whenDeleted": "Delete"}))
    spec = statefulset(result)["spec"]
    assert spec["volumeClaimTemplates"][0]["spec"]["storageClassName"] == "fast-ssd"
    assert spec["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Delete",
                                                            "whenScaled": "Retain"}


def test_resources_are_requested(prod: ProgramResult) -> None:
    by_name = containers(prod)
    assert by_name["mysql"]["resources"] == {"requests": {"cpu": "2", "memory": "8Gi"},
                                             "limits": {"memory": "8Gi"}}
    for container in by_name.values():
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert "memory" in container["resources"]["limits"]


def test_security_contexts_are_restricted(any_stack: ProgramResult) -> None:
    pod = pod_spec(any_stack)["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == 999
    assert pod["fsGroup"] == 999
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    for name, container in containers(any_stack).items():
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, name
        assert context["capabilities"] == {"drop": ["ALL"]}, name
        assert context["runAsNonRoot"] is True, name
        assert context["readOnlyRootFilesystem"] is True, name
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert "/tmp" in mounts_of(container), name  # noqa: S108


def test_server_writes_its_socket_to_an_empty_dir(any_stack: ProgramResult) -> None:
    flavor = FLAVORS[statefulset(any_stack)["metadata"]["labels"]["app.kubernetes.io/name"]]
    assert mounts_of(containers(any_stack)["mysql"])[flavor.socket_dir]["name"] == "socket"


def test_images_are_pinned_per_flavor(dev: ProgramResult, prod_mysql: ProgramResult) -> None:
    assert containers(dev)["mysql"]["image"] == "mariadb:11.4.8"
    assert containers(dev)["backup"]["image"] == "mariadb:11.4.8"  # mariadb-backup inside
    assert containers(prod_mysql)["mysql"]["image"] == "mysql:8.4.5"
    assert containers(prod_mysql)["clone"]["image"] == "percona/percona-xtrabackup:8.4.0-3.1"
    for result in (dev, prod_mysql):
        for container in containers(result).values():
            assert re.search(r":[^/:]+$|@sha256:", container["image"]), container["image"]
            assert not container["image"].endswith(":latest")


def test_spread_required_forbids_two_pods_on_one_node(prod: ProgramResult) -> None:
    spec = pod_spec(prod)
    selector = statefulset(prod)["spec"]["selector"]["matchLabels"]
    (term,) = spec["affinity"]["podAntiAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]
    assert term == {"topologyKey": "kubernetes.io/hostname",
                    "labelSelector": {"matchLabels": selector}}


@pytest.mark.parametrize("spread", ["preferred", "none"])
def test_spread_preferred_and_none_never_block_scheduling(spread: str) -> None:
    spec = pod_spec(run_program(stack_with("dev", spread=spread)))
    assert "affinity" not in spec
    constraints = spec.get("topologySpreadConstraints", [])
    assert len(constraints) == (2 if spread == "preferred" else 0)
    assert all(c["whenUnsatisfiable"] == "ScheduleAnyway" for c in constraints)


def test_node_selector_and_server_options_reach_the_pod() -> None:
    result = run_program(stack_with("dev", nodeSelector={"pool": "db"},
                                    binlogExpireSeconds=7200,
                                    extraServerConfig={"max_connections": "500"}))
    assert pod_spec(result)["nodeSelector"] == {"pool": "db"}
    assert containers(result)["mysql"]["args"] == ["--binlog-expire-logs-seconds=7200",
                                                   "--max_connections=500"]


# ---------------------------------------------------------------- server-id

def test_server_id_base_is_a_stable_collision_free_block(dev: ProgramResult,
                                                         prod: ProgramResult) -> None:
    for result, stack, namespace in ((dev, "dev", "mysql-dev"), (prod, "prod", "mysql-prod")):
        env = env_of(containers(result)["init-config"])
        base = int(env["SERVER_ID_BASE"]["value"])
        assert base == server_id_base("mysql-cluster", stack, namespace, "mysql")
        assert base % 1000 == 0
        assert 1000 <= base <= 4_294_966_000
        assert result.outputs["mysqlServerIdBase"].value == base
    ids = {server_id_base("p", "s", f"ns{i}", "mysql") for i in range(2000)}
    assert len(ids) == 2000  # 2000 clusters, no shared block
    assert server_id_base("p", "s", "ns", "a") == server_id_base("p", "s", "ns", "a")


def test_server_id_base_from_config_wins() -> None:
    result = run_program(stack_with("dev", serverIdBase=5000))
    assert env_of(containers(result)["clone"])["SERVER_ID_BASE"]["value"] == "5000"


# ---------------------------------------------------------------- PDB and NetworkPolicy

def test_disruption_budget_allows_one_pod_at_a_time(any_stack: ProgramResult) -> None:
    spec = any_stack.one("PodDisruptionBudget").inputs["spec"]
    assert spec["maxUnavailable"] == 1
    assert spec["selector"]["matchLabels"] == statefulset(any_stack)["spec"]["selector"][
        "matchLabels"]


def test_network_policy_mysql_from_namespace_backup_from_peers(any_stack: ProgramResult) -> None:
    spec = any_stack.one("NetworkPolicy").inputs["spec"]
    peers = statefulset(any_stack)["spec"]["selector"]["matchLabels"]
    assert spec["podSelector"]["matchLabels"] == peers
    assert spec["policyTypes"] == ["Ingress"]
    mysql_rule, backup_rule = spec["ingress"]
    assert mysql_rule["ports"] == [{"port": 3306, "protocol": "TCP"}]
    namespace = any_stack.one("StatefulSet").inputs["metadata"]["namespace"]
    clients = ["mysql-cluster-gitops"] if namespace == "mysql-prod" else []
    assert mysql_rule["from"] == [{"podSelector": {}}] + [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}
        for ns in clients]
    assert backup_rule["ports"] == [{"port": 3307, "protocol": "TCP"}]
    assert backup_rule["from"] == [{"podSelector": {"matchLabels": peers}}]


def test_client_namespaces_may_reach_mysql_but_not_backups() -> None:
    result = run_program(stack_with("dev", clientNamespaces=["apps"]))
    mysql_rule, backup_rule = result.one("NetworkPolicy").inputs["spec"]["ingress"]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "apps"}}} in (
        mysql_rule["from"])
    assert all("namespaceSelector" not in peer for peer in backup_rule["from"])


# ---------------------------------------------------------------- ReplicationInit

REPLICATION_INIT = "pulumi-python:dynamic/mysql:ReplicationInit"


def test_replication_init_runs_after_the_statefulset(prod: ProgramResult,
                                                     prod_mysql: ProgramResult) -> None:
    for result, flavor in ((prod, "mariadb"), (prod_mysql, "mysql")):
        (init,) = result.of_type(REPLICATION_INIT)
        sts = result.one("StatefulSet")
        assert sts.urn in init.dependencies
        assert result.index(init) > result.index(sts)
        assert init.inputs["flavor"] == flavor


def test_replication_init_gets_the_clusters_passwords_as_secrets(prod: ProgramResult) -> None:
    (init,) = prod.of_type(REPLICATION_INIT)
    passwords = prod.one("Secret").inputs["stringData"]
    assert init.inputs["admin_user"] == "admin"
    assert init.inputs["replication_user"] == "repl"
    assert init.inputs["admin_password"] == passwords["admin-password"]
    assert init.inputs["replication_password"] == passwords["replication-password"]
    assert init.is_secret("admin_password")
    assert init.is_secret("replication_password")


def test_replication_init_in_cluster_uses_pod_dns(prod: ProgramResult) -> None:
    (init,) = prod.of_type(REPLICATION_INIT)
    hosts = [init.inputs["primary"]["host"], *(r["host"] for r in init.inputs["replicas"])]
    assert hosts == [f"mysql-{i}.mysql-headless.mysql-prod.svc" for i in range(3)]
    assert init.inputs["source_host"] == "mysql-0.mysql-headless"
    assert init.inputs["source_port"] == 3306
    assert init.inputs["max_lag_seconds"] == 30
    assert init.inputs["timeout_seconds"] == 900


def test_replication_init_port_forward_uses_the_configured_endpoints() -> None:
    result = run_program(stack_with("dev", replicationInit={
        "enabled": True, "access": "port-forward",
        "endpoints": ["127.0.0.1:13306", "127.0.0.1:13307"]}))
    (init,) = result.of_type(REPLICATION_INIT)
    assert init.inputs["primary"] == {"host": "127.0.0.1", "port": 13306}
    assert init.inputs["replicas"] == [{"host": "127.0.0.1", "port": 13307}]
    assert init.inputs["source_host"] == "mysql-0.mysql-headless"


def test_no_replication_init_when_disabled_or_alone(dev: ProgramResult) -> None:
    assert dev.of_type(REPLICATION_INIT) == []  # dev disables it (see Pulumi.dev.yaml)
    single = run_program(stack_with("prod", replicas=1), stack="prod")
    assert single.of_type(REPLICATION_INIT) == []


# ---------------------------------------------------------------- providers

def test_explicit_provider_is_passed_through_to_every_child() -> None:
    config = parse(
        {f"mysql-cluster:{k.split(':')[1]}": v for k, v in load_stack_file("dev").items()},
        stack="dev")

    def program() -> None:
        provider = k8s.Provider("target-cluster", namespace="mysql-dev")
        MySQLCluster("mysql", MySQLClusterArgs(namespace=config.namespace, config=config.mysql),
                     opts=pulumi.ResourceOptions(providers=[provider]))

    result = run_program(load_stack_file("dev"), program=program)
    for resource in result.resources:
        if resource.type.startswith("kubernetes:") and resource.kind:
            assert "target-cluster" in (resource.provider or ""), resource.name
