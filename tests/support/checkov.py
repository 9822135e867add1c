"""Run Checkov's Kubernetes checks over manifests and read its JSON report.

Why Checkov runs as a command from its own virtualenv (``.venv/policy``): it pins
``packaging`` and ``python-dateutil`` below what pulumi 3.272 and the rest of ./venv
install, so putting it in ./venv would downgrade the program's own dependencies. The
CLI and its JSON report are Checkov's stable interface anyway.

Each manifest is written to its own file, so a finding names the object that caused it,
and the report lists every resource Checkov evaluated: callers assert that none of the
objects they passed was silently skipped (a parse problem would otherwise look like a
clean bill of health).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # PyYAML ships with kubernetes; no stubs pinned

from tests.support.procs import require_binary

ROOT = Path(__file__).resolve().parents[2]
POLICY_VENV = ROOT / ".venv" / "policy"
_ENVIRONMENT = {
    # Offline and deterministic: no Prisma Cloud guideline download, no PyPI update check.
    "BC_SKIP_MAPPING": "TRUE",
    "CKV_SKIP_PACKAGE_UPDATE_CHECK": "TRUE",
    "CKV_PARSE_ERROR_FAIL": "TRUE",
    "LOG_LEVEL": "WARNING",
}


@dataclass(frozen=True)
class Finding:
    check_id: str
    check_name: str
    # Checkov's resource id: "<Kind>.<namespace>.<name>" ("default" when none is set).
    resource: str
    file: str


@dataclass(frozen=True)
class Report:
    failed: tuple[Finding, ...]
    passed: tuple[Finding, ...]
    parsing_errors: tuple[str, ...]

    @property
    def resources(self) -> frozenset[str]:
        return frozenset(f.resource for f in (*self.failed, *self.passed))


def checkov_command() -> str:
    """``$CHECKOV``, else .venv/policy/bin/checkov, else checkov on PATH; skip or (CI) fail."""
    candidates = [os.environ.get("CHECKOV"), str(POLICY_VENV / "bin" / "checkov"),
                  shutil.which("checkov")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    require_binary("checkov")  # skips locally, fails under CI=true
    raise AssertionError("unreachable: require_binary fails or skips")


def resource_id(manifest: Mapping[str, Any]) -> str:
    metadata = manifest.get("metadata") or {}
    return f"{manifest['kind']}.{metadata.get('namespace') or 'default'}.{metadata.get('name')}"


def _file_name(index: int, manifest: Mapping[str, Any]) -> str:
    name = str((manifest.get("metadata") or {}).get("name", "unnamed"))
    return f"{index:03d}-{manifest['kind'].lower()}-{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.yaml"


def _findings(results: Mapping[str, Any], key: str) -> list[tuple[str, Finding]]:
    """(group, finding) pairs; the group is the finding's directory under the scan root."""
    found = []
    for check in results.get(key) or []:
        path = Path(check["file_path"])
        group = path.parts[1] if path.is_absolute() and len(path.parts) > 2 else ""
        found.append((group, Finding(check_id=check["check_id"], check_name=check["check_name"],
                                     resource=check["resource"], file=path.name)))
    return found


def scan_groups(groups: Mapping[str, Sequence[Mapping[str, Any]]], workdir: Path, *,
                dockerfiles: Mapping[str, Path] | None = None) -> dict[str, Report]:
    """One Checkov run over several sets of manifests (one directory each), one report each.

    Checkov's start-up dominates a small scan, so the stacks and the self-test share a run.
    ``dockerfiles`` (group -> file) adds Checkov's Dockerfile checks for those files.
    """
    for group in {*groups, *(dockerfiles or {})}:
        (workdir / group).mkdir(parents=True, exist_ok=True)
    for group, manifests in groups.items():
        for index, manifest in enumerate(manifests):
            (workdir / group / _file_name(index, manifest)).write_text(
                yaml.safe_dump(dict(manifest), sort_keys=False))
    frameworks = ["kubernetes"]
    for group, dockerfile in (dockerfiles or {}).items():
        # Checkov recognises Dockerfiles by name.
        shutil.copy(dockerfile, workdir / group / "Dockerfile")
        frameworks = ["kubernetes", "dockerfile"]
    result = subprocess.run(
        [checkov_command(), "--directory", str(workdir), "--framework", *frameworks,
         "--output", "json", "--compact", "--skip-download"],
        cwd=workdir, env={**os.environ, **_ENVIRONMENT}, capture_output=True, text=True,
        timeout=300, check=False)
    # Exit status 1 means "some check failed", which the report says in detail; anything
    # else is Checkov itself failing.
    assert result.returncode in (0, 1), f"checkov failed:\n{result.stderr[-4000:]}"
    document = json.loads(result.stdout)
    failed: list[tuple[str, Finding]] = []
    passed: list[tuple[str, Finding]] = []
    errors: list[str] = []
    for framework in document if isinstance(document, list) else [document]:
        # Checkov reports a bare summary (no "results") when it found nothing to check.
        results = framework.get("results") or {}
        failed += _findings(results, "failed_checks")
        passed += _findings(results, "passed_checks")
        errors += [str(e) for e in results.get("parsing_errors") or ()]
    return {
        group: Report(failed=tuple(f for g, f in failed if g == group),
                      passed=tuple(f for g, f in passed if g == group),
                      parsing_errors=tuple(e for e in errors if f"/{group}/" in e))
        for group in {*groups, *(dockerfiles or {})}
    }


def scan(manifests: Sequence[Mapping[str, Any]], workdir: Path, *,
         dockerfile: Path | None = None) -> Report:
    """Write ``manifests`` into ``workdir`` (one file each) and run every Kubernetes check
    (and the Dockerfile checks on ``dockerfile``)."""
    return scan_groups({"manifests": manifests}, workdir,
                       dockerfiles={"manifests": dockerfile} if dockerfile else None
                       )["manifests"]
