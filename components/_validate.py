"""Small, strict readers for untyped configuration objects.

Why not pydantic or a JSON schema: stack config errors must name the *Pulumi* key the
user typed (``mysql-cluster:mysql.replicas``), the value they gave and what is allowed,
and every misspelled key must be reported with a suggestion. A hundred lines of
explicit readers give exactly that message shape and no dependency the dynamic
provider process would also have to import.

The checks here work on values, not on YAML: the config dataclasses run them in
``__post_init__`` (so a program building them in Python gets the same validation), and
the YAML reader runs the same ones on what the stack file holds. Neither raises on the
first problem: every problem is collected, so one ``pulumi up`` reports everything wrong
with a stack file at once.
"""

from __future__ import annotations

import datetime as dt
import difflib
import itertools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any


class ConfigError(ValueError):
    """Raised once, with every problem found, before any resource is registered."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid stack configuration ({len(problems)} problem(s)):\n{lines}")


def _shown(value: object, limit: int = 200) -> str:
    """``repr(value)``, cut short: a message must stay readable whatever was typed."""
    try:
        text = repr(value)
    except ValueError:  # an int too long for str() (sys.get_int_max_str_digits)
        text = f"<a {type(value).__name__} too large to print>"
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class Errors:
    """Collects problems; :meth:`raise_if_any` turns them into one ConfigError."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def add(self, key: str, value: object, allowed: str) -> None:
        self.problems.append(f"{key}: got {_shown(value)}; {allowed}")

    def raise_if_any(self) -> None:
        if self.problems:
            raise ConfigError(self.problems)


# Kubernetes resource.Quantity: a signed decimal number followed by a binary-SI
# (Ki..Ei), decimal-SI (m, k, M..E) suffix or a decimal exponent.
# Every pattern here is used with fullmatch on ASCII text: ``$`` also matches before a
# trailing newline and ``\d`` matches any Unicode digit, and Kubernetes accepts neither.
_QUANTITY = re.compile(
    r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?"
)
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"m": 1e-3, "": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
# RFC 1123 label: what Kubernetes accepts for namespaces and most object names.
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
# RFC 1123 subdomain: StorageClass, Secret and other object names.
DNS_SUBDOMAIN = re.compile(
    r"(?=.{1,253}\Z)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
)
# A label value (also a label key's name part): at most 63 characters.
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")


def matches(pattern: re.Pattern[str], text: str) -> bool:
    """Whether all of ``text`` is ASCII and matches ``pattern``."""
    return text.isascii() and pattern.fullmatch(text) is not None


def is_label_key(text: str) -> bool:
    """A Kubernetes label key: ``[prefix/]name``, the prefix a DNS subdomain."""
    prefix, _, name = text.rpartition("/")
    return matches(_LABEL_NAME, name) and (not _ or matches(DNS_SUBDOMAIN, prefix))


def is_label_value(text: str) -> bool:
    return not text or matches(_LABEL_NAME, text)


# Five-field cron as Kubernetes CronJob parses it (robfig/cron's standard parser): each
# field a list of *, ?, N, N-M with an optional /step, months and weekdays also by name.
_CRON_FIELDS = (("minute", 0, 59, ()), ("hour", 0, 23, ()), ("day of month", 1, 31, ()),
                ("month", 1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug",
                                  "sep", "oct", "nov", "dec")),
                ("day of week", 0, 6, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")))
_CRON_MACROS = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight",
                          "@hourly"})
_CRON_PART = re.compile(r"(\*|\?|(?P<low>[0-9a-z]+)(-(?P<high>[0-9a-z]+))?)(/(?P<step>[0-9]+))?")


def _cron_value(text: str, low: int, names: tuple[str, ...]) -> int | None:
    if text.isdigit():
        return int(text)
    return names.index(text) + low if text in names else None


def is_cron(text: str) -> bool:
    """Whether ``text`` is a schedule a CronJob accepts (five fields or a @-macro)."""
    if text in _CRON_MACROS:
        return True
    fields = text.split()
    if not (text.isascii() and text.isprintable()) or len(fields) != len(_CRON_FIELDS):
        return False
    for field, (_, low, high, names) in zip(fields, _CRON_FIELDS, strict=True):
        for part in field.lower().split(","):
            match = _CRON_PART.fullmatch(part)
            if match is None:
                return False
            # robfig/cron takes 7 as Sunday too.
            top = 7 if names and names[0] == "sun" else high
            first = _cron_value(match["low"], low, names) if match["low"] else low
            last = _cron_value(match["high"], low, names) if match["high"] else first
            step = match["step"]
            if (first is None or last is None or not low <= first <= last <= top
                    or (step is not None and int(step) == 0)):
                return False
    return True


