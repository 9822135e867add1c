"""etcd's snapshot store and restore, wired (components/etcd/_snapshots.py), under mocks.

What would be wrong if the wiring broke: a store key reaching an environment variable or a
container that does not talk to the store, the upload not running after the save, a
restore step on a cluster that asked for none, a restore whose flags differ from the ones
etcd starts with (the members would not form one cluster), a bad key accepted.
"""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate
import pytest

from components import config as stack_config
from components._object_store import STORE_CREDENTIALS_DIR, STORE_CREDENTIALS_VOLUME
from components.etcd.cluster import BUSYBOX
from tests.support.etcd_stack import etcd_config, render
from tests.support.mocks import run_program

AGENT = "ghcr.io/mysql-cluster/backup-agent:test-1"
STORE = {"enabled": True, "endpoint": "https://s3.example.com", "bucket": "etcd-snapshots",
         "credentialsSecret": "etcd-store", "image": AGENT}
CRONJOB = "kubernetes:batch/v1:CronJob"


def _job_pod(**etcd: Any) -> dict[str, Any]:
    job = render(**etcd).one(CRONJOB)
    pod: dict[str, Any] = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return pod


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def _mounts(container: dict[str, Any]) -> dict[str, str]:
    return {m["name"]: m["mountPath"] for m in container["volumeMounts"]}


def test_without_the_store_the_cronjob_saves_to_its_volume_only() -> None:
    pod = _job_pod()
    assert [c["name"] for c in pod["containers"]] == ["snapshot"]
    assert [c["name"] for c in pod["initContainers"]] == ["shell", "shell-applets"]
    assert STORE_CREDENTIALS_VOLUME not in [v["name"] for v in pod["volumes"]]
    assert "SNAPSHOT_SAVED_RECORD" not in _env(pod["containers"][0])


def test_with_the_store_the_save_is_an_init_container_and_the_job_uploads_that_file() -> None:
    pod = _job_pod(snapshot={"store": STORE})
    *_, save = pod["initContainers"]
    (upload,) = pod["containers"]
    assert [c["name"] for c in pod["initContainers"]] == ["shell", "shell-applets", "snapshot"]
    assert save["image"] == "gcr.io/etcd-development/etcd:v3.5.17"
    assert save["command"] == [BUSYBOX, "sh", "/scripts/etcd-snapshot.sh"]
    assert upload["image"] == AGENT
    assert upload["command"] == ["/bin/sh", "/scripts/etcd-snapshot.sh", "upload"]
    # The save names the file it saved where the upload reads it.
    assert _env(save)["SNAPSHOT_SAVED_RECORD"] == _env(upload)["SNAPSHOT_SAVED_RECORD"]
    assert _mounts(save)["handoff"] == _mounts(upload)["handoff"]
    assert _mounts(save)["snapshots"] == _mounts(upload)["snapshots"] == "/snapshots"
    env = _env(upload)
    assert env["S3_ENDPOINT"] == "https://s3.example.com"
    assert env["S3_BUCKET"] == "etcd-snapshots"
    assert env["S3_PREFIX"] == "etcd"  # unset: the StatefulSet's name
    assert env["SNAPSHOT_SOURCE"] == "db/etcd"
    # The store keeps as many complete snapshots as the volume.
    assert env["SNAPSHOT_RETAIN"] == _env(save)["SNAPSHOT_RETAIN"] == "8"
    assert env["S3_ACCESS_KEY_FILE"] == f"{STORE_CREDENTIALS_DIR}/access-key"
    assert env["S3_SECRET_KEY_FILE"] == f"{STORE_CREDENTIALS_DIR}/secret-key"
    # Only the upload mounts the store's keys.
    assert _mounts(upload)[STORE_CREDENTIALS_VOLUME] == STORE_CREDENTIALS_DIR
    assert STORE_CREDENTIALS_VOLUME not in _mounts(save)
    volume = next(v for v in pod["volumes"] if v["name"] == STORE_CREDENTIALS_VOLUME)
    assert volume["secret"]["secretName"] == "etcd-store"
    assert {i["key"] for i in volume["secret"]["items"]} == {"access-key", "secret-key"}


def test_no_store_key_is_ever_an_environment_variable() -> None:
    rendered = render(snapshot={"store": STORE}, restore={"snapshot": "latest"})
    text = json.dumps([inputs for _, _, inputs in rendered.resources])
    assert "secretKeyRef" not in text
    assert "AWS_" not in text


