"""The strict readers of ``components/_validate.py``, one table per check.

Every config key is read through these functions, so their exact answers (what is kept,
what a message says) are pinned here once; the config tests then only check that each key
uses the right one. Kubernetes' own rules (quantities, label keys, cron) are taken from
what the API server and the CronJob controller accept.
"""

from __future__ import annotations

import re
import sys

import pytest

from components._validate import (
    DNS_LABEL,
    DNS_SUBDOMAIN,
    ConfigError,
    Errors,
    InvalidConfig,
    Problem,
    Reader,
    check_boolean,
    check_choice,
    check_integer,
    check_quantity,
    check_text,
    check_text_list,
    check_text_map,
    is_cron,
    is_label_key,
    is_label_value,
    matches,
    quantity_value,
)

# --- the error shapes -------------------------------------------------------------------


def test_config_error_lists_every_problem() -> None:
    error = ConfigError(["a: got 1; no", "b: got 2; no"])
    assert error.problems == ["a: got 1; no", "b: got 2; no"]
    assert str(error) == ("invalid stack configuration (2 problem(s)):\n"
                          "  - a: got 1; no\n  - b: got 2; no")


def test_errors_raise_once_with_everything_collected() -> None:
    errors = Errors()
    errors.raise_if_any()  # nothing yet: no error
    errors.add("mysql.replicas", "x" * 500, "must be a whole number")
    errors.add("mysql.flavor", None, "must be one of 'mysql', 'mariadb'")
    with pytest.raises(ConfigError) as raised:
        errors.raise_if_any()
    first, second = raised.value.problems
    # A long value is cut short, and says how long it was.
    assert first.startswith("mysql.replicas: got '" + "x" * 199 + "... (502 characters)")
    assert second == "mysql.flavor: got None; must be one of 'mysql', 'mariadb'"


def test_a_value_too_large_to_print_is_named_not_printed() -> None:
    limit = getattr(sys, "get_int_max_str_digits", lambda: 0)()
    if not limit:
        pytest.skip("this Python has no integer string-conversion limit")
    errors = Errors()
    errors.add("k", 10 ** (limit + 1), "too big")
    assert errors.problems == ["k: got <a int too large to print>; too big"]


def test_invalid_config_names_fields_and_refs_as_python_spells_them() -> None:
    class MySQLConfig:
        pass

    error = InvalidConfig([Problem("replicas", 0, "must be at least 1"),
                           Problem("labels", "x y", "is not a label value", suffix=".team"),
                           Problem("", None, "{0} must be below {1}",
                                   refs=("min_lag", "max_lag"))], MySQLConfig())
    assert error.problems == ["replicas: got 0; must be at least 1",
                              "labels.team: got 'x y'; is not a label value",
                              "MySQLConfig: got None; min_lag must be below max_lag"]
    assert isinstance(error, ConfigError)
    assert [p.field for p in error.structured] == ["replicas", "labels", ""]


# --- Kubernetes names, labels, cron, quantities ----------------------------------------


@pytest.mark.parametrize(("pattern", "text", "ok"), [
    (DNS_LABEL, "orders-mysql", True),
    (DNS_LABEL, "a" * 63, True),
    (DNS_LABEL, "a" * 64, False),
    (DNS_LABEL, "-orders", False),
    (DNS_LABEL, "Orders", False),
    (DNS_LABEL, "orders\n", False),         # $ would match before the newline: fullmatch
    (DNS_LABEL, "orders-\u0663", False),    # an Arabic-Indic digit is not [0-9]
    (DNS_SUBDOMAIN, "fast.ssd.example.com", True),
    (DNS_SUBDOMAIN, "a." * 126 + "a", True),  # 253 characters
    (DNS_SUBDOMAIN, "a." * 126 + "ab", False),
    (DNS_SUBDOMAIN, "fast..ssd", False),
])
def test_names_match_all_of_the_text_and_only_ascii(pattern: re.Pattern[str], text: str,
                                                    ok: bool) -> None:
    assert matches(pattern, text) is ok


@pytest.mark.parametrize(("key", "ok"), [
    ("team", True),
    ("app.kubernetes.io/name", True),
    ("example.com/a_b.c-d", True),
    ("/name", False),                       # an empty prefix is not a subdomain
    ("Example.com/name", False),
    ("example.com/", False),
    ("a" * 64, False),
    ("team name", False),
])
def test_label_keys(key: str, ok: bool) -> None:
    assert is_label_key(key) is ok


