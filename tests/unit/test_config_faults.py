"""Values that used to crash the config parser or slip through it (issue 16, item 6).

Each case goes through the real path (the engine's config map, ``set_all_config``,
``components.config.load``) and must end in the one clean ConfigError naming the key, or
be accepted as the value it is.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from components.config import ConfigError, StackConfig, load
from tests.support import mocks
from tests.support.mocks import load_stack_file

PROJECT = "mysql-cluster"


def _load(config: dict[str, Any]) -> StackConfig:
    """The program's own first step, under mocks: set_all_config, then load()."""
    loaded: list[StackConfig] = []
    mocks.run_program(config, program=lambda: loaded.append(load()))
    return loaded[0]


def _with(path: str, value: Any, stack: str = "dev") -> dict[str, Any]:
    """The stack file with one key set; ``path`` is "section.dotted.key" or "namespace"."""
    config = copy.deepcopy(load_stack_file(stack))
    section, _, rest = path.partition(".")
    if not rest:
        config[f"{PROJECT}:{section}"] = value
        return config
    target = config.setdefault(f"{PROJECT}:{section}", {})
    *parents, leaf = rest.split(".")
    for parent in parents:
        target = target.setdefault(parent, {})
    target[leaf] = value
    return config


def _refused(config: dict[str, Any], key: str, allowed: str) -> str:
    with pytest.raises(ConfigError) as raised:
        _load(config)
    message = str(raised.value)
    assert f"{PROJECT}:{key}" in message, message
    assert allowed in message, message
    return message


# Anchored patterns used with .match accepted a trailing newline.
TRAILING_NEWLINE = [
    ("namespace", "mysql-dev\n", "namespace name"),
    ("mysql.name", "mysql\n", "RFC 1123 label"),
    ("etcd.name", "etcd\n", "RFC 1123 label"),
    ("mysql.version", "11.4.8\n", "mariadb supports"),
    ("etcd.version", "3.5.17\n", "etcd release"),
    ("mysql.images.server", "mariadb:11.4.8\n", "pinned"),
    ("etcd.images.shell", "busybox:1.36.1-uclibc\n", "pinned"),
    ("mysql.storageClass", "fast\n", "StorageClass"),
    ("mysql.clientNamespaces", ["apps\n"], "namespace names"),
    ("etcd.clientNamespaces", ["apps\n"], "namespace names"),
    ("locks.users", ["apps/worker\n"], "namespace/serviceaccount"),
    ("etcd.tls.peerSecret", "peer\n", "Secret name"),
    ("etcd.membership.endpoints", ["127.0.0.1:2379\n"], "host:port"),
    ("mysql.storage", "2Gi\n", "Kubernetes quantity"),  # was a raw ValueError
    ("etcd.snapshot.schedule", "0 */6 * * *\n", "cron schedule"),
    ("mysql.extraServerConfig.max_connections", "500\n", "single-line"),
]


@pytest.mark.parametrize(("path", "value", "allowed"), TRAILING_NEWLINE,
                         ids=[case[0] for case in TRAILING_NEWLINE])
def test_a_trailing_newline_is_refused(path: str, value: Any, allowed: str) -> None:
    _refused(_with(path, value), path, allowed)


@pytest.mark.parametrize("value", ["\u0661Gi", "\uff11Gi", "2Gi\n", "2\u200bGi"])
def test_quantities_are_ascii_numbers(value: str) -> None:
    _refused(_with("etcd.storage", value), "etcd.storage", "Kubernetes quantity")


def test_unicode_digits_are_not_ports() -> None:
    _refused(_with("etcd.membership.endpoints", ["127.0.0.1:\uff12\uff13\uff17\uff19"]),
             "etcd.membership.endpoints", "host:port")


@pytest.mark.parametrize("name", ["null", "123", "true", "1e3", "[]"])
def test_the_namespace_is_text_never_json(name: str) -> None:
    if name == "[]":
        _refused(_with("namespace", name), "namespace", "namespace name")
    else:
        assert _load(_with("namespace", name)).namespace == name


