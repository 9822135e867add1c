"""Every shell script in the repository is shellcheck-clean.

Scripts that run in pods are shipped verbatim in ConfigMaps, so a quoting bug there is a
production bug with no compiler in between. Each script is checked on its own (``-x`` follows
the ``source`` directives, relative to the script's directory as each one declares), at
shellcheck's strictest severity. A missing shellcheck skips locally and fails under CI=true.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.procs import require_binary

REPO_ROOT = Path(__file__).resolve().parents[2]


def _is_shell_script(path: Path) -> bool:
    if path.suffix == ".sh":
        return True
    if path.suffix or not path.is_file():
        return False
    try:
        with path.open("rb") as handle:
            first_line = handle.readline(100)
    except OSError:
        return False
    return first_line.startswith(b"#!") and (b"bash" in first_line or first_line.rstrip()
                                             .endswith((b"/sh", b" sh")))


def shell_scripts() -> list[Path]:
    """Tracked and new (not ignored) files: virtualenvs and caches are never ours to lint."""
    git = shutil.which("git")
    if git is None:
        return sorted(p for p in REPO_ROOT.rglob("*.sh")
                      if not any(part.startswith(".") or part == "venv"
                                 for part in p.relative_to(REPO_ROOT).parts))
    listed = subprocess.run([git, "ls-files", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    return sorted(path for name in listed.splitlines()
                  if (path := REPO_ROOT / name).exists() and _is_shell_script(path))


def test_the_pod_scripts_are_found() -> None:
    names = {p.name for p in shell_scripts()}
    assert {"lib.sh", "init-config.sh", "clone.sh", "backup-server.sh", "probe.sh",
            "bootstrap-users.sh"} <= names


@pytest.mark.parametrize("script", shell_scripts(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_shellcheck_clean(script: Path) -> None:
    require_binary("shellcheck")
    result = subprocess.run(["shellcheck", "--external-sources", "--severity=style",
                             "--format=gcc", script.name], cwd=script.parent,
                            capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, f"shellcheck {script}:\n{result.stdout}{result.stderr}"
