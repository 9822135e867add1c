"""The README is the front door: every document it sends a reader to must exist."""

from __future__ import annotations

import re

from tests.support import mocks


def test_every_linked_document_exists() -> None:
    text = (mocks.REPO_ROOT / "README.md").read_text(encoding="utf-8")
    targets = set(re.findall(r"\]\(([^)#]+)\)", text))
    assert {"docs/mysql.md", "docs/etcd.md", "docs/locks.md"} <= targets
    assert [t for t in sorted(targets) if not (mocks.REPO_ROOT / t).is_file()] == []
