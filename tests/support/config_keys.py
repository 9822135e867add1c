"""Every stack key the config parser reads, recorded from a real parse.

Tests that must cover every key (the property test, the README table's check) take the list
from here rather than from a copy: a key added to the parser is covered without a test edit.
"""

from __future__ import annotations

from typing import Any
from unittest import mock

from components._validate import Reader
from components.config import parse
from tests.support import mocks
from tests.support.mocks import load_stack_file

PROJECT = "mysql-cluster"


def keys_read() -> tuple[list[str], list[str]]:
    """(every leaf key, every object key) the parser asks for, recorded from a real parse
    of a stack that sets every section, so a key added to the parser is covered here."""
    asked: list[str] = []
    real_get = Reader._get

    def record(reader: Reader, name: str) -> Any:
        asked.append(reader.key(name).removeprefix(f"{PROJECT}:"))
        return real_get(reader, name)

    with mock.patch.object(Reader, "_get", record):
        parse(mocks.config_map(load_stack_file("prod")), stack="prod")
    objects = sorted({k for k in asked if any(o.startswith(f"{k}.") for o in asked)})
    return sorted(set(asked) - set(objects)), objects


KEYS, OBJECTS = keys_read()
