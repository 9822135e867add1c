"""Fixtures shared by every test directory.

``mariadb_version`` is how a real-server test runs on both MariaDB versions: the fixtures that
start servers take it and pass it on (``MariaDBServer(version=...)``, ``PodCluster(version=...)``),
so each test body runs unchanged on 10.11 (Debian) and 11.4 (Maven Central; see
tests/support/mariadb.py). Module scope, so that a module-scoped server template is built once
per version and the tests of one version run together.
"""

from __future__ import annotations

import pytest

from tests.support.mariadb import VERSIONS


@pytest.fixture(scope="module", params=VERSIONS, ids=[f"mariadb-{v}" for v in VERSIONS])
def mariadb_version(request: pytest.FixtureRequest) -> str:
    version: str = request.param
    return version