@pytest.mark.parametrize(("value", "ok"), [
    ("", True), ("prod", True), ("v1.2_3-x", True), ("-prod", False), ("a" * 64, False),
    ("a/b", False)])
def test_label_values(value: str, ok: bool) -> None:
    assert is_label_value(value) is ok


@pytest.mark.parametrize(("schedule", "ok"), [
    ("0 */6 * * *", True),
    ("@daily", True),
    ("30 2 * * sun", True),
    ("30 2 * * 7", True),                   # robfig/cron: 7 is Sunday too
    ("0 0 1 jan-mar mon-fri", True),
    ("0,15,30,45 * ? * *", True),
    ("5-10/2 * * * *", True),
    ("0 0 * * 8", False),
    ("0 0 * 13 *", False),
    ("10-5 * * * *", False),
    ("*/0 * * * *", False),
    ("0 0 * * * *", False),                 # six fields
    ("@every 5m", False),
    ("0 0 * * foo", False),
    ("0\t0 * *\n*", False),
])
def test_cron_schedules_as_a_cronjob_accepts_them(schedule: str, ok: bool) -> None:
    assert is_cron(schedule) is ok


@pytest.mark.parametrize(("text", "value"), [
    ("10Gi", 10 * 2**30), ("500Mi", 500 * 2**20), ("250m", 0.25), ("2", 2.0),
    ("1.5k", 1500.0), ("1e3", 1000.0), ("+.5", 0.5), ("2E", 2e18)])
def test_quantity_values(text: str, value: float) -> None:
    assert quantity_value(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "10GB", "Gi", "1.2.3", "\u0661Gi", "10 Gi"])
def test_a_string_that_is_no_quantity_has_no_value(text: str) -> None:
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        quantity_value(text)


# --- the checks: (value kept, problems) -------------------------------------------------


@pytest.mark.parametrize(("value", "kept", "problem"), [
    ("orders", "orders", ""),
    (None, None, ""),                       # unset: the caller's default applies
    ("", "dflt", "must be a non-empty single-line string"),
    ("two\nlines", "dflt", "must be a non-empty single-line string"),
    (7, "dflt", "must be a non-empty single-line string"),
])
def test_check_text(value: object, kept: object, problem: str) -> None:
    assert check_text(value, "dflt") == (kept, [("", value, problem)] if problem else [])


def test_check_text_with_a_pattern_says_what_is_allowed() -> None:
    assert check_text("db", "x", pattern=DNS_LABEL, allowed_text="must be a DNS label") == (
        "db", [])
    assert check_text("DB", "x", pattern=DNS_LABEL, allowed_text="must be a DNS label") == (
        "x", [("", "DB", "must be a DNS label")])


def test_check_choice() -> None:
    assert check_choice("mysql", "mariadb", ("mysql", "mariadb")) == ("mysql", [])
    assert check_choice("MySQL", "mariadb", ("mysql", "mariadb")) == (
        "mariadb", [("", "MySQL", "must be one of 'mysql', 'mariadb'")])


@pytest.mark.parametrize(("value", "bounds", "kept", "problem"), [
    (3, {"minimum": 1, "maximum": 9}, 3, ""),
    (True, {}, 5, "must be a whole number"),      # bool is an int subclass, not a number
    (3.0, {}, 5, "must be a whole number"),
    ("3", {}, 5, "must be a whole number"),
    (0, {"minimum": 1, "maximum": 9}, 5, "must be between 1 and 9"),
    (0, {"minimum": 1}, 5, "must be at least 1"),
    (10, {"maximum": 9}, 5, "must be at most 9"),
    (4, {"choices": (1, 3, 5)}, 5, "must be one of 1, 3, 5"),
    (1500, {"multiple_of": 1000}, 5, "must be a multiple of 1000"),
    (2000, {"minimum": 1000, "multiple_of": 1000}, 2000, ""),
])
def test_check_integer(value: object, bounds: dict[str, object], kept: object,
                       problem: str) -> None:
    assert check_integer(value, 5, **bounds) == (  # type: ignore[arg-type]
        kept, [("", value, problem)] if problem else [])


@pytest.mark.parametrize(("value", "kept", "ok"), [
    (True, True, True), (False, False, True), ("true", None, False), (1, None, False)])
def test_check_boolean(value: object, kept: object, ok: bool) -> None:
    assert check_boolean(value, None) == (
        kept, [] if ok else [("", value, "must be true or false")])


