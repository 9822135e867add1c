"""scripts/deploy.sh, the README's deploy command, refuses bad input before it runs pulumi.

The Pulumi CLI is not installed here, so the test puts a stand-in `pulumi` on PATH that
records its arguments: that shows what the script would run, and that it runs nothing
when the input is wrong.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "deploy.sh"


@pytest.fixture
def fake_pulumi(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    pulumi = bin_dir / "pulumi"
    pulumi.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    pulumi.chmod(0o755)
    # An official CLI distribution ships the Python language host beside pulumi.
    host = bin_dir / "pulumi-language-python"
    host.write_text("#!/bin/sh\nexit 1\n")
    host.chmod(0o755)
    return tmp_path


def deploy(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    path = f"{home / 'bin'}:{os.environ['PATH']}"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          env={**clean, "HOME": str(home), "PATH": path, **env},
                          check=False, timeout=30)


def calls(home: Path) -> list[str]:
    path = home / "calls"
    return path.read_text().splitlines() if path.exists() else []


def test_deploys_a_known_stack_on_a_local_backend(fake_pulumi: Path) -> None:
    result = deploy(fake_pulumi, "dev", "--yes", PULUMI_CONFIG_PASSPHRASE="not-empty")
    assert result.returncode == 0, result.stderr
    assert calls(fake_pulumi) == ["stack select --create dev", "up --stack dev --yes"]


def test_an_unknown_stack_is_refused_naming_the_known_ones(fake_pulumi: Path) -> None:
    result = deploy(fake_pulumi, "staging", PULUMI_CONFIG_PASSPHRASE="not-empty")
    assert result.returncode == 2
    assert "no stack file Pulumi.staging.yaml" in result.stderr
    assert "known stacks: dev e2e prod" in result.stderr
    assert calls(fake_pulumi) == []


def test_an_empty_secrets_passphrase_is_refused(fake_pulumi: Path) -> None:
    result = deploy(fake_pulumi, "dev", PULUMI_CONFIG_PASSPHRASE="")
    assert result.returncode == 2
    assert "PULUMI_CONFIG_PASSPHRASE" in result.stderr
    assert calls(fake_pulumi) == []


def test_no_stack_argument_prints_usage(fake_pulumi: Path) -> None:
    result = deploy(fake_pulumi)
    assert result.returncode != 0
    assert "usage: scripts/deploy.sh" in result.stderr
    assert calls(fake_pulumi) == []


def test_without_a_language_host_the_automation_api_runs_the_program(
        fake_pulumi: Path) -> None:
    """The CLI built here has no language host: deploy.sh hands over to
    scripts/pulumi_inline.py, which refuses an `up` it could not ask to confirm."""
    (fake_pulumi / "bin" / "pulumi-language-python").unlink()
    result = deploy(fake_pulumi, "dev", PULUMI_CONFIG_PASSPHRASE="not-empty")
    assert result.returncode == 2, result.stderr
    assert "up needs --yes here: the Automation API cannot ask" in result.stderr
    assert calls(fake_pulumi) == []
