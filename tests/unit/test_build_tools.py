"""scripts/build-tools.sh keeps Go's caches to itself and removes them once every set is built.

A cold build of the tool sets fills Go's module and build caches with several GiB that
nothing reads once the binaries exist; on a CI machine that space is the tests' (a full disk
failed a whole run). The script is run here on a throwaway repository with one tool set whose
build.sh only records where Go's caches are and writes into them, so no Go code compiles.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.toolchain import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "build-tools.sh"

# The set's build: note Go's cache dirs, fill them (the module cache read-only, as Go leaves
# it), produce one binary.
DEMO_BUILD = """#!/usr/bin/env bash
set -euo pipefail
out=$1
mkdir -p "$out/bin"
go env GOMODCACHE GOCACHE > "$out/caches"
mkdir -p "$(go env GOMODCACHE)/example.com/m@v1" "$(go env GOCACHE)/00"
echo module > "$(go env GOMODCACHE)/example.com/m@v1/go.mod"
chmod -R a-w "$(go env GOMODCACHE)/example.com"
echo object > "$(go env GOCACHE)/00/a-d"
printf '#!/bin/sh\\necho demo\\n' > "$out/bin/demo"
chmod +x "$out/bin/demo"
if [ -n "${DEMO_FAIL:-}" ]; then exit 1; fi
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    if shutil.which("go") is None or shutil.which("git") is None:
        pytest.fail("build-tools.sh needs go and git on PATH")
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(SCRIPT, root / "scripts" / "build-tools.sh")
    build = root / "tools" / "demo" / "build.sh"
    build.parent.mkdir(parents=True)
    build.write_text(DEMO_BUILD)
    build.chmod(0o755)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    return root


def run(repo: Path, tools: Path, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(repo / "scripts" / "build-tools.sh")], check=False, capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], "HOME": str(home), "MYSQL_CLUSTER_TOOLS": str(tools),
             **env}, timeout=120)


def test_a_build_uses_caches_of_its_own_and_removes_them_when_done(repo: Path,
                                                                   tmp_path: Path) -> None:
    tools, home = tmp_path / "tools", tmp_path / "home"
    home.mkdir()
    result = run(repo, tools, home)
    assert result.returncode == 0, result.stderr
    (out,) = tools.glob("demo-*")
    assert (out / ".complete").is_file()
    assert (tools / "bin" / "demo").resolve() == (out / "bin" / "demo").resolve()
    mod, build = (out / "caches").read_text().split()
    assert Path(mod).is_relative_to(tools / ".go")
    assert Path(build).is_relative_to(tools / ".go")
    assert not (tools / ".go").exists(), "the Go caches outlived the build"
    assert not (home / "go").exists(), "the build wrote into the user's own module cache"
    assert not (home / ".cache").exists(), "the build wrote into the user's own build cache"
    # Up to date: a second run builds nothing and finds nothing to remove.
    again = run(repo, tools, home)
    assert again.returncode == 0, again.stderr
    assert "up to date" in again.stdout
    assert "removing" not in again.stdout


def test_a_failed_build_keeps_the_caches_for_the_next_run(repo: Path, tmp_path: Path) -> None:
    tools, home = tmp_path / "tools", tmp_path / "home"
    home.mkdir()
    result = run(repo, tools, home, DEMO_FAIL="1")
    assert result.returncode != 0
    assert (tools / ".go" / "build" / "00" / "a-d").is_file()
    assert not list(tools.glob("demo-*/.complete"))
    subprocess.run(["chmod", "-R", "u+w", str(tools)], check=True)  # for tmp_path's cleanup


def test_keep_go_caches_keeps_them(repo: Path, tmp_path: Path) -> None:
    tools, home = tmp_path / "tools", tmp_path / "home"
    home.mkdir()
    result = run(repo, tools, home, MYSQL_CLUSTER_KEEP_GO_CACHES="1")
    assert result.returncode == 0, result.stderr
    assert (tools / ".go" / "mod" / "example.com" / "m@v1" / "go.mod").is_file()
    subprocess.run(["chmod", "-R", "u+w", str(tools)], check=True)
