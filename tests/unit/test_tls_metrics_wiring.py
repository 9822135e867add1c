"""mysql.tls.* and metrics.* as the program wires them, under mocks through the real config path.

Off (both stack files as they are): nothing of either appears, so a stack deploys exactly as
before. On: the Secret is mounted where conf/tls/tls.cnf points, the scripts learn TLS is on
from the environment, the watcher sidecar gets root's key and nothing else, the exporter's
init container gets the exporter key alone and the exporter no credentials at all, and the
PrometheusRule's spec is exactly the rule document promtool tests, with the stack's thresholds.
Bad values stop the program with a message naming the key.
"""

from __future__ import annotations

from typing import Any

import pytest

from components.config import ConfigError, parse
from components.mysql import _metrics, _tls
from components.mysql._replication_sql import DIALECTS, Statement
from components.mysql.cluster import pod_files
from components.mysql.flavor import Flavor
from tests.support import mocks
from tests.support.accounts import bootstrap_statements
from tests.support.mocks import ProgramResult, config_map, load_stack_file, manifests, run_program
from tests.support.objects import (
    TLS_SECRET,
    tls_secret_data,
    tls_secret_object,
    with_tls_and_metrics,
)

CREDENTIALS_DIR = "/run/secrets/mysql-cluster"


def _statefulset(result: ProgramResult) -> dict[str, Any]:
    return result.one("StatefulSet", "mysql").inputs


def _pod(result: ProgramResult) -> dict[str, Any]:
    spec: dict[str, Any] = _statefulset(result)["spec"]["template"]["spec"]
    return spec


def _containers(result: ProgramResult) -> dict[str, dict[str, Any]]:
    pod = _pod(result)
    return {c["name"]: c for c in [*pod["initContainers"], *pod["containers"]]}


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def _mounts(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in container.get("volumeMounts", [])}


def _volumes(result: ProgramResult) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in _pod(result)["volumes"]}


@pytest.fixture(params=["prod_tls_metrics", "prod_mysql_tls_metrics"])
def on(request: pytest.FixtureRequest) -> ProgramResult:
    result: ProgramResult = request.getfixturevalue(request.param)
    return result


def test_off_adds_nothing(dev: ProgramResult, prod: ProgramResult) -> None:
    for result in (dev, prod):
        containers = _containers(result)
        assert not {"tls-reload", "exporter", "exporter-config"} & set(containers)
        assert not {"tls", "exporter-run", "credentials-exporter-config",
                    "credentials-tls-reload"} & set(_volumes(result))
        assert "TLS_DIR" not in _env(containers["mysql"])
        kinds = {m["kind"] for m in manifests(result)}
        assert not {"ServiceMonitor", "PrometheusRule"} & kinds
        assert not [m for m in manifests(result) if m["metadata"]["name"].endswith("-metrics")]
        assert "tls.cnf" not in result.one("ConfigMap", "mysql-config").inputs["data"]


def test_the_secret_is_mounted_where_the_server_config_points(on: ProgramResult) -> None:
    volume = _volumes(on)["tls"]["secret"]
    assert volume["secretName"] == "mysql-tls"
    assert volume["optional"] is False
    assert [i["key"] for i in volume["items"]] == ["tls.crt", "tls.key", "ca.crt"]
    data = on.one("ConfigMap", "mysql-config").inputs["data"]
    assert f"ssl_ca = {_tls.TLS_DIR}/ca.crt" in data["tls.cnf"]
    assert "require_secure_transport = ON" in data["require-secure-transport.cnf"]
    containers = _containers(on)
    # The server, the watcher, and both ends of the clone stream (donor sidecar, receiver).
    for name in ("mysql", "tls-reload", "backup", "clone"):
        mount = _mounts(containers[name])["tls"]
        assert (mount["mountPath"], mount["readOnly"]) == (_tls.TLS_DIR, True), name
    # Every script sees TLS on the same way (init-config copies the confs, the sidecar's
    # CHANGE MASTER verifies the primary, probes use the socket).
    for name in ("init-config", "mysql", "backup", "tls-reload"):
        env = _env(containers[name])
        assert (env["TLS_DIR"], env["REQUIRE_SECURE_TRANSPORT"]) == (_tls.TLS_DIR, "on"), name