def test_members_get_restore_init_containers_only_with_a_restore() -> None:
    plain = render(snapshot={"store": STORE}).statefulset["spec"]["template"]["spec"]
    assert [c["name"] for c in plain["initContainers"]] == ["shell", "shell-applets"]
    assert STORE_CREDENTIALS_VOLUME not in [v["name"] for v in plain["volumes"]]

    rendered = render(snapshot={"store": STORE}, restore={"snapshot": "20261203T120000Z-10"})
    pod = rendered.statefulset["spec"]["template"]["spec"]
    names = [c["name"] for c in pod["initContainers"]]
    assert names == ["shell", "shell-applets", "restore-plan", "restore-fetch", "restore"]
    plan, fetch, restore = pod["initContainers"][2:]
    etcd = rendered.etcd_container
    for step, mode in ((plan, "restore-plan"), (restore, "restore")):
        assert step["image"] == etcd["image"]
        assert step["command"] == [*etcd["command"], mode]
        # Exactly the member's own identity and cluster: one new cluster forms.
        env = _env(step)
        for name in ("MEMBER_NAME", "MEMBER_PEER_URL", "MEMBER_BOOTSTRAP_CLUSTER",
                     "MEMBER_DATA_DIR", "MEMBER_CLUSTER_ENDPOINTS"):
            assert env[name] == rendered.env()[name], name
        assert f"--initial-cluster-token={env['MEMBER_CLUSTER_TOKEN']}" in etcd["args"]
        assert env["RESTORE_SNAPSHOT"] == "20261203T120000Z-10"
        assert STORE_CREDENTIALS_VOLUME not in _mounts(step)
    assert fetch["image"] == AGENT
    assert fetch["command"] == ["/bin/sh", "/scripts/etcd-member.sh", "restore-fetch"]
    assert _mounts(fetch)["data"] == _mounts(etcd)["data"]
    assert _env(fetch)["RESTORE_DIR"] == _env(restore)["RESTORE_DIR"] == "/var/lib/etcd/restore"
    assert _mounts(fetch)[STORE_CREDENTIALS_VOLUME] == STORE_CREDENTIALS_DIR
    # The member itself never sees the store's keys.
    assert STORE_CREDENTIALS_VOLUME not in _mounts(etcd)


def test_the_program_runs_the_store_steps_in_the_mysql_clusters_backup_agent_image() -> None:
    store = _without("image")
    result = run_program({"mysql-cluster:namespace": "db",
                          "mysql-cluster:etcd": {"snapshot": {"store": store}}})
    (job,) = [r.inputs for r in result.resources if r.type == CRONJOB
              and r.inputs["metadata"]["name"] == "etcd-snapshot"]
    (upload,) = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert upload["image"].startswith("ghcr.io/mysql-cluster/backup-agent:")


def test_a_component_without_an_image_for_the_store_refuses_naming_the_key() -> None:
    store = _without("image")
    with pytest.raises(ValueError, match=r"etcd\.snapshot\.store\.image"):
        render(snapshot={"store": store})


def test_every_manifest_with_store_and_restore_is_valid_kubernetes() -> None:
    rendered = render(snapshot={"store": STORE}, restore={"snapshot": "latest"},
                      tls={"enabled": True, "peerSecret": "p", "clientSecret": "c"})
    for typ, _, inputs in rendered.resources:
        if typ.startswith("kubernetes:"):
            kubernetes_validate.validate(inputs, "1.30", strict=True)


def _without(key: str) -> dict[str, Any]:
    return {name: value for name, value in STORE.items() if name != key}


@pytest.mark.parametrize(("etcd", "key", "message"), [
    ({"restore": {"snapshot": "latest"}}, "etcd.restore.snapshot",
     "a restore reads the store that etcd.snapshot.store names: set its endpoint, bucket and "
     "credentialsSecret"),
    ({"snapshot": {"store": _without("endpoint")}, "restore": {"snapshot": "latest"}},
     "etcd.restore.snapshot", "a restore reads the store"),
    ({"snapshot": {"store": _without("bucket")}}, "etcd.snapshot.store.bucket",
     "is required when etcd.snapshot.store.enabled is true"),
    ({"snapshot": {"store": {**STORE, "endpoint": "ftp://x"}}}, "etcd.snapshot.store.endpoint",
     "must be an http(s) URL"),
    ({"snapshot": {"enabled": False, "store": STORE}}, "etcd.snapshot.store.enabled",
     "needs mysql-cluster:etcd.snapshot.enabled true"),
    ({"snapshot": {"store": {**STORE, "image": "agent:latest"}}}, "etcd.snapshot.store.image",
     "latest"),
    ({"snapshot": {"store": STORE}, "restore": {"snapshot": "two words"}},
     "etcd.restore.snapshot", "must be a snapshot id or latest"),
])
def test_bad_store_and_restore_settings_are_refused_naming_the_key(
        etcd: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(stack_config.ConfigError) as error:
        etcd_config(**etcd)
    assert f"mysql-cluster:{key}" in str(error.value)
    assert message in str(error.value)


def test_mysql_backup_keeps_its_keys_after_the_store_fields_moved() -> None:
    backup = stack_config.parse({"mysql-cluster:namespace": "db", "mysql-cluster:mysql": {
        "backup": {"enabled": True, "endpoint": "https://s3.example.com", "bucket": "backups",
                   "prefix": "orders", "region": "eu-west-1", "pathStyle": False,
                   "credentialsSecret": "store"}}}, stack="dev").mysql.backup
    assert (backup.endpoint, backup.bucket, backup.prefix, backup.region, backup.path_style,
            backup.credentials_secret) == ("https://s3.example.com", "backups", "orders",
                                           "eu-west-1", False, "store")
