"""``components`` is the one public face (issue 17 item 2): the program imports from it
alone, and it serves every name a Python program needs without importing the components
(and pulumi_kubernetes) until one is asked for."""

from __future__ import annotations

import ast
import subprocess
import sys

import components
import components.locks
from tests.support import mocks

PUBLIC = {"MySQLCluster", "MySQLClusterArgs", "EtcdCluster", "EtcdClusterArgs", "Locks",
          "LocksArgs", "load", "parse", "ConfigError", "StackConfig", "MySQLConfig",
          "EtcdConfig", "LocksConfig", "Resources", "ReplicationInitConfig", "Endpoint",
          "EtcdTLSConfig", "EtcdSnapshotConfig", "EtcdMembershipConfig", "EtcdSnapshotStoreConfig",
          "EtcdRestoreConfig", "agent_image"}


def test_every_public_name_resolves() -> None:
    assert set(components.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(components, name).__name__ == name


def test_the_program_imports_components_alone() -> None:
    tree = ast.parse(mocks.PROGRAM.read_text(encoding="utf-8"))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names}
    assert imported == {"components", "pulumi"}


def test_importing_the_package_imports_no_component() -> None:
    code = "import sys, components; sys.exit('pulumi_kubernetes' in sys.modules)"
    completed = subprocess.run([sys.executable, "-c", code], cwd=mocks.REPO_ROOT, check=False)
    assert completed.returncode == 0


def test_the_locks_package_no_longer_exports_provider_machinery() -> None:
    assert components.locks.__all__ == ["Locks", "LocksArgs"]