def test_each_new_container_mounts_only_the_key_it_reads(on: ProgramResult) -> None:
    containers, volumes = _containers(on), _volumes(on)

    def keys(container: str) -> list[str]:
        mount = next(m for m in containers[container].get("volumeMounts", [])
                     if m["mountPath"] == CREDENTIALS_DIR)
        return [i["key"] for i in volumes[mount["name"]]["secret"]["items"]]

    assert keys("tls-reload") == ["root-password"]
    assert keys("exporter-config") == ["exporter-password"]
    exporter = containers["exporter"]
    assert not [m for m in exporter["volumeMounts"] if m["mountPath"] == CREDENTIALS_DIR]
    assert "env" not in exporter
    assert _volumes(on)["exporter-run"]["emptyDir"]["medium"] == "Memory"
    assert "exporter-password" in on.one("Secret").inputs["stringData"]


def test_the_exporter_is_pinned_reads_its_option_file_and_the_socket(on: ProgramResult) -> None:
    containers = _containers(on)
    exporter, init = containers["exporter"], containers["exporter-config"]
    assert exporter["image"] == "quay.io/prometheus/mysqld-exporter:v0.14.0"
    assert f"--config.my-cnf={_metrics.EXPORTER_RUN_DIR}/exporter.cnf" in exporter["args"]
    assert set(_metrics.EXPORTER_FLAGS) <= set(exporter["args"])
    assert exporter["ports"] == [{"name": "metrics", "containerPort": 9104, "protocol": "TCP"}]
    assert exporter["livenessProbe"]["httpGet"]["port"] == "metrics"
    socket = _mounts(containers["mysql"])["socket"]["mountPath"]
    assert _mounts(exporter)["socket"] == {"name": "socket", "mountPath": socket,
                                           "readOnly": True}
    assert init["command"][-1].endswith("/exporter-config.sh")
    assert _env(init)["EXPORTER_RUN_DIR"] == _metrics.EXPORTER_RUN_DIR
    assert "exporter-config.sh" in on.one("ConfigMap", "mysql-config").inputs["data"]


def test_services_monitors_and_rules_name_each_other(on: ProgramResult) -> None:
    objects = {(m["kind"], m["metadata"]["name"]): m for m in manifests(on)}
    for name, port in (("mysql-metrics", 9104), ("etcd-metrics", 2381)):
        service = objects[("Service", name)]["spec"]
        assert service["ports"][0]["port"] == port
        assert service["ports"][0]["targetPort"] == "metrics"
        monitor = objects[("ServiceMonitor", name)]["spec"]
        assert monitor["endpoints"][0]["port"] == "metrics"
        # The monitor selects the Service by its labels; the Service the pods by theirs.
        labels = objects[("Service", name)]["metadata"]["labels"]
        assert monitor["selector"]["matchLabels"].items() <= labels.items()
    rule = objects[("PrometheusRule", "mysql")]["spec"]
    assert rule == _metrics.alert_rules(_metrics.AlertSettings(
        mysql_job="mysql-metrics", etcd_job="etcd-metrics", max_replica_lag_seconds=30))