@pytest.mark.parametrize(("value", "positive", "kept", "problem"), [
    ("10Gi", True, "10Gi", ""),
    (1, True, "1", ""),                     # `cpu: 1` is normalised to text
    (0.5, True, "0.5", ""),
    ("0", True, "1Gi", "must be greater than zero"),
    ("0", False, "0", ""),
    ("-1", True, "1Gi", "must be greater than zero"),
    (True, True, "1Gi", "must be a Kubernetes quantity such as 10Gi, 500Mi, 250m or 2"),
    ("10GB", True, "1Gi", "must be a Kubernetes quantity such as 10Gi, 500Mi, 250m or 2"),
])
def test_check_quantity(value: object, positive: bool, kept: object, problem: str) -> None:
    assert check_quantity(value, "1Gi", positive=positive) == (
        kept, [("", value, problem)] if problem else [])


@pytest.mark.parametrize(("value", "kept", "ok"), [
    (["a", "b"], ("a", "b"), True),
    (("a",), ("a",), True),
    ([], (), True),
    (["a", ""], (), False),
    ("a", (), False),
    ([1], (), False),
])
def test_check_text_list(value: object, kept: tuple[str, ...], ok: bool) -> None:
    assert check_text_list(value) == (
        kept, [] if ok else [("", value, "must be a list of non-empty strings")])


def test_check_text_list_with_a_pattern() -> None:
    assert check_text_list(["db", "DB"], pattern=DNS_LABEL, allowed_text="labels") == (
        (), [("", ["db", "DB"], "labels")])


def test_check_text_map_sorts_and_accepts_its_python_form() -> None:
    assert check_text_map({"b": "2", "a": "1"}) == ((("a", "1"), ("b", "2")), [])
    assert check_text_map((("a", "1"), ("b", "2"))) == ((("a", "1"), ("b", "2")), [])
    assert check_text_map({"a": 1}) == ((), [("", {"a": 1}, "must be a mapping of strings "
                                                           "to strings")])
    assert check_text_map(["a"])[1][0][2] == "must be a mapping of strings to strings"


def test_check_text_map_drops_and_reports_each_bad_entry_under_its_key() -> None:
    def entry(key: str, value: str) -> str | None:
        return None if is_label_value(value) else "must be a label value"

    assert check_text_map({"team": "db", "tier": "not ok", "app": "x"}, entry=entry) == (
        (("app", "x"), ("team", "db")), [(".tier", "not ok", "must be a label value")])


# --- the YAML reader ------------------------------------------------------------------


def test_reader_keys_children_and_unknown_keys_with_a_suggestion() -> None:
    errors = Errors()
    root = Reader(errors, "mysql-cluster", {"mysql": {"replicas": 2, "replcas": 3},
                                            "mysqll": {}}, separator=":")
    mysql = root.child("mysql")
    assert mysql.key("replicas") == "mysql-cluster:mysql.replicas"
    assert mysql._get("replicas") == 2
    mysql.finish()
    root.finish()
    assert errors.problems == [
        "mysql-cluster:mysql.replcas: got 3; unknown key; did you mean 'replicas'?",
        "mysql-cluster:mysqll: got {}; unknown key; did you mean 'mysql'?"]


def test_reader_without_a_close_spelling_lists_the_known_keys() -> None:
    errors = Errors()
    reader = Reader(errors, "etcd", {"zzz": 1, "size": 3, "image": "x"})
    reader._get("size")
    reader._get("image")
    reader.finish()
    assert errors.problems == ["etcd.zzz: got 1; unknown key; known keys are image, size"]


@pytest.mark.parametrize(("raw", "problems"), [
    (None, []),                              # an absent section is an empty one
    ({}, []),
    ([1, 2], ["locks: got [1, 2]; must be an object (a YAML mapping)"]),
    ("x", ["locks: got 'x'; must be an object (a YAML mapping)"]),
])
def test_reader_of_something_that_is_no_mapping(raw: object, problems: list[str]) -> None:
    errors = Errors()
    reader = Reader(errors, "locks", raw)
    assert reader.raw == {}
    reader.finish()
    assert errors.problems == problems


def test_reader_keys_that_are_not_strings_are_still_reported() -> None:
    errors = Errors()
    Reader(errors, "mysql", {1: "a", "b": 2}).finish()
    assert [p.split(": got ")[0] for p in errors.problems] == ["mysql.1", "mysql.b"]
