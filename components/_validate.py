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
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """Raised once, with every problem found, before any resource is registered."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid stack configuration ({len(problems)} problem(s)):\n{lines}")


class Errors:
    """Collects problems; :meth:`raise_if_any` turns them into one ConfigError."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def add(self, key: str, value: object, allowed: str) -> None:
        self.problems.append(f"{key}: got {value!r}; {allowed}")

    def raise_if_any(self) -> None:
        if self.problems:
            raise ConfigError(self.problems)


# Kubernetes resource.Quantity: a signed decimal number followed by a binary-SI
# (Ki..Ei), decimal-SI (m, k, M..E) suffix or a decimal exponent.
_QUANTITY = re.compile(
    r"^[+-]?(\d+(\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?\d+)?$"
)
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"m": 1e-3, "": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
# RFC 1123 label: what Kubernetes accepts for namespaces and most object names.
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# RFC 1123 subdomain: StorageClass, Secret and other object names.
DNS_SUBDOMAIN = re.compile(
    r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)


def quantity_value(text: str) -> float:
    """The numeric value of a valid quantity string (bytes for storage, cores for cpu)."""
    match = _QUANTITY.match(text)
    if match is None:
        raise ValueError(f"not a Kubernetes quantity: {text!r}")
    suffix = match.group(3) or ""
    number = float(text[: len(text) - len(suffix)] if suffix else text)
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix[:1] in ("e", "E"):
        return float(text)
    return number * _DECIMAL[suffix]


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

    def string(self, name: str, default: str | None, *, pattern: re.Pattern[str] | None = None,
               allowed_text: str = "must be a non-empty string") -> str | None:
        value = self._get(name)
        if value is None:
            return default
        if not isinstance(value, str) or not value or (pattern and not pattern.match(value)):
            self.errors.add(self.key(name), value, allowed_text)
            return default
        return value

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

    def optional_integer(self, name: str, *, minimum: int, maximum: int) -> int | None:
        if name not in self.raw:
            self.known.append(name)
            return None
        return self.integer(name, minimum, minimum=minimum, maximum=maximum)

    def integer(self, name: str, default: int, *, minimum: int | None = None,
                maximum: int | None = None, choices: Iterable[int] | None = None) -> int:
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
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self._get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.errors.add(self.key(name), value, "must be true or false")
            return default
        return value

    def quantity(self, name: str, default: str | None, *, positive: bool = True) -> str | None:
        value = self._get(name)
        if value is None:
            return default
        # Users often write `cpu: 1`; Kubernetes accepts numbers, so normalise to text.
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not _QUANTITY.match(value):
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
        if not isinstance(value, list) or not all(
            isinstance(v, str) and v and (pattern is None or pattern.match(v)) for v in value
        ):
            self.errors.add(self.key(name), value, allowed_text)
            return ()
        return tuple(value)

    def string_map(self, name: str) -> tuple[tuple[str, str], ...]:
        value = self._get(name)
        if value is None:
            return ()
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            self.errors.add(self.key(name), value, "must be a mapping of strings to strings")
            return ()
        return tuple(sorted(value.items()))

    def child(self, name: str) -> Reader:
        return Reader(self.errors, self.key(name), self._get(name))

    def finish(self) -> None:
        """Report every key that no reader asked for, with the nearest known spelling."""
        for unknown in sorted(set(self.raw) - set(self.known)):
            close = difflib.get_close_matches(unknown, self.known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else (
                f"known keys are {', '.join(sorted(self.known))}")
            self.errors.add(self.key(unknown), self.raw[unknown], f"unknown key; {hint}")