def test_prometheus_scrapes_from_the_configured_namespaces(on: ProgramResult) -> None:
    monitoring = {"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "monitoring"}}}
    for name, port in (("mysql", 9104), ("etcd", 2381)):
        policy = on.one("NetworkPolicy", name).inputs["spec"]
        rules = [r for r in policy["ingress"] if {"port": port, "protocol": "TCP"} in r["ports"]]
        assert any(monitoring in r["from"] for r in rules), (name, rules)


def test_thresholds_come_from_the_stack() -> None:
    config = with_tls_and_metrics(load_stack_file("dev"))
    config["mysql-cluster:metrics"]["prometheusRule"] |= {
        "lockHeldMaxSeconds": 42, "etcdQuotaPercent": 90, "backupMarginSeconds": 600}
    result = run_program(config, stack="dev",
                         existing=tls_secret_object(config["mysql-cluster:namespace"]))
    rules = {r["alert"]: r["expr"] for g in result.one("PrometheusRule").inputs["spec"]["groups"]
             for r in g["rules"]}
    assert rules["DistlockHeldTooLong"].endswith("> 42")
    assert rules["EtcdDatabaseNearQuota"].endswith("> 0.9")
    assert rules["MySQLBackupTooOld"].endswith("+ 600")


def test_pod_files_carry_the_tls_fragments_only_with_tls() -> None:
    assert "tls.cnf" not in pod_files("mariadb")
    assert {"tls.cnf", "require-secure-transport.cnf"} <= set(pod_files("mariadb", tls=True))


def _parse(**sections: Any) -> None:
    parse(config_map({"mysql-cluster:namespace": "apps",
                      **{f"mysql-cluster:{k}": v for k, v in sections.items()}}), stack="dev")


@pytest.mark.parametrize(("sections", "message"), [
    ({"mysql": {"tls": {"enabled": True}}}, "mysql.tls.secret: got None; is required"),
    ({"mysql": {"tls": {"requireSecureTransport": "on"}}},
     "mysql.tls.requireSecureTransport: got 'on'; needs tls.enabled"),
    ({"mysql": {"tls": {"enabled": True, "secret": "s", "requireSecureTransport": "yes"}}},
     "must be one of 'off', 'on'"),
    ({"mysql": {"tls": {"enabled": True, "secret": "Not_A_Name"}}}, "mysql.tls.secret"),
    ({"metrics": {"prometheusRule": {"enabled": True}}},
     "metrics.prometheusRule.enabled: got True; needs metrics.enabled"),
    ({"metrics": {"enabled": True, "images": {"exporter": "mysqld-exporter:latest"}}},
     "metrics.images.exporter"),
    ({"metrics": {"enabled": True, "prometheusRule": {"etcdQuotaPercent": 100}}},
     "metrics.prometheusRule.etcdQuotaPercent: got 100"),
    ({"metrics": {"enabld": True}}, "did you mean 'enabled'"),
])
def test_bad_values_are_refused_naming_the_key(sections: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _parse(**sections)


def test_a_bare_yaml_on_is_the_switch_on() -> None:
    # YAML 1.1 reads `requireSecureTransport: on` as true.
    config = parse(config_map({"mysql-cluster:namespace": "apps", "mysql-cluster:mysql": {
        "tls": {"enabled": True, "secret": "s", "requireSecureTransport": True}}}), stack="dev")
    assert config.mysql.tls.require_secure_transport == "on"


def test_replication_init_gets_the_replicas_ca_and_verifies_in_cluster(
        prod_tls_metrics: ProgramResult, prod: ProgramResult) -> None:
    (init,) = prod_tls_metrics.of_type("pulumi-python:dynamic/mysql:ReplicationInit")
    assert init.inputs["replication_tls_ca"] == f"{_tls.TLS_DIR}/ca.crt"
    assert init.inputs["tls_verify_identity"] is True  # prod reaches the pods by pod DNS
    assert init.inputs["tls_ca_file"] == ""  # replicationInit.caFile unset
    (plain,) = prod.of_type("pulumi-python:dynamic/mysql:ReplicationInit")
    assert not {"replication_tls_ca", "tls_ca_file", "tls_verify_identity"} & set(plain.inputs)


@pytest.mark.parametrize("flavor", ["mysql", "mariadb"])
def test_replication_init_changes_the_source_with_the_pods_tls_clause(flavor: Flavor) -> None:
    statement = DIALECTS[flavor].change_source("db-0", 3306, "repl", "pw", "/etc/mysql/tls/ca.crt")
    assert statement.display().endswith(
        ", " + _tls.replication_tls_clause(flavor, "/etc/mysql/tls/ca.crt"))
    assert "SSL" not in DIALECTS[flavor].change_source("db-0", 3306, "repl", "pw").display()


# --- the deploy-time check of mysql.tls.secret ------------------------------------------------

TLS_NAMESPACE = "mysql-prod"


def deploy_with_tls_secret(data: dict[str, str]) -> ProgramResult:
    """The prod stack with TLS on, reading a TLS Secret holding ``data`` (base64)."""
    return run_program(with_tls_and_metrics(load_stack_file("prod")), stack="prod",
                       existing=tls_secret_object(TLS_NAMESPACE, data))


def test_the_tls_secret_is_read_and_every_object_waits_for_its_check() -> None:
    result = deploy_with_tls_secret(tls_secret_data())
    assert mocks.last_mocks is not None
    assert ("kubernetes:core/v1:Secret", f"{TLS_NAMESPACE}/{TLS_SECRET}") in (
        mocks.last_mocks.reads)
    assert not [s for s in result.kubernetes("Secret") if s.metadata_name == TLS_SECRET]
    mysql = result.component("mysql-cluster:index:MySQLCluster")
    check = [r for r in mocks.last_mocks.reads if r[1].endswith(f"/{TLS_SECRET}")]
    assert check, "the TLS Secret was not read"
    for resource in mysql.resources:
        if resource.type.startswith("kubernetes:") and resource.kind != "RoleBinding":
            # The RoleBinding waits for its Role and ServiceAccount, which wait for the check.
            assert any(urn.endswith("::mysql-tls-secret") for urn in resource.dependencies
                       ), (resource.kind, resource.metadata_name, resource.dependencies)


def test_a_tls_secret_the_pods_could_not_use_stops_the_deploy_naming_each_key() -> None:
    data = dict(tls_secret_data())
    del data["ca.crt"]
    data["tls.key"] = ""
    message, built = mocks.failed_deploy(
        "tests.unit.test_tls_metrics_wiring:deploy_with_tls_secret", data, TLS_NAMESPACE)
    assert "invalid stack configuration" in message, message
    secret = f"Secret {TLS_NAMESPACE}/{TLS_SECRET}"
    assert f"mysql-cluster:mysql.tls.secret: {secret}: missing key ca.crt" in message, message
    assert f"mysql-cluster:mysql.tls.secret: {secret}: key tls.key is empty" in message, message
    assert "tls.crt" not in message
    assert built == []


def test_a_certificate_that_does_not_match_its_key_stops_the_deploy() -> None:
    good, other = tls_secret_data(), tls_secret_data("other")
    message, built = mocks.failed_deploy(
        "tests.unit.test_tls_metrics_wiring:deploy_with_tls_secret",
        {**good, "tls.key": other["tls.key"]}, TLS_NAMESPACE)
    assert "tls.key does not match the certificate in tls.crt" in message, message
    assert built == []


# --- the exporter account through ReplicationInit ---------------------------------------------


def test_replication_init_gets_the_exporter_account_only_with_metrics(
        prod_tls_metrics: ProgramResult, prod: ProgramResult) -> None:
    (init,) = prod_tls_metrics.of_type("pulumi-python:dynamic/mysql:ReplicationInit")
    assert init.inputs["exporter_user"] == "exporter"
    secret = prod_tls_metrics.one("Secret").inputs["stringData"]["exporter-password"]
    assert init.inputs["exporter_password"] == secret
    assert init.is_secret("exporter_password")
    (plain,) = prod.of_type("pulumi-python:dynamic/mysql:ReplicationInit")
    assert not {"exporter_user", "exporter_password"} & set(plain.inputs)


def _rendered(statement: Statement) -> str:
    """The statement as the server gets it, password included (test passwords only)."""
    args = statement.args
    assert isinstance(args, tuple)
    return statement.sql % tuple(f"'{a}'" if isinstance(a, str) else str(a) for a in args)


@pytest.mark.parametrize("flavor", ["mysql", "mariadb"])
def test_replication_init_gives_the_exporter_exactly_what_the_bootstrap_gives(
        flavor: Flavor) -> None:
    """lib.sh's bootstrap_users_sql and the provider's statements, one by one."""
    password = "exporter-pw-1"
    bootstrap = [line.rstrip(";") for line in bootstrap_statements(
        flavor=flavor, passwords={"EXPORTER": password}) if "'exporter'@" in line]
    dialect = DIALECTS[flavor]
    provider = [_rendered(s) for s in (*dialect.exporter_account("exporter", password),
                                       dialect.grant_exporter("exporter"))]
    assert provider == bootstrap
    grant = f"GRANT {dialect.monitor_privilege} ON *.* TO `exporter`@`localhost`"
    assert dialect.exporter_grants_exact(["GRANT USAGE ON *.* TO `exporter`@`localhost`", grant])
    assert not dialect.exporter_grants_exact([grant, "GRANT SELECT ON `app`.* TO `exporter`@`%`"])
