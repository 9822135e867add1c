"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.etcd_pods import LocalStatefulSet
from tests.support.etcd_stack import render


@pytest.fixture
def statefulset(tmp_path: Path) -> Iterator[LocalStatefulSet]:
    pods = LocalStatefulSet(tmp_path, render(replicas=3))
    try:
        yield pods
    finally:
        pods.stop_all()