_CRON_MACRO_FIELDS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *",
                      "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0", "@daily": "0 0 * * *",
                      "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}


def _cron_values(field: str, low: int, high: int,
                 names: tuple[str, ...]) -> tuple[frozenset[int], bool]:
    """The values one field of a valid schedule matches, and whether it is a bare ``*``/``?``
    (robfig/cron's "star", which decides how day of month and day of week combine)."""
    values: set[int] = set()
    star = False
    for part in field.lower().split(","):
        match = _CRON_PART.fullmatch(part)
        assert match is not None  # is_cron accepted the schedule
        step = int(match["step"] or 1)
        if match["low"]:
            first = _cron_value(match["low"], low, names)
            last = _cron_value(match["high"], low, names) if match["high"] else None
            assert first is not None
            # robfig/cron: "5/15" runs from 5 to the field's end.
            last = last if last is not None else (high if match["step"] else first)
        else:
            first, last = low, high
            star = star or step == 1
        values.update(range(first, last + 1, step))
    if names and names[0] == "sun" and 7 in values:
        values = (values - {7}) | {0}
    return frozenset(values), star


def cron_interval_seconds(text: str) -> int:
    """The longest gap between two consecutive runs of a valid CronJob schedule (UTC), in
    seconds: the schedule's interval when it is fixed, and the bound an "is the newest
    backup too old" check needs when it is not (``0 1,23 * * *`` is 2 h, then 22 h: 22 h).

    A schedule that names neither days of month nor months repeats every week, so one week
    (and its wrap into the next) is every gap; any other repeats within four years (leap
    days), so eight years from a fixed Monday are scanned. Day of month and day of week
    combine as robfig/cron (Kubernetes' scheduler) does: both restricted means either one.
    """
    if not is_cron(text):
        raise ValueError(f"not a CronJob schedule: {text!r}")
    fields = _CRON_MACRO_FIELDS.get(text, text).split()
    (minutes, _), (hours, _), (days, day_star), (months, month_star), (weekdays, weekday_star) = (
        _cron_values(field, low, high, names)
        for field, (_, low, high, names) in zip(fields, _CRON_FIELDS, strict=True))
    weekly = day_star and month_star
    span_days = 7 if weekly else 8 * 365 + 2
    start = dt.date(2024, 1, 1)  # a Monday
    day_minutes = sorted(hour * 60 + minute for hour in hours for minute in minutes)
    runs: list[int] = []
    for offset in range(span_days):
        day = start + dt.timedelta(days=offset)
        in_month = day.day in days
        on_weekday = day.isoweekday() % 7 in weekdays
        matches = (in_month and on_weekday) if day_star or weekday_star else (
            in_month or on_weekday)
        if day.month in months and matches:
            runs.extend(offset * 1440 + minute for minute in day_minutes)
    if not runs:
        raise ValueError(f"the schedule {text!r} never runs")
    if weekly:
        runs.append(runs[0] + 7 * 1440)
    if len(runs) < 2:
        raise ValueError(f"the schedule {text!r} runs at most once in eight years")
    return 60 * max(later - earlier for earlier, later in itertools.pairwise(runs))


def quantity_value(text: str) -> float:
    """The numeric value of a valid quantity string (bytes for storage, cores for cpu)."""
    match = _QUANTITY.fullmatch(text) if text.isascii() else None
    if match is None:
        raise ValueError(f"not a Kubernetes quantity: {text!r}")
    suffix = match.group(3) or ""
    number = float(text[: len(text) - len(suffix)] if suffix else text)
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix in _DECIMAL:  # before the exponent: a lone "E" is exa, not an exponent
        return number * _DECIMAL[suffix]
    return float(text)  # a decimal exponent, e.g. 1e3


def _is_text(value: object, pattern: re.Pattern[str] | None) -> bool:
    """A non-empty single-line string, all of it matching ``pattern`` if one is given."""
    if not isinstance(value, str) or not value or not value.isprintable():
        return False
    return pattern is None or matches(pattern, value)


@dataclass(frozen=True)
class Problem:
    """One problem with one value, keyed by dataclass field path (``replication_init.endpoints``).

    The YAML reader re-keys ``field`` with the Pulumi spelling; ``suffix`` is a sub-key
    below it (a map entry, ``.max_conn``); ``text`` may name other keys as ``{0}``, ``{1}``
    through ``refs`` (field paths, relative to the same object), re-keyed the same way.
    """

    field: str
    value: object
    text: str
    suffix: str = ""
    refs: tuple[str, ...] = ()


