"""Small, strict readers for untyped configuration objects.

Why not pydantic or a JSON schema: stack config errors must name the *Pulumi* key the
user typed (``mysql-cluster:mysql.replicas``), the value they gave and what is allowed,
and every misspelled key must be reported with a suggestion. A hundred lines of
explicit readers give exactly that message shape and no dependency the dynamic
provider process would also have to import.

Readers never raise on the first problem: they record it in an :class:`Errors`
collector, so one ``pulumi up`` reports everything wrong with a stack file at once.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")
# A reader's default: given a text default it returns text, given None it may return None,
# so a caller states each default once.
D = TypeVar("D", bound=str | None)


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


def quantity_value(text: str) -> float:
    """The numeric value of a valid quantity string (bytes for storage, cores for cpu)."""
    match = _QUANTITY.fullmatch(text) if text.isascii() else None
    if match is None:
        raise ValueError(f"not a Kubernetes quantity: {text!r}")
    suffix = match.group(3) or ""
    number = float(text[: len(text) - len(suffix)] if suffix else text)
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix[:1] in ("e", "E"):
        return float(text)
    return number * _DECIMAL[suffix]


def _is_text(value: object, pattern: re.Pattern[str] | None) -> bool:
    """A non-empty single-line string, all of it matching ``pattern`` if one is given."""
    if not isinstance(value, str) or not value or not value.isprintable():
        return False
    return pattern is None or matches(pattern, value)


class Reader:
    """Reads one config object; remembers which keys were used to flag the rest."""

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

    def string(self, name: str, default: D, *, pattern: re.Pattern[str] | None = None,
               allowed_text: str = "must be a non-empty single-line string") -> str | D:
        value = self._get(name)
        if value is None:
            return default
        if not _is_text(value, pattern):
            self.errors.add(self.key(name), value, allowed_text)
            return default
        return value  # type: ignore[no-any-return]

    def choice(self, name: str, default: T, choices: Iterable[T]) -> T:
        options = list(choices)
        value = self._get(name)
        if value is None:
            return default
        if value not in options:
            allowed = ", ".join(map(repr, options))
            self.errors.add(self.key(name), value, f"must be one of {allowed}")
            return default
        return value  # type: ignore[no-any-return]

    def optional_integer(self, name: str, *, minimum: int, maximum: int,
                         multiple_of: int | None = None) -> int | None:
        if self._get(name) is None:
            return None
        return self.integer(name, minimum, minimum=minimum, maximum=maximum,
                            multiple_of=multiple_of)

    def integer(self, name: str, default: int, *, minimum: int | None = None,
                maximum: int | None = None, choices: Iterable[int] | None = None,
                multiple_of: int | None = None) -> int:
        value = self._get(name)
        if value is None:
            return default
        # bool is an int subclass; `replicas: true` is a mistake, not 1.
        if isinstance(value, bool) or not isinstance(value, int):
            self.errors.add(self.key(name), value, "must be a whole number")
            return default
        options = list(choices) if choices is not None else None
        if options is not None and value not in options:
            allowed = ", ".join(map(str, options))
            self.errors.add(self.key(name), value, f"must be one of {allowed}")
            return default
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            if minimum is not None and maximum is not None:
                bounds = f"between {minimum} and {maximum}"
            else:
                bounds = f"at least {minimum}" if minimum is not None else f"at most {maximum}"
            self.errors.add(self.key(name), value, f"must be {bounds}")
            return default
        if multiple_of is not None and value % multiple_of:
            self.errors.add(self.key(name), value, f"must be a multiple of {multiple_of}")
            return default
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self._get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.errors.add(self.key(name), value, "must be true or false")
            return default
        return value

    def quantity(self, name: str, default: D, *, positive: bool = True) -> str | D:
        value = self._get(name)
        if value is None:
            return default
        # Users often write `cpu: 1`; Kubernetes accepts numbers, so normalise to text.
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not matches(_QUANTITY, value):
            self.errors.add(self.key(name), value,
                            "must be a Kubernetes quantity such as 10Gi, 500Mi, 250m or 2")
            return default
        if positive and quantity_value(value) <= 0:
            self.errors.add(self.key(name), value, "must be greater than zero")
            return default
        return value

    def string_list(self, name: str, *, pattern: re.Pattern[str] | None = None,
                    allowed_text: str = "must be a list of non-empty strings") -> tuple[str, ...]:
        value = self._get(name)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(_is_text(v, pattern) for v in value):
            self.errors.add(self.key(name), value, allowed_text)
            return ()
        return tuple(value)

    def string_map(self, name: str, *, key_ok: Callable[[str], bool] | None = None,
                   value_ok: Callable[[str], bool] | None = None,
                   allowed_text: str = "") -> tuple[tuple[str, str], ...]:
        """A mapping of strings to strings; with ``key_ok``/``value_ok``, each entry that
        fails them is reported under its own key, with ``allowed_text``."""
        value = self._get(name)
        if value is None:
            return ()
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            self.errors.add(self.key(name), value, "must be a mapping of strings to strings")
            return ()
        good = []
        for key, text in sorted(value.items()):
            if (key_ok and not key_ok(key)) or (value_ok and not value_ok(text)):
                self.errors.add(f"{self.key(name)}.{key}", text, allowed_text)
            else:
                good.append((key, text))
        return tuple(good)

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
