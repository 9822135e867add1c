"""Checking a dynamic provider's inputs: one set of rules for every provider here.

Why a module of its own: ``check`` is where a provider refuses bad input, naming the
property, before any create or update can change a server. ReplicationInit,
EtcdMembership and the Lock CRD provider each did that their own way (a checker class,
two if-chains), so the same input was judged three ways: one took unknown preview values
for missing ones, one let a trailing newline through a pattern (``re.match`` with ``$``
accepts ``"db-0\\n"``), one echoed a kubeconfig that could hold credentials. As
:mod:`components._wire` is for numbers, this is for everything else; the rules:

- patterns match all of an ASCII string (:func:`components._validate.matches`, as the
  stack config does);
- numbers go through :func:`components._wire.whole_number` (the engine sends floats);
- a value not known yet (preview) is accepted and left unchecked, and marks the result
  ``unknown`` so the provider does not build a spec from it;
- secrets are never echoed in a failure;
- every problem is collected, so one ``pulumi up`` reports all of them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar

from pulumi.dynamic import CheckFailure
from pulumi.runtime.rpc import UNKNOWN  # a value not known yet (preview)

from components._validate import matches
from components._wire import whole_number

T = TypeVar("T")

# A DNS name or an IPv4 address (no IPv6: the stack config refuses it too).
HOST = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?")
# An etcd URL: http(s), a host as above, an optional port, nothing after but "/".
_URL = re.compile(r"https?://" + HOST.pattern + r"(:(?P<port>[0-9]{1,5}))?/?")


def is_url(text: str, *, port: bool = False) -> bool:
    """Whether ``text`` is an etcd client or peer URL; ``port`` requires one (1-65535)."""
    found = _URL.fullmatch(text) if text.isascii() else None
    if found is None or (port and found["port"] is None):
        return False
    return found["port"] is None or 1 <= int(found["port"]) <= 65535


def has_unknowns(value: object) -> bool:
    """Whether ``value`` holds, at any depth, a value not known yet (preview)."""
    if value == UNKNOWN:
        return True
    if isinstance(value, Mapping):
        return any(has_unknowns(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(has_unknowns(v) for v in value)
    return False


class Checker:
    """Collects CheckFailures; each method returns the value to use ("" / 0 / None when bad)."""

    def __init__(self) -> None:
        self.failures: list[CheckFailure] = []
        self.unknown = False

    def fail(self, name: str, reason: str) -> None:
        self.failures.append(CheckFailure(name, reason))

    def present(self, name: str, value: object, *, required: bool = True) -> bool:
        """Whether there is a value to check: not unknown, and given if ``required``."""
        if value == UNKNOWN:
            self.unknown = True
            return False
        if value is None:
            if required:
                self.fail(name, "is required")
            return False
        return True

    def string(self, name: str, value: object, *, pattern: re.Pattern[str] | None = None,
               test: Callable[[str], bool] | None = None, max_length: int | None = 255,
               what: str = "a non-empty string", required: bool = True) -> str:
        """A non-empty string within ``max_length``, all of it matching ``pattern`` and
        passing ``test`` when given; ``what`` says in the failure what was wanted."""
        if not self.present(name, value, required=required):
            return ""
        if (not isinstance(value, str) or not value
                or (max_length is not None and len(value) > max_length)
                or (pattern is not None and not matches(pattern, value))
                or (test is not None and not test(value))):
            limit = f" of at most {max_length} characters" if max_length is not None else ""
            self.fail(name, f"must be {what}{limit}; got {value!r}")
            return ""
        return value

    def secret(self, name: str, value: object, *, max_length: int | None,
               what: str = "passwords", required: bool = True) -> str:
        """A string the failure never shows (a password, a kubeconfig with credentials)."""
        if not self.present(name, value, required=required):
            return ""
        if not isinstance(value, str) or not value:
            self.fail(name, f"must be a non-empty string ({what} are never empty)")
            return ""
        if max_length is not None and len(value) > max_length:
            self.fail(name, f"is {len(value)} characters; the server accepts at most "
                            f"{max_length} for this flavor")
            return ""
        if "\0" in value:
            self.fail(name, "must not contain NUL characters")
            return ""
        return value

    def cluster_access(self, props: Mapping[str, Any]) -> tuple[str, str]:
        """``kubeconfig`` (a path or a document's text; it may hold credentials, so a
        failure never shows it) and ``context``, both optional ("" when absent: the
        provider then finds the cluster as kubectl does)."""
        kubeconfig = self.secret("kubeconfig", props.get("kubeconfig"), max_length=None,
                                 what="kubeconfigs", required=False)
        context = self.string("context", props.get("context"), max_length=None,
                              required=False)
        return kubeconfig, context

    def integer(self, name: str, value: object, *, minimum: int, maximum: int) -> int:
        if not self.present(name, value):
            return 0
        number = whole_number(value)
        if number is None or not minimum <= number <= maximum:
            self.fail(name, f"must be a whole number between {minimum} and {maximum}; "
                            f"got {value!r}")
            return 0
        return number

    def boolean(self, name: str, value: object) -> bool:
        if not self.present(name, value):
            return False
        if not isinstance(value, bool):
            self.fail(name, f"must be true or false; got {value!r}")
            return False
        return value

    def choice(self, name: str, value: object, allowed: Collection[T]) -> T | None:
        if not self.present(name, value):
            return None
        for option in allowed:
            if value == option:
                return option
        self.fail(name, f"must be one of {sorted(map(str, allowed))}; got {value!r}")
        return None

    def sequence(self, name: str, value: object, what: str, *,
                 non_empty: bool = False) -> Sequence[object]:
        if not self.present(name, value):
            return ()
        if (not isinstance(value, Sequence) or isinstance(value, str)
                or (non_empty and not value)):
            self.fail(name, f"must be a {'non-empty ' if non_empty else ''}list of {what}; "
                            f"got {value!r}")
            return ()
        return value

    def url(self, name: str, value: object, *, what: str) -> str:
        """An etcd client URL (see :func:`is_url`)."""
        return self.string(name, value, test=is_url, what=what)

    def only(self, props: Collection[str], *, inputs: Sequence[str], outputs: Collection[str],
             resource: str) -> None:
        """Refuse keys that are no input or output of ``resource`` (a typo, a removed input).

        Outputs are allowed because state written by the provider carries them beside the
        inputs; the failure lists the inputs, which are what a caller can set.
        """
        for key in sorted(set(props) - set(inputs) - set(outputs) - {"__provider"}):
            self.fail(key, f"is not a {resource} property; known: {', '.join(inputs)}")
