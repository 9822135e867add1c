"""Fixtures shared by the integration tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.backups import Store
from tests.support.etcd_pods import LocalStatefulSet
from tests.support.etcd_stack import render
from tests.support.seaweedfs import SeaweedS3


@pytest.fixture
def statefulset(tmp_path: Path) -> Iterator[LocalStatefulSet]:
    pods = LocalStatefulSet(tmp_path, render(replicas=3))
    try:
        yield pods
    finally:
        pods.stop_all()


# One S3 server per test module (the backup and etcd snapshot tests), a bucket per test.
@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    server = SeaweedS3(tmp_path_factory.mktemp("seaweedfs")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def store(s3: SeaweedS3, request: pytest.FixtureRequest) -> Store:
    name = request.node.name.replace("_", "-").lower()[:40].strip("-")
    return Store(s3, f"{name}-{os.getpid()}")
