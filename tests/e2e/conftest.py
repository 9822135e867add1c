"""End-to-end tests: the Pulumi CLI and plugins built from tools/pulumi, run for real.

They are marked ``e2e`` (and run in CI like every test: a missing build fails there).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.toolchain import NetworkTrap, PulumiSandbox, toolchain_bin


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "e2e: runs the Pulumi CLI and plugins built from tools/pulumi")


@pytest.fixture(scope="module")
def stack_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PulumiSandbox]:
    """A sandbox shared by one module's stacks (they deploy in turn onto one cluster).
    The stacks' ``kubernetes:kubeconfig`` is their only way to the cluster: no
    ``$KUBECONFIG``."""
    bin_dir = toolchain_bin()
    trap = NetworkTrap()
    box = PulumiSandbox(root=tmp_path_factory.mktemp("stacks"), bin_dir=bin_dir, trap=trap)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in box.environment().items():
            patch.setenv(name, value)
        patch.delenv("KUBECONFIG", raising=False)
        try:
            box.login()
            yield box
        finally:
            trap.close()


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PulumiSandbox]:
    """A logged-in file backend; the CLI, plugins and this process all see only it."""
    bin_dir = toolchain_bin()
    trap = NetworkTrap()
    box = PulumiSandbox(root=tmp_path, bin_dir=bin_dir, trap=trap)
    # The Automation API starts the CLI itself (even just to read its version) and the
    # inline program runs in this process: both must see the sandbox, not the user's setup.
    for name, value in box.environment().items():
        monkeypatch.setenv(name, value)
    try:
        box.login()
        yield box
    finally:
        trap.close()