class InvalidConfig(ConfigError):
    """A config dataclass built with bad values. ``instance`` is the object as built, so
    the YAML reader can go on and report every other problem too."""

    def __init__(self, problems: list[Problem], instance: object) -> None:
        self.structured = problems
        self.instance = instance
        # From Python the fields are named as the dataclass spells them; "" is the object.
        super().__init__([f"{p.field or type(instance).__name__}{p.suffix}: got "
                          f"{_shown(p.value)}; {p.text.format(*p.refs)}" for p in problems])


# A check takes a value (the Python form: tuples, not lists) and returns the value to keep
# (the field's default when the value is unusable) and the problems, keyed by sub-key.
Checked = tuple[Any, list[tuple[str, object, str]]]


def check_text(value: object, default: object, *, pattern: re.Pattern[str] | None = None,
               allowed_text: str = "must be a non-empty single-line string") -> Checked:
    if value is None or _is_text(value, pattern):
        return value, []
    return default, [("", value, allowed_text)]


def check_choice(value: object, default: object, choices: Iterable[object]) -> Checked:
    options = list(choices)
    if value in options:
        return value, []
    return default, [("", value, f"must be one of {', '.join(map(repr, options))}")]


def check_integer(value: object, default: object, *, minimum: int | None = None,
                  maximum: int | None = None, choices: Iterable[int] | None = None,
                  multiple_of: int | None = None) -> Checked:
    # bool is an int subclass; `replicas: true` is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int):
        return default, [("", value, "must be a whole number")]
    if choices is not None and value not in (options := list(choices)):
        return default, [("", value, f"must be one of {', '.join(map(str, options))}")]
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        if minimum is not None and maximum is not None:
            bounds = f"between {minimum} and {maximum}"
        else:
            bounds = f"at least {minimum}" if minimum is not None else f"at most {maximum}"
        return default, [("", value, f"must be {bounds}")]
    if multiple_of is not None and value % multiple_of:
        return default, [("", value, f"must be a multiple of {multiple_of}")]
    return value, []


def check_boolean(value: object, default: object) -> Checked:
    if isinstance(value, bool):
        return value, []
    return default, [("", value, "must be true or false")]


def check_quantity(value: object, default: object, *, positive: bool = True) -> Checked:
    # Users often write `cpu: 1`; Kubernetes accepts numbers, so normalise to text.
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not matches(_QUANTITY, value):
        return default, [("", value,
                          "must be a Kubernetes quantity such as 10Gi, 500Mi, 250m or 2")]
    if positive and quantity_value(value) <= 0:
        return default, [("", value, "must be greater than zero")]
    return value, []


def check_text_list(value: object, *, pattern: re.Pattern[str] | None = None,
                    allowed_text: str = "must be a list of non-empty strings") -> Checked:
    if not isinstance(value, list | tuple) or not all(_is_text(v, pattern) for v in value):
        return (), [("", value, allowed_text)]
    return tuple(value), []


def check_text_map(value: object, *,
                   entry: Callable[[str, str], str | None] | None = None) -> Checked:
    """A mapping of strings to strings (or its Python form, sorted pairs); ``entry`` returns
    what is wrong with one entry, which is then dropped and reported under its own key."""
    if isinstance(value, tuple) and all(isinstance(p, tuple) and len(p) == 2 for p in value):
        value = dict(value)
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        return (), [("", value, "must be a mapping of strings to strings")]
    good, problems = [], []
    for key, text in sorted(value.items()):
        wrong = entry(key, text) if entry else None
        if wrong:
            problems.append((f".{key}", text, wrong))
        else:
            good.append((key, text))
    return tuple(good), problems


class Reader:
    """One config object from YAML; remembers which keys were asked for to flag the rest."""

    def __init__(self, errors: Errors, path: str, raw: object, *, separator: str = ".") -> None:
        self.errors = errors
        self.path = path
        self.separator = separator
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            errors.add(path, raw, "must be an object (a YAML mapping)")
            raw = {}
        self.raw: Mapping[str, Any] = raw
        self.known: list[str] = []

    def key(self, name: str) -> str:
        return f"{self.path}{self.separator}{name}"

    def _get(self, name: str) -> Any:
        self.known.append(name)
        return self.raw.get(name)

    def child(self, name: str) -> Reader:
        return Reader(self.errors, self.key(name), self._get(name))

    def finish(self) -> None:
        """Report every key that no reader asked for, with the nearest known spelling."""
        # Keys from the engine are strings; from Python they might be anything.
        for unknown in sorted(set(self.raw) - set(self.known), key=str):
            close = difflib.get_close_matches(str(unknown), self.known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else (
                f"known keys are {', '.join(sorted(self.known))}")
            self.errors.add(self.key(unknown), self.raw[unknown], f"unknown key; {hint}")
