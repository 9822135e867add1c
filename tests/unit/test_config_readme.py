"""The README's stack configuration table names exactly the keys the parser reads.

The table is now generated from the declarations (tests/unit/test_config_declared.py
checks it equals them); this still checks the other way round: that the declarations name
exactly the keys the parser asks for. Rows group keys as
``mysql.flavor`` / ``mysql.version`` or ``mysql.images.server/backup/kubectl``; an object
key (``etcd.resources``) covers every key under it.
"""

from __future__ import annotations

import re

from tests.support import mocks
from tests.support.config_keys import KEYS, OBJECTS


def _table_keys() -> list[str]:
    text = (mocks.REPO_ROOT / "README.md").read_text(encoding="utf-8")
    table = text.split("| key | default | meaning |", 1)[1].split("\n\n", 1)[0]
    names = []
    for row in table.splitlines()[2:]:
        for cell in re.findall(r"`([^`]+)`", row.split("|")[1]):
            head, _, last = cell.rpartition(".")
            names += [f"{head}.{alt}" if head else alt for alt in last.split("/")]
    return names


def test_every_key_in_the_table_is_one_the_parser_reads() -> None:
    assert sorted(set(_table_keys()) - set(KEYS) - set(OBJECTS)) == []


def test_every_key_the_parser_reads_is_in_the_table() -> None:
    listed = set(_table_keys())
    missing = [key for key in KEYS
               if key not in listed and not any(key.startswith(f"{o}.") for o in listed)]
    assert missing == []
