"""Numbers as dynamic providers receive them: every one a float after the engine."""

from __future__ import annotations

import pytest

from components._wire import integral_floats, whole_number


@pytest.mark.parametrize(("value", "expected"), [
    (3306.0, 3306), (3306, 3306), (0.0, 0), (-2.0, -2),
    (1.5, None), (True, None), (False, None), ("3306", None), (None, None),
])
def test_whole_number_takes_integral_numbers_only(value: object, expected: int | None) -> None:
    assert whole_number(value) == expected


def test_integral_floats_restores_ints_at_any_depth_and_leaves_the_rest() -> None:
    manifest = {"spec": {"replicas": 3.0, "ratio": 0.5, "ports": [{"port": 2379.0}],
                         "enabled": True, "name": "etcd"}}
    assert integral_floats(manifest) == {"spec": {"replicas": 3, "ratio": 0.5,
                                                  "ports": [{"port": 2379}],
                                                  "enabled": True, "name": "etcd"}}
    assert type(integral_floats(manifest)["spec"]["replicas"]) is int
