"""Where tests find the programs built from Go modules (etcd 3.5, Kubernetes, kwok, ...).

``scripts/build-tools.sh`` builds every set under ``tools/`` into a cache keyed by its
sources and links each binary into one directory, ``${MYSQL_CLUSTER_TOOLS}/bin``. Tests
look only there, never on PATH: Debian's etcd 3.4 on PATH must not stand in for the 3.5
the image ships, and a test must never run a binary of some older pin by accident.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

BUILD_COMMAND = "scripts/build-tools.sh"


def tools_root() -> Path:
    configured = os.environ.get("MYSQL_CLUSTER_TOOLS")
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "mysql-cluster" / "tools"


def bin_dir() -> Path:
    return tools_root() / "bin"


def find_tool(name: str) -> Path | None:
    """The built binary ``name``, or None when it has not been built."""
    path = bin_dir() / name
    return path if path.is_file() and os.access(path, os.X_OK) else None


def tool(name: str) -> Path:
    """The built binary ``name``; skips naming the build command, fails under CI=true."""
    path = find_tool(name)
    if path is not None:
        return path
    message = f"{name} is not built in {bin_dir()} (run {BUILD_COMMAND})"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)
