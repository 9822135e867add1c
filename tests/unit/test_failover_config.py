"""The ``mysql.failover`` keys: declared on the config dataclasses, checked before any resource."""

from __future__ import annotations

from typing import Any

import pytest

from components.config import ConfigError, StackConfig, parse
from tests.support import mocks


def _parse(failover: dict[str, Any]) -> StackConfig:
    return parse(mocks.config_map({"mysql-cluster:namespace": "db",
                                   "mysql-cluster:mysql": {"failover": failover}}), stack="dev")


def test_failover_is_off_by_default_with_the_documented_defaults() -> None:
    failover = _parse({}).mysql.failover
    assert not failover.enabled
    assert (failover.ttl_seconds, failover.checks, failover.period_seconds,
            failover.max_lag_seconds) == (10, 3, 1, 30)


def test_enabled_needs_a_pinned_image() -> None:
    with pytest.raises(ConfigError, match=r"mysql\.failover\.image.*required when failover"):
        _parse({"enabled": True})
    with pytest.raises(ConfigError, match="pinned"):
        _parse({"enabled": True, "image": "ghcr.io/o/mysql-cluster-arbiter:latest"})
    image = "ghcr.io/o/mysql-cluster-arbiter:1.0.0"
    assert _parse({"enabled": True, "image": image}).mysql.failover.image == image


def test_ttl_must_leave_the_agent_two_periods_to_demote() -> None:
    with pytest.raises(ConfigError) as raised:
        _parse({"ttlSeconds": 5, "periodSeconds": 2})
    message = str(raised.value)
    assert "mysql-cluster:mysql.failover.ttlSeconds: got 5" in message
    assert "3 x mysql-cluster:mysql.failover.periodSeconds" in message


@pytest.mark.parametrize(("key", "value"), [("checks", 0), ("periodSeconds", 0.5),
                                            ("maxLagSeconds", -1), ("enabled", "yes"),
                                            ("ttlSeconds", 1000), ("tll", 3)])
def test_bad_failover_values_name_the_key(key: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=rf"mysql\.failover\.{key}"):
        _parse({key: value})
