"""Property: whatever a stack file holds, config ends in a StackConfig or one ConfigError.

Hypothesis feeds malformed values (wrong types, huge and negative numbers, NaN, text with
newlines, control characters and non-ASCII digits, near-misses of valid values, nested
garbage) to every key, one at a time and several at once, through the real path: the
engine's config map (sections as JSON text), ``set_all_config``, ``load``. Anything but
the clean configuration error naming the key (a ValueError, an AssertionError, a
TypeError...) fails the test. Runs are derandomized: the same examples every run.
"""

from __future__ import annotations

import copy
import functools
import math
import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from components.config import ConfigError, StackConfig, load
from tests.support import mocks
from tests.support.config_keys import KEYS, OBJECTS
from tests.support.mocks import load_stack_file

PROJECT = "mysql-cluster"


# Near-misses of valid values: what a typo, a copy-paste or a YAML surprise produces.
_VALID = ["mysql-dev", "mysql", "mariadb", "11.4.8", "3.5.17", "2Gi", "250m", "mariadb:11.4.8",
          "0 */6 * * *", "127.0.0.1:2379", "apps/worker", "in-cluster", "Retain", "preferred",
          "kubernetes.io/hostname", "max_connections", "read_only", "1000"]
_NOISE = ["\n", " ", "\t", "\x00", "\u0661", "\uff11", "\u200b", "é", "$", "/", ":", "-", "_",
          "..", "latest", "@", "*", "99999999999999999999"]
near_miss = st.builds(lambda valid, noise, where: valid[:where] + noise + valid[where:],
                      st.sampled_from(_VALID), st.sampled_from(_NOISE), st.integers(0, 20))
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-(10**40), 10**40),
    st.floats(allow_nan=True, allow_infinity=True), st.just(math.nan), st.text(max_size=40),
    st.text(st.characters(codec="ascii"), max_size=12), near_miss, st.sampled_from(_VALID))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.text(max_size=12), near_miss,
                                                           st.sampled_from(_VALID)),
                                                 inner, max_size=4)), max_leaves=10)


def _set(config: dict[str, Any], path: str, value: Any) -> None:
    section, _, rest = path.partition(".")
    if not rest:
        config[f"{PROJECT}:{section}"] = value
        return
    target = config.get(f"{PROJECT}:{section}")
    if not isinstance(target, dict):
        target = config[f"{PROJECT}:{section}"] = {}
    *parents, leaf = rest.split(".")
    for parent in parents:
        child = target.get(parent)
        if not isinstance(child, dict):
            child = target[parent] = {}
        target = child
    target[leaf] = value


def _load(config: dict[str, Any]) -> StackConfig:
    loaded: list[StackConfig] = []
    mocks.run_program(config, program=lambda: loaded.append(load()))
    return loaded[0]


_stack_file = functools.cache(load_stack_file)


def _check(changes: list[tuple[str, Any]], stack: str) -> None:
    config = copy.deepcopy(_stack_file(stack))
    for path, value in changes:
        _set(config, path, value)
    problems: list[str] = []
    try:
        _load(config)
    except ConfigError as error:
        problems = error.problems or ["a ConfigError without problems"]
    for problem in problems:
        # The usual message: a key of ours, what was given, what is allowed.
        assert problem.startswith(f"{PROJECT}:"), problem
        assert re.search(r": got .*; ", problem, re.DOTALL), problem


_PROPERTY = settings(max_examples=300, derandomize=True, database=None, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])


@_PROPERTY
@given(st.sampled_from(KEYS + OBJECTS), values, st.sampled_from(["dev", "prod"]))
def test_any_value_for_any_key_is_accepted_or_refused_cleanly(path: str, value: Any,
                                                             stack: str) -> None:
    _check([(path, value)], stack)


@_PROPERTY
@given(st.lists(st.tuples(st.sampled_from(KEYS + OBJECTS), values), min_size=2, max_size=6))
def test_several_bad_values_at_once(changes: list[tuple[str, Any]]) -> None:
    _check(changes, "dev")


@settings(max_examples=100, derandomize=True, database=None, deadline=None)
@given(st.dictionaries(st.text(max_size=20), values, max_size=4))
def test_unknown_keys_of_any_shape(extra: dict[str, Any]) -> None:
    _check([(f"mysql.{key}", value) for key, value in extra.items() if "." not in key], "dev")