def test_a_missing_namespace_is_required() -> None:
    config = load_stack_file("dev")
    del config[f"{PROJECT}:namespace"]
    _refused(config, "namespace", "is required")


def test_server_id_base_is_a_multiple_of_1000() -> None:
    _refused(_with("mysql.serverIdBase", 1500), "mysql.serverIdBase", "multiple of 1000")
    assert _load(_with("mysql.serverIdBase", 5000)).mysql.server_id_base == 5000
    # null means unset (the hashed base), not the minimum.
    assert _load(_with("mysql.serverIdBase", None)).mysql.server_id_base is None


@pytest.mark.parametrize("schedule", ["61 * * * *", "0 24 * * *", "0 0 0 * *", "0 0 32 * *",
                                      "0 0 * 13 *", "0 0 * * 8", "*/0 * * * *", "5-1 * * * *",
                                      "0 0 * foo *", "* * * *", "* * * * * *", "@every 5m",
                                      "@reboot", "0\t0 * * *"])
def test_a_cron_schedule_has_fields_in_range(schedule: str) -> None:
    _refused(_with("etcd.snapshot.schedule", schedule), "etcd.snapshot.schedule",
             "cron schedule")


@pytest.mark.parametrize("schedule", ["0 */6 * * *", "59 23 31 12 7", "*/15 0-5,22 1 jan-mar "
                                      "mon-fri", "0 0 ? * SUN", "@daily", "30  2 * * *"])
def test_real_cron_schedules_are_accepted(schedule: str) -> None:
    assert _load(_with("etcd.snapshot.schedule", schedule)).etcd.snapshot.schedule == schedule


@pytest.mark.parametrize(("key", "value"), [("bad key!", "x"), ("a/b/c", "x"), ("-x", "x"),
                                            ("x" * 64, "x"), ("Ex.com/x", "x"),
                                            ("disk", "not ok"), ("disk", "y" * 64)])
def test_node_selectors_are_labels(key: str, value: str) -> None:
    message = _refused(_with("mysql.nodeSelector", {key: value}), f"mysql.nodeSelector.{key}",
                       "label keys")
    assert repr(value) in message


def test_valid_node_selectors_pass() -> None:
    selector = {"kubernetes.io/hostname": "node-1", "disk": "", "tier_2.x": "A.b-c_d"}
    assert _load(_with("mysql.nodeSelector", selector)).mysql.node_selector == tuple(
        sorted(selector.items()))


def test_binlog_retention_has_a_maximum() -> None:
    _refused(_with("mysql.binlogExpireSeconds", 10**30), "mysql.binlogExpireSeconds",
             "between 3600 and 8553600")


def test_a_request_above_its_limit_is_refused() -> None:
    resources = {"requests": {"memory": "4Gi"}, "limits": {"memory": "2Gi"}}
    _refused(_with("mysql.resources", resources), "mysql.resources.requests.memory",
             "must not exceed mysql-cluster:mysql.resources.limits.memory (2Gi)")
    # The default limit (2Gi) counts too.
    _refused(_with("mysql.resources", {"requests": {"memory": "3Gi"}}),
             "mysql.resources.requests.memory", "must not exceed")


def test_the_two_statefulsets_need_different_names() -> None:
    _refused(_with("etcd.name", "mysql"), "etcd.name", "must differ from mysql.name")


def test_service_account_names_have_kubernetes_lengths() -> None:
    _refused(_with("locks.users", ["a" * 64 + "/worker"]), "locks.users", "namespace/service")
    assert _load(_with("locks.users", ["apps/worker.v2"])).locks.users == ("apps/worker.v2",)


@pytest.mark.parametrize("text", ["9" * 5000, "[" * 100_000, "{nope"])
def test_section_text_that_is_not_an_object(text: str) -> None:
    """The engine's JSON text for a section: too deep, too long a number, or not JSON."""
    message = _refused(_with("etcd", text), "etcd", "must be an object")
    assert len(message) < 1000


def test_control_characters_in_plain_strings() -> None:
    _refused(_with("etcd.membership.caFile", "/ca.pem\x00"), "etcd.membership.caFile",
             "non-empty single-line string")
