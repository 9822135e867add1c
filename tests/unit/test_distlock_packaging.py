"""The README's distlock example runs as written from outside the repository.

It runs with the venv's python, in a directory that is not the repository and without
PYTHONPATH, so the only way it can import ``distlock`` is the package scripts/test.sh
installs (``pip install -e .``). The endpoints are the one thing swapped, for a real etcd
member's; ``data`` is defined, as a reader's program would.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.etcd import EtcdCluster

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _readme_example() -> str:
    """The Python example of the locks documentation (moved there from the README)."""
    section = (REPO / "docs" / "locks.md").read_text()
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "docs/locks.md has no Python example"
    return match.group(1)


def _installed(python: str, cwd: Path, env: dict[str, str]) -> Path | None:
    """Where ``python`` imports distlock from in ``cwd``, or None when it cannot."""
    found = subprocess.run([python, "-c", "import distlock; print(distlock.__file__)"],
                           cwd=cwd, env=env, capture_output=True, text=True, check=False)
    return Path(found.stdout.strip()).parent if found.returncode == 0 else None


def test_the_readme_example_runs_outside_the_repo_without_pythonpath(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    if _installed(sys.executable, outside, env) is None:
        message = (f"{sys.executable} cannot import distlock outside the repository: "
                   "run scripts/test.sh, which installs the project (pip install -e .)")
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    cluster = EtcdCluster(tmp_path / "etcd", size=1).start()
    try:
        endpoint = cluster.endpoints[0]
        example = _readme_example()
        program = re.sub(r"^eps = .*$", f"eps = ({endpoint!r},)", example, count=1,
                         flags=re.MULTILINE)
        assert program != example, "the example no longer sets eps = (...)"
        script = outside / "example.py"
        script.write_text("data = b'v1'\n" + program +
                          "print(store.get('config').decode(), store.highest_token() > 0)\n")
        ran = subprocess.run([sys.executable, str(script)], cwd=outside, env=env,
                             capture_output=True, text=True, timeout=60, check=False)
    finally:
        cluster.stop()
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == ["v1", "True"], ran.stdout
